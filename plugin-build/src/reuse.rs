//! Same sources, same bytes. componentize-py and componentize-js snapshot an interpreter whose
//! heap holds random seeds, so two builds of one source differ in their bytes: each rebuild
//! missed the gateway's cache of compiled plugins and paid the interpreter's cold compilation
//! again. A build is therefore keyed on its inputs (the tool and its flags, the contract world,
//! the helpers, every source file) and its result kept in a store per user, beside the tools:
//! a build whose inputs were built before gives the bytes of that build, at once.
//!
//! The store holds at most [`MAX_BYTES`]; the builds used least recently go first.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::Error;

/// The most the store keeps (a Python plugin is some 18 MB, a JavaScript one 12 MB).
pub const MAX_BYTES: u64 = 512 << 20;

/// Directories of a plugin that are not its sources: outputs, caches, harness cases.
const NOT_SOURCES: [&str; 5] = ["target", "__pycache__", ".git", "cases", "node_modules"];

/// The inputs of one build, hashed.
pub struct Inputs(Sha256);

impl Inputs {
    /// Starts with what names the tool and how it is run.
    pub fn new(tool: &str) -> Inputs {
        let mut hasher = Sha256::new();
        hasher.update(b"mailgate-plugin-build 1\0");
        hasher.update(tool.as_bytes());
        hasher.update(b"\0");
        Inputs(hasher)
    }

    /// Adds named bytes (a helper module).
    pub fn bytes(&mut self, name: &str, bytes: &[u8]) {
        self.0.update((name.len() as u64).to_le_bytes());
        self.0.update(name.as_bytes());
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    /// Adds every file under `dir` (but the directories that are not sources, and the build's
    /// own outputs `skip` when they lie inside), by its path relative to `dir`, in a fixed
    /// order.
    pub fn tree(&mut self, label: &str, dir: &Path, skip: &[PathBuf]) -> Result<(), Error> {
        let mut files = Vec::new();
        collect(dir, dir, 0, skip, &mut files)?;
        files.sort();
        for relative in files {
            let path = dir.join(&relative);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            self.bytes(&format!("{label}/{}", relative.display()), &bytes);
        }
        Ok(())
    }

    /// The key: the SHA-256 of everything added, in hex.
    pub fn key(self) -> String {
        hex(&self.0.finalize())
    }
}

/// The files under `dir`, relative to `root`; symbolic links are followed, to a bounded depth.
fn collect(
    root: &Path,
    dir: &Path,
    depth: u32,
    skip: &[PathBuf],
    files: &mut Vec<PathBuf>,
) -> Result<(), Error> {
    if depth > 16 {
        return Err(Error::NotAPlugin(format!(
            "{}: directories nested too deep (a link loop?)",
            dir.display()
        )));
    }
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if skip.contains(&path) {
            continue;
        }
        if path.is_dir() {
            if !NOT_SOURCES.contains(&name) {
                collect(root, &path, depth + 1, skip, files)?;
            }
        } else if path.is_file() {
            files.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Finished builds by the key of their inputs.
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store beside the tools directory (`~/.cache/mailgate/plugin-builds` for the tools in
    /// `~/.cache/mailgate/tools`).
    pub fn beside_tools(tools: &Path) -> Store {
        Store {
            dir: tools.with_file_name("plugin-builds"),
        }
    }

    fn entry(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.wasm"))
    }

    /// Writes the build of `key` to `out` when the store holds it; true if it did.
    pub fn fetch(&self, key: &str, out: &Path) -> Result<bool, Error> {
        let entry = self.entry(key);
        if !entry.is_file() {
            return Ok(false);
        }
        // Marks it used, for the pruning.
        if let Ok(file) = std::fs::File::options().write(true).open(&entry) {
            let _ = file.set_modified(SystemTime::now());
        }
        copy_atomically(&entry, out)?;
        Ok(true)
    }

    /// Keeps the build in `out` under `key`, then prunes the store. A store that cannot be
    /// written only costs the next build its reuse, so failures are returned for a warning.
    pub fn keep(&self, key: &str, out: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        copy_atomically(out, &self.entry(key))?;
        self.prune(MAX_BYTES, &self.entry(key));
        Ok(())
    }

    /// Removes the builds used least recently until the store holds at most `max` bytes
    /// (never `keep`, the build just made), and leftovers of interrupted copies.
    fn prune(&self, max: u64, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut builds: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        for path in entries.flatten().map(|e| e.path()) {
            let Ok(meta) = path.metadata() else { continue };
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if path.extension().is_some_and(|e| e == "wasm") {
                builds.push((modified, meta.len(), path));
            } else if modified.elapsed().is_ok_and(|age| age.as_secs() > 3600) {
                let _ = std::fs::remove_file(&path);
            }
        }
        builds.sort();
        let mut total: u64 = builds.iter().map(|(_, size, _)| size).sum();
        for (_, size, path) in builds {
            if total <= max {
                break;
            }
            if path != keep && std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(size);
            }
        }
    }
}

/// Copies `from` to `to` through a file beside `to`, renamed into place.
fn copy_atomically(from: &Path, to: &Path) -> Result<(), Error> {
    let tmp = to.with_extension(format!("tmp{}", std::process::id()));
    let copied = std::fs::copy(from, &tmp)
        .map_err(|e| Error::io(from, e))
        .and_then(|_| std::fs::rename(&tmp, to).map_err(|e| Error::io(to, e)));
    if copied.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    copied
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(dir: &Path) -> String {
        let mut inputs = Inputs::new("tool 1");
        inputs.tree("src", dir, &[dir.join("out.wasm")]).unwrap();
        inputs.key()
    }

    #[test]
    fn the_key_follows_the_sources_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), "x = 1\n").unwrap();
        let first = key_of(dir.path());
        // Outputs, caches and cases do not change it.
        for other in ["target", "__pycache__", "cases"] {
            std::fs::create_dir_all(dir.path().join(other)).unwrap();
            std::fs::write(dir.path().join(other).join("f"), "anything").unwrap();
        }
        std::fs::write(dir.path().join("out.wasm"), "the build's own output").unwrap();
        assert_eq!(key_of(dir.path()), first);
        std::fs::write(dir.path().join("app.py"), "x = 2\n").unwrap();
        assert_ne!(key_of(dir.path()), first, "an edit is a new build");
        std::fs::write(dir.path().join("app.py"), "x = 1\n").unwrap();
        std::fs::create_dir(dir.path().join("lib")).unwrap();
        std::fs::write(dir.path().join("lib/helper.py"), "").unwrap();
        assert_ne!(key_of(dir.path()), first, "a new module is a new build");
    }

    #[test]
    fn the_store_gives_back_what_it_kept_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store {
            dir: dir.path().join("builds"),
        };
        let out = dir.path().join("out.wasm");
        assert!(!store.fetch("k1", &out).unwrap());
        std::fs::write(&out, b"first build").unwrap();
        store.keep("k1", &out).unwrap();
        std::fs::write(&out, b"something else").unwrap();
        assert!(store.fetch("k1", &out).unwrap());
        assert_eq!(std::fs::read(&out).unwrap(), b"first build");

        std::fs::write(&out, vec![0u8; 100]).unwrap();
        store.keep("k2", &out).unwrap();
        // Used least recently: k1 (older mtime); 111 bytes kept, a bound of 105 removes it only.
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(store.entry("k1"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        store.prune(105, &store.entry("k2"));
        assert!(!store.entry("k1").exists());
        assert!(store.entry("k2").exists());
        store.prune(10, &store.entry("k2"));
        assert!(store.entry("k2").exists(), "the build just kept stays");
    }
}
