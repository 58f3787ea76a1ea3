//! New plugins from templates: the same small policy in every language (refuse recipients at
//! the domains in `blocked-domains`, stamp accepted messages with `X-Checked-By`), with two
//! harness cases that pass once it is built.

use std::path::{Path, PathBuf};

use crate::{Error, Language, CONTRACT};

const CASES: &str = include_str!("../templates/cases.toml");
const RUST_MANIFEST: &str = include_str!("../templates/rust/Cargo.toml");
const RUST_SOURCE: &str = include_str!("../templates/rust/src/lib.rs");
const PYTHON_SOURCE: &str = include_str!("../templates/python/app.py");
const JS_SOURCE: &str = include_str!("../templates/js/app.js");
const JS_HELPERS: &str = include_str!("../templates/js/mailgate.js");
const C_SOURCE: &str = include_str!("../templates/c/plugin.c");

/// Where a built plugin's component goes unless told otherwise: `DIR/target/NAME.wasm`, named
/// after the plugin's directory (the scaffold's cases load it from there).
pub fn default_output(dir: &Path) -> PathBuf {
    dir.join("target")
        .join(format!("{}.wasm", output_name(dir)))
}

/// The plugin's directory name (of the absolute path, so `.` works too).
fn output_name(dir: &Path) -> String {
    std::path::absolute(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.is_empty() && n != ".")
        .unwrap_or_else(|| "plugin".into())
}

/// The Rust SDK of the source tree this program was built from, when it is still there.
pub fn default_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    sdk.join("Cargo.toml")
        .is_file()
        .then(|| sdk.canonicalize().unwrap_or(sdk))
}

/// A new plugin to write.
pub struct Scaffold<'a> {
    pub language: Language,
    /// The plugin's name: lower-case letters, digits and dashes, starting with a letter.
    pub name: &'a str,
    pub dir: &'a Path,
    /// Rust only: the `mailgate-sdk` crate directory the project depends on.
    pub sdk: Option<&'a Path>,
}

impl Scaffold<'_> {
    /// Writes the project; returns the files written, relative to `dir`.
    pub fn create(&self) -> Result<Vec<PathBuf>, Error> {
        check_name(self.name)?;
        let occupied = std::fs::read_dir(self.dir).is_ok_and(|mut d| d.next().is_some());
        if occupied {
            return Err(Error::Scaffold(format!(
                "{} already exists and is not empty",
                self.dir.display()
            )));
        }
        let files = self.files()?;
        for (relative, contents) in &files {
            let path = self.dir.join(relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            let text = contents
                .replace("{{name}}", self.name)
                .replace("{{output}}", &output_name(self.dir));
            std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
        }
        Ok(files.into_iter().map(|(p, _)| PathBuf::from(p)).collect())
    }

    /// (path, template) per file of the project.
    fn files(&self) -> Result<Vec<(String, String)>, Error> {
        let cases = (format!("cases/{}.toml", self.name), CASES.to_string());
        let contract = ("wit/plugin.wit".to_string(), CONTRACT.to_string());
        let ignore = |extra: &str| (".gitignore".to_string(), format!("/target\n{extra}"));
        Ok(match self.language {
            Language::Rust => vec![
                (
                    "Cargo.toml".into(),
                    RUST_MANIFEST.replace("{{sdk}}", &self.sdk_path()?),
                ),
                ("src/lib.rs".into(), RUST_SOURCE.into()),
                cases,
                ignore(""),
            ],
            Language::Python => vec![
                ("app.py".into(), PYTHON_SOURCE.into()),
                contract,
                cases,
                ignore("__pycache__/\n"),
            ],
            Language::JavaScript => {
                vec![
                    ("app.js".into(), JS_SOURCE.into()),
                    ("mailgate.js".into(), JS_HELPERS.into()),
                    contract,
                    cases,
                    ignore(""),
                ]
            }
            Language::C => vec![
                ("plugin.c".into(), C_SOURCE.into()),
                contract,
                cases,
                ignore(""),
            ],
        })
    }

    /// The SDK path as it goes into Cargo.toml: relative to the plugin, so the project can move
    /// with the sources it sits beside and no machine's absolute path is written into it.
    fn sdk_path(&self) -> Result<String, Error> {
        let sdk = self.sdk.ok_or_else(|| {
            Error::Scaffold(
                "a Rust plugin needs the mailgate-sdk crate: pass --sdk DIR (the guest-sdk \
                 directory of the mailgate sources)"
                    .into(),
            )
        })?;
        if !sdk.join("Cargo.toml").is_file() {
            return Err(Error::Scaffold(format!(
                "{} is not the mailgate-sdk crate (no Cargo.toml)",
                sdk.display()
            )));
        }
        let absolute = |p: &Path| std::path::absolute(p).map_err(|e| Error::io(p, e));
        let text = relative(&absolute(self.dir)?, &absolute(sdk)?)
            .to_string_lossy()
            .into_owned();
        if text.contains(['"', '\\']) {
            return Err(Error::Scaffold(format!(
                "the SDK path {text} cannot go into Cargo.toml as is (quote or backslash)"
            )));
        }
        Ok(text)
    }
}

/// `to` as seen from the directory `from` (both absolute): `..` up to their common ancestor,
/// then down.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let (from, to): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for part in &to[common..] {
        path.push(part);
    }
    path
}

/// Names become crate names, file names and the plugin's name in logs: keep them plain.
fn check_name(name: &str) -> Result<(), Error> {
    let plain = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if plain {
        Ok(())
    } else {
        Err(Error::Scaffold(format!(
            "plugin name {name:?}: use lower-case letters, digits and dashes, starting with a \
             letter (at most 64)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_path_is_relative_to_the_plugin() {
        let got = relative(
            Path::new("/home/a/plugins/p"),
            Path::new("/home/a/src/mailgate/guest-sdk"),
        );
        assert_eq!(got, Path::new("../../src/mailgate/guest-sdk"));
    }

    #[test]
    fn names_are_checked() {
        for good in ["spam-filter", "a", "limit2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Spam",
            "2fast",
            "has space",
            "trailing-",
            "dots.no",
            "ünï",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_language_gets_its_source_cases_and_contract() {
        let root = std::env::temp_dir().join(format!("mailgate-scaffold-{}", std::process::id()));
        for language in Language::ALL {
            let dir = root.join(language.as_str());
            let sdk = default_sdk();
            let scaffold = Scaffold {
                language,
                name: "my-policy",
                dir: &dir,
                sdk: sdk.as_deref(),
            };
            let files = scaffold.create().unwrap();
            assert!(files.contains(&PathBuf::from("cases/my-policy.toml")));
            let cases = std::fs::read_to_string(dir.join("cases/my-policy.toml")).unwrap();
            assert!(cases.contains("X-Checked-By = \"my-policy\""));
            assert!(!cases.contains("{{"));
            let needs_contract = language != Language::Rust;
            assert_eq!(dir.join("wit/plugin.wit").is_file(), needs_contract);
            assert_eq!(Language::detect(&dir).unwrap(), language);
            // A second scaffold into the same place is refused, nothing overwritten.
            assert!(scaffold.create().is_err());
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
