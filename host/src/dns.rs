//! The one DNS resolver of the gateway (hickory): the configured name servers, or the system's
//! resolv.conf. Plugins, MX routing and sender authentication share it, and its cache.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

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
