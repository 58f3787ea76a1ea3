//! Running `mailgate plugin new|build` and `mailgate test` as a plugin author would: in a
//! scratch directory, with a home whose tools are those `cargo xtask plugins` installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{binary, root, shared_plugin_cache};

/// A home whose ~/.cache/mailgate/tools are those `cargo xtask plugins` installed
/// (target/tools); with `shared_builds`, its reusable Python and JavaScript builds are
/// target/plugin-builds (the same sources give the same component in every run), else its own.
pub fn home_with_tools(work: &Path, shared_builds: bool) -> PathBuf {
    let home = work.join("home");
    let cache = home.join(".cache/mailgate");
    std::fs::create_dir_all(&cache).expect("mkdir");
    std::os::unix::fs::symlink(root().join("target/tools"), cache.join("tools"))
        .expect("link the tools");
    if shared_builds {
        let builds = root().join("target/plugin-builds");
        std::fs::create_dir_all(&builds).expect("mkdir");
        std::os::unix::fs::symlink(builds, cache.join("plugin-builds")).expect("link the builds");
    }
    home
}

/// `mailgate ARGS` run in `work` as a user whose home is `home` (Rust guests build in
/// target/scaffold-guests, compiled plugins are cached in the tests' shared cache); asserts it
/// succeeds and returns its stdout and stderr.
pub fn mailgate_as_user(work: &Path, home: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(binary())
        .args(args)
        .current_dir(work)
        .env("HOME", home)
        .env_remove("XDG_CACHE_HOME")
        .env_remove("MAILGATE_TOOLS")
        .env("CARGO_TARGET_DIR", root().join("target/scaffold-guests"))
        .env("MAILGATE_CACHE_DIR", shared_plugin_cache())
        .output()
        .expect("run mailgate");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let errors = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "mailgate {args:?}: {text}{errors}");
    (text, errors)
}
