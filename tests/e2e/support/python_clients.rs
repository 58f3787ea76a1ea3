//! Clients written with other people's libraries, in Python: imaplib, jmapc, Selenium with
//! Chromium, dkimpy.

use std::process::Command;

use crate::{pyenv_python, root, Gateway};

/// Runs a Python script (from tests/e2e/clients) with arguments; returns its stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    let path = root().join("tests/e2e/clients").join(script);
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `jmap_client.py` (the jmapc library from PyPI) against the gateway's JMAP listener
/// as `user` (password `pw-` + local part); its JSON output.
pub fn jmap_client(gw: &Gateway, user: &str, args: &[&str]) -> serde_json::Value {
    let local = user.split('@').next().unwrap_or(user);
    let out = Command::new(pyenv_python())
        .arg(root().join("tests/e2e/clients/jmap_client.py"))
        .arg(gw.jmap.to_string())
        .arg(user)
        .arg(format!("pw-{local}"))
        .args(args)
        .output()
        .expect("target/pyenv/bin/python (made by cargo xtask test)");
    assert!(
        out.status.success(),
        "jmap_client.py {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "jmap_client.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs `webmail_browser.py` (headless Chromium driven by Selenium) against the gateway's
/// webmail page as `user` (password `pw-` + local part); its JSON output. Screenshots are
/// kept in `target/test-artifacts/webmail/`.
pub fn webmail_browser(gw: &Gateway, user: &str, args: &[&str]) -> serde_json::Value {
    let local = user.split('@').next().unwrap_or(user);
    let artifacts = root().join("target/test-artifacts/webmail");
    let out = Command::new(pyenv_python())
        .arg(root().join("tests/e2e/clients/webmail_browser.py"))
        .arg(gw.jmap.to_string())
        .arg(user)
        .arg(format!("pw-{local}"))
        .arg(&artifacts)
        .args(args)
        .output()
        .expect("target/pyenv/bin/python (made by cargo xtask test)");
    assert!(
        out.status.success(),
        "webmail_browser.py {args:?} failed (screenshots in {}):\n{}\n{}",
        artifacts.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "webmail_browser.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A folder's messages as Python's imaplib sees them (`imap_flags.py`), after an optional
/// `UID STORE` given as `[uid, "+FLAGS", "(\\Seen)"]`: each `{uid, flags, subject}`.
pub fn imap_flags(
    gw: &Gateway,
    user: &str,
    folder: &str,
    change: &[&str],
) -> Vec<serde_json::Value> {
    let local = user.split('@').next().unwrap_or(user);
    let port = gw.imaps.to_string();
    let password = format!("pw-{local}");
    let mut args = vec![port.as_str(), user, password.as_str(), folder];
    args.extend(change);
    let out = python("imap_flags.py", &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("imap_flags.py: {e}: {out}"))
}

/// What dkimpy (Debian's python3-dkim) says of `message`, the DNS answered from `records`:
/// `mode` "dkim" gives one line per signature ("pass d=... a=..."), "arc" one line
/// "cv=RESULT sets=N ...".
pub fn dkimpy_verify(mode: &str, message: &[u8], records: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("message.eml");
    std::fs::write(&file, message).expect("write");
    let out = Command::new("/usr/bin/python3")
        .arg(root().join("tests/e2e/clients/dkim_verify.py"))
        .arg(mode)
        .arg(&file)
        .args(records.iter().map(|(name, txt)| format!("{name}={txt}")))
        .output()
        .expect("/usr/bin/python3 (Debian package python3-dkim)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The output of a Python client (run with Debian's /usr/bin/python3, which has dkimpy) that
/// reads `input` on its standard input.
pub fn python_filter(script: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("/usr/bin/python3")
        .arg(root().join("tests/e2e/clients").join(script))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("input");
    let out = child.wait_with_output().expect(script);
    assert!(
        out.status.success(),
        "{script} failed on:\n{}",
        String::from_utf8_lossy(input)
    );
    out.stdout
}
