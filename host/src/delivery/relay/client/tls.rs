//! The client's TLS settings: the system's roots when the route checks certificates, else a
//! verifier that takes any certificate but still checks the handshake (RFC 7435).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::Failure;

/// Client TLS settings: checked against the system's roots, or (opportunistic TLS, RFC 7435)
/// encryption without authentication.
pub(super) fn tls_config(verify: bool) -> Result<Arc<rustls::ClientConfig>, Failure> {
    static CHECKED: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    static UNCHECKED: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    let cell = if verify { &CHECKED } else { &UNCHECKED };
    cell.get_or_init(|| build_tls_config(verify))
        .clone()
        .map_err(Failure::temporary)
}

fn build_tls_config(verify: bool) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = if verify {
        builder
            .with_root_certificates(roots(None)?)
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Certificate checks against the system's roots and the PEM certificates of
/// `[relay] extra-roots`: as client settings, and as a verifier for connections made without
/// them whose certificate is still to be judged (MTA-STS `testing`).
#[derive(Debug, Clone)]
pub struct CheckedTls {
    pub config: Arc<rustls::ClientConfig>,
    verifier: Arc<WebPkiServerVerifier>,
}

impl CheckedTls {
    /// With the system's roots and those in the file `extra`.
    pub fn new(extra: Option<&Path>) -> Result<CheckedTls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots(extra)?), provider.clone())
                .build()
                .map_err(|e| format!("TLS setup: {e}"))?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_webpki_verifier(verifier.clone())
            .with_no_client_auth();
        Ok(CheckedTls {
            config: Arc::new(config),
            verifier,
        })
    }

    /// Whether the certificate a finished handshake got is valid for `name`.
    pub fn judge(
        &self,
        session: &rustls::ClientConnection,
        name: &ServerName<'_>,
    ) -> Result<(), String> {
        let Some((end_entity, intermediates)) = session
            .peer_certificates()
            .and_then(|chain| chain.split_first())
        else {
            return Err("no certificate".into());
        };
        self.verifier
            .verify_server_cert(end_entity, intermediates, name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn roots(extra: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("{}: no certificate", path.display()));
        }
    }
    if roots.is_empty() {
        return Err("no trusted root certificates found on this system".into());
    }
    Ok(roots)
}

/// Accepts any certificate but still checks the handshake signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
