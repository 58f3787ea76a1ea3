//! What host imports reach outside a plugin: the key-value store (`crate::store::kv`), DNS
//! (`crate::dns`) and the clock (`crate::mail::clock`). Each is a port defined where it belongs,
//! so the gateway plugs in real ones and the harness fixed, scripted ones; a chain gets them
//! bundled here.

use std::sync::Arc;

// The ports the bundle is made of, under the names the contract bindings use.
pub use crate::dns::{Dns, DnsFailure, RecordType};
use crate::mail::clock::{Clock, SystemClock};
pub use crate::store::kv::KvStore;
use crate::store::kv::MemoryKv;

/// The services a chain runs with.
#[derive(Clone)]
pub struct Services {
    pub kv: Arc<dyn KvStore>,
    pub dns: Arc<dyn Dns>,
    pub clock: Arc<dyn Clock>,
}

impl Services {
    /// In-memory store, system clock, and the given resolver.
    pub fn with_dns(dns: Arc<dyn Dns>) -> Services {
        Services {
            kv: Arc::new(MemoryKv::default()),
            dns,
            clock: Arc::new(SystemClock),
        }
    }
}
