//! `cargo xtask fuzz [SECONDS] [TARGET...]`: runs every cargo-fuzz target (or the ones named)
//! for SECONDS each (default 60), installing the nightly toolchain and cargo-fuzz on first use.
//! Each target starts from its committed seeds (`fuzz/corpus/<target>`) and grows its own
//! working corpus under `target/fuzz-corpus/<target>`; a crash stops with the input saved in
//! `fuzz/artifacts/<target>/`.

use std::path::Path;
use std::process::Command;

use super::{root, status};

pub const TARGETS: [&str; 22] = [
    "addresses",
    "auth_results",
    "dsn_params",
    "folder_cache",
    "header_split",
    "imap_append",
    "imap_command",
    "imap_url",
    "imap_urlauth",
    "jmap_email",
    "jmap_html",
    "jmap_request",
    "maildir_index",
    "message_edits",
    "milter_packet",
    "mime_tree",
    "mta_sts_policy",
    "pop3_command",
    "smtp_command",
    "smtp_data",
    "spool_segment",
    "stored_names",
];

pub fn fuzz(args: &[String]) -> Result<(), String> {
    let seconds: u64 = match args.first() {
        Some(s) if s.chars().all(|c| c.is_ascii_digit()) => {
            s.parse().map_err(|e| format!("{s}: {e}"))?
        }
        _ => 60,
    };
    let named: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.chars().all(|c| c.is_ascii_digit()))
        .collect();
    for name in &named {
        if !TARGETS.contains(name) {
            return Err(format!(
                "no fuzz target {name}; targets: {}",
                TARGETS.join(", ")
            ));
        }
    }
    let targets: Vec<&str> = if named.is_empty() {
        TARGETS.to_vec()
    } else {
        named
    };
    ensure_tools()?;
    let mut summary = Vec::new();
    for target in targets {
        let line = run_target(target, seconds)?;
        println!("xtask fuzz: {line}");
        summary.push(line);
    }
    println!("\nxtask fuzz summary ({seconds} s per target):");
    for line in summary {
        println!("  {line}");
    }
    Ok(())
}

/// Nightly (for `-Z` sanitizer flags) and cargo-fuzz.
fn ensure_tools() -> Result<(), String> {
    let has_nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_nightly {
        eprintln!("xtask: installing the nightly toolchain (rustup) for cargo fuzz");
        status(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let has_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_fuzz {
        eprintln!("xtask: installing cargo-fuzz (cargo install) to run the fuzz targets");
        status(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// Runs one target; its line for the summary (executions, corpus, findings).
fn run_target(target: &str, seconds: u64) -> Result<String, String> {
    let fuzz_dir = root().join("fuzz");
    let work = root().join("target/fuzz-corpus").join(target);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let seeds = fuzz_dir.join("corpus").join(target);
    let output = Command::new("cargo")
        .current_dir(&fuzz_dir)
        .args(["+nightly", "fuzz", "run", target])
        .arg(&work)
        .arg(&seeds)
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-rss_limit_mb=4096",
            "-timeout=10",
            "-print_final_stats=1",
        ])
        .output()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let saved = root().join("target/fuzz-logs");
    let _ = std::fs::create_dir_all(&saved);
    let _ = std::fs::write(saved.join(format!("{target}.log")), log.as_bytes());
    let runs = stat(&log, "stat::number_of_executed_units:").unwrap_or_else(|| "?".into());
    let corpus = count_files(&work);
    if !output.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "{target}: finding after {runs} executions (input in fuzz/artifacts/{target}/):\n{}",
            tail.join("\n")
        ));
    }
    Ok(format!(
        "{target}: {runs} executions, {corpus} corpus inputs, no findings"
    ))
}

fn stat(log: &str, key: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().count())
}
