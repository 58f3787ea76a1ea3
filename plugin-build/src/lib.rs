//! Building mailgate plugins in every supported language, and scaffolding new ones.
//!
//! Shared by `mailgate plugin new|build` (for plugin authors) and `cargo xtask plugins` (for the
//! plugins bundled with the gateway), so both build the same way:
//! - Rust: a cargo project using `mailgate-sdk`, built for `wasm32-wasip2`;
//! - Python: `app.py`, built with componentize-py;
//! - JavaScript: `app.js`, built with componentize-js;
//! - C: `*.c`, bindings from the contract, zig's clang, then a component (see [`c`]).
//!
//! The tools are installed on first use into a [`Tools`] directory.

pub mod c;
pub mod reuse;
pub mod scaffold;
pub mod tools;
pub mod world;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use tools::{run, Tools};

/// The plugin contract this gateway speaks, written into new plugins and used to build ones
/// that carry no `wit/` directory of their own.
pub const CONTRACT: &str = include_str!("../../wit/plugin.wit");

/// `mailgate.py`, the helpers every Python plugin can import (contract 0.2 builds only).
const PYTHON_HELPERS: &str = include_str!("../python/mailgate.py");
/// The module componentize-py is given as the app in contract 0.2 builds: `app.py`'s classes,
/// with what they return checked by `mailgate.checked`.
const PYTHON_CHECKED_APP: &str = include_str!("../python/mailgate_app.py");
/// The module componentize-js is given in contract 0.2 builds, less its export lines: app.js's
/// stages and info, with what they return checked (see [`Build::javascript`]).
const JS_CHECKED_APP: &str = include_str!("../templates/js/checked.js");
/// Where the checked module is written for the build: beside app.js, whose directory is the
/// only one componentize-js lets it import from.
const JS_CHECKED_NAME: &str = ".mailgate-checked-app.js";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotAPlugin(String),
    #[error("{0}")]
    Tool(String),
    #[error("the plugin contract: {0}")]
    Contract(String),
    #[error("making the component: {0}")]
    Component(String),
    #[error("{0}")]
    Scaffold(String),
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status})")]
    Failed { command: String, status: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    Rust,
    Python,
    JavaScript,
    C,
}

impl Language {
    pub const ALL: [Language; 4] = [
        Language::Rust,
        Language::Python,
        Language::JavaScript,
        Language::C,
    ];

    /// The name on the command line: `rust`, `python`, `js`, `c`.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::JavaScript => "js",
            Language::C => "c",
        }
    }

    pub fn parse(name: &str) -> Option<Language> {
        Language::ALL.into_iter().find(|l| l.as_str() == name)
    }

    /// The language of the plugin in `dir`, from the files it holds.
    pub fn detect(dir: &Path) -> Result<Language, Error> {
        let entry_files = [
            ("Cargo.toml", Language::Rust),
            ("app.py", Language::Python),
            ("app.js", Language::JavaScript),
        ];
        if let Some((_, language)) = entry_files.iter().find(|(f, _)| dir.join(f).is_file()) {
            return Ok(*language);
        }
        if !world::c_sources(dir)?.is_empty() {
            return Ok(Language::C);
        }
        Err(Error::NotAPlugin(format!(
            "{} holds no plugin: expected Cargo.toml (Rust), app.py (Python), app.js \
             (JavaScript) or *.c (C)",
            dir.display()
        )))
    }
}

/// The StarlingMonkey features JavaScript builds leave out (`-d`): all but stdio, so
/// `console.log` and uncaught exceptions reach the gateway log.
const JS_FEATURES: [&str; 4] = ["random", "clocks", "http", "fetch-event"];

/// How to build one plugin.
pub struct Build<'a> {
    pub tools: &'a Tools,
    /// The directory holding the WIT contract.
    pub wit: &'a Path,
    pub dir: &'a Path,
    pub out: &'a Path,
    /// Rust: where cargo builds; default `CARGO_TARGET_DIR`, else the project's `target/`.
    pub rust_target_dir: Option<&'a Path>,
}

impl Build<'_> {
    /// Builds the plugin in `dir` into the component `out`.
    pub fn run(&self, language: Language) -> Result<(), Error> {
        if let Some(parent) = self.out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        if language == Language::Rust {
            for stage in world::rust_stages_not_exported(self.dir) {
                self.tools.say(&format!(
                    "warning: {} implements the stage {stage} but does not list it in \
                     export_plugin!, so it is never called",
                    self.dir.display()
                ));
            }
            return self.rust();
        }
        // The world exporting the stages the sources define, beside the output.
        let wit = world::prepare(
            self.tools,
            self.wit,
            language,
            self.dir,
            &self.out.with_extension("world"),
        )?;
        match language {
            Language::Python | Language::JavaScript => self.reusing(language, &wit),
            _ => c::build(self.tools, &wit, self.dir, self.out),
        }
    }

    /// A Python or JavaScript build, or the bytes of an earlier build of the same inputs (their
    /// tools give different bytes on each run; see [`reuse`]).
    fn reusing(&self, language: Language, wit: &Path) -> Result<(), Error> {
        let mut inputs = match language {
            Language::Python => {
                let mut inputs = reuse::Inputs::new(&format!("{}\0python", tools::COMPONENTIZE_PY));
                inputs.bytes("mailgate.py", PYTHON_HELPERS.as_bytes());
                inputs.bytes("mailgate_app.py", PYTHON_CHECKED_APP.as_bytes());
                inputs
            }
            _ => {
                let mut inputs =
                    reuse::Inputs::new(&format!("{}\0{JS_FEATURES:?}", tools::COMPONENTIZE_JS));
                inputs.bytes(JS_CHECKED_NAME, JS_CHECKED_APP.as_bytes());
                inputs
            }
        };
        // An output inside the plugin's directory (`-o`) is not one of its sources.
        let mut outputs: Vec<PathBuf> = ["wasm", "python", "world"]
            .iter()
            .map(|extension| self.out.with_extension(extension))
            .collect();
        outputs.push(self.dir.join(JS_CHECKED_NAME));
        inputs.tree("wit", wit, &[])?;
        inputs.tree("plugin", self.dir, &outputs)?;
        let key = inputs.key();
        let store = reuse::Store::beside_tools(&self.tools.dir);
        if store.fetch(&key, self.out)? {
            self.tools.say(&format!(
                "{}: the same sources as an earlier build; its component reused (same bytes)",
                self.dir.display()
            ));
            return Ok(());
        }
        match language {
            Language::Python => self.python(wit)?,
            _ => self.javascript(wit)?,
        }
        if let Err(e) = store.keep(&key, self.out) {
            self.tools
                .say(&format!("warning: the build is not kept for reuse: {e}"));
        }
        Ok(())
    }

    fn python(&self, wit: &Path) -> Result<(), Error> {
        let cli = self.tools.componentize_py()?;
        // The helper module (`import mailgate`), beside the component.
        let helpers = self.out.with_extension("python");
        std::fs::create_dir_all(&helpers).map_err(|e| Error::io(&helpers, e))?;
        let helper = helpers.join("mailgate.py");
        std::fs::write(&helper, PYTHON_HELPERS).map_err(|e| Error::io(&helper, e))?;
        // Contract 0.2 (optional stages): the app given to componentize-py is a module that
        // checks what app.py's classes return; older contracts get app.py itself.
        let app = if world::has_optional_stages(self.wit)? {
            let checked = helpers.join("mailgate_app.py");
            std::fs::write(&checked, PYTHON_CHECKED_APP).map_err(|e| Error::io(&checked, e))?;
            "mailgate_app"
        } else {
            "app"
        };
        run(Command::new(cli)
            .arg("-d")
            .arg(absolute(wit))
            .args(["-w", "plugin", "componentize", "-p"])
            .arg(absolute(&helpers))
            .arg("-p")
            .arg(absolute(self.dir))
            .arg(app)
            .arg("-o")
            .arg(absolute(self.out))
            // componentize-py leaves a scratch directory in its working directory.
            .current_dir(&self.tools.dir))
    }

    /// Contract 0.2 on: the module given to componentize-js is a checked one written beside
    /// app.js (and removed after), re-exporting its info and stages with what they return
    /// checked; older contracts get app.js itself.
    fn javascript(&self, wit: &Path) -> Result<(), Error> {
        let cli = self.tools.componentize_js()?;
        let app = self.dir.join("app.js");
        let checked = if world::has_optional_stages(self.wit)? {
            let names = self.tools.js_export_names(&app)?;
            let path = self.dir.join(JS_CHECKED_NAME);
            std::fs::write(&path, checked_js_module(&names)).map_err(|e| Error::io(&path, e))?;
            Some(path)
        } else {
            None
        };
        let built = run(Command::new(cli)
            .arg(checked.as_ref().unwrap_or(&app))
            .arg("--wit")
            .arg(wit)
            .args(["--world-name", "plugin", "-d"])
            .args(JS_FEATURES)
            .arg("-o")
            .arg(self.out));
        if let Some(path) = checked {
            let _ = std::fs::remove_file(path);
        }
        built
    }

    /// A standalone cargo project (its own workspace): `cargo build --release` for the guest
    /// target.
    fn rust(&self) -> Result<(), Error> {
        self.tools.ensure_rust_target()?;
        let manifest = self.dir.join("Cargo.toml");
        let crate_name = rust_crate_name(&manifest)?;
        let target_dir = self
            .rust_target_dir
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
            .unwrap_or_else(|| self.dir.join("target"));
        run(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--release", "--target", tools::RUST_TARGET])
                .arg("--manifest-path")
                .arg(&manifest)
                .arg("--target-dir")
                .arg(&target_dir),
        )?;
        let built = target_dir
            .join(tools::RUST_TARGET)
            .join("release")
            .join(format!("{}.wasm", crate_name.replace('-', "_")));
        std::fs::copy(&built, self.out)
            .map(|_| ())
            .map_err(|e| Error::io(&built, e))
    }
}

/// The checked JavaScript module for an app.js exporting `names`: `info` and every stage it
/// exports, each wrapped.
fn checked_js_module(names: &[String]) -> String {
    let mut module = JS_CHECKED_APP.to_string();
    for name in names {
        if name == "info" {
            module.push_str("export const info = checkedInfo(app.info);\n");
        } else if world::is_js_stage(name) {
            module.push_str(&format!(
                "export const {name} = checkedStage('{name}', app.{name});\n"
            ));
        }
    }
    module
}

/// `package.name` from a Cargo manifest.
fn rust_crate_name(manifest: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(manifest).map_err(|e| Error::io(manifest, e))?;
    let doc: toml::Table = text
        .parse()
        .map_err(|e| Error::NotAPlugin(format!("{}: {e}", manifest.display())))?;
    doc.get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .ok_or_else(|| Error::NotAPlugin(format!("{}: no package.name", manifest.display())))
}

/// `path` made absolute against the current directory (tools may run elsewhere).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::checked_js_module;

    #[test]
    fn the_checked_js_module_wraps_info_and_the_stages_only() {
        let names = ["info", "rcptTo", "data", "helperFunction"].map(String::from);
        let module = checked_js_module(&names);
        assert!(module.starts_with("// Written by `mailgate plugin build`"));
        assert!(module.contains("import * as app from './app.js';"));
        assert!(module.ends_with(
            "export const info = checkedInfo(app.info);\n\
             export const rcptTo = checkedStage('rcptTo', app.rcptTo);\n\
             export const data = checkedStage('data', app.data);\n"
        ));
        assert!(!module.contains("helperFunction"));
    }
}
