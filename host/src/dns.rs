//! DNS: the port plugins, MX routing and sender authentication look names up through (`Dns`),
//! the one resolver of the gateway behind it (hickory: the configured name servers, or the
//! system's resolv.conf, and its cache), and scripted answers for harness cases.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use serde::Deserialize;

use crate::config::DnsConfig;

/// How long one query may take when `[dns] timeout-ms` is not set.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5000);

pub fn resolver(config: &DnsConfig) -> Result<TokioResolver, String> {
    let mut builder = if config.servers.is_empty() {
        hickory_resolver::Resolver::builder_tokio().map_err(|e| format!("resolv.conf: {e}"))?
    } else {
        let mut resolver_config = ResolverConfig::default();
        for server in &config.servers {
            let addr: SocketAddr = server
                .parse()
                .map_err(|_| format!("dns server {server:?} is not ip:port"))?;
            let mut name_server = NameServerConfig::udp_and_tcp(addr.ip());
            for connection in &mut name_server.connections {
                connection.port = addr.port();
            }
            resolver_config.add_name_server(name_server);
        }
        hickory_resolver::Resolver::builder_with_config(
            resolver_config,
            TokioRuntimeProvider::default(),
        )
    };
    builder.options_mut().timeout = config
        .timeout_ms
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    builder.build().map_err(|e| format!("dns resolver: {e}"))
}

/// DNS record types plugins may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RecordType {
    A,
    Aaaa,
    Mx,
    Txt,
    Ptr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsFailure {
    NotFound,
    Temporary(String),
}

pub type DnsFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<String>, DnsFailure>> + Send + 'a>>;

pub trait Dns: Send + Sync {
    fn lookup<'a>(&'a self, record: RecordType, name: &'a str) -> DnsFuture<'a>;
}

/// Scripted DNS answers (harness cases): `(type, name) -> answers`; anything else is not found.
#[derive(Default)]
pub struct StaticDns(pub BTreeMap<(String, String), Vec<String>>);

impl StaticDns {
    pub fn insert(&mut self, record: RecordType, name: &str, answers: Vec<String>) {
        self.0
            .insert((format!("{record:?}"), normalise(name)), answers);
    }
}

impl StaticDns {
    /// The answers for a name and type, if the table has them.
    pub fn get(&self, record: RecordType, name: &str) -> Option<&Vec<String>> {
        self.0.get(&(format!("{record:?}"), normalise(name)))
    }

    /// True when the table has any record for this name.
    pub fn has_name(&self, name: &str) -> bool {
        let name = normalise(name);
        self.0.keys().any(|(_, n)| *n == name)
    }
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Dns for StaticDns {
    fn lookup<'a>(&'a self, record: RecordType, name: &'a str) -> DnsFuture<'a> {
        let answer = self.get(record, name).cloned().ok_or(DnsFailure::NotFound);
        Box::pin(async move { answer })
    }
}

/// The real resolver (hickory), with the system's or the configured name servers.
pub struct SystemDns {
    resolver: hickory_resolver::TokioResolver,
}

impl SystemDns {
    pub fn new(resolver: hickory_resolver::TokioResolver) -> SystemDns {
        SystemDns { resolver }
    }
}

impl Dns for SystemDns {
    fn lookup<'a>(&'a self, record: RecordType, name: &'a str) -> DnsFuture<'a> {
        Box::pin(async move {
            use hickory_resolver::proto::rr::RecordType as R;
            let answers: Vec<String> = if record == RecordType::Ptr {
                let ip: std::net::IpAddr = name
                    .parse()
                    .map_err(|_| DnsFailure::Temporary(format!("{name:?} is not an IP address")))?;
                let lookup = self
                    .resolver
                    .reverse_lookup(ip)
                    .await
                    .map_err(map_dns_error)?;
                lookup
                    .answers()
                    .iter()
                    .map(|r| r.data.to_string())
                    .collect()
            } else {
                let kind = match record {
                    RecordType::A => R::A,
                    RecordType::Aaaa => R::AAAA,
                    RecordType::Mx => R::MX,
                    RecordType::Txt => R::TXT,
                    RecordType::Ptr => R::PTR,
                };
                let lookup = self
                    .resolver
                    .lookup(name, kind)
                    .await
                    .map_err(map_dns_error)?;
                lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == kind)
                    .map(|r| r.data.to_string())
                    .collect()
            };
            if answers.is_empty() {
                Err(DnsFailure::NotFound)
            } else {
                Ok(answers)
            }
        })
    }
}

fn map_dns_error(e: hickory_resolver::net::NetError) -> DnsFailure {
    if e.is_no_records_found() || e.is_nx_domain() {
        DnsFailure::NotFound
    } else {
        DnsFailure::Temporary(e.to_string())
    }
}
