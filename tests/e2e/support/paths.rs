//! Where things are: the workspace, the built binary and plugins, the Python with the PyPI
//! clients; and one run of the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// `$MAILGATE_BIN`, or the binary cargo built next to this test (target/debug/mailgate).
/// Cargo rebuilds it only when the `mailgate` package is among those tested: run
/// `cargo test -p mailgate -p mailgate-e2e` (or `cargo xtask test`), not this package alone.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("MAILGATE_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test exe path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("mailgate");
    assert!(
        bin.exists(),
        "{} missing: run `cargo xtask test`",
        bin.display()
    );
    bin
}

/// The bundled plugins, as `cargo xtask plugins` leaves them.
pub fn plugin_dir() -> PathBuf {
    let dir = root().join("target/plugins");
    assert!(
        dir.join("recipient-policy.wasm").exists(),
        "plugins missing in {}: run `cargo xtask plugins`",
        dir.display()
    );
    dir
}

/// The compiled-plugin cache the test gateways share (`target/e2e-plugin-cache`): the plugins
/// under test change only when they are rebuilt, so each is compiled once, not per test. A
/// test about compiling itself gives its gateway a cache of its own.
pub fn shared_plugin_cache() -> PathBuf {
    root().join("target/e2e-plugin-cache")
}

/// The result of one run of the binary.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `mailgate ARGS` from the workspace root with the bundled plugins and a private cache.
pub fn mailgate(args: &[&str], cache: &Path) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(binary())
        .args(args)
        .current_dir(root())
        .env("MAILGATE_PLUGIN_DIR", plugin_dir())
        .env("MAILGATE_CACHE_DIR", cache)
        .output()
        .expect("run mailgate");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// The Python with the PyPI clients (`cargo xtask test` makes it: target/pyenv).
pub fn pyenv_python() -> PathBuf {
    std::env::var_os("MAILGATE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/pyenv/bin/python"))
}
