//! TLS for the listeners: the configured certificate, or a self-signed one generated on first
//! start and kept in the data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::file::{self, Links};

/// Loads the configured certificate and key, or generates (once) a self-signed pair for
/// `hostname` under `<data>/tls/`.
pub fn acceptor(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
    hostname: &str,
) -> anyhow::Result<TlsAcceptor> {
    let (cert_path, key_path, links) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf(), Links::Follow),
        // The generated pair is the server's own file in its own directory: never a link.
        (None, None) => {
            let (c, k) = self_signed(data_dir, hostname)?;
            (c, k, Links::Refuse)
        }
        _ => anyhow::bail!("server.tls-cert and server.tls-key must be given together"),
    };
    let (certs, key) = read_pair(&cert_path, &key_path, links)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The certificate chain and private key at these paths, each a regular file of bounded size.
pub fn read_pair(
    cert_path: &Path,
    key_path: &Path,
    links: Links,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let read = |path: &Path| {
        file::read_regular(path, file::MAX_SMALL_FILE, links)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    };
    // Both read before either is parsed: an unusable file is named whichever it is.
    let (cert_pem, key_pem) = (read(cert_path)?, read(key_path)?);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| anyhow::anyhow!("{}: {e}", key_path.display()))?;
    Ok((certs, key))
}

fn self_signed(data_dir: &Path, hostname: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = data_dir.join("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir)?;
    let mut names = vec![hostname.to_string()];
    if hostname != "localhost" {
        names.push("localhost".into());
    }
    let generated = rcgen::generate_simple_self_signed(names)?;
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, generated.cert.pem())?;
    tracing::info!(
        "generated a self-signed certificate for {hostname} in {}",
        dir.display()
    );
    Ok((cert, key))
}

/// Writes a file only the owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}
