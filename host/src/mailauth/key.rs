//! Private keys for signing (DKIM in the relay, ARC seals of received mail), from PEM files:
//! PKCS#8 for Ed25519, PKCS#8 or PKCS#1 for RSA.

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use crate::config::{DkimAlgorithm, DkimConfig};

/// Header fields signed by default. From is listed twice: the second, matching no field, says
/// that the message has exactly one From (oversigning); fields listed but absent are signed as
/// absent, so that none of them can be added on the way either.
pub const DEFAULT_HEADERS: [&str; 15] = [
    "From",
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// A private key of either algorithm, read from a PEM file.
pub enum PrivateKey {
    Ed25519(Ed25519Key),
    Rsa(RsaKey<Sha256>),
}

impl PrivateKey {
    /// Reads the key at `path`, which must be of `algorithm`.
    pub fn load(algorithm: DkimAlgorithm, path: &std::path::Path) -> Result<PrivateKey, String> {
        use crate::config::file;
        let pem = file::read_regular(path, file::MAX_SMALL_FILE, file::Links::Follow)
            .map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| format!("not a PEM private key: {e:?}"))?;
        Ok(match algorithm {
            DkimAlgorithm::Ed25519Sha256 => {
                let PrivateKeyDer::Pkcs8(der) = key else {
                    return Err("an ed25519 key must be PKCS#8 (BEGIN PRIVATE KEY)".into());
                };
                let key = Ed25519Key::from_pkcs8_der(der.secret_pkcs8_der())
                    .map_err(|e| format!("not an ed25519 key: {e}"))?;
                PrivateKey::Ed25519(key)
            }
            DkimAlgorithm::RsaSha256 => PrivateKey::Rsa(
                RsaKey::<Sha256>::from_key_der(key).map_err(|e| format!("not an RSA key: {e}"))?,
            ),
        })
    }
}

/// The header fields an entry signs: its own list (which must include From) or the defaults.
pub fn signed_headers(entry: &DkimConfig) -> Result<Vec<String>, String> {
    match &entry.headers {
        Some(headers) if !headers.iter().any(|h| h.eq_ignore_ascii_case("from")) => {
            Err("`headers` must include From".into())
        }
        Some(headers) => Ok(headers.clone()),
        None => Ok(DEFAULT_HEADERS.iter().map(|h| h.to_string()).collect()),
    }
}

/// The size in bits of the modulus of an RSA public key in DER (`RSAPublicKey`: a SEQUENCE of
/// the modulus and the exponent, both INTEGERs), or `None` if it is not one.
pub fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    /// A tag and its definite length: (header size, content length).
    fn element(bytes: &[u8], tag: u8) -> Option<(usize, usize)> {
        if *bytes.first()? != tag {
            return None;
        }
        let first = *bytes.get(1)?;
        if first < 0x80 {
            return Some((2, usize::from(first)));
        }
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let len = bytes
            .get(2..2 + count)?
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        Some((2 + count, len))
    }
    let (header, _) = element(der, 0x30)?;
    let rest = der.get(header..)?;
    let (header, len) = element(rest, 0x02)?;
    let modulus = rest.get(header..header.checked_add(len)?)?;
    let significant = modulus.iter().skip_while(|&&b| b == 0).count();
    Some(significant * 8)
}
