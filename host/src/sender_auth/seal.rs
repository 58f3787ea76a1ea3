//! ARC sealing (RFC 8617 §5.1): the gateway adds its own ARC set to received mail, so that
//! the next hop can trust the results it found even after its plugins changed the message.
//! The set's chain validation status (`cv=`) and its ARC-Authentication-Results are what the
//! checks found as the message came in; its ARC-Message-Signature covers the message as it
//! leaves the data stage, edits included.

use mail_auth::arc::{ArcSealer, Set};
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::{Header, HeaderWriter};
use mail_auth::dkim::{Canonicalization, Done};
use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimResult};

use super::key::PrivateKey;
use crate::config::{Config, DkimConfig};

enum Key {
    Ed25519(ArcSealer<Ed25519Key, Done>),
    Rsa(ArcSealer<RsaKey<Sha256>, Done>),
}

pub struct Sealer {
    key: Key,
}

/// What a seal needs from the checks made when the message came in.
#[derive(Debug, Clone)]
pub struct SealInput {
    /// The results, written as ARC-Authentication-Results: the value past `i=`, on one line
    /// (`AuthResults::sealed_value`).
    pub(super) results: String,
    /// The ARC chain's validation as received.
    pub(super) chain: DkimResult,
}

impl Sealer {
    /// The `[arc-seal]` key, if configured; an unusable key is an error naming its file.
    pub fn load(config: &Config) -> Result<Option<Sealer>, String> {
        let Some(entry) = &config.arc_seal else {
            return Ok(None);
        };
        let path = config.resolve(&entry.key);
        let key = PrivateKey::load(entry.algorithm, &path)
            .map_err(|e| format!("arc-seal key {} ({}): {e}", path.display(), entry.domain))?;
        let headers = super::key::signed_headers(entry)
            .map_err(|e| format!("arc-seal ({}): {e}", entry.domain))?;
        let key = match key {
            PrivateKey::Ed25519(key) => Key::Ed25519(sealer(key, entry, headers)),
            PrivateKey::Rsa(key) => Key::Rsa(sealer(key, entry, headers)),
        };
        Ok(Some(Sealer { key }))
    }

    /// The ARC set (its three fields, CRLFs included) to put on top of `raw`.
    pub fn seal(&self, raw: &[u8], input: &SealInput) -> Result<String, String> {
        let message = AuthenticatedMessage::parse(raw).ok_or("unreadable message")?;
        // The chain as it came in: its sets, as the message still carries them, and the
        // validation made then (the edits since may have broken earlier signatures).
        let mut chain = ArcOutput::default().with_result(input.chain.clone());
        let sets = message
            .as_headers
            .iter()
            .zip(&message.ams_headers)
            .zip(&message.aar_headers);
        for ((seal, signature), results) in sets {
            chain = chain.with_set(Set {
                signature: Header::new(signature.name, signature.value, &signature.header),
                seal: Header::new(seal.name, seal.value, &seal.header),
                results: Header::new(results.name, results.value, &results.header),
            });
        }
        // mail-auth writes (and signs) its "host name" verbatim: given our whole results,
        // written as RFC 8601 wants (its own writer leaves `header.b` unquoted).
        let results = AuthenticationResults::new(&input.results);
        let set = match &self.key {
            Key::Ed25519(sealer) => sealer.seal(&message, &results, &chain),
            Key::Rsa(sealer) => sealer.seal(&message, &results, &chain),
        }
        .map_err(|e| format!("ARC sealing failed: {e}"))?;
        Ok(set.to_header())
    }
}

fn sealer<T: mail_auth::common::crypto::SigningKey<Hasher = Sha256>>(
    key: T,
    entry: &DkimConfig,
    headers: Vec<String>,
) -> ArcSealer<T, Done> {
    ArcSealer::from_key(key)
        .domain(&entry.domain)
        .selector(&entry.selector)
        .headers(headers)
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}
