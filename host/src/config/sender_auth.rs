//! The `[auth]` table and the `[[dkim]]` and `[arc-seal]` keys: verifying received mail
//! and signing what leaves.

use std::path::PathBuf;

use serde::Deserialize;

/// A DKIM key signing the relay's outgoing mail whose From domain is `domain` (or under it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DkimConfig {
    pub domain: String,
    pub selector: String,
    /// The private key, PEM (PKCS#8; PKCS#1 too for RSA), relative to this file.
    pub key: PathBuf,
    #[serde(default)]
    pub algorithm: DkimAlgorithm,
    /// Header fields to sign; default: the usual set, From signed twice so that none can be
    /// added, and absent ones so that none can be added later.
    #[serde(default)]
    pub headers: Option<Vec<String>>,
}

/// Sender authentication of received mail: which methods run, and how results are labelled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AuthConfig {
    /// The methods to verify; empty (the default) verifies nothing.
    pub verify: Vec<AuthMethod>,
    /// The name in `Authentication-Results: NAME; ...`; default: `server.hostname`.
    pub authserv_id: Option<String>,
    /// How many parsed DNS answers (SPF, DKIM key, DMARC records, addresses) are kept.
    pub cache_entries: usize,
    /// The budget of one message's DNS lookups: SPF's from MAIL FROM, DKIM's, ARC's and
    /// DMARC's (side by side with what SPF still waits for) from the end of DATA; a method
    /// whose answers are not in by then reports `temperror`, the others what they found.
    pub timeout_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            verify: Vec::new(),
            authserv_id: None,
            cache_entries: 8192,
            timeout_ms: 10_000,
        }
    }
}

/// A sender authentication method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    Spf,
    Dkim,
    Dmarc,
    Arc,
}

/// The signature algorithm of a DKIM key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
pub enum DkimAlgorithm {
    /// RSA with SHA-256: what every verifier understands.
    #[default]
    #[serde(rename = "rsa-sha256")]
    #[value(name = "rsa-sha256")]
    RsaSha256,
    /// Ed25519 (RFC 8463): short keys, fast; many verifiers still want an RSA one beside it.
    #[serde(rename = "ed25519-sha256")]
    #[value(name = "ed25519-sha256")]
    Ed25519Sha256,
}

impl DkimAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            DkimAlgorithm::RsaSha256 => "rsa-sha256",
            DkimAlgorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }
}
