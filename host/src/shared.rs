//! The state every session shares, whatever its protocol, and what sessions do with it that
//! is not protocol: spooling a message, checking a password, counting failed logins.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Protocol};
use crate::net::limits::AuthBudget;
use crate::plugin::{ActivePlugins, Services};
use crate::queue::manager::QueueManager;
use crate::queue::spool::{QueuedEnvelope, Spool};
use crate::store::snapshots::SnapshotCache;
use crate::store::users::UserDirectory;
use crate::telemetry::metrics;

/// What the sessions of every protocol share: the config, the plugins and their services, the
/// users and their logins, TLS, and the way into the queue.
pub struct Shared {
    pub config: Arc<Config>,
    pub plugins: Arc<ActivePlugins>,
    pub services: Services,
    pub users: Arc<UserDirectory>,
    pub spool: Spool,
    pub tls: Option<TlsAcceptor>,
    relay_networks: Vec<(IpAddr, u8)>,
    deliveries: mpsc::UnboundedSender<String>,
    relay: QueueManager,
    quarantine_dir: PathBuf,
    /// Password checks running at once (argon2 takes ~19 MiB and milliseconds each).
    password_checks: Arc<Semaphore>,
    /// Failed logins per client address, across connections and protocols.
    auth_budget: AuthBudget,
    /// Folder message lists shared by the IMAP sessions that see them alike.
    pub snapshots: SnapshotCache,
}

/// The parts of [`Shared`] built elsewhere (by the composition root).
pub struct Parts {
    pub config: Arc<Config>,
    pub plugins: Arc<ActivePlugins>,
    pub services: Services,
    pub users: Arc<UserDirectory>,
    pub spool: Spool,
    pub tls: Option<TlsAcceptor>,
    pub deliveries: mpsc::UnboundedSender<String>,
    pub relay: QueueManager,
}

impl Shared {
    pub fn new(parts: Parts) -> anyhow::Result<Shared> {
        let config = parts.config;
        let relay_networks = config
            .server
            .relay_networks
            .iter()
            .map(|n| parse_network(n))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Shared {
            plugins: parts.plugins,
            services: parts.services,
            users: parts.users,
            spool: parts.spool,
            tls: parts.tls,
            relay_networks,
            deliveries: parts.deliveries,
            relay: parts.relay,
            quarantine_dir: config.data_dir().join("quarantine"),
            auth_budget: AuthBudget::new(
                config.limits.auth_failures_per_ip,
                Duration::from_secs(config.limits.auth_failure_window_secs),
            ),
            password_checks: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            snapshots: SnapshotCache::default(),
            config,
        })
    }

    /// True when `ip` is in one of the configured relay networks.
    pub fn may_relay(&self, ip: IpAddr) -> bool {
        self.relay_networks
            .iter()
            .any(|(net, bits)| in_network(ip, *net, *bits))
    }

    /// Spools a message durably and schedules its delivery.
    pub async fn enqueue(&self, envelope: &QueuedEnvelope, raw: &[u8]) -> Result<(), String> {
        self.spool
            .store(envelope, raw)
            .await
            .map_err(|e| e.to_string())?;
        // A message with no local recipient goes straight to the relay queue.
        let users = self.users.get();
        let local = envelope
            .recipients
            .iter()
            .any(|r| users.is_local_domain(r.rsplit_once('@').map_or("", |(_, d)| d)));
        if local {
            let _ = self.deliveries.send(envelope.id.clone());
        } else {
            self.relay.submit_new(crate::queue::spool::Spooled {
                envelope: envelope.clone(),
                message: raw.to_vec(),
            });
        }
        Ok(())
    }

    /// Checks a password off the async threads (argon2 takes milliseconds on purpose), at most
    /// one check per core at a time, so that a flood of logins queues instead of exhausting
    /// memory.
    pub async fn verify_password(&self, protocol: Protocol, user: &str, password: String) -> bool {
        let Ok(_permit) = self.password_checks.clone().acquire_owned().await else {
            return false;
        };
        let (users, user) = (self.users.get(), user.to_string());
        let ok = tokio::task::spawn_blocking(move || users.verify(&user, &password))
            .await
            .unwrap_or(false);
        metrics::auth(protocol.name(), ok);
        ok
    }

    /// Whether a client at `ip` may try to log in now (its failure budget is not used up).
    pub fn login_allowed(&self, ip: IpAddr) -> bool {
        let allowed = self.auth_budget.allows(ip);
        if !allowed {
            tracing::info!(%ip, "login refused: failure budget of the address used up");
        }
        allowed
    }

    /// After a failed login (SMTP AUTH, POP3, IMAP): takes from the address's budget, waits
    /// longer with each failure of the session, and says whether the client has used up its
    /// attempts (the connection is then closed).
    pub async fn login_failed(&self, ip: IpAddr, user: &str, failures: u32) -> bool {
        tracing::info!(user, failures, "login failed");
        self.auth_budget.failed(ip);
        let limits = &self.config.limits;
        let delay = limits.auth_failure_delay_ms * u64::from(failures);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        failures >= limits.max_auth_failures
    }

    /// Keeps a message aside, with the reason, instead of delivering it.
    pub async fn quarantine(&self, id: &str, raw: &[u8], reason: &str) -> Result<(), String> {
        let (dir, id, raw, reason) = (
            self.quarantine_dir.clone(),
            id.to_string(),
            raw.to_vec(),
            reason.to_string(),
        );
        tokio::task::spawn_blocking(move || crate::queue::quarantine(&dir, &id, &raw, &reason))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}

fn parse_network(text: &str) -> anyhow::Result<(IpAddr, u8)> {
    let (addr, bits) = match text.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (text, None),
    };
    let ip: IpAddr = addr
        .parse()
        .with_context(|| format!("server.relay-networks: {text:?} is not an address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(b) => b
            .parse::<u8>()
            .ok()
            .filter(|&b| b <= max)
            .with_context(|| format!("server.relay-networks: bad prefix in {text:?}"))?,
        None => max,
    };
    Ok((ip, bits))
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let (net, bits) = parse_network("192.0.2.0/24").expect("net");
        assert!(in_network("192.0.2.77".parse().expect("ip"), net, bits));
        assert!(!in_network("192.0.3.1".parse().expect("ip"), net, bits));
        let (net, bits) = parse_network("::1").expect("net");
        assert!(in_network("::1".parse().expect("ip"), net, bits));
        assert!(parse_network("10.0.0.0/33").is_err());
    }
}
