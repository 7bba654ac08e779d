//! The Raft counter store, as a cluster of three (or five) nodes in this
//! process on loopback ports: the store contract (the same checks as the
//! memory and Redis stores) against a follower, replicas granting at once,
//! the leader stopped mid-run, every node restarted from its disk, a node
//! that lost its disk rejoining, and a minority that cannot commit.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "support/store_contract.rs"]
mod store_contract;
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::limits::raft::{RaftOptions, RaftStore, Tuning};
use sluice::limits::store::{CounterStore, Settlement};
use store_contract::{key, TTL};
use support::{backend, client, config, Sluice, ENV};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// N nodes, their data dirs kept in one temp dir.
struct Cluster {
    dir: tempfile::TempDir,
    /// The peers nodes started from now on are given.
    peers: BTreeMap<u64, String>,
    nodes: BTreeMap<u64, Arc<RaftStore>>,
    tuning: Tuning,
}

impl Cluster {
    async fn start(n: u64) -> Self {
        Self::start_tuned(n, Tuning::default()).await
    }

    async fn start_tuned(n: u64, tuning: Tuning) -> Self {
        let peers: BTreeMap<u64, String> = (1..=n)
            .map(|id| (id, format!("127.0.0.1:{}", free_port())))
            .collect();
        let mut cluster = Self {
            dir: tempfile::tempdir().unwrap(),
            peers,
            nodes: BTreeMap::new(),
            tuning,
        };
        for id in 1..=n {
            cluster.start_node(id).await;
        }
        cluster.leader().await;
        cluster
    }

    fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    async fn start_node(&mut self, id: u64) {
        // A node stopped in this process lets go of its files a moment
        // after its shutdown returns (a process that exits, at once).
        let deadline = Instant::now() + Duration::from_secs(5);
        let store = loop {
            let started = RaftStore::start(RaftOptions {
                id,
                peers: self.peers.clone(),
                data_dir: self.data_dir(id),
                listen: None,
                token: Some("test-token".into()),
                tuning: self.tuning.clone(),
            })
            .await;
            match started {
                Ok(store) => break store,
                Err(e) if e.to_string().contains("already open") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        self.nodes.insert(id, store);
    }

    async fn stop_node(&mut self, id: u64) {
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
    }

    /// The leader the running nodes agree on (waits up to 10 s).
    async fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leaders: Vec<Option<u64>> = self.nodes.values().map(|n| n.leader_id()).collect();
            if let Some(Some(leader)) = leaders.first() {
                if leaders.iter().all(|l| *l == Some(*leader)) && self.nodes.contains_key(leader) {
                    return *leader;
                }
            }
            assert!(Instant::now() < deadline, "no leader: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn follower(&self) -> Arc<RaftStore> {
        let leader = self.leader().await;
        self.nodes
            .iter()
            .find(|(id, _)| **id != leader)
            .map(|(_, node)| node.clone())
            .unwrap()
    }

    async fn stop(mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.stop_node(id).await;
        }
    }
}

/// One test per contract check, run on a follower of a fresh cluster
/// (every write is forwarded to the leader).
macro_rules! contract {
    ($($check:ident),* $(,)?) => {
        mod raft_contract {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let cluster = Cluster::start(3).await;
                    let follower = cluster.follower().await;
                    store_contract::$check(&*follower).await;
                    cluster.stop().await;
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
async fn three_replicas_granting_at_once_never_exceed_the_limit() {
    let cluster = Cluster::start(3).await;
    let replicas: Vec<Arc<dyn CounterStore>> = cluster
        .nodes
        .values()
        .map(|n| n.clone() as Arc<dyn CounterStore>)
        .collect();
    store_contract::concurrent_grants_never_exceed_the_limit(&replicas).await;
    cluster.stop().await;
}

fn spend(key: &sluice::limits::store::CounterKey, amount: u64) -> Settlement {
    Settlement {
        key: key.clone(),
        spent: amount,
        unused: 0,
        unleased: 0,
    }
}

/// Settled spend is committed before a settlement returns: stopping the
/// leader right after loses none of it, and a new leader takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_keeps_every_settled_spend() {
    let mut cluster = Cluster::start(3).await;
    let k = key("leader-loss", 1_000);
    let first = cluster.follower().await;
    first.grant("a", &k, 100, 1, TTL).await.unwrap();
    first.settle("a", 0, &[spend(&k, 70)]).await.unwrap();
    let old = cluster.leader().await;
    let started = Instant::now();
    cluster.stop_node(old).await;
    let new = cluster.leader().await;
    assert_ne!(new, old);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "election took {took:?}");
    let node = cluster.nodes[&new].clone();
    assert_eq!(node.totals(&k).await.unwrap().settled, 70);
    // And it takes writes.
    node.grant("b", &k, 10, 1, TTL).await.unwrap();
    node.settle("b", 0, &[spend(&k, 10)]).await.unwrap();
    assert_eq!(node.totals(&k).await.unwrap().settled, 80);
    cluster.stop().await;
}

/// Every node stopped and started again from its disk: the ledger is the
/// same (rebuilt from the snapshot and the committed log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_restart_loses_no_settled_spend() {
    let mut cluster = Cluster::start(3).await;
    let k = key("restart", 10_000);
    let node = cluster.follower().await;
    for i in 0..20 {
        let holder = format!("h{i}");
        node.grant(&holder, &k, 50, 1, TTL).await.unwrap();
        node.settle(&holder, 0, &[spend(&k, 25)]).await.unwrap();
    }
    drop(node);
    for id in 1..=3 {
        cluster.stop_node(id).await;
    }
    for id in 1..=3 {
        cluster.start_node(id).await;
    }
    let leader = cluster.leader().await;
    for node in cluster.nodes.values() {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let totals = node.totals(&k).await.unwrap();
            // 20 x 25 settled; each holder's other 25 is still leased.
            if totals.settled == 500 && totals.leased == 500 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} has {totals:?}",
                node.id()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(cluster.nodes.contains_key(&leader));
    cluster.stop().await;
}

/// A follower whose data dir is wiped rejoins: the leader brings it up to
/// date and it serves the same totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_lost_its_disk_rejoins() {
    let mut cluster = Cluster::start(3).await;
    let k = key("wiped", 1_000);
    let follower = cluster.follower().await.id();
    let leader = cluster.nodes[&cluster.leader().await].clone();
    leader.grant("a", &k, 100, 1, TTL).await.unwrap();
    leader.settle("a", 0, &[spend(&k, 40)]).await.unwrap();
    cluster.stop_node(follower).await;
    std::fs::remove_dir_all(cluster.data_dir(follower)).unwrap();
    // Spend while it is away, too.
    leader.settle("a", 0, &[spend(&k, 20)]).await.unwrap();
    cluster.start_node(follower).await;
    let node = cluster.nodes[&follower].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.totals(&k).await.unwrap().settled != 60 {
        assert!(Instant::now() < deadline, "never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It is a voter again and the cluster still commits through it.
    node.settle("a", 0, &[spend(&k, 5)]).await.unwrap();
    assert_eq!(node.totals(&k).await.unwrap().settled, 65);
    cluster.stop().await;
}

/// Without a majority nothing is granted or settled: calls fail within
/// the store's timeout (the limiter then applies `failureMode`), and work
/// again once a majority is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_cannot_commit_and_says_so_promptly() {
    let mut cluster = Cluster::start(3).await;
    let k = key("minority", 1_000);
    let leader = cluster.leader().await;
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for id in &others {
        cluster.stop_node(*id).await;
    }
    let alone = cluster.nodes[&leader].clone();
    let started = Instant::now();
    let error = alone.grant("a", &k, 10, 1, TTL).await.unwrap_err();
    // Within the store's write timeout (3 s, to ride out elections).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(error.to_string().contains("raft"), "{error}");
    for id in &others {
        cluster.start_node(*id).await;
    }
    cluster.leader().await;
    let grant = alone.grant("a", &k, 10, 1, TTL).await.unwrap();
    assert_eq!(grant.granted, 10);
    cluster.stop().await;
}

/// Five nodes survive two losses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_keep_committing_with_two_down() {
    let mut cluster = Cluster::start(5).await;
    let k = key("five", 1_000);
    let leader = cluster.leader().await;
    let down: Vec<u64> = (1..=5).filter(|id| *id != leader).take(2).collect();
    for id in &down {
        cluster.stop_node(*id).await;
    }
    let node = cluster.follower().await;
    node.grant("a", &k, 10, 1, TTL).await.unwrap();
    node.settle("a", 0, &[spend(&k, 10)]).await.unwrap();
    assert_eq!(node.totals(&k).await.unwrap().settled, 10);
    cluster.stop().await;
}

/// Peers without the shared token are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_traffic_needs_the_token() {
    let cluster = Cluster::start(3).await;
    let addr = cluster.peers[&1].clone();
    let client = reqwest::Client::new();
    let answer = client
        .post(format!("http://{addr}/raft/write"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let answer = client
        .post(format!("http://{addr}/raft/vote"))
        .bearer_auth("test-token")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    cluster.stop().await;
}

/// Three `sluice run` replicas with `state.type: raft` (config from
/// API.md, ids from `--raft-id`) hold a request limit together; `/cluster`
/// and `sluice cluster status` show the group; the Raft gauges are on
/// `/metrics`; with two replicas gone the last one refuses (FailClosed)
/// once its lease is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_share_a_limit_through_raft() {
    let up = sluice_test_upstream::Upstream::start(sluice_test_upstream::Options {
        name: "primary".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let peers: Vec<String> = (1..=3)
        .map(|id| format!("\"{id}=127.0.0.1:{}\"", free_port()))
        .collect();
    let routes = format!(
        "      - models: [\"gpt-4o\"]\n        backends: [{{backend: primary}}]\n  state:\n    type: raft\n    raft: {{peers: [{}], dataDir: \"{}/${{RAFT_NODE}}\"}}",
        peers.join(", "),
        dir.path().display()
    );
    let cfg = format!(
        "{}---\nkind: Budget\nmetadata: {{name: team-a}}\nspec:\n  tenant: team-a\n  limits:\n    - {{requests: 12, period: Hourly}}\n",
        config(&routes, &backend("primary", &up.url()))
    );
    let replicas: Vec<Sluice> = (1..=3)
        .map(|id| {
            let node = format!("node-{id}");
            let mut env = ENV.to_vec();
            env.push(("RAFT_NODE", &node));
            Sluice::start_with(Some(&cfg), &env, &["--raft-id", &id.to_string()])
        })
        .collect();
    let http = client();
    // Wait for a leader.
    let deadline = Instant::now() + Duration::from_secs(15);
    let report = loop {
        let report: serde_json::Value = http
            .get(format!("{}/cluster", replicas[0].admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if report["leader"].is_u64() {
            break report;
        }
        assert!(Instant::now() < deadline, "no leader: {report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(report["state"], "raft");
    assert_eq!(report["members"].as_array().unwrap().len(), 3);

    let body = serde_json::json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let mut served = 0;
    for i in 0..30 {
        let status = replicas[i % 3].chat(&body, &[]).await.status();
        assert!(status == 200 || status == 429, "{status}");
        served += usize::from(status == 200);
    }
    // Never more than the limit; a replica may sit on a lease of one.
    assert!((10..=12).contains(&served), "{served}");
    assert_eq!(up.requests().len(), served);

    let admin = replicas[1].admin.trim_start_matches("http://").to_owned();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["cluster", "status", "--admin", &admin])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(
        table.contains("store: raft") && table.contains("leader:"),
        "{table}"
    );
    assert_eq!(
        table.lines().filter(|l| l.contains("127.0.0.1:")).count(),
        3,
        "{table}"
    );

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let metrics = http
        .get(format!("{}/metrics", replicas[2].admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("sluice_raft_voters 3"), "{metrics}");
    assert!(metrics.contains("sluice_raft_term "), "{metrics}");

    // Two of three gone: no majority; the last one refuses with 503 once
    // its own lease is spent, and says why.
    let mut replicas = replicas;
    let last = replicas.remove(0);
    drop(replicas);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(last.chat(&body, &[]).await.status().as_u16());
    }
    assert!(
        statuses.contains(&503) || statuses.iter().all(|s| *s == 429),
        "{statuses:?}"
    );
}

fn report_voters(node: &RaftStore) -> Vec<u64> {
    let report = node.report();
    let mut voters: Vec<u64> = report["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["voter"] == true)
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    voters.sort_unstable();
    voters
}

async fn until_voters(node: &RaftStore, want: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let voters = report_voters(node);
        if voters == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "voters {voters:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Snapshots compact the log; a follower that lost its disk after that is
/// brought back by a snapshot sent over the network (the log it would need
/// is gone), and has every settled spend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_follower_is_restored_from_a_snapshot() {
    let tuning = Tuning {
        snapshot_every: 20,
        logs_kept: 0,
        ..Tuning::default()
    };
    let mut cluster = Cluster::start_tuned(3, tuning).await;
    let k = key("snapshot", 100_000);
    let leader = cluster.nodes[&cluster.leader().await].clone();
    let follower = cluster.follower().await.id();
    cluster.stop_node(follower).await;
    std::fs::remove_dir_all(cluster.data_dir(follower)).unwrap();
    for i in 0..60 {
        let holder = format!("h{}", i % 4);
        leader.grant(&holder, &k, 10, 1, TTL).await.unwrap();
        leader.settle(&holder, 0, &[spend(&k, 10)]).await.unwrap();
    }
    let report = leader.report();
    assert!(
        report["snapshotIndex"].as_u64().unwrap_or(0) >= 20,
        "{report}"
    );
    cluster.start_node(follower).await;
    let node = cluster.nodes[&follower].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.totals(&k).await.unwrap().settled != 600 {
        assert!(Instant::now() < deadline, "{}", node.report());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(node.report()["snapshotIndex"].as_u64().unwrap_or(0) >= 20);
    cluster.stop().await;
}

/// Scaling: a fourth peer listed in the replicas' config (rolled out one by
/// one) is added as a voter; unlisted again and gone, it is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_follows_the_configured_peers() {
    let tuning = Tuning {
        gone_after: Duration::from_secs(2),
        ..Tuning::default()
    };
    let mut cluster = Cluster::start_tuned(3, tuning).await;
    let k = key("scale", 1_000);
    let three = cluster.peers.clone();
    cluster
        .peers
        .insert(4, format!("127.0.0.1:{}", free_port()));
    cluster.start_node(4).await;
    // A rolling restart hands every replica the new list.
    for id in 1..=3 {
        cluster.stop_node(id).await;
        cluster.start_node(id).await;
        cluster.leader().await;
    }
    let node = cluster.nodes[&1].clone();
    until_voters(&node, &[1, 2, 3, 4]).await;
    node.grant("a", &k, 10, 1, TTL).await.unwrap();
    // Scale back: node 4 stops, the others roll with the old list.
    cluster.stop_node(4).await;
    cluster.peers = three;
    for id in 1..=3 {
        cluster.stop_node(id).await;
        cluster.start_node(id).await;
        cluster.leader().await;
    }
    let node = cluster.nodes[&1].clone();
    until_voters(&node, &[1, 2, 3]).await;
    node.settle("a", 0, &[spend(&k, 10)]).await.unwrap();
    assert_eq!(node.totals(&k).await.unwrap().settled, 10);
    cluster.stop().await;
}
