//! The language tools, installed on first use into one directory (`Tools::dir`): a venv with
//! componentize-py, componentize-js from npm, a venv with the `ziglang` package (zig's clang
//! and wasi-libc for C), and the Rust guest target through rustup. Debian packages they need
//! (python3-venv, nodejs, npm) come from apt-get.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// The componentize-py version Python plugins are built with.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
/// The componentize-js version JavaScript plugins are built with.
pub const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";
/// The zig toolchain (from PyPI) C plugins are compiled with.
pub const ZIGLANG: &str = "ziglang==0.17.1";
/// The Rust target plugins are built for.
pub const RUST_TARGET: &str = "wasm32-wasip2";

/// Where the tools live, and who is speaking in the messages about installing them.
#[derive(Clone, Debug)]
pub struct Tools {
    pub dir: PathBuf,
    /// Prefix of progress messages on stderr, e.g. `mailgate` or `xtask`.
    pub speaker: &'static str,
}

/// zig as a Python module, with its caches kept inside the tools directory.
pub struct Zig {
    pub python: PathBuf,
    cache: PathBuf,
}

impl Zig {
    pub fn env(&self) -> [(&'static str, &Path); 2] {
        [
            ("ZIG_GLOBAL_CACHE_DIR", self.cache.as_path()),
            ("ZIG_LOCAL_CACHE_DIR", self.cache.as_path()),
        ]
    }
}

impl Tools {
    /// Tools under `dir`, made absolute here: builds run tools from other working directories
    /// (componentize-py from the tools directory), where a relative path would name nothing.
    pub fn new(dir: impl Into<PathBuf>, speaker: &'static str) -> Self {
        let dir = dir.into();
        Tools {
            dir: std::path::absolute(&dir).unwrap_or(dir),
            speaker,
        }
    }

    pub fn say(&self, message: &str) {
        eprintln!("{}: {message}", self.speaker);
    }

    /// componentize-py in its own venv (Debian's Python refuses system-wide pip installs).
    pub fn componentize_py(&self) -> Result<PathBuf, Error> {
        let venv = self.dir.join("py");
        self.pip_tool(&venv, COMPONENTIZE_PY, "the Python plugins")?;
        Ok(venv.join("bin/componentize-py"))
    }

    /// componentize-js installed with npm (Node.js and npm from Debian when missing).
    pub fn componentize_js(&self) -> Result<PathBuf, Error> {
        let prefix = self.dir.join("js");
        let cli = prefix.join("node_modules/.bin/componentize-js");
        if cli.exists() {
            return Ok(cli);
        }
        self.ensure_debian_packages(
            "the JavaScript plugins",
            &[("node", "nodejs"), ("npm", "npm")],
        )?;
        self.say(&format!(
            "installing {COMPONENTIZE_JS} with npm into {} (once)",
            prefix.display()
        ));
        std::fs::create_dir_all(&prefix).map_err(|e| Error::io(&prefix, e))?;
        run(Command::new("npm")
            .args(["install", "--silent", "--no-save", "--prefix"])
            .arg(&prefix)
            .arg(COMPONENTIZE_JS))?;
        Ok(cli)
    }

    /// The names a JavaScript module exports, as componentize-js sees them: read by the
    /// es-module-lexer it installs (so `export { info, rcptTo }` and `export { f as data }`
    /// count as well as `export const data = ...`).
    pub fn js_export_names(&self, module: &Path) -> Result<Vec<String>, Error> {
        self.componentize_js()?;
        let lexer = self
            .dir
            .join("js/node_modules/es-module-lexer/dist/lexer.cjs");
        const LIST_EXPORTS: &str = "const { init, parse } = require(process.argv[1]);\n\
            init.then(() => {\n\
              const source = require('fs').readFileSync(process.argv[2], 'utf8');\n\
              const [, exports] = parse(source);\n\
              console.log(exports.map((e) => e.n).join('\\n'));\n\
            });";
        let shown = format!("node (es-module-lexer) {}", module.display());
        let out = Command::new("node")
            .arg("-e")
            .arg(LIST_EXPORTS)
            .arg(&lexer)
            .arg(module)
            .output()
            .map_err(|source| Error::Spawn {
                command: shown.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(Error::NotAPlugin(format!(
                "{}: cannot read its exports: {}",
                module.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// zig (the PyPI `ziglang` package) in its own venv; its first use builds wasi-libc (~45 s).
    pub fn zig(&self) -> Result<Zig, Error> {
        let venv = self.dir.join("c");
        self.pip_tool(&venv, ZIGLANG, "the C plugins")?;
        Ok(Zig {
            python: venv.join("bin/python"),
            cache: venv.join("zig-cache"),
        })
    }

    /// The Rust guest target, added with rustup unless it is already installed.
    pub fn ensure_rust_target(&self) -> Result<(), Error> {
        let installed = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .map_err(|e| Error::Tool(format!("rustup is needed to build Rust plugins: {e}")))?;
        if String::from_utf8_lossy(&installed.stdout)
            .lines()
            .any(|l| l.trim() == RUST_TARGET)
        {
            return Ok(());
        }
        self.say(&format!(
            "installing the Rust target {RUST_TARGET} (rustup target add) to build plugins"
        ));
        run(Command::new("rustup").args(["target", "add", RUST_TARGET]))
    }

    /// A venv at `venv` with `package` pip-installed, created on first use. The marker file
    /// says the install finished (an interrupted one is redone).
    fn pip_tool(&self, venv: &Path, package: &str, purpose: &str) -> Result<(), Error> {
        let marker = venv.join(format!(".installed-{package}"));
        if marker.exists() {
            return Ok(());
        }
        self.ensure_debian_packages(purpose, &[("python3", "python3")])?;
        let make_venv = || {
            Command::new("python3")
                .args(["-m", "venv"])
                .arg(venv)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !make_venv() {
            self.apt_install(purpose, &["python3-venv"])?;
            if !make_venv() {
                return Err(Error::Tool(format!(
                    "cannot create a Python venv in {}",
                    venv.display()
                )));
            }
        }
        self.say(&format!(
            "installing {package} with pip into {} for {purpose} (once)",
            venv.display()
        ));
        run(Command::new(venv.join("bin/pip")).args(["install", "-q", package]))?;
        std::fs::write(&marker, b"").map_err(|e| Error::io(&marker, e))
    }

    /// Installs the Debian packages whose programs are missing (as root, or through sudo).
    pub fn ensure_debian_packages(
        &self,
        purpose: &str,
        wanted: &[(&str, &str)],
    ) -> Result<(), Error> {
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|(program, _)| !on_path(program))
            .map(|(_, package)| *package)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.apt_install(purpose, &missing)
    }

    /// `apt-get install` (as root, or through sudo), saying what for.
    pub fn apt_install(&self, purpose: &str, packages: &[&str]) -> Result<(), Error> {
        self.say(&format!(
            "installing Debian packages for {purpose}: {}",
            packages.join(" ")
        ));
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let apt = |args: &[&str]| {
            let mut cmd = if is_root {
                Command::new("apt-get")
            } else {
                let mut sudo = Command::new("sudo");
                sudo.arg("apt-get");
                sudo
            };
            cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            run(&mut cmd)
        };
        apt(&["update", "-qq"])?;
        let mut install = vec!["install", "-y", "-qq"];
        install.extend(packages);
        apt(&install)
    }
}

/// True when `program` is found on PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Runs a command to completion; its output goes to ours.
pub fn run(cmd: &mut Command) -> Result<(), Error> {
    let shown = format!("{cmd:?}");
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(Error::Failed {
            command: shown,
            status: s.to_string(),
        }),
        Err(source) => Err(Error::Spawn {
            command: shown,
            source,
        }),
    }
}
