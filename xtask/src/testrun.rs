//! Runs the workspace's test binaries several at a time.
//!
//! `cargo test` runs one test binary after another, and most of our end-to-end binaries spend
//! their time waiting on real servers and peers, so a 2-core machine sits half idle. This builds
//! every test binary once (`cargo test --no-run`), then runs up to `MAILGATE_TEST_JOBS` (default 3)
//! of them at once, printing each binary's whole output when it ends so the log stays readable.
//! Binaries that measure responsiveness under attack run alone at the end, so other binaries'
//! load cannot make their one-second deadlines flaky.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Test binaries whose assertions include "another client is answered within a deadline while
/// this attack runs": they run one at a time, with nothing else running.
const ALONE: &[&str] = &["hardening", "imap_limits", "jmap_limits"];

/// The longest binaries start first, so the pool does not end waiting on one of them.
const LONG_FIRST: &[&str] = &[
    "imap_compliance",
    "cli",
    "languages",
    "relay",
    "webmail",
    "sender_auth",
    "milter",
    "drain",
    "operations",
    "runtime",
    "cluster",
    "users",
];

/// One test binary as cargo built it.
struct TestBinary {
    /// The target's name (`smtp`, `mailgate` for unit tests, ...).
    name: String,
    /// What kind of target: `lib`, `bin`, `test`.
    kind: String,
    executable: PathBuf,
    /// The package directory: cargo runs each test binary from there.
    package_dir: PathBuf,
}

impl TestBinary {
    fn label(&self) -> String {
        format!("{} ({})", self.name, self.kind)
    }
}

/// The totals of a whole run.
#[derive(Default)]
pub struct Totals {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// Binaries that did not end with a `test result: ok` (crashed, failed, or never started).
    pub failed_binaries: Vec<String>,
}

/// Builds every test binary of the default members, then runs them all, or only those named in
/// `only` (target names such as `smtp` or `mailgate`; the doc tests run only in a whole run).
pub fn run_all(
    cargo: &str,
    root: &Path,
    env: &[(&str, &Path)],
    only: &[String],
) -> Result<Totals, String> {
    let mut binaries = build_test_binaries(cargo, root)?;
    if !only.is_empty() {
        binaries.retain(|b| only.contains(&b.name));
        if binaries.is_empty() {
            return Err(format!("no test binary is named {}", only.join(" or ")));
        }
    }
    let jobs = std::env::var("MAILGATE_TEST_JOBS")
        .ok()
        .and_then(|j| j.parse::<usize>().ok())
        .filter(|&j| j > 0)
        .unwrap_or(3);
    let (alone, shared): (Vec<_>, Vec<_>) = binaries
        .into_iter()
        .partition(|b| ALONE.contains(&b.name.as_str()));
    let totals = Arc::new(Mutex::new(Totals::default()));
    run_pool(order_long_first(shared), jobs, env, &totals);
    run_pool(alone, 1, env, &totals);
    if only.is_empty() {
        run_doc_tests(cargo, root, env, &totals);
    }
    let totals = Arc::try_unwrap(totals)
        .map_err(|_| "a test runner thread outlived the run".to_string())?
        .into_inner()
        .map_err(|_| "a test runner thread panicked".to_string())?;
    Ok(totals)
}

fn order_long_first(mut binaries: Vec<TestBinary>) -> Vec<TestBinary> {
    let rank = |b: &TestBinary| {
        LONG_FIRST
            .iter()
            .position(|n| *n == b.name)
            .unwrap_or(LONG_FIRST.len())
    };
    binaries.sort_by_key(rank);
    binaries
}

/// `cargo test --no-run`, reading the executables from its JSON messages.
fn build_test_binaries(cargo: &str, root: &Path) -> Result<Vec<TestBinary>, String> {
    let mut child = Command::new(cargo)
        .args([
            "test",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(root)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let mut binaries = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(binary) = test_binary_of(&line) {
                binaries.push(binary);
            }
        }
    }
    let status = child.wait().map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err("building the tests failed".into());
    }
    Ok(binaries)
}

/// The test binary a `compiler-artifact` message names, if it is one.
fn test_binary_of(line: &str) -> Option<TestBinary> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    if !message.get("profile")?.get("test")?.as_bool()? {
        return None;
    }
    let executable = PathBuf::from(message.get("executable")?.as_str()?);
    let target = message.get("target")?;
    let name = target.get("name")?.as_str()?.to_string();
    let kind = target.get("kind")?.get(0)?.as_str()?.to_string();
    let manifest = PathBuf::from(message.get("manifest_path")?.as_str()?);
    let package_dir = manifest.parent()?.to_path_buf();
    Some(TestBinary {
        name,
        kind,
        executable,
        package_dir,
    })
}

/// Runs `binaries` with at most `jobs` at once.
fn run_pool(
    binaries: Vec<TestBinary>,
    jobs: usize,
    env: &[(&str, &Path)],
    totals: &Arc<Mutex<Totals>>,
) {
    let queue = Arc::new(Mutex::new(VecDeque::from(binaries)));
    let env: Vec<(String, PathBuf)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_path_buf()))
        .collect();
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let queue = Arc::clone(&queue);
            let totals = Arc::clone(totals);
            let env = env.clone();
            std::thread::spawn(move || loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some(binary) = next else { break };
                let outcome = run_one(&binary, &env);
                report(&binary, &outcome, &totals);
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
}

/// What one binary printed and how it ended.
struct Outcome {
    output: String,
    success: bool,
    seconds: f64,
}

fn run_one(binary: &TestBinary, env: &[(String, PathBuf)]) -> Outcome {
    let started = Instant::now();
    let result = Command::new(&binary.executable)
        .current_dir(&binary.package_dir)
        .env("CARGO_MANIFEST_DIR", &binary.package_dir)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_os_str())))
        .stdin(Stdio::null())
        .output();
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(out) => {
            let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
            output.push_str(&String::from_utf8_lossy(&out.stderr));
            Outcome {
                output,
                success: out.status.success(),
                seconds,
            }
        }
        Err(e) => Outcome {
            output: format!("cannot start {}: {e}\n", binary.executable.display()),
            success: false,
            seconds,
        },
    }
}

/// Prints one binary's output as a block and adds its `test result:` line to the totals.
fn report(binary: &TestBinary, outcome: &Outcome, totals: &Arc<Mutex<Totals>>) {
    let Ok(mut totals) = totals.lock() else {
        return;
    };
    println!(
        "\n     Ran {} in {:.1} s ({})",
        binary.label(),
        outcome.seconds,
        binary.executable.display()
    );
    print!("{}", outcome.output);
    keep_log(binary, &outcome.output);
    add_results(&outcome.output, &mut totals);
    if !outcome.success {
        totals.failed_binaries.push(binary.label());
    }
}

/// Each binary's output also goes to `target/test-logs/<name>.log`, to read a failure again
/// without scrolling through the whole run.
fn keep_log(binary: &TestBinary, output: &str) {
    let dir = crate::root().join("target/test-logs");
    let name = format!("{}-{}.log", binary.name.replace(' ', "-"), binary.kind);
    let written =
        std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join(&name), output));
    if let Err(e) = written {
        eprintln!("xtask: cannot keep {name}: {e}");
    }
}

fn add_results(output: &str, totals: &mut Totals) {
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("test result: ") {
            totals.passed += count_before(rest, " passed");
            totals.failed += count_before(rest, " failed");
            totals.ignored += count_before(rest, " ignored");
        }
    }
}

/// Doc tests are not separate binaries: cargo builds and runs them itself.
fn run_doc_tests(cargo: &str, root: &Path, env: &[(&str, &Path)], totals: &Arc<Mutex<Totals>>) {
    let started = Instant::now();
    let result = Command::new(cargo)
        .args(["test", "--doc", "--no-fail-fast"])
        .envs(env.iter().copied())
        .current_dir(root)
        .output();
    let outcome = match result {
        Ok(out) => {
            let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
            output.push_str(&String::from_utf8_lossy(&out.stderr));
            Outcome {
                output,
                success: out.status.success(),
                seconds: started.elapsed().as_secs_f64(),
            }
        }
        Err(e) => Outcome {
            output: format!("cannot run cargo test --doc: {e}\n"),
            success: false,
            seconds: 0.0,
        },
    };
    let doc = TestBinary {
        name: "doc tests".into(),
        kind: "doc".into(),
        executable: PathBuf::from("cargo test --doc"),
        package_dir: root.to_path_buf(),
    };
    report(&doc, &outcome, totals);
}

/// The number just before `label` in "ok. 12 passed; 0 failed; ...".
fn count_before(text: &str, label: &str) -> u64 {
    text.split(';')
        .find(|part| part.contains(label))
        .and_then(|part| part.split_whitespace().rev().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_are_added_up() {
        let mut totals = Totals::default();
        add_results(
            "running 3 tests\ntest result: ok. 2 passed; 1 failed; 4 ignored; 0 measured\n\
             test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured\n",
            &mut totals,
        );
        assert_eq!((totals.passed, totals.failed, totals.ignored), (7, 1, 4));
    }

    #[test]
    fn a_compiler_message_for_a_test_target_names_its_binary() {
        let line = r#"{"reason":"compiler-artifact","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["test"],"name":"smtp"},"profile":{"test":true},"executable":"/w/target/debug/deps/smtp-1"}"#;
        let binary = test_binary_of(line).expect("a test binary");
        assert_eq!(binary.name, "smtp");
        assert_eq!(binary.package_dir, PathBuf::from("/w/tests"));
        let library = line.replace(r#""test":true"#, r#""test":false"#);
        assert!(test_binary_of(&library).is_none());
    }
}
