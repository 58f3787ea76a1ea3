//! The client networks that may relay without authentication (`server.relay-networks`).

use std::net::IpAddr;

use anyhow::Context;

/// Parsed `server.relay-networks`.
#[derive(Debug, Clone, Default)]
pub struct RelayNetworks(Vec<(IpAddr, u8)>);

impl RelayNetworks {
    pub fn parse(networks: &[String]) -> anyhow::Result<RelayNetworks> {
        let parsed = networks
            .iter()
            .map(|n| parse_network(n))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(RelayNetworks(parsed))
    }

    /// True when `ip` is in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|(net, bits)| in_network(ip, *net, *bits))
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
