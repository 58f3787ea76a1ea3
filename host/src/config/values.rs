//! Value syntaxes shared by the tables: durations, `host:port`, store URLs.

use serde::Deserialize;

/// Parses `90`, `90s`, `5m`, `2h`, `5d`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 5m, 1h or 5d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{text:?}: unit must be s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs(n * seconds))
}

pub(super) fn duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::time::Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

pub(super) fn durations<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<std::time::Duration>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    if texts.is_empty() {
        return Err(serde::de::Error::custom(
            "the retry schedule needs at least one wait",
        ));
    }
    texts
        .iter()
        .map(|t| parse_duration(t).map_err(serde::de::Error::custom))
        .collect()
}

/// A store's URL from the config with its password (between `user:` and `@`) masked, for
/// logs and messages.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or("");
            let shown = if credentials.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{shown}@{host}")
        }
        None => url.to_string(),
    }
}

/// `host:port` with a non-empty host and a valid port (`[v6]:port` too).
pub fn is_host_port(text: &str) -> bool {
    split_host_port(text).is_some()
}

/// Splits `host:port`; brackets around an IPv6 host are removed.
pub fn split_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|&p| p > 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| (host.to_string(), port))
}
