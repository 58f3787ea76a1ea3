//! `mailgate dkim keygen`.

use anyhow::Context;

/// `mailgate dkim keygen`: the key file, then what to publish and configure.
pub(crate) fn dkim_keygen(
    domain: &str,
    selector: &str,
    algorithm: mailgate::config::DkimAlgorithm,
    bits: u16,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (pem, record) = mailgate::delivery::relay::dkim::keygen(algorithm, usize::from(bits))
        .map_err(anyhow::Error::msg)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    file.write_all(pem.as_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("key written to {} (mode 0600)\n", out.display());
    println!("publish this TXT record:\n");
    println!("{selector}._domainkey.{domain}. IN TXT \"{record}\"\n");
    println!("and sign with it:\n");
    println!(
        "[[dkim]]\ndomain = \"{domain}\"\nselector = \"{selector}\"\nkey = \"{}\"\nalgorithm = \"{}\"",
        out.display(),
        algorithm.name()
    );
    Ok(())
}
