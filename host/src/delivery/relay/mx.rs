//! MX resolution (RFC 5321 §5.1): MX hosts by preference with equal preferences shuffled; no MX
//! means the domain itself (implicit MX); a null MX (RFC 7505) means the domain takes no mail.
//! Address lookups follow CNAMEs (the resolver does).

use std::net::{IpAddr, SocketAddr};

use crate::dns::{Dns, DnsFailure, RecordType};

/// Why no host could be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// Retry later (DNS timeout, SERVFAIL).
    Temporary(String),
    /// Bounce (no such domain, null MX).
    Permanent(String),
}

/// One host to try: its name (for TLS and logs) and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub addr: SocketAddr,
}

/// The MX host names for `domain`, best first.
pub async fn mx_hosts(dns: &dyn Dns, domain: &str) -> Result<Vec<String>, ResolveError> {
    if let Some(literal) = address_literal(domain) {
        return Ok(vec![literal.to_string()]);
    }
    let answers = match dns.lookup(RecordType::Mx, domain).await {
        Ok(answers) => answers,
        Err(DnsFailure::NotFound) => return Ok(vec![domain.to_string()]),
        Err(DnsFailure::Temporary(e)) => {
            return Err(ResolveError::Temporary(format!(
                "MX lookup for {domain}: {e}"
            )))
        }
    };
    let mut records: Vec<(u16, String)> = answers
        .iter()
        .filter_map(|a| {
            let (pref, host) = a.trim().split_once(char::is_whitespace)?;
            Some((
                pref.parse().ok()?,
                host.trim().trim_end_matches('.').to_string(),
            ))
        })
        .collect();
    if records.iter().any(|(_, host)| host.is_empty()) {
        return Err(ResolveError::Permanent(format!(
            "{domain} does not accept mail (null MX)"
        )));
    }
    if records.is_empty() {
        return Err(ResolveError::Temporary(format!(
            "MX lookup for {domain}: unreadable answer {answers:?}"
        )));
    }
    // Shuffle, then a stable sort by preference keeps equal preferences in random order.
    shuffle(&mut records);
    records.sort_by_key(|(pref, _)| *pref);
    Ok(records.into_iter().map(|(_, host)| host).collect())
}

/// The addresses of one host (A, then AAAA), each with `port`.
pub async fn addresses(
    dns: &dyn Dns,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, ResolveError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let mut found = Vec::new();
    let mut temporary = None;
    for record in [RecordType::A, RecordType::Aaaa] {
        match dns.lookup(record, host).await {
            Ok(answers) => found.extend(
                answers
                    .iter()
                    .filter_map(|a| a.trim().parse::<IpAddr>().ok())
                    .map(|ip| SocketAddr::new(ip, port)),
            ),
            Err(DnsFailure::NotFound) => {}
            Err(DnsFailure::Temporary(e)) => temporary = Some(e),
        }
    }
    match (found.is_empty(), temporary) {
        (false, _) => Ok(found),
        (true, Some(e)) => Err(ResolveError::Temporary(format!("address of {host}: {e}"))),
        (true, None) => Err(ResolveError::Permanent(format!("{host} has no address"))),
    }
}

/// Every address to try for `domain`, in order. A host that does not resolve is skipped; the
/// error is permanent only when no host could ever resolve.
pub async fn candidates(
    dns: &dyn Dns,
    domain: &str,
    port: u16,
) -> Result<Vec<Candidate>, ResolveError> {
    let hosts = mx_hosts(dns, domain).await?;
    let mut out = Vec::new();
    let mut last = None;
    for host in hosts {
        match addresses(dns, &host, port).await {
            Ok(addrs) => out.extend(addrs.into_iter().map(|addr| Candidate {
                name: host.clone(),
                addr,
            })),
            Err(e) => last = Some(e),
        }
    }
    match (out.is_empty(), last) {
        (true, Some(e)) => Err(e),
        (true, None) => Err(ResolveError::Permanent(format!("no host for {domain}"))),
        _ => Ok(out),
    }
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]` as a recipient domain.
fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner
        .strip_prefix("IPv6:")
        .or_else(|| inner.strip_prefix("ipv6:"))
        .unwrap_or(inner);
    inner.parse().ok()
}

/// Fisher-Yates with a small xorshift seeded from the clock: enough to spread load.
fn shuffle<T>(items: &mut [T]) {
    let now = crate::mail::clock::since_epoch(std::time::SystemTime::now());
    let mut seed = now.as_nanos() as u64 | 1;
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::StaticDns;

    fn dns() -> StaticDns {
        let mut dns = StaticDns::default();
        dns.insert(
            RecordType::Mx,
            "two.test",
            vec!["20 backup.two.test.".into(), "10 primary.two.test.".into()],
        );
        dns.insert(RecordType::A, "primary.two.test", vec!["192.0.2.1".into()]);
        dns.insert(RecordType::A, "backup.two.test", vec!["192.0.2.2".into()]);
        dns.insert(RecordType::A, "plain.test", vec!["192.0.2.9".into()]);
        dns.insert(RecordType::Mx, "null.test", vec!["0 .".into()]);
        dns
    }

    #[tokio::test]
    async fn orders_by_preference_and_falls_back_to_a() {
        let dns = dns();
        let found = candidates(&dns, "two.test", 25).await.expect("mx");
        let names: Vec<&str> = found.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["primary.two.test", "backup.two.test"]);
        assert_eq!(found[0].addr, "192.0.2.1:25".parse().expect("addr"));
        let implicit = candidates(&dns, "plain.test", 2525).await.expect("a");
        assert_eq!(implicit[0].addr, "192.0.2.9:2525".parse().expect("addr"));
        assert!(matches!(
            candidates(&dns, "null.test", 25).await,
            Err(ResolveError::Permanent(_))
        ));
        assert!(matches!(
            candidates(&dns, "nowhere.test", 25).await,
            Err(ResolveError::Permanent(_))
        ));
        let literal = candidates(&dns, "[127.0.0.1]", 25).await.expect("literal");
        assert_eq!(literal[0].addr, "127.0.0.1:25".parse().expect("addr"));
    }

    #[test]
    fn shuffle_keeps_items() {
        let mut v: Vec<u32> = (0..10).collect();
        shuffle(&mut v);
        v.sort();
        assert_eq!(v, (0..10).collect::<Vec<_>>());
    }
}
