//! Host services, wrapped for convenience.

use crate::bindings::mailgate::plugin::host;

/// Milliseconds since the Unix epoch, from the host's clock (fixed in harness cases).
pub fn now_ms() -> u64 {
    host::now_ms()
}

/// This plugin's table from the gateway config (`[plugin.config]`).
pub mod config {
    use super::host;

    /// A value by dotted key: strings as they are, numbers and booleans as text.
    pub fn get(key: &str) -> Option<String> {
        host::config_get(key)
    }

    /// A value, or `default` when absent.
    pub fn get_or(key: &str, default: &str) -> String {
        get(key).unwrap_or_else(|| default.to_string())
    }

    /// A value parsed into `T` (numbers, booleans), or `default` when absent or unparsable.
    pub fn parse_or<T: std::str::FromStr>(key: &str, default: T) -> T {
        get(key).and_then(|v| v.parse().ok()).unwrap_or(default)
    }

    /// An array of scalars as text (a scalar gives one item, a missing key none).
    pub fn list(key: &str) -> Vec<String> {
        host::config_list(key)
    }

    /// The whole table as JSON, for structured settings.
    pub fn json() -> String {
        host::config_json()
    }
}

/// The gateway's log, tagged with this plugin's name and the session id.
pub mod log {
    use super::host::{self, Level};

    /// A log line at `level` with structured fields.
    pub fn write(level: Level, message: &str, fields: &[(&str, &str)]) {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        host::log(level, message, &fields);
    }
    /// A debug line.
    pub fn debug(message: &str) {
        write(Level::Debug, message, &[]);
    }
    /// An info line.
    pub fn info(message: &str) {
        write(Level::Info, message, &[]);
    }
    /// A warning.
    pub fn warn(message: &str) {
        write(Level::Warn, message, &[]);
    }
    /// An error line.
    pub fn error(message: &str) {
        write(Level::Error, message, &[]);
    }
}

/// Notes shared by every plugin of the chain for one transaction.
pub mod notes {
    use super::host;

    /// The note under `key`, if a plugin of this transaction set one.
    pub fn get(key: &str) -> Option<String> {
        host::note_get(key)
    }
    /// Sets a note for the plugins after this one in this transaction.
    pub fn set(key: &str, value: &str) {
        host::note_set(key, value);
    }
}

/// The persistent per-plugin store (needs the `kv` capability, declared and granted).
/// Errors say whether the capability was not declared, not granted, or the store failed.
pub mod kv {
    use super::host::{self, Denied};

    /// The value under `key`, unless absent or expired.
    pub fn get(key: &str) -> Result<Option<String>, Denied> {
        host::kv_get(key)
    }
    /// `ttl_seconds: None` keeps the entry until deleted.
    pub fn set(key: &str, value: &str, ttl_seconds: Option<u32>) -> Result<(), Denied> {
        host::kv_set(key, value, ttl_seconds)
    }
    /// Removes `key`.
    pub fn delete(key: &str) -> Result<(), Denied> {
        host::kv_delete(key)
    }
    /// Adds `delta` to the integer at `key` and returns the new value, atomically across all
    /// instances (counters, rate limits). `ttl_seconds` starts a fixed window when the entry
    /// is created.
    pub fn incr(key: &str, delta: i64, ttl_seconds: Option<u32>) -> Result<i64, Denied> {
        host::kv_incr(key, delta, ttl_seconds)
    }
}

/// Files under the directory the operator granted (needs the `files` capability): block lists,
/// models. Paths are relative to that directory.
pub mod files {
    use super::host::{self, Denied};

    /// The whole file as bytes.
    pub fn read(path: &str) -> Result<Vec<u8>, Denied> {
        host::file_read(path)
    }

    /// The whole file as text (invalid UTF-8 replaced).
    pub fn read_text(path: &str) -> Result<String, Denied> {
        read(path).map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

/// DNS lookups (needs the `dns` capability, declared and granted).
pub mod dns {
    pub use super::host::{DnsError, RecordType};

    /// Looks `name` up; for PTR, `name` is an IP address.
    pub fn lookup(record: RecordType, name: &str) -> Result<Vec<String>, DnsError> {
        super::host::dns_lookup(record, name)
    }
}
