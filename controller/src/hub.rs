//! The published config and the proxy replicas that follow it: which
//! version is current, which replicas are connected, what each one last
//! ACKed or NACKed, and the budget reports they sent. Shared by the stream
//! server (writes) and the reconciler (reads). Knows nothing of HTTP or of
//! the Kubernetes API.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sluice_crds::{ConfigAck, ConfigBundle};
use tokio::sync::{watch, Notify};

/// A replica that has neither a stream nor reported for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// One published version, ready to send.
#[derive(Debug)]
pub struct Published {
    /// The bundle, numbered.
    pub bundle: ConfigBundle,
    /// Its hash (documents and secret values).
    pub hash: String,
    /// The bundle as JSON, serialised once for every stream.
    pub json: String,
}

/// What the hub knows of one replica.
#[derive(Debug, Clone, Default)]
pub struct Replica {
    /// Open streams (a reconnect may overlap the old stream briefly).
    pub streams: usize,
    /// The last version it ACKed.
    pub acked: Option<u64>,
    /// The last version it NACKed, and why.
    pub rejected: Option<(u64, String)>,
    /// Its last budget report (the `budgets` array of its `GET /budgets`).
    pub budgets: Option<serde_json::Value>,
    /// When it last reported.
    pub seen: Option<Instant>,
}

/// How the current version is rolling out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollout {
    /// The current version (0: none published yet).
    pub version: u64,
    /// Connected replicas.
    pub connected: usize,
    /// Connected replicas that ACKed the current version.
    pub running: usize,
    /// Connected replicas that NACKed it, with their errors.
    pub rejected: Vec<(String, String)>,
}

/// The hub.
#[derive(Debug)]
pub struct Hub {
    published: watch::Sender<Option<Arc<Published>>>,
    replicas: Mutex<BTreeMap<String, Replica>>,
    leader: AtomicBool,
    /// Versions at or below this were used by an earlier leader.
    floor: std::sync::atomic::AtomicU64,
    /// Woken when a replica connects, leaves, ACKs or NACKs.
    pub replica_changes: Notify,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// An empty hub: nothing published, not the leader.
    pub fn new() -> Self {
        Self {
            published: watch::Sender::new(None),
            replicas: Mutex::default(),
            leader: AtomicBool::new(false),
            floor: std::sync::atomic::AtomicU64::new(0),
            replica_changes: Notify::new(),
        }
    }

    fn replicas(&self) -> MutexGuard<'_, BTreeMap<String, Replica>> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.replicas
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this controller is the leader (serves streams, writes status).
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// Sets leadership.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
    }

    /// The current version, if any.
    pub fn current(&self) -> Option<Arc<Published>> {
        self.published.borrow().clone()
    }

    /// Follows the current version.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Published>>> {
        self.published.subscribe()
    }

    /// Publishes `bundle` as a new version unless it equals the current
    /// one. Returns the version that is now current.
    pub fn publish(&self, mut bundle: ConfigBundle) -> u64 {
        let hash = bundle.hash();
        let current = self.current();
        if let Some(current) = &current {
            if current.hash == hash {
                return current.bundle.version;
            }
        }
        let floor = self.floor.load(Ordering::SeqCst);
        bundle.version = current.map_or(1, |c| c.bundle.version + 1).max(floor + 1);
        self.send(bundle, hash)
    }

    /// Continues the numbering of an earlier leader: versions up to
    /// `version` are taken, so the current config is renumbered above it
    /// (proxies running the same config see the same hash and just ACK).
    pub fn continue_from(&self, version: u64) {
        self.floor.fetch_max(version, Ordering::SeqCst);
        if let Some(current) = self.current() {
            if current.bundle.version <= version {
                let mut bundle = current.bundle.clone();
                bundle.version = version + 1;
                self.send(bundle, current.hash.clone());
            }
        }
    }

    fn send(&self, bundle: ConfigBundle, hash: String) -> u64 {
        let version = bundle.version;
        let json = match serde_json::to_string(&bundle) {
            Ok(json) => json,
            Err(error) => {
                // A bundle is JSON values and strings: this cannot fail.
                tracing::error!(%error, "cannot serialise the config");
                return version.saturating_sub(1);
            }
        };
        tracing::info!(version, %hash, "publishing config");
        self.published
            .send_replace(Some(Arc::new(Published { bundle, hash, json })));
        version
    }

    /// A replica opened a stream; the guard closes it when dropped.
    pub fn connect(self: &Arc<Self>, replica: &str) -> StreamGuard {
        self.replicas()
            .entry(replica.to_owned())
            .or_default()
            .streams += 1;
        self.replica_changes.notify_one();
        StreamGuard {
            hub: self.clone(),
            replica: replica.to_owned(),
        }
    }

    /// Records an ACK or NACK (and the budget report that came with it).
    pub fn record(&self, ack: ConfigAck) {
        let mut replicas = self.replicas();
        let replica = replicas.entry(ack.replica.clone()).or_default();
        if ack.ok {
            replica.acked = Some(ack.version);
            if replica
                .rejected
                .as_ref()
                .is_some_and(|(v, _)| *v <= ack.version)
            {
                replica.rejected = None;
            }
        } else {
            replica.rejected = Some((ack.version, ack.error.unwrap_or_default()));
            if let Some(running) = ack.running {
                replica.acked = Some(running);
            }
        }
        if ack.budgets.is_some() {
            replica.budgets = ack.budgets;
        }
        replica.seen = Some(Instant::now());
        drop(replicas);
        self.replica_changes.notify_one();
    }

    /// How the current version is rolling out to the connected replicas.
    pub fn rollout(&self) -> Rollout {
        let version = self.current().map_or(0, |p| p.bundle.version);
        let mut rollout = Rollout {
            version,
            ..Rollout::default()
        };
        let mut replicas = self.replicas();
        replicas.retain(|_, r| r.streams > 0 || r.seen.is_some_and(|t| t.elapsed() < FORGET_AFTER));
        for (name, replica) in replicas.iter().filter(|(_, r)| r.streams > 0) {
            rollout.connected += 1;
            if replica.acked == Some(version) {
                rollout.running += 1;
            } else if let Some((v, error)) = &replica.rejected {
                if *v == version {
                    rollout.rejected.push((name.clone(), error.clone()));
                }
            }
        }
        rollout
    }

    /// The latest budget reports of the replicas heard from recently.
    pub fn budget_reports(&self) -> Vec<(String, serde_json::Value)> {
        self.replicas()
            .iter()
            .filter(|(_, r)| r.streams > 0 || r.seen.is_some_and(|t| t.elapsed() < FORGET_AFTER))
            .filter_map(|(name, r)| Some((name.clone(), r.budgets.clone()?)))
            .collect()
    }
}

/// Keeps a replica counted as connected while its stream is open.
#[derive(Debug)]
pub struct StreamGuard {
    hub: Arc<Hub>,
    replica: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(replica) = self.hub.replicas().get_mut(&self.replica) {
            replica.streams = replica.streams.saturating_sub(1);
        }
        self.hub.replica_changes.notify_one();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn bundle(n: u64) -> ConfigBundle {
        ConfigBundle {
            version: 0,
            documents: vec![serde_json::json!({"n": n})],
            secrets: Default::default(),
        }
    }

    fn ack(replica: &str, version: u64, ok: bool) -> ConfigAck {
        ConfigAck {
            replica: replica.into(),
            version,
            ok,
            error: (!ok).then(|| "bad".to_owned()),
            ..ConfigAck::default()
        }
    }

    #[test]
    fn versions_grow_only_when_the_config_changes() {
        let hub = Hub::new();
        assert_eq!(hub.publish(bundle(1)), 1);
        assert_eq!(hub.publish(bundle(1)), 1);
        assert_eq!(hub.publish(bundle(2)), 2);
        assert_eq!(hub.current().unwrap().bundle.version, 2);
        // A new leader continues where the old one stopped.
        hub.continue_from(7);
        assert_eq!(hub.current().unwrap().bundle.version, 8);
        assert_eq!(hub.publish(bundle(3)), 9);
        hub.continue_from(2);
        assert_eq!(hub.current().unwrap().bundle.version, 9);
    }

    #[test]
    fn the_rollout_counts_connected_replicas_only() {
        let hub = Arc::new(Hub::new());
        hub.publish(bundle(1));
        let a = hub.connect("a");
        let b = hub.connect("b");
        hub.record(ack("a", 1, true));
        hub.record(ack("b", 1, false));
        let rollout = hub.rollout();
        assert_eq!(
            (rollout.version, rollout.connected, rollout.running),
            (1, 2, 1)
        );
        assert_eq!(rollout.rejected, vec![("b".to_owned(), "bad".to_owned())]);
        drop(b);
        assert_eq!(hub.rollout().connected, 1);
        hub.publish(bundle(2));
        assert_eq!(hub.rollout().running, 0, "a still runs version 1");
        drop(a);
        assert_eq!(hub.rollout().connected, 0);
    }
}
