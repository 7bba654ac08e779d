//! The Redis counter store against a real `redis-server` (each test starts
//! its own on a free loopback port, in a temp dir, with an fsynced AOF):
//! the store contract (also run against `MemoryStore`, the reference),
//! two replicas granting at once, Redis killed and restarted mid-run, Redis
//! down when the store is made, and a three-node Redis Cluster.
//!
//! Without `redis-server` on PATH the Redis tests pass with a note, unless
//! `SLUICE_REQUIRE_REDIS` is set (e2e/test-all.sh sets it): then they fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "support/store_contract.rs"]
mod store_contract;
mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::limits::redis::RedisStore;
use sluice::limits::store::{CounterStore, MemoryStore, Settlement, Totals};
use store_contract::{key, TTL};
use support::{backend, client, config, Sluice, ENV};

/// Whether the Redis tests can run; panics when they must and cannot.
fn redis_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var_os("SLUICE_REQUIRE_REDIS").is_some() {
            panic!("redis-server is not on PATH and SLUICE_REQUIRE_REDIS is set");
        }
        eprintln!(
            "skipped: redis-server is not on PATH (apt-get install redis-server, \
             or run e2e/test-all.sh, which installs it)"
        );
    }
    found
}

/// A port free on loopback, with its cluster bus port (+10000) free too.
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A `redis-server` of this test's own; killed when dropped.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts one, or None (after a note) when there is no redis-server.
    fn start() -> Option<Self> {
        Self::start_with(free_port(), &[])
    }

    fn start_with(port: u16, extra: &[&str]) -> Option<Self> {
        if !redis_available() {
            return None;
        }
        let mut server = Self {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.run();
        Some(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.log"))
            .unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(&self.extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: no chance to write anything more.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and dir (so from the same AOF).
    fn restart(&mut self) {
        self.kill();
        self.run();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the store reaches its server.
async fn until_up(store: &RedisStore, server: &RedisServer) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.ping().await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => {
                panic!("redis never answered: {e}\n{}", server.log())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn store_for(server: &RedisServer) -> RedisStore {
    let store = RedisStore::new(&server.url(), false).unwrap();
    until_up(&store, server).await;
    store
}

/// One test per contract check and backend.
macro_rules! contract {
    ($($check:ident),* $(,)?) => {
        mod memory_contract {
            use super::*;
            $(
                #[tokio::test]
                async fn $check() {
                    store_contract::$check(&MemoryStore::ephemeral()).await;
                }
            )*
        }
        mod redis_contract {
            use super::*;
            $(
                #[tokio::test]
                async fn $check() {
                    let Some(server) = RedisServer::start() else { return };
                    store_contract::$check(&store_for(&server).await).await;
                }
            )*
        }
    };
}

contract!(
    grants_never_exceed_the_limit,
    expired_leases_count_as_spent,
    a_lease_expires_after_its_ttl,
    spend_beyond_a_lease_is_settled,
    unleased_spend_always_counts,
    holders_are_kept_apart,
    windows_are_separate_counters,
    a_sliding_window_weighs_the_previous_one,
    a_sliding_window_counts_the_previous_ones_leases,
    a_fixed_window_ignores_the_previous_one,
    a_batch_settles_many_counters,
    unknown_counters_are_empty,
    huge_limits_are_as_good_as_none,
    a_retried_batch_counts_once,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_grants_on_one_memory_store_never_exceed_the_limit() {
    let store: Arc<dyn CounterStore> = Arc::new(MemoryStore::ephemeral());
    store_contract::concurrent_grants_never_exceed_the_limit(&[store.clone(), store]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_granting_at_once_never_exceed_the_limit() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let replicas: Vec<Arc<dyn CounterStore>> = vec![
        Arc::new(store_for(&server).await),
        Arc::new(store_for(&server).await),
    ];
    store_contract::concurrent_grants_never_exceed_the_limit(&replicas).await;
}

/// Redis killed mid-run: calls fail promptly; restarted from its AOF:
/// settled spend is all there and the same store works again.
#[tokio::test]
async fn a_redis_restart_loses_no_settled_spend() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let timeout = Duration::from_millis(500);
    let store = RedisStore::with_timeout(&server.url(), false, timeout).unwrap();
    until_up(&store, &server).await;
    let k = key("restart", 1000);
    store.grant("a", &k, 100, 1, TTL).await.unwrap();
    store
        .settle(
            "a",
            0,
            &[Settlement {
                key: k.clone(),
                spent: 70,
                unused: 0,
                unleased: 0,
            }],
        )
        .await
        .unwrap();

    server.kill();
    for _ in 0..3 {
        let started = Instant::now();
        let error = store.grant("a", &k, 10, 1, TTL).await.unwrap_err();
        // A hang, not a speed, is what this catches.
        assert!(started.elapsed() < Duration::from_secs(5), "{error}");
        assert!(
            error.to_string().contains("redis at redis://127.0.0.1"),
            "{error}"
        );
        store.totals(&k).await.unwrap_err();
    }

    server.restart();
    until_up(&store, &server).await;
    // The outstanding lease (30 left of a's 100) survived too.
    assert_eq!(
        store.totals(&k).await.unwrap(),
        Totals {
            settled: 70,
            leased: 30
        }
    );
    assert_eq!(
        store.grant("b", &k, 1000, 1, TTL).await.unwrap().granted,
        900
    );
}

/// A store made while Redis is down: no error then, errors per call, and
/// it works as soon as Redis is up.
#[tokio::test]
async fn a_store_made_before_redis_is_up_works_once_it_is() {
    if !redis_available() {
        return;
    }
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let store = RedisStore::with_timeout(&url, false, Duration::from_millis(500)).unwrap();
    let k = key("late", 10);
    let started = Instant::now();
    store.grant("a", &k, 5, 1, TTL).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));

    let server = RedisServer::start_with(port, &[]).unwrap();
    until_up(&store, &server).await;
    assert_eq!(store.grant("a", &k, 5, 1, TTL).await.unwrap().granted, 5);
}

/// A server that accepts connections and never answers (a hung Redis, or
/// a black hole): calls end at the timeout all the same.
#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let store = RedisStore::with_timeout(&url, false, Duration::from_millis(300)).unwrap();
    let started = Instant::now();
    let error = store
        .grant("a", &key("silent", 10), 5, 1, TTL)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "{error}");
    assert!(error.to_string().contains("within"), "{error}");
    drop(listener);
}

/// A grant that reaches Redis after its caller gave up (Redis paused past
/// the call's timeout, as a partition that heals would deliver it) grants
/// nothing: no lease is left that no one holds. Deadlines are in Redis's
/// time (the offset learnt from earlier answers), so clock skew between a
/// replica and Redis does not matter.
#[tokio::test]
async fn a_grant_that_arrives_after_its_caller_gave_up_grants_nothing() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::with_timeout(&server.url(), false, Duration::from_millis(300)).unwrap();
    until_up(&store, &server).await;
    let k = key("late", 1_000);
    // One grant in time first: the store learns Redis's clock.
    store.grant("b", &k, 1, 1, TTL).await.unwrap();
    let pid = server.child.as_ref().unwrap().id().to_string();
    let signal = |name: &str| {
        let done = Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(done.success());
    };
    signal("-STOP");
    assert!(store.grant("a", &k, 100, 1, TTL).await.is_err());
    // Past the 300 ms timeout (and its 200 ms margin).
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    signal("-CONT");
    let deadline = Instant::now() + Duration::from_secs(5);
    let totals = loop {
        if let Ok(totals) = store.totals(&k).await {
            break totals;
        }
        assert!(Instant::now() < deadline, "redis did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(totals.leased, 1, "only b's lease: {totals:?}");
    // And a grant in time still grants.
    assert_eq!(
        store.grant("a", &k, 100, 1, TTL).await.unwrap().granted,
        100
    );
}

/// A window's key outlives the next window (for the sliding weight), and
/// then goes; a key made by unleased spend alone expires too.
#[tokio::test]
async fn window_keys_expire_a_window_after_the_next_one() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store_for(&server).await;
    let pttl = |k: &sluice::limits::store::CounterKey| {
        let out = Command::new("redis-cli")
            .args([
                "-p",
                &server.port.to_string(),
                "pttl",
                &RedisStore::key_name(k),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    let k = key("ttl", 10);
    store.grant("a", &k, 5, 1, TTL).await.unwrap();
    // The window ends in 59 s; the key lives one more window and a minute.
    let left = pttl(&k);
    assert!((170_000..=180_000).contains(&left), "{left}");
    let fresh = key("ttl-unleased", 10);
    store
        .settle(
            "a",
            0,
            &[Settlement {
                key: fresh.clone(),
                spent: 0,
                unused: 0,
                unleased: 3,
            }],
        )
        .await
        .unwrap();
    let left = pttl(&fresh);
    assert!((170_000..=180_000).contains(&left), "{left}");
}

/// Three masters made with `redis-cli --cluster create`.
struct Cluster {
    nodes: Vec<RedisServer>,
}

impl Cluster {
    fn start() -> Option<Self> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let node = RedisServer::start_with(
                free_port(),
                &["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"],
            )?;
            nodes.push(node);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(15);
        // The nodes may still be starting.
        loop {
            let out = Command::new("redis-cli")
                .arg("--cluster")
                .arg("create")
                .args(&addresses)
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "redis-cli --cluster create: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let cluster = Cluster { nodes };
        for node in &cluster.nodes {
            while !cluster
                .cli(node.port, &["cluster", "info"])
                .contains("cluster_state:ok")
            {
                assert!(Instant::now() < deadline, "the cluster never got ready");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Some(cluster)
    }

    fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The keys each node holds.
    fn keys_per_node(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|n| {
                self.cli(n.port, &["--scan", "--pattern", "sluice:*"])
                    .lines()
                    .count()
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_cluster_keeps_the_contract() {
    if !redis_available() {
        return;
    }
    let cluster = Cluster::start().unwrap();
    let url = cluster.nodes[1].url();
    let store = RedisStore::new(&url, true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Err(e) = store.ping().await {
        assert!(Instant::now() < deadline, "{e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The sliding checks run a script on two windows of a counter: Redis
    // Cluster refuses that (CROSSSLOT) unless both are in one slot.
    store_contract::grants_never_exceed_the_limit(&store).await;
    store_contract::expired_leases_count_as_spent(&store).await;
    store_contract::unleased_spend_always_counts(&store).await;
    store_contract::a_sliding_window_weighs_the_previous_one(&store).await;
    store_contract::a_sliding_window_counts_the_previous_ones_leases(&store).await;
    store_contract::a_batch_settles_many_counters(&store).await;
    let replicas: Vec<Arc<dyn CounterStore>> = vec![
        Arc::new(RedisStore::new(&url, true).unwrap()),
        Arc::new(RedisStore::new(&cluster.nodes[2].url(), true).unwrap()),
    ];
    store_contract::concurrent_grants_never_exceed_the_limit(&replicas).await;

    // The counters are spread over the nodes, and a counter's windows
    // share a slot.
    let per_node = cluster.keys_per_node();
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() >= 2,
        "{per_node:?}"
    );
    let k = store_contract::sliding_key("slot", 10);
    let port = cluster.nodes[0].port;
    let slot = |name: String| cluster.cli(port, &["cluster", "keyslot", &name]);
    assert_eq!(
        slot(RedisStore::key_name(&k)),
        slot(RedisStore::key_name(&k.previous()))
    );
}

/// A test upstream, and a gateway config routing `gpt-4o` to it with the
/// counters in the Redis at `redis_url` (or the config's default store),
/// and a Budget on team-a whose spec continues with `budget`.
async fn gateway_config(
    redis_url: Option<&str>,
    budget: &str,
) -> (sluice_test_upstream::Upstream, String) {
    let up = sluice_test_upstream::Upstream::start(sluice_test_upstream::Options {
        name: "primary".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut routes =
        "      - models: [\"gpt-4o\"]\n        backends: [{backend: primary}]".to_owned();
    if let Some(url) = redis_url {
        routes.push_str(&format!(
            "\n  state: {{type: redis, redis: {{url: \"{url}\"}}}}"
        ));
    }
    let cfg = format!(
        "{}---\nkind: Budget\nmetadata: {{name: team-a}}\nspec:\n  tenant: team-a\n{budget}",
        config(&routes, &backend("primary", &up.url()))
    );
    (up, cfg)
}

/// Two gateway replicas sharing one Redis hold a request limit together,
/// and refuse with 503 (FailClosed) while Redis is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_a_limit_through_redis() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let (up, cfg) = gateway_config(
        Some(&server.url()),
        "  limits:\n    - {requests: 10, period: Hourly}\n",
    )
    .await;
    let replicas = [Sluice::start(&cfg, ENV), Sluice::start(&cfg, ENV)];
    let body = serde_json::json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let mut served = 0;
    for i in 0..30 {
        let status = replicas[i % 2].chat(&body, &[]).await.status();
        assert!(status == 200 || status == 429, "{status}");
        served += usize::from(status == 200);
    }
    // Each replica may sit on a lease of one the other cannot use.
    assert!((8..=10).contains(&served), "{served}");
    assert_eq!(up.requests().len(), served);

    server.kill();
    let status = replicas[0].chat(&body, &[]).await.status();
    assert_eq!(status, 503);
}

/// `failureMode: FailOpen`: while Redis is down the gateway serves and
/// counts locally; when Redis is back the spend made meanwhile is settled
/// into it, so nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_serves_while_redis_is_down_and_settles_when_it_returns() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let (_up, cfg) = gateway_config(
        Some(&server.url()),
        "  failureMode: FailOpen\n  limits:\n    - {requests: 100, period: Hourly}\n",
    )
    .await;
    let sluice = Sluice::start(&cfg, ENV);
    let body = serde_json::json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..3 {
        assert_eq!(sluice.chat(&body, &[]).await.status(), 200);
    }
    server.kill();
    // Past the lease this process holds: the store cannot be asked.
    for _ in 0..5 {
        assert_eq!(
            sluice.chat(&body, &[]).await.status(),
            200,
            "FailOpen serves"
        );
    }
    assert!(sluice.stderr().contains("counter store unreachable"));
    server.restart();
    let report = |sluice: &Sluice| {
        let admin = sluice.admin.clone();
        async move {
            client()
                .get(format!("{admin}/budgets"))
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let mut spent = serde_json::Value::Null;
    for _ in 0..50 {
        let budgets = report(&sluice).await;
        spent = budgets["budgets"][0]["limits"][0]["spent"].clone();
        if spent == 8 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        spent, 8,
        "every request served, while Redis was down too, counts"
    );
}

/// `--state redis` / `SLUICE_STATE=redis` with `SLUICE_REDIS_URL` (what the
/// Helm chart sets) puts the counters in Redis whatever the config says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_chooses_the_counter_store() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let (_up, cfg) =
        gateway_config(None, "  limits:\n    - {requests: 10, period: Hourly}\n").await;
    let url = server.url();
    let mut env = ENV.to_vec();
    env.push(("SLUICE_STATE", "redis"));
    env.push(("SLUICE_REDIS_URL", &url));
    let sluice = Sluice::start(&cfg, &env);
    let body = serde_json::json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(sluice.chat(&body, &[]).await.status(), 200);
    server.kill();
    // The lease this replica holds is 1% of 10: the next request asks Redis.
    assert_eq!(
        sluice.chat(&body, &[]).await.status(),
        503,
        "the counters are in the Redis that is now down"
    );
}
