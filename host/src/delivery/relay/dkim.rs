//! DKIM signing of outgoing mail (RFC 6376, RFC 8463 for Ed25519), with `mail-auth`: one key
//! per sender domain from `[[dkim]]`, chosen by the domain of the From address (or the nearest
//! parent domain with a key), applied by the relay after the deliver stage so that the
//! signature covers exactly what is sent. Also the key generator behind `mailgate dkim keygen`.

use base64::Engine as _;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::generate::DkimKeyPair;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};

use crate::config::{Config, DkimAlgorithm, DkimConfig};
use crate::sender_auth::key::{dns_record, rsa_modulus_bits, signed_headers, PrivateKey};

enum Signer {
    Ed25519(DkimSigner<Ed25519Key, Done>),
    /// With the size of its modulus in bits.
    Rsa(DkimSigner<RsaKey<Sha256>, Done>, usize),
}

/// RSA keys up to this size sign in about 0.3 ms here (`cargo xtask bench dkim`): quick enough
/// to sign in place; larger ones take milliseconds.
const QUICK_RSA_BITS: usize = 2048;

/// The configured signing keys.
#[derive(Default)]
pub struct Signers {
    /// (domain, signer), domains in lowercase.
    keys: Vec<(String, Signer)>,
}

impl Signers {
    /// Reads every `[[dkim]]` key; the first that cannot be used is the error, naming the file.
    pub fn load(config: &Config) -> Result<Signers, String> {
        let mut keys = Vec::new();
        for entry in &config.dkim {
            let path = config.resolve(&entry.key);
            let signer = signer(entry, &path)
                .map_err(|e| format!("dkim key {} ({}): {e}", path.display(), entry.domain))?;
            keys.push((entry.domain.to_ascii_lowercase(), signer));
        }
        Ok(Signers { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// True when every key signs in well under a millisecond (Ed25519 in tens of
    /// microseconds, RSA up to 2048 bits in about 0.3 ms), not milliseconds.
    pub fn all_quick(&self) -> bool {
        self.keys.iter().all(|(_, signer)| match signer {
            Signer::Ed25519(_) => true,
            Signer::Rsa(_, bits) => *bits <= QUICK_RSA_BITS,
        })
    }

    /// The `DKIM-Signature` fields (with their CRLFs) for `message`: one per key of the From
    /// domain, or of its nearest parent with keys (an Ed25519 and an RSA key of one domain
    /// sign twice, as RFC 8463 suggests). `None` when no key applies.
    pub fn sign(&self, message: &[u8]) -> Option<Result<String, String>> {
        if self.keys.is_empty() {
            return None;
        }
        let mut fields = String::new();
        for signer in self.for_domain(&from_domain(message)?)? {
            let signature = match signer {
                Signer::Ed25519(s) => s.sign(message),
                Signer::Rsa(s, _) => s.sign(message),
            };
            match signature {
                Ok(signature) => fields.push_str(&signature.to_header()),
                Err(e) => return Some(Err(format!("DKIM signing failed: {e}"))),
            }
        }
        Some(Ok(fields))
    }

    fn for_domain(&self, domain: &str) -> Option<Vec<&Signer>> {
        let mut candidate = domain;
        loop {
            let signers: Vec<&Signer> = self
                .keys
                .iter()
                .filter(|(d, _)| d == candidate)
                .map(|(_, signer)| signer)
                .collect();
            if !signers.is_empty() {
                return Some(signers);
            }
            candidate = candidate.split_once('.')?.1;
        }
    }
}

/// The domain of the message's (first) From address, in lowercase.
fn from_domain(message: &[u8]) -> Option<String> {
    let header = &message[..crate::message::header::HeaderBlock::parse(message, 0).body_start];
    let header = crate::message::header::bounded(header);
    let parsed = mail_parser::MessageParser::new().parse_headers(&header)?;
    let address = parsed.from()?.first()?.address()?;
    let domain = address.rsplit_once('@')?.1.trim_end_matches('>');
    (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

fn signer(entry: &DkimConfig, path: &std::path::Path) -> Result<Signer, String> {
    let headers = signed_headers(entry)?;
    Ok(match PrivateKey::load(entry.algorithm, path)? {
        PrivateKey::Ed25519(key) => Signer::Ed25519(configured(key, entry, headers)),
        PrivateKey::Rsa(key) => {
            let bits = rsa_modulus_bits(&key.public_key()).unwrap_or(usize::MAX);
            Signer::Rsa(configured(key, entry, headers), bits)
        }
    })
}

/// A signer for `key` with the entry's domain, selector and headers, relaxed/relaxed.
fn configured<T: SigningKey>(
    key: T,
    entry: &DkimConfig,
    headers: Vec<String>,
) -> DkimSigner<T, Done> {
    DkimSigner::from_key(key)
        .domain(&entry.domain)
        .selector(&entry.selector)
        .headers(headers)
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

/// A new key: its PEM text (PKCS#8 v1 for ed25519, as RFC 8410 and OpenSSL have it; PKCS#1 for RSA) and the value of the TXT
/// record to publish at `<selector>._domainkey.<domain>` (`dns_record`: the RSA key as a
/// SubjectPublicKeyInfo, the Ed25519 key raw).
pub fn keygen(algorithm: DkimAlgorithm, rsa_bits: usize) -> Result<(String, String), String> {
    let (pair, label) = match algorithm {
        DkimAlgorithm::Ed25519Sha256 => (DkimKeyPair::generate_ed25519(), "PRIVATE KEY"),
        DkimAlgorithm::RsaSha256 => (DkimKeyPair::generate_rsa(rsa_bits), "RSA PRIVATE KEY"),
    };
    let pair = pair.map_err(|e| format!("key generation failed: {e}"))?;
    let der = match algorithm {
        DkimAlgorithm::Ed25519Sha256 => {
            crate::sender_auth::key::ed25519_pkcs8_v1(pair.private_key())
                .ok_or("key generation failed: an unexpected Ed25519 key form")?
        }
        DkimAlgorithm::RsaSha256 => pair.private_key().to_vec(),
    };
    let body = base64::engine::general_purpose::STANDARD.encode(&der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    Ok((pem, dns_record(algorithm, pair.public_key())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_from_domain_picks_the_key_of_it_or_its_nearest_parent() {
        let raw = b"From: Alice <alice@Mail.Example.ORG>\r\nSubject: hi\r\n\r\nbody\r\n";
        assert_eq!(from_domain(raw).as_deref(), Some("mail.example.org"));
        assert_eq!(from_domain(b"Subject: no from\r\n\r\nx\r\n"), None);
        let dir = tempfile::tempdir().expect("tempdir");
        let (pem, record) = keygen(DkimAlgorithm::Ed25519Sha256, 0).expect("keygen");
        assert!(record.starts_with("v=DKIM1; k=ed25519; p="), "{record}");
        std::fs::write(dir.path().join("k.pem"), pem).expect("write");
        let text = "[[dkim]]\ndomain = \"example.org\"\nselector = \"s1\"\nkey = \"k.pem\"\nalgorithm = \"ed25519-sha256\"\n";
        let config = Config::parse(
            text,
            std::path::Path::new("t.toml"),
            dir.path().to_path_buf(),
        )
        .expect("config");
        let signers = Signers::load(&config).expect("load");
        let header = signers.sign(raw).expect("a key applies").expect("signed");
        assert!(header.starts_with("DKIM-Signature:"), "{header}");
        assert!(
            header.contains("d=example.org") && header.contains("s=s1"),
            "{header}"
        );
        assert!(header.contains("a=ed25519-sha256"), "{header}");
        let other = b"From: bob@example.net\r\n\r\nx\r\n";
        assert!(signers.sign(other).is_none());
    }

    #[test]
    fn rsa_keys_up_to_2048_bits_are_quick_and_larger_ones_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let load = |bits: usize| {
            let (pem, _) = keygen(DkimAlgorithm::RsaSha256, bits).expect("keygen");
            std::fs::write(dir.path().join("k.pem"), pem).expect("write");
            let text = "[[dkim]]\ndomain = \"example.org\"\nselector = \"s1\"\nkey = \"k.pem\"\nalgorithm = \"rsa-sha256\"\n";
            let config = Config::parse(text, std::path::Path::new("t.toml"), dir.path().into())
                .expect("config");
            Signers::load(&config).expect("load")
        };
        assert!(load(2048).all_quick());
        assert!(!load(3072).all_quick());
        assert_eq!(rsa_modulus_bits(b"\x30\x03\x02\x01"), None, "cut short");
        assert_eq!(rsa_modulus_bits(b"not der"), None);
    }

    #[test]
    fn keygen_publishes_rsa_as_subject_public_key_info_and_ed25519_raw() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let p = |record: &str| {
            let value = record.rsplit_once("p=").expect("p=").1;
            b64.decode(value).expect("base64")
        };
        let (_, record) = keygen(DkimAlgorithm::RsaSha256, 2048).expect("keygen");
        assert!(
            record.starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"),
            "{record}"
        );
        let spki = p(&record);
        assert_eq!(spki.len(), 294, "2048-bit SubjectPublicKeyInfo");
        assert_eq!(
            rsa_modulus_bits(&spki[24..]),
            Some(2048),
            "the RSAPublicKey inside"
        );
        let (_, record) = keygen(DkimAlgorithm::Ed25519Sha256, 0).expect("keygen");
        assert!(record.starts_with("v=DKIM1; k=ed25519; p="), "{record}");
        assert_eq!(p(&record).len(), 32, "the raw key (RFC 8463)");
    }

    #[test]
    fn unusable_keys_are_refused_with_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("bad.pem"), "not a key").expect("write");
        let text = "[[dkim]]\ndomain = \"example.org\"\nselector = \"s1\"\nkey = \"bad.pem\"\n";
        let config = Config::parse(
            text,
            std::path::Path::new("t.toml"),
            dir.path().to_path_buf(),
        )
        .expect("config");
        let err = Signers::load(&config).err().expect("refused");
        assert!(
            err.contains("bad.pem") && err.contains("example.org"),
            "{err}"
        );
    }
}
