//! Sender authentication results of the message (contract 0.2.1): what the gateway's own SPF,
//! DKIM, DMARC and ARC checks found, for the methods the operator turned on with
//! `[auth] verify`. Available in the data stage; elsewhere, and for senders that logged in or
//! send from a relay network, every function returns nothing.
//!
//! ```ignore
//! use mailgate_sdk::auth;
//! if let Some(dmarc) = auth::dmarc() {
//!     if dmarc.outcome == auth::Outcome::Fail && dmarc.policy == Some(auth::DmarcPolicy::Reject) {
//!         // ...
//!     }
//! }
//! ```

use crate::bindings::mailgate::plugin::auth as host;
pub use host::{ArcCheck, DkimCheck, DmarcCheck, DmarcPolicy, Outcome, SpfCheck, SpfIdentity};

/// The SPF checks: MAIL FROM first, then HELO.
pub fn spf() -> Vec<SpfCheck> {
    host::spf()
}

/// One entry per DKIM-Signature field, in order.
pub fn dkim() -> Vec<DkimCheck> {
    host::dkim()
}

/// The DMARC result for the From domain.
pub fn dmarc() -> Option<DmarcCheck> {
    host::dmarc()
}

/// The ARC chain's validation.
pub fn arc() -> Option<ArcCheck> {
    host::arc()
}
