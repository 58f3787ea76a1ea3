//! Secrets the config names by file (`password-file`): read only when the file is private to
//! the server's user, so a password never sits in a world-readable place.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Largest secrets file: a password, not a document.
const MAX_SECRET: u64 = 64 * 1024;

/// The secret in `path`, without its final line break. Refused when the group or others may
/// read the file.
pub fn read(path: &Path) -> Result<String, String> {
    use crate::config::file;
    let shown = path.display();
    let (opened, len) =
        file::open_regular(path, file::Links::Follow).map_err(|e| format!("{shown}: {e}"))?;
    // The mode of what was opened, not of whatever the path names a moment later.
    let mode = opened
        .metadata()
        .map_err(|e| format!("{shown}: {e}"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown}: readable by others (mode {:o}); `chmod 600 {shown}`",
            mode & 0o777
        ));
    }
    let bytes = file::read_bounded(opened, len, MAX_SECRET).map_err(|e| format!("{shown}: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{shown}: not UTF-8 text"))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// `text` with every byte outside RFC 3986's unreserved set percent-encoded, for a password
/// placed in a URL.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_private_files_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret:@/\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read(&path).expect_err("world-readable");
        assert!(err.contains("readable by others (mode 644)"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read(&path), Ok("s3cret:@/".to_string()));
        assert_eq!(percent_encode("s3cret:@/"), "s3cret%3A%40%2F");
    }
}
