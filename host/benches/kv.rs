//! The plugin key-value store on each backend, printed as figures (`cargo xtask bench kv`):
//! the JavaScript greylist's rcpt-to call (a kv-get and a kv-set per call) through the chain,
//! with the local store (redb in a temporary directory) and with Redis (Debian's
//! redis-server, started here on loopback), p50/p99 over many calls; and the bare store
//! operations on each.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailgate::config::{Config, RuntimeConfig};
use mailgate::mail::MailState;
use mailgate::plugin::services::Services;
use mailgate::plugin::{PluginSet, Runtime, StageCall};
use mailgate::store::kv::KvStore;
use mailgate::store::kv::{local::DiskKv, redis::RedisKv};

mod support;
use support::{percentile, services, session, us};

const CALLS: usize = 5000;

fn plugins_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins")
}

async fn greylist(runtime: &Arc<Runtime>) -> Arc<PluginSet> {
    let toml = "[[plugin]]\npath = \"greylist.wasm\"\ngrant = [\"kv\"]\nmemory-mb = 128\n\
                timeout-ms = 2000\n[plugin.config]\ndelay-seconds = 0\n";
    let config = Config::parse(toml, Path::new("bench.toml"), plugins_dir()).expect("config");
    Arc::new(
        PluginSet::load(runtime.clone(), &config)
            .await
            .expect("greylist.wasm (run `cargo xtask bench kv`)"),
    )
}

fn line(what: &str, samples: &mut [Duration]) {
    println!(
        "{what:<44} p50 {:>7.1} us   p99 {:>7.1} us",
        us(percentile(samples, 0.5)),
        us(percentile(samples, 0.99))
    );
}

/// The greylist's rcpt-to call, each on a new triple (get misses, set) and on a known one.
async fn greylist_calls(set: &Arc<PluginSet>, kv: Arc<dyn KvStore>, backend: &str) {
    let mut services: Services = services();
    services.kv = kv;
    let mut new = Vec::with_capacity(CALLS);
    let mut known = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let mut state = MailState {
            session: session(),
            ..MailState::default()
        };
        state.session.peer_ip = format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255);
        state.envelope.sender = "sender@example.net".into();
        let mut tx = set.transaction("bench", services.clone());
        let t = Instant::now();
        tx.run(StageCall::RcptTo("a@example.org", &[]), &mut state)
            .await;
        new.push(t.elapsed());
        let t = Instant::now();
        tx.run(StageCall::RcptTo("a@example.org", &[]), &mut state)
            .await;
        known.push(t.elapsed());
    }
    line(
        &format!("greylist rcpt-to, new triple, {backend}"),
        &mut new,
    );
    line(
        &format!("greylist rcpt-to, known triple, {backend}"),
        &mut known,
    );
}

async fn bare_operations(kv: &dyn KvStore, backend: &str) {
    let (mut get, mut set, mut incr) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..CALLS {
        let key = format!("k{i}");
        let t = Instant::now();
        kv.set("bench", &key, "1700000000", Some(u64::MAX / 2))
            .await
            .expect("set");
        set.push(t.elapsed());
        let t = Instant::now();
        kv.get("bench", &key, 0).await.expect("get");
        get.push(t.elapsed());
        let t = Instant::now();
        kv.incr("bench", "counter", 1, None, 0).await.expect("incr");
        incr.push(t.elapsed());
    }
    line(&format!("kv-get, {backend}"), &mut get);
    line(&format!("kv-set, {backend}"), &mut set);
    line(&format!("kv-incr, {backend}"), &mut incr);
}

struct RedisServer(std::process::Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_server(port: u16, dir: &Path) -> RedisServer {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (Debian package redis-server)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    RedisServer(child)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // Multi-threaded, as the gateway runs: the local store's commits leave the worker.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        let scratch = tempfile::tempdir().expect("tempdir");
        let runtime = Arc::new(
            Runtime::new(
                &RuntimeConfig::default(),
                Some(scratch.path().join("cache")),
            )
            .expect("engine"),
        );
        let set = greylist(&runtime).await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let _redis = redis_server(port, scratch.path());
        let local: Arc<dyn KvStore> =
            Arc::new(DiskKv::open(&scratch.path().join("kv.redb")).expect("redb"));
        let url = format!("redis://127.0.0.1:{port}/0");
        let redis: Arc<dyn KvStore> =
            Arc::new(RedisKv::new(&url, "bench", Duration::from_secs(1)).expect("redis"));
        println!("{CALLS} calls each, 2 worker threads, {} cores", num_cpus());
        bare_operations(local.as_ref(), "local (redb, fsync per write)").await;
        bare_operations(redis.as_ref(), "redis (loopback)").await;
        greylist_calls(&set, local, "local").await;
        greylist_calls(&set, redis, "redis").await;
    });
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
