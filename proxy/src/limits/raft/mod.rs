//! The `raft` counter store: the proxy replicas form one openraft group
//! and keep the counter ledger (see `ledger.rs`) as its replicated state
//! machine, so no extra service is needed and a minority may fail.
//! Grants and settlements are Raft log entries: a follower forwards them
//! to the leader, and nothing counts as granted or settled before a
//! majority has it on disk. Reads for reports come from the local copy.
//! Admission never waits on this: the limiter spends from leases.
//!
//! Owns: starting the node (storage, network, listener), forming the
//! cluster on first start, following membership changes of the
//! configured peers, and `/cluster`'s report.

mod network;
mod storage;
mod types;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openraft::{BasicNode, Config, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::store::{now_ms, CounterKey, CounterStore, Grant, Settlement, StoreError, Totals};
use network::{Network, PeerHttp, PeerStatus, WriteAnswer};
use storage::{Disk, LogStore, Machine, StateMachine};
use types::Raft;
pub use types::{Command, Reply, Request, TypeConfig};

/// A snapshot is taken after this many log entries (and the log before
/// it purged, keeping [`LOGS_KEPT`] for slow followers).
pub const SNAPSHOT_EVERY: u64 = 5_000;
const LOGS_KEPT: u64 = 1_000;
/// Longest a grant or settlement may take (forwarding and retries
/// included) before the limiter treats the store as unreachable: long
/// enough to ride out an election (a leader's death is noticed after
/// 0.5-1 s of silence, and a new one elected within about as much).
const WRITE_TIMEOUT: Duration = Duration::from_millis(3_000);
/// How often the leader compares the membership with the configured peers.
const MEMBERSHIP_EVERY: Duration = Duration::from_secs(2);
/// A member missing from the configured peers is removed once it has not
/// answered for this long (a replica scaled away, not one restarting).
const GONE_AFTER: Duration = Duration::from_secs(60);

/// How a replica joins the group.
#[derive(Debug, Clone)]
pub struct RaftOptions {
    /// This replica's id (never reused by another replica).
    pub id: u64,
    /// Every member, this one included: id -> `host:port`.
    pub peers: BTreeMap<u64, String>,
    /// Where the log, vote and snapshots are kept.
    pub data_dir: PathBuf,
    /// Where to listen for Raft traffic (default: this replica's peer
    /// address, or all interfaces on its port when that is a name).
    pub listen: Option<SocketAddr>,
    /// Shared secret peers present (`SLUICE_RAFT_TOKEN`).
    pub token: Option<Arc<str>>,
    /// Intervals (defaults in production; tests shorten them).
    pub tuning: Tuning,
}

/// Intervals of the group's housekeeping.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Log entries between snapshots.
    pub snapshot_every: u64,
    /// Log entries kept before the last snapshot.
    pub logs_kept: u64,
    /// How long an unlisted member may be silent before it is removed.
    pub gone_after: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            snapshot_every: SNAPSHOT_EVERY,
            logs_kept: LOGS_KEPT,
            gone_after: GONE_AFTER,
        }
    }
}

/// The Raft counter store of this replica.
pub struct RaftStore {
    raft: Raft,
    id: u64,
    http: PeerHttp,
    machine: Arc<RwLock<Machine>>,
    listen: SocketAddr,
    /// Log index of this replica's last committed write: reports wait until
    /// the local copy has applied it (read your writes).
    written: std::sync::atomic::AtomicU64,
    /// Stops the node's tasks (tests).
    stop: CancellationToken,
}

impl RaftStore {
    /// Opens the data dir, starts the node and its listener, and forms or
    /// joins the cluster in the background. Fails only on a bad data dir or
    /// an address that cannot be bound.
    pub async fn start(options: RaftOptions) -> anyhow::Result<Arc<Self>> {
        let own = options
            .peers
            .get(&options.id)
            .ok_or_else(|| anyhow::anyhow!("raft: id {} is not among the peers", options.id))?;
        let listen = match options.listen {
            Some(listen) => listen,
            None => listen_for(own)?,
        };
        let disk = Disk::open(&options.data_dir).map_err(|e| anyhow::anyhow!("raft: {e}"))?;
        let log = LogStore::new(disk.clone());
        let machine = StateMachine::open(disk).map_err(|e| anyhow::anyhow!("raft: {e}"))?;
        let shared = machine.machine.clone();
        let source = Some(listen.ip()).filter(|ip| !ip.is_unspecified());
        let http = PeerHttp::new(source, options.token.clone());
        let config = Config {
            cluster_name: "sluice".into(),
            heartbeat_interval: 100,
            election_timeout_min: 500,
            election_timeout_max: 1_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.tuning.snapshot_every),
            max_in_snapshot_log_to_keep: options.tuning.logs_kept,
            install_snapshot_timeout: 10_000,
            ..Config::default()
        }
        .validate()
        .map_err(|e| anyhow::anyhow!("raft config: {e}"))?;
        let network = Network { http: http.clone() };
        let raft = Raft::new(options.id, Arc::new(config), network, log, machine)
            .await
            .map_err(|e| anyhow::anyhow!("raft: {e}"))?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("raft: cannot listen on {listen}: {e}"))?;
        let listen = listener.local_addr()?;
        let stop = CancellationToken::new();
        let served = raft.clone();
        let (id, token) = (options.id, options.token.clone());
        tokio::spawn(crate::server::serve(
            listener,
            move |request| network::serve(served.clone(), id, token.clone(), request),
            stop.clone(),
            Duration::from_secs(1),
        ));
        let store = Arc::new(Self {
            raft,
            id: options.id,
            http,
            machine: shared,
            listen,
            written: std::sync::atomic::AtomicU64::new(0),
            stop,
        });
        tokio::spawn(store.clone().form(options.peers, options.tuning.gone_after));
        tracing::info!(id = options.id, %listen, "raft counter store started");
        Ok(store)
    }

    /// The address Raft traffic is served on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Stops the node (tests; a process simply exits).
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let _ = self.raft.shutdown().await;
    }

    /// This replica's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The leader's id, as this node knows it.
    pub fn leader_id(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// The leader, and its address, as this node knows them.
    fn leader(&self) -> Option<(u64, String)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }

    /// Commits `command` through the leader, wherever it is.
    async fn write(&self, command: Command) -> Result<Reply, StoreError> {
        // One id for every try: the state machine applies it once.
        let request = Request {
            id: fastrand::u64(..),
            command,
        };
        let deadline = Instant::now() + WRITE_TIMEOUT;
        let mut last_error = String::from("no Raft leader (is a majority of the replicas up?)");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError(format!("raft: {last_error}")));
            }
            let answer = match self.leader() {
                Some((leader, _)) if leader == self.id => {
                    tokio::time::timeout(left, network::write_locally(&self.raft, request.clone()))
                        .await
                        .unwrap_or_else(|_| {
                            WriteAnswer::Failed("the leader could not commit in time".into())
                        })
                }
                Some((_, addr)) => self
                    .http
                    .call(&addr, "/raft/write", &request, left)
                    .await
                    .unwrap_or_else(|e| WriteAnswer::Failed(e.0)),
                None => WriteAnswer::NotLeader(None),
            };
            match answer {
                WriteAnswer::Done(reply, index) => {
                    self.written
                        .fetch_max(index, std::sync::atomic::Ordering::AcqRel);
                    return Ok(reply);
                }
                WriteAnswer::NotLeader(_) => {}
                WriteAnswer::Failed(error) => last_error = error,
            }
            // A retried request that did reach the log is answered from the
            // state machine's memory of it, not applied again.
            tokio::time::sleep(Duration::from_millis(50).min(left)).await;
        }
    }

    /// Forms the cluster on first start, then keeps the membership in line
    /// with the configured peers while this node leads.
    async fn form(self: Arc<Self>, peers: BTreeMap<u64, String>, gone_after: Duration) {
        let members: BTreeMap<u64, BasicNode> = peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            match self.raft.is_initialized().await {
                Ok(true) | Err(_) => break,
                Ok(false) => {}
            }
            // A replica that lost its disk must not start a cluster of its
            // own: if any peer already belongs to one, wait for the leader
            // to bring this one up to date.
            let mut existing = false;
            for (id, addr) in &peers {
                if *id == self.id {
                    continue;
                }
                let status: Result<PeerStatus, _> = self
                    .http
                    .get(addr, "/raft/status", Duration::from_millis(300))
                    .await;
                existing |= status.is_ok_and(|s| s.initialized);
            }
            if existing {
                tracing::info!("raft: joining the existing cluster");
                break;
            }
            // Every pristine member initializes with the same members,
            // which openraft allows.
            match self.raft.initialize(members.clone()).await {
                Ok(()) => {
                    tracing::info!(members = ?peers, "raft: cluster formed");
                    break;
                }
                Err(openraft::error::RaftError::APIError(
                    openraft::error::InitializeError::NotAllowed(_),
                )) => break,
                Err(e) => {
                    tracing::warn!("raft: cannot initialize yet: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        self.follow_membership(members, gone_after).await;
    }

    /// While leading: adds configured peers that are not members, and
    /// removes members that are not configured and have been gone for
    /// `gone_after` ([`GONE_AFTER`] unless tuned).
    async fn follow_membership(&self, configured: BTreeMap<u64, BasicNode>, gone_after: Duration) {
        let mut last_seen: HashMap<u64, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(MEMBERSHIP_EVERY);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let (leader, voters, nodes, joint) = {
                let metrics = self.raft.metrics();
                let metrics = metrics.borrow();
                let membership = metrics.membership_config.membership();
                (
                    metrics.current_leader,
                    membership.voter_ids().collect::<BTreeSet<u64>>(),
                    membership
                        .nodes()
                        .map(|(id, node)| (*id, node.addr.clone()))
                        .collect::<BTreeMap<u64, String>>(),
                    membership.get_joint_config().len() > 1,
                )
            };
            if leader != Some(self.id) || joint {
                last_seen.clear();
                continue;
            }
            let now = Instant::now();
            let mut target: BTreeSet<u64> = configured.keys().copied().collect();
            for id in voters.difference(&target.clone()) {
                let Some(addr) = nodes.get(id) else { continue };
                let answered: Result<PeerStatus, _> = self
                    .http
                    .get(addr, "/raft/status", Duration::from_millis(300))
                    .await;
                let seen = last_seen.entry(*id).or_insert(now);
                if answered.is_ok() {
                    *seen = now;
                }
                if now.duration_since(*seen) < gone_after {
                    target.insert(*id);
                }
            }
            if target == voters {
                continue;
            }
            for id in target.difference(&voters) {
                let Some(node) = configured.get(id) else {
                    continue;
                };
                tracing::info!(id, addr = %node.addr, "raft: adding a member");
                let added = tokio::time::timeout(
                    Duration::from_secs(10),
                    self.raft.add_learner(*id, node.clone(), true),
                )
                .await;
                if !matches!(added, Ok(Ok(_))) {
                    tracing::warn!(id, "raft: the new member did not catch up yet");
                    continue;
                }
            }
            tracing::info!(from = ?voters, to = ?target, "raft: changing the membership");
            if let Err(e) = self.raft.change_membership(target, false).await {
                tracing::warn!("raft: membership change failed: {e}");
            }
        }
    }

    /// `/cluster`: members, leader, term, indexes, lag, outstanding leases.
    pub fn report(&self) -> serde_json::Value {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let last = metrics.last_log_index.unwrap_or(0);
        let members: Vec<serde_json::Value> = membership
            .nodes()
            .map(|(id, node)| {
                let matched = match &metrics.replication {
                    Some(replication) => replication.get(id).map(|log| log.map_or(0, |l| l.index)),
                    None if *id == self.id => Some(last),
                    None => None,
                };
                serde_json::json!({
                    "id": id,
                    "addr": node.addr,
                    "voter": voters.contains(id),
                    "self": *id == self.id,
                    "leader": metrics.current_leader == Some(*id),
                    "matched": matched,
                    "lag": matched.map(|m| last.saturating_sub(m)),
                })
            })
            .collect();
        let (counters, (leases, leased)) = {
            let machine = match self.machine.read() {
                Ok(machine) => machine,
                Err(poisoned) => poisoned.into_inner(),
            };
            (machine.ledger.len(), machine.ledger.outstanding())
        };
        serde_json::json!({
            "state": "raft",
            "id": self.id,
            "role": format!("{:?}", metrics.state),
            "leader": metrics.current_leader,
            "term": metrics.current_term,
            "lastLogIndex": metrics.last_log_index,
            "commitIndex": metrics.last_applied.map(|l| l.index),
            "snapshotIndex": metrics.snapshot.map(|l| l.index),
            "millisSinceQuorumAck": metrics.millis_since_quorum_ack,
            "members": members,
            "counters": counters,
            "leases": {"count": leases, "amount": leased},
        })
    }
}

/// Parses `--raft-id`: a number, or `auto` (the host name's trailing
/// ordinal plus one).
pub fn parse_id(text: &str) -> Result<u64, String> {
    if text != "auto" {
        return match text.parse::<u64>() {
            Ok(id) if id > 0 => Ok(id),
            _ => Err(format!("`{text}` is not an id of 1 or more, nor `auto`")),
        };
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_default();
    host.rsplit_once('-')
        .and_then(|(_, ordinal)| ordinal.parse::<u64>().ok())
        .map(|ordinal| ordinal + 1)
        .ok_or_else(|| format!("auto: the host name `{host}` does not end in -ORDINAL"))
}

/// Parses `--raft-peers`: `ID=HOST:PORT`, comma-separated.
pub fn parse_peers(text: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for peer in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = peer
            .split_once('=')
            .and_then(|(id, addr)| Some((id.parse::<u64>().ok().filter(|id| *id > 0)?, addr)))
            .ok_or_else(|| format!("`{peer}` is not ID=HOST:PORT"))?;
        if !addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        {
            return Err(format!("`{peer}` is not ID=HOST:PORT"));
        }
        if peers.insert(id, addr.to_owned()).is_some() {
            return Err(format!("id {id} is listed twice"));
        }
    }
    if peers.is_empty() {
        return Err("no peers".into());
    }
    Ok(peers)
}

/// The address to listen on for a peer address `host:port`.
fn listen_for(own: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = own.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let port = own
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .ok_or_else(|| anyhow::anyhow!("raft: peer address `{own}` is not HOST:PORT"))?;
    Ok(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port))
}

#[async_trait::async_trait]
impl CounterStore for RaftStore {
    async fn grant(
        &self,
        holder: &str,
        key: &CounterKey,
        want: u64,
        at_least: u64,
        ttl: Duration,
    ) -> Result<Grant, StoreError> {
        let reply = self
            .write(Command::Grant {
                holder: holder.to_owned(),
                key: key.clone(),
                want,
                at_least,
                ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
                now_ms: now_ms(),
            })
            .await?;
        Ok(Grant {
            granted: reply.granted,
            used: reply.used,
        })
    }

    async fn settle(&self, holder: &str, seq: u64, batch: &[Settlement]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write(Command::Settle {
            holder: holder.to_owned(),
            seq,
            batch: batch.to_vec(),
            now_ms: now_ms(),
        })
        .await
        .map(|_| ())
    }

    async fn totals(&self, key: &CounterKey) -> Result<Totals, StoreError> {
        let written = self.written.load(std::sync::atomic::Ordering::Acquire);
        if written > 0 {
            // A follower applies what the leader committed a moment later.
            let _ = self
                .raft
                .wait(Some(WRITE_TIMEOUT))
                .applied_index_at_least(Some(written), "read your writes")
                .await;
        }
        let machine = match self.machine.read() {
            Ok(machine) => machine,
            Err(poisoned) => poisoned.into_inner(),
        };
        Ok(machine.ledger.peek(key, now_ms()))
    }

    fn report(&self) -> serde_json::Value {
        RaftStore::report(self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ids_and_peers_parse_or_say_why_not() {
        assert_eq!(parse_id("3"), Ok(3));
        assert!(parse_id("0")
            .unwrap_err()
            .contains("not an id of 1 or more"));
        assert!(parse_id("three").is_err());
        let peers = parse_peers("1=10.0.0.1:7101, 2=proxy-1.peers:7101,").unwrap();
        assert_eq!(peers[&2], "proxy-1.peers:7101");
        assert!(parse_peers("1=a:1,1=b:2")
            .unwrap_err()
            .contains("listed twice"));
        assert!(parse_peers("a:1").unwrap_err().contains("not ID=HOST:PORT"));
        assert!(parse_peers("1=a").unwrap_err().contains("not ID=HOST:PORT"));
        assert!(parse_peers("").unwrap_err().contains("no peers"));
    }

    #[test]
    fn a_host_name_peer_listens_on_every_interface() {
        assert_eq!(
            listen_for("127.0.0.2:7102").unwrap(),
            "127.0.0.2:7102".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            listen_for("sluice-proxy-0.peers.ns.svc:7101").unwrap(),
            "0.0.0.0:7101".parse::<SocketAddr>().unwrap()
        );
        assert!(listen_for("nohost").is_err());
    }
}
