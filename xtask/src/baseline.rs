//! The release build of another revision, for the benchmarks that measure it beside this tree's
//! (`bench relay --against REV`): a detached git worktree at `target/bench-baseline/<hash>/`,
//! built with its own target dir (`target/bench-baseline/<hash>/target/`), so this tree's
//! `target/release` is never rebuilt or overwritten.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::status;

/// Builds REV's `mailgate` (release) and returns the binary's path.
pub fn build(root: &Path, rev: &str) -> Result<PathBuf, String> {
    let hash = git(
        root,
        &["rev-parse", "--short", &format!("{rev}^{{commit}}")],
    )?;
    let dir = root.join("target/bench-baseline").join(&hash);
    checkout(root, &dir, &hash)?;
    same_contract(root, &hash)?;
    let target = dir.join("target");
    seed(root, &target)?;
    eprintln!("xtask: building {rev} ({hash}) in {}", dir.display());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Niced: on a shared machine the baseline build is background work.
    status(
        Command::new("nice")
            .arg(cargo)
            .args(["build", "--release", "-p", "mailgate", "--target-dir"])
            .arg(&target)
            .env_remove("CARGO_TARGET_DIR")
            .current_dir(&dir),
    )?;
    Ok(target.join("release/mailgate"))
}

/// The worktree of `hash` at `dir`, made on first use (`--force`: a worktree of that path
/// deleted without `git worktree remove` is still registered).
fn checkout(root: &Path, dir: &Path, hash: &str) -> Result<(), String> {
    if dir.join(".git").exists() {
        let at = git(dir, &["rev-parse", "--short", "HEAD"])?;
        return if at == hash {
            Ok(())
        } else {
            Err(format!("{} is at {at}, not {hash}", dir.display()))
        };
    }
    let path = dir.to_string_lossy();
    git(
        root,
        &["worktree", "add", "--force", "--detach", &path, hash],
    )
    .map(|_| ())
}

/// Both builds run the same plugin files (`target/plugins`, this tree's), so that only the host
/// differs; the baseline must therefore know this tree's WIT contract.
fn same_contract(root: &Path, hash: &str) -> Result<(), String> {
    let unchanged = Command::new("git")
        .args(["diff", "--quiet", hash, "--", "wit"])
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run git diff: {e}"))?;
    if unchanged.success() {
        Ok(())
    } else {
        Err(format!(
            "wit/ differs between {hash} and this tree: the baseline may not load this tree's \
             plugins, and comparing with its own plugins is not supported"
        ))
    }
}

/// A new baseline target dir starts as a copy of this tree's `target/release` (a copy, not
/// hard links: both builds rewrite files in place), so that only the crates that differ are
/// compiled again; cargo's fingerprints decide which.
fn seed(root: &Path, target: &Path) -> Result<(), String> {
    let ours = root.join("target/release");
    let theirs = target.join("release");
    if theirs.exists() || !ours.join("deps").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(target).map_err(|e| format!("{}: {e}", target.display()))?;
    eprintln!("xtask: seeding {} from target/release", theirs.display());
    status(
        Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(&ours)
            .arg(&theirs),
    )
}

/// `git ARGS` in `dir`; its output, trimmed.
fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
