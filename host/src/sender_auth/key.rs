//! Private keys for signing (DKIM in the relay, ARC seals of received mail), from PEM files:
//! PKCS#8 for Ed25519, PKCS#8 or PKCS#1 for RSA; and the DNS record that publishes a key's
//! public half.

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
                // PKCS#8 v1 (RFC 8410, what OpenSSL and `mailgate dkim keygen` write) or v2
                // (with the public key, what earlier builds wrote).
                let der = der.secret_pkcs8_der();
                let key = Ed25519Key::from_pkcs8_der(der)
                    .or_else(|_| Ed25519Key::from_pkcs8_maybe_unchecked_der(der))
                    .map_err(|e| format!("not an ed25519 key: {e}"))?;
                PrivateKey::Ed25519(key)
            }
            DkimAlgorithm::RsaSha256 => PrivateKey::Rsa(
                RsaKey::<Sha256>::from_key_der(key).map_err(|e| format!("not an RSA key: {e}"))?,
            ),
        })
    }
}

impl PrivateKey {
    /// The value of the TXT record that publishes this key at `<selector>._domainkey.<domain>`.
    pub fn dns_record(&self) -> String {
        match self {
            PrivateKey::Ed25519(key) => dns_record(DkimAlgorithm::Ed25519Sha256, &key.public_key()),
            PrivateKey::Rsa(key) => dns_record(DkimAlgorithm::RsaSha256, &key.public_key()),
        }
    }
}

/// The start of an Ed25519 PKCS#8 document up to its 32-byte seed, v2 (RFC 5958
/// `OneAsymmetricKey` with the public key after the seed, what the crypto library generates)
/// and v1 (RFC 8410 §7, the seed alone).
const ED25519_V2_HEAD: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const ED25519_V1_HEAD: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// An Ed25519 private key as PKCS#8 v1 (RFC 8410), the form OpenSSL 3.0 and OpenDKIM read (they
/// refuse the v2 document the crypto library generates); `None` if `pkcs8` is not the v2 (or
/// v1) document of an Ed25519 key.
pub fn ed25519_pkcs8_v1(pkcs8: &[u8]) -> Option<Vec<u8>> {
    let seed = pkcs8
        .strip_prefix(&ED25519_V2_HEAD)
        .filter(|rest| rest.len() == 32 + 35 && rest[32..35] == [0x81, 0x21, 0x00])
        .or_else(|| {
            pkcs8
                .strip_prefix(&ED25519_V1_HEAD)
                .filter(|rest| rest.len() == 32)
        })?
        .get(..32)?;
    let mut v1 = ED25519_V1_HEAD.to_vec();
    v1.extend_from_slice(seed);
    Some(v1)
}

/// The TXT record of a public key: `v=DKIM1; k=rsa|ed25519; p=BASE64`. For RSA, `public` is
/// the key as an `RSAPublicKey` (PKCS#1, what the crypto libraries hand out) and `p=` is its
/// `SubjectPublicKeyInfo` (RFC 6376 §3.6.1): OpenDKIM and rspamd reject the PKCS#1 form
/// (permerror), though dkimpy and mail-auth take both. For Ed25519, `p=` is the raw 32-byte
/// key (RFC 8463 §4).
pub fn dns_record(algorithm: DkimAlgorithm, public: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    match algorithm {
        DkimAlgorithm::Ed25519Sha256 => format!("v=DKIM1; k=ed25519; p={}", b64.encode(public)),
        DkimAlgorithm::RsaSha256 => {
            format!("v=DKIM1; k=rsa; p={}", b64.encode(rsa_spki(public)))
        }
    }
}

/// `SubjectPublicKeyInfo` (RFC 5280 §4.1) of an RSA key given as `RSAPublicKey` (RFC 8017):
/// the algorithm `rsaEncryption` with NULL parameters, and the key as a BIT STRING.
pub fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    /// SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }
    const RSA_ENCRYPTION: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0x03];
    der_length(pkcs1.len() + 1, &mut bit_string);
    bit_string.push(0); // no unused bits
    bit_string.extend_from_slice(pkcs1);
    let mut spki = vec![0x30];
    der_length(RSA_ENCRYPTION.len() + bit_string.len(), &mut spki);
    spki.extend_from_slice(&RSA_ENCRYPTION);
    spki.extend_from_slice(&bit_string);
    spki
}

/// A DER definite length: one byte below 128, else the count of big-endian bytes, then them.
fn der_length(len: usize, out: &mut Vec<u8>) {
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.push(short),
        _ => {
            let bytes = len.to_be_bytes();
            let first = bytes
                .iter()
                .position(|&b| b != 0)
                .unwrap_or(bytes.len() - 1);
            let count = bytes.len() - first;
            out.push(0x80 | u8::try_from(count).unwrap_or(0x7f));
            out.extend_from_slice(&bytes[first..]);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_short_and_long() {
        let encode = |len: usize| {
            let mut out = Vec::new();
            der_length(len, &mut out);
            out
        };
        assert_eq!(encode(0x7f), [0x7f]);
        assert_eq!(encode(0x80), [0x81, 0x80]);
        assert_eq!(encode(0x10f), [0x82, 0x01, 0x0f]);
    }

    #[test]
    fn wraps_a_small_rsa_public_key_as_openssl_does() {
        // RSAPublicKey { n = 0x00c3, e = 3 } and what `openssl pkey -pubout -outform DER`
        // makes of the same key.
        let pkcs1 = [0x30, 0x07, 0x02, 0x02, 0x00, 0xc3, 0x02, 0x01, 0x03];
        let mut expected = vec![
            0x30, 0x1b, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01,
            0x01, 0x05, 0x00, 0x03, 0x0a, 0x00,
        ];
        expected.extend_from_slice(&pkcs1);
        assert_eq!(rsa_spki(&pkcs1), expected);
    }

    #[test]
    fn ed25519_keys_are_written_as_v1_and_read_in_either_form() {
        let v2 = Ed25519Key::generate_pkcs8().expect("generate");
        let v1 = ed25519_pkcs8_v1(&v2).expect("an ed25519 v2 document");
        assert_eq!(
            v1.len(),
            48,
            "RFC 8410 §7: version 0, the algorithm, the seed"
        );
        assert_eq!(&v1[..5], [0x30, 0x2e, 0x02, 0x01, 0x00]);
        assert_eq!(ed25519_pkcs8_v1(&v1), Some(v1.clone()), "already v1");
        assert_eq!(ed25519_pkcs8_v1(&v2[..40]), None, "cut short");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut public = Vec::new();
        for (name, der) in [("v1.pem", &v1), ("v2.pem", &v2)] {
            use base64::Engine as _;
            let body = base64::engine::general_purpose::STANDARD.encode(der);
            let pem = format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n");
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write");
            match PrivateKey::load(DkimAlgorithm::Ed25519Sha256, &path) {
                Ok(key) => public.push(key.dns_record()),
                Err(e) => panic!("{name}: {e}"),
            }
        }
        assert_eq!(public[0], public[1], "the same key either way");
    }
}
