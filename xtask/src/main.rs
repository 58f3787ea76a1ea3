//! The build entry point: `cargo xtask <command>`.
//!
//! - `plugins`: build every guest crate (bundled plugins and test fixtures) for wasm32-wasip2,
//!   installing the target with rustup if it is missing, and copy the components to
//!   `target/plugins/` (bundled) and `target/test-plugins/` (fixtures); Python (`*/app.py`),
//!   JavaScript (`*/app.js`) and C (`*/*.c`) plugins with the builder `mailgate plugin build`
//!   uses (mailgate-plugin-build), its tools installed on first use into `target/tools/`;
//! - `build`: `plugins`, then the `mailgate` binary (release);
//! - `dist`: `build`, then the binary to ship, stripped, and its debug info split off beside it
//!   (`target/dist/mailgate` and `mailgate.debug`, see `dist.rs`);
//! - `run [ARGS...]`: `build`, then run `mailgate` (default: `serve` on the embedded defaults);
//! - `test [BINARY...]`: `plugins`, the test peers (python3, swaks, curl, postfix, dnsmasq, mpop, Dovecot's
//!   library, rspamd, OpenDKIM, ClamAV, Redis, PostgreSQL from Debian's packages, when
//!   missing), imaptest (built once
//!   into `target/imaptest/` by `../shared/tools/imaptest/build.sh`), then every test of the
//!   workspace (unit, runtime, end-to-end, and the bundled plugins' harness cases), several test
//!   binaries at once (`MAILGATE_TEST_JOBS`, default 3; see `testrun.rs`), or only the named ones;
//! - `lint`: rustfmt check and clippy (host and guests) with warnings as errors;
//! - `layers`: no module of host/src names one it must not depend on (`host/layers.txt`);
//!   `test` and `lint` run it first;
//! - `bench`: `plugins`, then the plugin-chain benchmark; `bench smtp`: the SMTP accept rate
//!   into local delivery (smtp-source); `bench relay`: relay throughput to smtp-sink; both
//!   beside Postfix and Haraka (`../shared/bench/peers.sh`); `bench relay --against REV
//!   [--rounds K]`: the relay of REV's release build (see `baseline.rs`) and of this tree's,
//!   alternately, K rounds each (default 2), with medians; `bench reload`: hot-reload latency
//!   and throughput during reloads; `bench access`: IMAP/POP3 beside Dovecot; `bench languages`:
//!   one policy in Rust, Python, JavaScript and C; `bench hardening`: IMAP SEARCH, memory during
//!   a flood of wrong logins, large APPENDs, then the cost of each hostile request of the
//!   hardening review (`host/benches/hardening_requests.py`), and with `--against REV` the same
//!   for REV's release build first; `bench milter`: Postfix alone and with mailgate as
//!   its milter, mailgate's relay alone and with rspamd in its chain; `bench kv`: the plugin
//!   key-value store, local and Redis (the greylist's call, bare operations);
//! - `cluster`: two gateways sharing one Redis on loopback, to try a multi-node site by hand;
//! - `fuzz [SECONDS] [TARGET...]`: every cargo-fuzz target in `fuzz/` for SECONDS each
//!   (nightly and cargo-fuzz installed on first use).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use mailgate_plugin_build::{Build, Language, Tools};

mod baseline;
mod cluster;
mod dist;
mod fuzz;
mod layers;
mod testrun;

const GUEST_TARGET: &str = mailgate_plugin_build::tools::RUST_TARGET;

/// `cargo <command>` arguments for guest crates: their own profile, target and target dir.
fn guest_args(command: &'static str) -> Vec<&'static str> {
    vec![
        command,
        "--profile",
        "guest",
        "--target",
        GUEST_TARGET,
        "--target-dir",
        "target/guests",
    ]
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("plugins") => build_plugins(),
        Some("build") => {
            build_plugins().and_then(|()| cargo(&["build", "--release", "-p", "mailgate"]))
        }
        Some("dist") => build_plugins()
            .and_then(|()| cargo(&["build", "--release", "-p", "mailgate"]))
            .and_then(|()| {
                dist::split(
                    &root().join("target/release/mailgate"),
                    &root().join("target/dist"),
                )
            }),
        Some("run") => run(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("lint") => lint(),
        // A checkout other than this one may be named (to check an older tree).
        Some("layers") => layers::check(&args.get(1).map_or_else(root, PathBuf::from)),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz::fuzz(&args[1..]),
        Some("cluster") => cluster::cluster(),
        _ => {
            eprintln!(
                "usage: cargo xtask <plugins|build|dist|run [ARGS...]|test|lint|layers|bench|cluster|fuzz [SECONDS] [TARGET...]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

fn status(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{shown} failed ({s})")),
        Err(e) => Err(format!("cannot run {shown}: {e}")),
    }
}

fn cargo(args: &[&str]) -> Result<(), String> {
    status(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(args)
            .current_dir(root()),
    )
}

/// Installs the guest target with rustup unless it is already there.
fn ensure_guest_target() -> Result<(), String> {
    tools().ensure_rust_target().map_err(|e| e.to_string())
}

/// Guest crates: directories with a Cargo.toml under plugins/ and tests/fixtures/.
fn guests(dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join(dir))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("Cargo.toml").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn build_plugins() -> Result<(), String> {
    ensure_guest_target()?;
    let bundled = guests("plugins");
    let fixtures = guests("tests/fixtures");
    let mut args = guest_args("build");
    for name in bundled.iter().chain(&fixtures) {
        args.extend(["-p", name.as_str()]);
    }
    cargo(&args)?;
    // Separately: naming a target (--example) would make cargo skip the other packages' libs.
    let mut example = guest_args("build");
    example.extend(["-p", "mailgate-sdk", "--example", "reject-domain"]);
    cargo(&example)?;
    let built = root()
        .join("target/guests")
        .join(GUEST_TARGET)
        .join("guest");
    copy_components(&built, &bundled, &root().join("target/plugins"))?;
    copy_components(&built, &fixtures, &root().join("target/test-plugins"))?;
    stamp_versions(&built)?;
    let (current, v0_1) = (root().join("wit"), root().join("wit/v0.1"));
    build_other_plugins("plugins", "target/plugins", &current)?;
    build_other_plugins("tests/fixtures", "target/test-plugins", &current)?;
    // Plugins written for contract 0.1.0, built against it: the gateway must still run them.
    build_other_plugins("tests/fixtures/contract-0.1", "target/test-plugins", &v0_1)?;
    let example = built.join("examples/reject_domain.wasm");
    let dest = root().join("target/test-plugins/sdk-example.wasm");
    std::fs::copy(&example, &dest)
        .map(|_| ())
        .map_err(|e| format!("copy {}: {e}", example.display()))
}

/// Plugins in other languages than Rust (Python `app.py`, JavaScript `app.js`, C `*.c`):
/// directories under `from` without a Cargo.toml, built with the same builder as
/// `mailgate plugin build` into `<to>/<name>.wasm` when older than their sources or the WIT
/// contract (a Python or JavaScript build takes ~10 s). Tools go to `target/tools/`.
fn build_other_plugins(from: &str, to: &str, wit: &Path) -> Result<(), String> {
    let tools = tools();
    let dirs = std::fs::read_dir(root().join(from)).map_err(|e| format!("{from}/: {e}"))?;
    for dir in dirs.flatten().map(|e| e.path()) {
        if !dir.is_dir() || dir.join("Cargo.toml").exists() {
            continue;
        }
        let Ok(language) = Language::detect(&dir) else {
            continue;
        };
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let out = root().join(to).join(format!("{name}.wasm"));
        // The C and Python helpers are part of every C and Python plugin's sources, and the
        // checked module the JavaScript build writes of every JavaScript plugin's.
        let c_sdk = root().join("plugin-build/c");
        let python_sdk = root().join("plugin-build/python");
        let js_sdk = root().join("plugin-build/templates/js");
        let mut sources = vec![dir.as_path(), wit];
        match language {
            Language::C => sources.push(&c_sdk),
            Language::Python => sources.push(&python_sdk),
            Language::JavaScript => sources.push(&js_sdk),
            _ => {}
        }
        if newer_than(&out, &sources) {
            continue;
        }
        eprintln!("xtask: building the {} plugin {name}", language.as_str());
        let build = Build {
            tools: &tools,
            wit,
            dir: &dir,
            out: &out,
            rust_target_dir: None,
        };
        build.run(language).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

fn tools() -> Tools {
    Tools::new(root().join("target/tools"), "xtask")
}

/// True when `file` exists and is newer than every file directly in `sources` (directories).
fn newer_than(file: &Path, sources: &[&Path]) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built) = modified(file) else {
        return false;
    };
    sources.iter().all(|dir| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_file())
            .all(|e| modified(&e.path()).is_some_and(|m| m <= built))
    })
}

/// The stamp fixture in its two versions (`stamp-v1.wasm`, `stamp-v2.wasm`) for the reload tests.
fn stamp_versions(built: &Path) -> Result<(), String> {
    let dest = root().join("target/test-plugins");
    let copy = |to: &str| {
        let from = built.join("stamp_plugin.wasm");
        std::fs::copy(&from, dest.join(to))
            .map(|_| ())
            .map_err(|e| format!("copy {}: {e}", from.display()))
    };
    copy("stamp-v1.wasm")?;
    let mut v2 = guest_args("build");
    v2.extend(["-p", "stamp-plugin", "--features", "v2"]);
    cargo(&v2)?;
    copy("stamp-v2.wasm")?;
    // Leave the default build in place for the next incremental run.
    let mut v1 = guest_args("build");
    v1.extend(["-p", "stamp-plugin"]);
    cargo(&v1)
}

/// Copies `name_with_underscores.wasm` to `dest/name-with-dashes.wasm`.
fn copy_components(built: &Path, names: &[String], dest: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    for name in names {
        let from = built.join(format!("{}.wasm", name.replace('-', "_")));
        let to = dest.join(format!("{name}.wasm"));
        std::fs::copy(&from, &to)
            .map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))?;
    }
    Ok(())
}

fn run(args: &[String]) -> Result<(), String> {
    build_plugins()?;
    cargo(&["build", "--release", "-p", "mailgate"])?;
    // Default: the gateway on its embedded defaults (loopback ports 2525, 2587, 2465).
    let default_args = ["serve".to_string()];
    let args = if args.is_empty() {
        &default_args[..]
    } else {
        args
    };
    eprintln!("xtask: running target/release/mailgate {}", args.join(" "));
    status(
        Command::new(root().join("target/release/mailgate"))
            .args(args)
            .current_dir(root()),
    )
}

/// Programs the end-to-end tests drive, and the Debian packages that provide them.
/// Postfix serves as the relay tests' downstream (`smtp-sink` and a private instance);
/// dnsmasq answers their MX queries; mpop fetches mail over POP3; imaptest links against
/// Dovecot's library (`doveconf` stands for the package); rspamd, OpenDKIM and ClamAV run as
/// milters; redis-server holds the shared kv store, PostgreSQL the shared users; headless
/// Chromium (driven by Selenium) opens the webmail page.
const TEST_PEERS: [(&str, &str); 21] = [
    ("python3", "python3"),
    ("swaks", "swaks"),
    ("curl", "curl"),
    ("smtp-sink", "postfix"),
    ("dnsmasq", "dnsmasq-base"),
    ("mpop", "mpop"),
    ("doveconf", "dovecot-core"),
    // Dovecot's IMAP server, beside ours on one Maildir (not on PATH: found by its path).
    ("/usr/lib/dovecot/imap", "dovecot-imapd"),
    ("systemd-analyze", "systemd"),
    ("promtool", "prometheus"),
    ("dkimverify", "python3-dkim"),
    ("rspamd", "rspamd"),
    ("opendkim", "opendkim"),
    ("opendkim-genkey", "opendkim-tools"),
    ("openssl", "openssl"),
    ("clamd", "clamav-daemon"),
    ("clamav-milter", "clamav-milter"),
    ("redis-server", "redis-server"),
    ("pg_ctlcluster", "postgresql"),
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
];

/// Where the shared imaptest build script may be: `$MAILGATE_SHARED_DIR`, the folder beside
/// this checkout, and the folder beside the repository this one was cloned from (a fresh clone
/// in a temporary directory has no neighbours of its own).
fn imaptest_script_candidates() -> Vec<PathBuf> {
    let script = |shared: PathBuf| shared.join("tools/imaptest/build.sh");
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("MAILGATE_SHARED_DIR") {
        candidates.push(script(PathBuf::from(dir)));
    }
    candidates.push(script(root().join("../shared")));
    let origin = Command::new("git")
        .args(["config", "--get", "remote.origin.url"])
        .current_dir(root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let origin = origin.strip_prefix("file://").unwrap_or(&origin);
    if origin.starts_with('/') {
        candidates.push(script(Path::new(origin).join("../shared")));
    }
    candidates
}

/// Builds imaptest (the Dovecot project's IMAP compliance and stress tester) with the shared
/// build script, once; the end-to-end tests find it through `IMAPTEST_BIN`.
fn ensure_imaptest() -> Result<PathBuf, String> {
    let candidates = imaptest_script_candidates();
    let Some(script) = candidates.iter().find(|p| p.exists()).cloned() else {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        return Err(format!(
            "imaptest's build script (shared/tools/imaptest/build.sh) is needed for the IMAP \
             compliance tests; set MAILGATE_SHARED_DIR to the folder holding tools/. Tried: {}",
            tried.join(", ")
        ));
    };
    eprintln!("xtask: building imaptest (once) into target/imaptest/");
    let out = Command::new("bash")
        .arg(&script)
        .arg(root().join("target/imaptest"))
        .current_dir(root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let path = String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    if !out.status.success() || !Path::new(&path).exists() {
        return Err(format!(
            "imaptest did not build ({}): see target/imaptest/imaptest/*.log",
            out.status
        ));
    }
    Ok(PathBuf::from(path))
}

/// Installs the test peers that are missing, with apt-get (as root, or through sudo).
/// Debian packages for `purpose`, installed when their programs are missing.
fn ensure_packages(purpose: &str, wanted: &[(&str, &str)]) -> Result<(), String> {
    tools()
        .ensure_debian_packages(purpose, wanted)
        .map_err(|e| e.to_string())
}

fn ensure_test_peers() -> Result<(), String> {
    let tools = tools();
    tools
        .ensure_debian_packages("the end-to-end tests", &TEST_PEERS)
        .map_err(|e| e.to_string())?;
    // Dovecot's imap, run on a pipe by the IMAP extension tests, is not on the PATH.
    if !std::path::Path::new("/usr/lib/dovecot/imap").exists() {
        tools
            .apt_install(
                "the IMAP extension tests (Dovecot's imap)",
                &["dovecot-imapd"],
            )
            .map_err(|e| e.to_string())?;
    }
    // dkimpy's ARC signing needs the authres module, which has no program to look for.
    let has_authres = Command::new("/usr/bin/python3")
        .args(["-c", "import authres"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if has_authres {
        return Ok(());
    }
    tools
        .apt_install("the ARC tests (dkimpy's arcsign)", &["python3-authres"])
        .map_err(|e| e.to_string())
}

/// Clients from PyPI the end-to-end tests drive (pinned): a JMAP client library, and
/// Selenium for the browser tests.
const TEST_PYPI: [&str; 2] = ["jmapc==0.4.0", "selenium==4.51.0"];

/// A Python environment under `target/pyenv` with [`TEST_PYPI`] (made once; Debian's
/// python3-venv installed if missing); its interpreter.
fn ensure_test_python() -> Result<PathBuf, String> {
    let venv = root().join("target/pyenv");
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import jmapc, selenium"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ready {
        return Ok(python);
    }
    let has_venv = Command::new("/usr/bin/python3")
        .args(["-c", "import ensurepip, venv"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_venv {
        tools()
            .apt_install("the JMAP tests' Python environment", &["python3-venv"])
            .map_err(|e| e.to_string())?;
    }
    eprintln!("xtask: creating target/pyenv with {TEST_PYPI:?} from PyPI (once)");
    let run = |program: &Path, args: &[&str]| -> Result<(), String> {
        let status = Command::new(program)
            .args(args)
            .status()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{} {args:?} failed", program.display()))
        }
    };
    run(
        Path::new("/usr/bin/python3"),
        &["-m", "venv", &venv.to_string_lossy()],
    )?;
    let mut install = vec![
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ];
    install.extend(TEST_PYPI);
    run(&python, &install)?;
    Ok(python)
}

fn test(only: &[String]) -> Result<(), String> {
    layers::check(&root())?;
    build_plugins()?;
    ensure_test_peers()?;
    let imaptest = ensure_imaptest()?;
    let python = ensure_test_python()?;
    // Host-side crates only (the default members); guests were built and are tested through the
    // host. Every test binary runs even after one fails, so a run reports every failure.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = std::time::Instant::now();
    let totals = testrun::run_all(
        &cargo,
        &root(),
        &[
            ("IMAPTEST_BIN", &imaptest),
            ("MAILGATE_TEST_PYTHON", &python),
        ],
        only,
    )?;
    // One closing line for the whole run (each test binary prints its own).
    println!(
        "\ntests: {} passed, {} failed, {} ignored ({:.0} s running tests)",
        totals.passed,
        totals.failed,
        totals.ignored,
        started.elapsed().as_secs_f64()
    );
    if totals.failed_binaries.is_empty() {
        Ok(())
    } else {
        println!(
            "test binaries that did not pass: {}",
            totals.failed_binaries.join(", ")
        );
        Err("some tests failed".into())
    }
}

/// `bench`: the plugin-chain benchmark; `bench smtp`: the SMTP accept rate, `bench relay`:
/// relay throughput to smtp-sink, each beside Postfix and Haraka; `bench relay --against REV`:
/// that throughput for REV's build and this tree's in the same run.
fn bench(args: &[String]) -> Result<(), String> {
    let which = args.first().map(String::as_str);
    let options = args.get(1..).unwrap_or_default();
    // Options checked before any build.
    let against = match (which, options.is_empty()) {
        (_, true) => None,
        (Some("relay" | "hardening"), false) => Some(against_options(options)?),
        _ => return Err(format!("bench {}: no options", which.unwrap_or_default())),
    };
    build_plugins()?;
    let script = |name: &str| -> Result<(), String> {
        cargo(&["build", "--release", "-p", "mailgate"])?;
        status(
            Command::new("bash")
                .arg(root().join("host/benches").join(name))
                .current_dir(root()),
        )
    };
    match which {
        Some("smtp") => script("smtp_accept.sh"),
        Some("relay") => match against {
            None => script("relay.sh"),
            Some((rev, rounds)) => relay_against(rev, rounds),
        },
        Some("reload") => script("reload.sh"),
        Some("access") => script("access.sh"),
        Some("hardening") => match against {
            None => script("hardening.sh"),
            Some((rev, _)) => hardening_against(rev),
        },
        Some("milter") => script("milter.sh"),
        Some("jmap") => script("jmap.sh"),
        Some("dkim") => cargo(&["bench", "-p", "mailgate", "--bench", "dkim"]),
        Some("kv") => cargo(&["bench", "-p", "mailgate", "--bench", "kv"]),
        Some("languages") => {
            build_policy_in_each_language()?;
            cargo(&["bench", "-p", "mailgate", "--bench", "languages"])
        }
        _ => cargo(&["bench", "-p", "mailgate", "--bench", "plugin_chain"]),
    }
}

/// The options of `bench relay|hardening --against REV [--rounds K]`: REV and K (default 2;
/// the hardening figures are taken once per build).
fn against_options(options: &[String]) -> Result<(&str, u32), String> {
    let usage = "usage: cargo xtask bench relay|hardening [--against REV [--rounds K]]";
    let mut rev = None;
    let mut rounds = 2u32;
    let mut options = options.iter();
    while let Some(option) = options.next() {
        match (option.as_str(), options.next()) {
            ("--against", Some(value)) => rev = Some(value.as_str()),
            ("--rounds", Some(value)) => {
                rounds =
                    value.parse().ok().filter(|&k| k >= 1).ok_or_else(|| {
                        format!("--rounds {value}: a count of 1 or more; {usage}")
                    })?;
            }
            _ => return Err(usage.into()),
        }
    }
    Ok((rev.ok_or(usage)?, rounds))
}

/// `bench relay --against REV`: builds REV's release binary (see [`baseline`]) and this tree's,
/// then `relay_against.sh` measures them alternately, `rounds` rounds each.
fn relay_against(rev: &str, rounds: u32) -> Result<(), String> {
    // Both builds before any measurement; this tree's first, as a new baseline starts from it.
    cargo(&["build", "--release", "-p", "mailgate"])?;
    let baseline = baseline::build(&root(), rev)?;
    status(
        Command::new("bash")
            .arg(root().join("host/benches/relay_against.sh"))
            .arg(&baseline)
            .arg(root().join("target/release/mailgate"))
            .arg(rounds.to_string())
            .current_dir(root()),
    )
}

/// `bench hardening --against REV`: the hardening figures of REV's release build, then of this
/// tree's, each against fresh servers of its own (REV's may die on a request this tree answers).
fn hardening_against(rev: &str) -> Result<(), String> {
    cargo(&["build", "--release", "-p", "mailgate"])?;
    let baseline = baseline::build(&root(), rev)?;
    let builds = [
        (format!("baseline {rev}"), baseline),
        (
            "current".to_string(),
            root().join("target/release/mailgate"),
        ),
    ];
    for (label, binary) in builds {
        println!("== hardening figures of {label} ({})", binary.display());
        // A baseline that fails some figure still lets the current build be measured.
        if let Err(e) = status(
            Command::new("bash")
                .arg(root().join("host/benches/hardening.sh"))
                .env("BIN", &binary)
                .current_dir(root()),
        ) {
            println!("== {label}: {e}");
        }
    }
    Ok(())
}

/// The `mailgate plugin new` template in every language, scaffolded once into
/// `target/bench-plugins/src/<lang>` and built into `target/bench-plugins/policy-<lang>.wasm`.
fn build_policy_in_each_language() -> Result<(), String> {
    use mailgate_plugin_build::scaffold::{default_sdk, Scaffold};
    let tools = tools();
    let wit = root().join("wit");
    let plugins = root().join("target/bench-plugins");
    // Rust: the target dir the scaffold tests use too, so the SDK compiles once.
    let rust_target_dir = root().join("target/scaffold-guests");
    for language in Language::ALL {
        let dir = plugins.join("src").join(language.as_str());
        if !dir.exists() {
            let sdk = default_sdk();
            let name = format!("policy-{}", language.as_str());
            Scaffold {
                language,
                name: &name,
                dir: &dir,
                sdk: sdk.as_deref(),
            }
            .create()
            .map_err(|e| e.to_string())?;
        }
        let out = plugins.join(format!("policy-{}.wasm", language.as_str()));
        Build {
            tools: &tools,
            wit: &wit,
            dir: &dir,
            out: &out,
            rust_target_dir: Some(&rust_target_dir),
        }
        .run(language)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

fn lint() -> Result<(), String> {
    layers::check(&root())?;
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
    ensure_guest_target()?;
    let mut args = guest_args("clippy");
    let names: Vec<String> = guests("plugins")
        .into_iter()
        .chain(guests("tests/fixtures"))
        .collect();
    args.extend(["-p", "mailgate-sdk"]);
    for name in &names {
        args.extend(["-p", name.as_str()]);
    }
    args.extend(["--", "-D", "warnings"]);
    cargo(&args)
}
