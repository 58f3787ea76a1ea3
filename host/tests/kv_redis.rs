//! The Redis kv backend against a real redis-server (Debian's), started here on loopback: two
//! stores stand for two gateway nodes sharing one server.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mailgate::store::kv::redis::RedisKv;
use mailgate::store::kv::KvStore;

/// redis-server on a free loopback port, nothing persisted, killed on drop.
struct RedisServer {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl RedisServer {
    fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let child = RedisServer::spawn(port, dir.path(), extra);
        RedisServer { port, child, dir }
    }

    /// redis-server on `port`, waited for.
    fn spawn(port: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
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
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server)");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    fn store(&self, prefix: &str) -> RedisKv {
        let url = format!("redis://127.0.0.1:{}/0", self.port);
        RedisKv::new(&url, prefix, Duration::from_millis(1000)).expect("store")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_values_expiry_and_namespaces() {
    let redis = RedisServer::start();
    let (a, b) = (redis.store("site"), redis.store("site"));
    a.set("greylist", "triple", "1700000000", None)
        .await
        .expect("set");
    assert_eq!(
        b.get("greylist", "triple", 0).await,
        Ok(Some("1700000000".into()))
    );
    assert_eq!(b.get("other-plugin", "triple", 0).await, Ok(None));
    // Another site's prefix is another store.
    assert_eq!(
        redis.store("elsewhere").get("greylist", "triple", 0).await,
        Ok(None)
    );
    b.delete("greylist", "triple").await.expect("delete");
    assert_eq!(a.get("greylist", "triple", 0).await, Ok(None));

    // Expiry, seen the same from both nodes.
    a.set("p", "short", "x", Some(now_ms() + 300))
        .await
        .expect("set");
    assert_eq!(b.get("p", "short", 0).await, Ok(Some("x".into())));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while b.get("p", "short", 0).await != Ok(None) {
        assert!(std::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(a.get("p", "short", 0).await, Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_from_two_nodes_are_exact_and_keep_the_contract() {
    let redis = RedisServer::start();
    let nodes: [Arc<dyn KvStore>; 2] =
        [Arc::new(redis.store("site")), Arc::new(redis.store("site"))];
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let node = nodes[i % 2].clone();
            tokio::spawn(async move { node.incr("rate", "client", 1, None, 0).await })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.expect("task").expect("incr"));
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=400).collect::<Vec<i64>>(), "each value once");
    assert_eq!(
        nodes[1].get("rate", "client", 0).await,
        Ok(Some("400".into()))
    );

    // Non-numeric text counts as 0; a created counter takes the expiry, a live one keeps its own.
    let node = &nodes[0];
    node.set("rate", "text", "not a number", None)
        .await
        .expect("set");
    assert_eq!(node.incr("rate", "text", 5, None, 0).await, Ok(5));
    assert_eq!(
        node.incr("rate", "fresh", -2, Some(now_ms() + 300), 0)
            .await,
        Ok(-2)
    );
    assert_eq!(
        node.incr("rate", "fresh", 1, None, 0).await,
        Ok(-1),
        "keeps its expiry"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while node.get("rate", "fresh", 0).await != Ok(None) {
        assert!(
            std::time::Instant::now() < deadline,
            "the counter never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        node.incr("rate", "fresh", 1, None, 0).await,
        Ok(1),
        "starts again"
    );
    // Past what a Redis script can count exactly: an error, not a rounded value.
    node.set("rate", "big", "9007199254740990", None)
        .await
        .expect("set");
    let err = node
        .incr("rate", "big", 10, None, 0)
        .await
        .expect_err("overflow");
    assert!(err.contains("counter overflow"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_goes_away_gives_errors_in_time_and_comes_back() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let node = redis.store("site");
    node.set("p", "k", "v", None).await.expect("set");
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    let started = std::time::Instant::now();
    let err = node.get("p", "k", 0).await.expect_err("the server is gone");
    assert!(err.starts_with("kv store redis://127.0.0.1:"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A new server on the same port: the same store object works again.
    redis.child = RedisServer::spawn(port, redis.dir.path(), &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match node.set("p", "k", "back", None).await {
            Ok(()) => break,
            Err(e) => assert!(std::time::Instant::now() < deadline, "never recovered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node.get("p", "k", 0).await, Ok(Some("back".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_comes_from_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let redis = RedisServer::start_with(&["--requirepass", "p@ss:w/rd"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("redis.secret");
    std::fs::write(&file, "p@ss:w/rd\n").expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = mailgate::config::KvConfig {
        backend: format!("redis://127.0.0.1:{}/0", redis.port),
        ..Default::default()
    };
    let kv = mailgate::store::kv::open(&config, dir.path(), Some(&file)).expect("open");
    kv.set("p", "k", "v", None).await.expect("authenticated");
    let without = mailgate::store::kv::open(&config, dir.path(), None).expect("open");
    let err = without.get("p", "k", 0).await.expect_err("no password");
    assert!(err.to_lowercase().contains("auth"), "{err}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let refused = mailgate::store::kv::open(&config, dir.path(), Some(&file)).err();
    assert!(refused.is_some_and(|e| e.contains("readable by others")));
}
