//! MTA-STS (RFC 8461) for MX delivery: the `_mta-sts.<domain>` TXT record says a policy
//! exists and its `id`; the policy is fetched over HTTPS ([`fetch`]), parsed ([`policy`]) and
//! kept until it expires ([`cache`]). A policy in `enforce` mode lets mail go only to the MX
//! hosts it names, over STARTTLS with a certificate valid for the MX host; `testing` changes
//! nothing but is counted and logged; `none` is as no policy.
//!
//! Nothing here fails a delivery on its own: a DNS or fetch failure keeps an unexpired
//! cached policy in force, and without one mail goes as without MTA-STS (§5.1).

pub mod cache;
pub mod fetch;
pub mod policy;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use mail_auth::common::parse::TxtRecordParser;

use super::client::Failure;
use super::mx::Candidate;
use super::route::Target;
use super::transmit::Peer;
use crate::config::{ClientTls, MtaStsConfig};
use crate::dns::{Dns, DnsFailure, RecordType};
use crate::mail::clock::unix_seconds;
use crate::telemetry::metrics;
pub use cache::Cache;
pub use policy::{Mode, Policy, PolicyError};

/// Looks policies up and keeps them.
pub struct MtaSts {
    dns: Arc<dyn Dns>,
    cache: Cache,
    /// Certificate checks for policy hosts.
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    overrides: BTreeMap<String, String>,
    /// Per domain: held while its policy is fetched, and the record id whose fetch failed last
    /// with the time until which it is not tried again.
    fetching: std::sync::Mutex<HashMap<String, FetchGate>>,
}

type FetchGate = Arc<tokio::sync::Mutex<Option<(String, u64)>>>;

/// After a failed fetch, seconds before the same policy is fetched again: deliveries in the
/// meantime go as the failure left them without each waiting for the fetch.
const FETCH_RETRY_SECS: u64 = 60;

/// The policy in force for a delivery to `domain`.
#[derive(Debug, Clone)]
pub struct Applied {
    pub domain: String,
    pub id: String,
    pub policy: Arc<Policy>,
}

/// What the DNS says about a domain's policy.
enum Record {
    Id(String),
    Absent,
    Unknown(String),
}

impl MtaSts {
    /// `dir` keeps the policies across restarts; `tls` checks the policy hosts' certificates.
    pub fn new(
        config: &MtaStsConfig,
        dns: Arc<dyn Dns>,
        dir: std::path::PathBuf,
        tls: Arc<rustls::ClientConfig>,
    ) -> MtaSts {
        MtaSts {
            dns,
            cache: Cache::new(dir),
            tls,
            timeout: Duration::from_secs(config.fetch_timeout_secs.max(1)),
            overrides: config
                .policy_host_override
                .iter()
                .map(|(domain, host)| (domain.to_ascii_lowercase(), host.clone()))
                .collect(),
            fetching: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The policy in force for mail to `domain`, if any (`mode: none` included, for the logs).
    pub async fn policy(&self, domain: &str) -> Option<Applied> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let now = unix_seconds();
        let cached = self.cache.get(&domain, now);
        let id = match self.record(&domain).await {
            Record::Id(id) => id,
            Record::Absent => return cached.map(|c| applied(&domain, c)),
            Record::Unknown(e) => {
                tracing::info!(domain, "MTA-STS record lookup failed: {e}");
                return cached.map(|c| applied(&domain, c));
            }
        };
        if let Some(cached) = cached.as_ref().filter(|c| c.id == id) {
            return Some(applied(&domain, cached.clone()));
        }
        // One fetch per domain at a time; the deliveries that waited take its result.
        let gate = self.gate(&domain);
        let mut failed = gate.lock().await;
        if let Some(fresh) = self.cache.get(&domain, now).filter(|c| c.id == id) {
            return Some(applied(&domain, fresh));
        }
        if failed
            .as_ref()
            .is_some_and(|(failed_id, until)| *failed_id == id && *until > unix_seconds())
        {
            return cached.map(|c| applied(&domain, c));
        }
        match self.fetch(&domain, &id, now).await {
            Ok(fresh) => {
                *failed = None;
                Some(applied(&domain, fresh))
            }
            Err(e) => {
                *failed = Some((id.clone(), unix_seconds().saturating_add(FETCH_RETRY_SECS)));
                let kept = if cached.is_some() {
                    "the cached policy stays in force"
                } else {
                    "delivering without a policy"
                };
                tracing::warn!(domain, id, "MTA-STS policy fetch failed ({e}); {kept}");
                cached.map(|c| applied(&domain, c))
            }
        }
    }

    fn gate(&self, domain: &str) -> FetchGate {
        let mut gates = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        gates.entry(domain.to_string()).or_default().clone()
    }

    /// The `id` of the `_mta-sts` TXT record; more than one STSv1 record is none (§3.1).
    async fn record(&self, domain: &str) -> Record {
        let name = format!("_mta-sts.{domain}");
        let answers = match self.dns.lookup(RecordType::Txt, &name).await {
            Ok(answers) => answers,
            Err(DnsFailure::NotFound) => return Record::Absent,
            Err(DnsFailure::Temporary(e)) => return Record::Unknown(e),
        };
        let records: Vec<&String> = answers
            .iter()
            .filter(|a| a.trim_start().starts_with("v=STSv1"))
            .collect();
        match records.as_slice() {
            [one] => match mail_auth::mta_sts::MtaSts::parse(one.as_bytes()) {
                Ok(record) => Record::Id(record.id),
                Err(e) => Record::Unknown(format!("{name}: {e}")),
            },
            [] => Record::Absent,
            _ => Record::Unknown(format!("{name}: more than one STSv1 record")),
        }
    }

    async fn fetch(&self, domain: &str, id: &str, now: u64) -> Result<cache::Cached, String> {
        let request = fetch::Request {
            domain,
            connect_to: self.overrides.get(domain).map(String::as_str),
            tls: self.tls.clone(),
            timeout: self.timeout,
        };
        let text = match fetch::fetch(&*self.dns, &request).await {
            Ok(text) => text,
            Err(e) => {
                metrics::mta_sts_fetch("failed");
                return Err(e);
            }
        };
        let policy = match Policy::parse(&text) {
            Ok(policy) => policy,
            Err(e) => {
                metrics::mta_sts_fetch("invalid");
                return Err(e.to_string());
            }
        };
        metrics::mta_sts_fetch("fetched");
        tracing::info!(domain, id, "MTA-STS policy fetched: {policy}");
        let cached = cache::Cached {
            id: id.to_string(),
            expires: now.saturating_add(policy.max_age),
            policy: Arc::new(policy),
        };
        self.cache.put(domain, cached.clone(), &text);
        Ok(cached)
    }
}

fn applied(domain: &str, cached: cache::Cached) -> Applied {
    Applied {
        domain: domain.to_string(),
        id: cached.id,
        policy: cached.policy,
    }
}

/// The hosts a delivery may use and how: under `enforce` only the MX hosts the policy allows,
/// over STARTTLS with the certificate checked; otherwise as they are. `Err` when `enforce`
/// leaves no host (a temporary failure: the queue retries until its maximum age).
pub fn restrict(
    applied: Option<&Applied>,
    candidates: Vec<Candidate>,
    target: &Target,
) -> Result<(Vec<Candidate>, Target), Failure> {
    let Some(applied) = applied else {
        return Ok((candidates, target.clone()));
    };
    let policy = &applied.policy;
    let mut names: Vec<String> = candidates
        .iter()
        .filter(|c| !policy.allows(&c.name))
        .map(|c| c.name.clone())
        .collect();
    names.dedup();
    let domain = &applied.domain;
    match policy.mode {
        Mode::None => {
            tracing::info!(
                domain,
                id = applied.id,
                "MTA-STS policy mode none: not applied"
            );
            Ok((candidates, target.clone()))
        }
        Mode::Testing => {
            tracing::info!(domain, id = applied.id, "MTA-STS policy testing applies");
            Ok((candidates, target.clone()))
        }
        Mode::Enforce => {
            if !names.is_empty() {
                tracing::info!(
                    domain,
                    id = applied.id,
                    "MTA-STS policy enforce: skipping MX {} (not in the policy: {})",
                    names.join(", "),
                    policy.mx.join(" ")
                );
            }
            // The MX preference order is kept.
            let allowed: Vec<Candidate> = candidates
                .into_iter()
                .filter(|c| policy.allows(&c.name))
                .collect();
            if allowed.is_empty() {
                metrics::mta_sts_delivery("enforce", "failure");
                let text = format!(
                    "4.7.5 MTA-STS policy of {domain} (enforce, id {}): no MX host matches {}; deferred",
                    applied.id,
                    policy.mx.join(" ")
                );
                tracing::warn!(domain, "{text}");
                return Err(Failure::temporary(text));
            }
            tracing::info!(
                domain,
                id = applied.id,
                "MTA-STS policy enforce applies: STARTTLS with a valid certificate to {}",
                allowed
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let checked = Target {
                tls: ClientTls::Required,
                tls_verify: true,
                ..target.clone()
            };
            Ok((allowed, checked))
        }
    }
}

/// Counts and logs how a delivery under a policy ended. `enforce`: taken by a host, or put off
/// because no allowed host could be reached over checked TLS. `testing`: whether the host
/// that took the transaction would have passed (allowed, and a certificate valid for it).
pub fn outcome<T>(applied: Option<&Applied>, results: &[Result<T, Failure>], peer: Option<&Peer>) {
    let Some(applied) = applied else {
        return;
    };
    let (domain, id) = (&applied.domain, &applied.id);
    match applied.policy.mode {
        Mode::None => {}
        Mode::Testing => {
            let Some(peer) = peer else {
                return;
            };
            let failed = if !applied.policy.allows(&peer.host) {
                Some(format!("MX {} is not in the policy", peer.host))
            } else {
                match &peer.certificate {
                    Some(Ok(())) => None,
                    Some(Err(e)) => Some(format!(
                        "the certificate of {} is not valid: {e}",
                        peer.host
                    )),
                    None => Some(format!("{} was reached without TLS", peer.host)),
                }
            };
            match failed {
                Some(why) => {
                    metrics::mta_sts_delivery("testing", "failure");
                    tracing::warn!(
                        domain,
                        id,
                        "MTA-STS policy testing would have failed: {why}"
                    );
                }
                None => metrics::mta_sts_delivery("testing", "success"),
            }
        }
        Mode::Enforce => {
            if results.iter().any(Result::is_ok) {
                metrics::mta_sts_delivery("enforce", "success");
                return;
            }
            let tls_failed = results.iter().any(|r| {
                r.as_ref()
                    .err()
                    .is_some_and(|f| !f.permanent && is_tls_failure(&f.text))
            });
            if tls_failed {
                metrics::mta_sts_delivery("enforce", "failure");
                tracing::warn!(
                    domain,
                    id,
                    "MTA-STS policy enforce: no allowed MX host could be reached over TLS with a \
                     valid certificate; deferred"
                );
            }
        }
    }
}

/// The client's texts for a failed STARTTLS or handshake.
fn is_tls_failure(text: &str) -> bool {
    text.contains("TLS handshake") || text.contains("does not offer STARTTLS")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates() -> Vec<Candidate> {
        ["mx2.a.test", "other.test", "mx1.a.test"]
            .iter()
            .enumerate()
            .map(|(i, name)| Candidate {
                name: name.to_string(),
                addr: std::net::SocketAddr::from(([192, 0, 2, i as u8 + 1], 25)),
            })
            .collect()
    }

    fn applied(mode: Mode) -> Applied {
        Applied {
            domain: "a.test".into(),
            id: "1".into(),
            policy: Arc::new(Policy {
                mode,
                mx: vec!["*.a.test".into()],
                max_age: 60,
            }),
        }
    }

    #[test]
    fn enforce_keeps_the_allowed_hosts_in_order_and_checks_their_certificates() {
        let target = super::super::route::Router::default().target("x@a.test");
        assert!(target.mta_sts);
        let names = |c: &[Candidate]| c.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        let (hosts, checked) =
            restrict(Some(&applied(Mode::Enforce)), candidates(), &target).expect("allowed");
        assert_eq!(names(&hosts), ["mx2.a.test", "mx1.a.test"]);
        assert_eq!(
            (checked.tls, checked.tls_verify),
            (ClientTls::Required, true)
        );
        for mode in [Mode::Testing, Mode::None] {
            let (hosts, same) = restrict(Some(&applied(mode)), candidates(), &target).expect("all");
            assert_eq!(names(&hosts), names(&candidates()), "{mode:?}");
            assert_eq!(same, target);
        }
        let only_other = vec![candidates().remove(1)];
        let deferred = restrict(Some(&applied(Mode::Enforce)), only_other, &target)
            .expect_err("no allowed host");
        assert!(
            !deferred.permanent && deferred.text.contains("MTA-STS"),
            "{deferred:?}"
        );
    }
}
