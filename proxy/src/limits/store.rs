//! Where limit counters live: the [`CounterStore`] trait, a ledger of
//! settled spend and outstanding leases per counter, and its in-process
//! backend ([`MemoryStore`], settled spend journaled to a file). The Redis
//! backend is in `redis.rs`. The hot path never calls a store per request:
//! the [`Limiter`](super::Limiter) spends from leases and settles in
//! batches. Knows nothing of HTTP, budgets or prices.
//!
//! The one rule every backend keeps, per counter:
//! `settled + sum(outstanding leases) <= limit` when granting. Grants,
//! settlements and lease expiries are the only writes. An expired lease
//! counts as spent (its holder may have spent it and can no longer say),
//! so the fleet under-uses a little rather than overspends.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::ledger::{Deltas, Ledger};

/// One counter: a limit in one window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CounterKey {
    /// The limit, stable across reloads while its definition stays the
    /// same: `{budget}/{limit}/{hash of the definition}`.
    pub id: Arc<str>,
    /// Start of the window, Unix milliseconds.
    pub start_ms: i64,
    /// End of the window (exclusive), Unix milliseconds.
    pub end_ms: i64,
    /// The most that may be spent in the window.
    pub limit: u64,
    /// A rolling window: the previous window's spend (settled and leased,
    /// expired leases as spent) counts too, weighted by how much of it
    /// still overlaps the last `end - start`.
    pub sliding: bool,
}

impl CounterKey {
    /// The key's name in a store (one per window).
    pub fn name(&self) -> String {
        format!("{}@{}", self.id, self.start_ms)
    }

    /// The window before this one (for sliding windows).
    pub fn previous(&self) -> CounterKey {
        let len = self.end_ms - self.start_ms;
        CounterKey {
            start_ms: self.start_ms - len,
            end_ms: self.start_ms,
            ..self.clone()
        }
    }

    /// How much of the previous window a sliding window still covers at
    /// `now_ms`, in millionths (1_000_000 at the window's start).
    pub fn previous_weight_ppm(&self, now_ms: i64) -> u64 {
        let len = (self.end_ms - self.start_ms).max(1);
        let left = (self.end_ms - now_ms).clamp(0, len);
        u64::try_from(left as i128 * 1_000_000 / len as i128).unwrap_or(0)
    }
}

/// What a grant gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Added to the holder's lease; 0 when less than `at_least` was left.
    pub granted: u64,
    /// Settled plus leased (plus the previous window's weighted share for
    /// a sliding window) after the grant, as the store sees it.
    pub used: u64,
}

/// Spend to settle for one counter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Settlement {
    /// The counter.
    pub key: CounterKey,
    /// Spent: added to `settled`, taken from the holder's lease.
    pub spent: u64,
    /// Leased but not spent, handed back (the holder's lease shrinks).
    pub unused: u64,
    /// Spent without a lease (admitted while the store was unreachable,
    /// under `failureMode: FailOpen`): always added to `settled`.
    pub unleased: u64,
}

/// A counter's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Spend that happened.
    pub settled: u64,
    /// Allowance handed out in leases and not yet settled or expired.
    pub leased: u64,
}

/// The store could not be reached or answered nonsense.
#[derive(Debug, thiserror::Error)]
#[error("counter store: {0}")]
pub struct StoreError(pub String);

/// A ledger of limit counters shared by the replicas that use it.
#[async_trait::async_trait]
pub trait CounterStore: Send + Sync + 'static {
    /// Leases up to `want` of what is left of `key` to `holder` (a replica)
    /// for `ttl`: nothing if less than `at_least` is left. Expired leases of
    /// any holder are counted as spent first. A holder's new grant extends
    /// its lease's expiry.
    async fn grant(
        &self,
        holder: &str,
        key: &CounterKey,
        want: u64,
        at_least: u64,
        ttl: Duration,
    ) -> Result<Grant, StoreError>;

    /// Settles spend and hands back unused lease, for several counters.
    /// Spend beyond the holder's lease is settled all the same (a Lenient
    /// stream that ran past its reservation). A settlement for a lease that
    /// already expired adds nothing: the expiry counted it as spent.
    ///
    /// `seq` numbers the holder's batches (increasing; 0: unnumbered). A
    /// counter that already took this holder's batch `seq` (or a later
    /// one) skips it, so a batch retried after a timeout, which may or may
    /// not have been applied, counts once.
    async fn settle(&self, holder: &str, seq: u64, batch: &[Settlement]) -> Result<(), StoreError>;

    /// A counter's totals, for reports.
    async fn totals(&self, key: &CounterKey) -> Result<Totals, StoreError>;

    /// What `/cluster` shows of the store.
    fn report(&self) -> serde_json::Value {
        serde_json::json!({"state": "memory", "members": [{"id": "local", "self": true, "leader": true}]})
    }
}

/// Counters in this process; settled spend (settlements, and leases that
/// expired) is appended to a journal file (lines `name settled-delta`),
/// replayed at start, so a restart loses none of it. Leases do not survive a restart: they belonged
/// to this process.
pub struct MemoryStore {
    ledger: Mutex<Ledger>,
    journal: Option<tokio::sync::Mutex<tokio::fs::File>>,
    path: Option<PathBuf>,
}

impl MemoryStore {
    /// A store without a file (tests, or no budget that needs one).
    pub fn ephemeral() -> Self {
        Self {
            ledger: Mutex::default(),
            journal: None,
            path: None,
        }
    }

    /// Opens (creating) the journal at `path` and replays it.
    pub async fn open(path: PathBuf) -> Result<Self, StoreError> {
        let error = |e: std::io::Error| StoreError(format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(error)?;
        }
        let mut ledger = Ledger::default();
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => {
                for line in text.lines() {
                    // A torn last line (a crash mid-write) is skipped.
                    let Some((name, delta)) = line.rsplit_once(' ') else {
                        continue;
                    };
                    if let Ok(delta) = delta.parse::<u64>() {
                        ledger.replay(name, delta);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(error(e)),
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(error)?;
        Ok(Self {
            ledger: Mutex::new(ledger),
            journal: Some(tokio::sync::Mutex::new(file)),
            path: Some(path),
        })
    }

    /// The journal's path, if any.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// Appends journal lines and syncs them (nothing without a journal).
    async fn append(&self, lines: &str) -> Result<(), StoreError> {
        let (Some(journal), false) = (&self.journal, lines.is_empty()) else {
            return Ok(());
        };
        let mut file = journal.lock().await;
        let written = async {
            file.write_all(lines.as_bytes()).await?;
            file.sync_data().await
        };
        written
            .await
            .map_err(|e| StoreError(format!("writing the counter journal: {e}")))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Ledger>, StoreError> {
        self.ledger
            .lock()
            .map_err(|_| StoreError("memory store poisoned".into()))
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[async_trait::async_trait]
impl CounterStore for MemoryStore {
    async fn grant(
        &self,
        holder: &str,
        key: &CounterKey,
        want: u64,
        at_least: u64,
        ttl: Duration,
    ) -> Result<Grant, StoreError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let (grant, deltas) = self
            .lock()?
            .grant(holder, key, want, at_least, ttl_ms, now_ms());
        self.append(&journal_lines(&deltas)).await?;
        Ok(grant)
    }

    async fn settle(&self, holder: &str, seq: u64, batch: &[Settlement]) -> Result<(), StoreError> {
        let deltas = {
            let mut ledger = self.lock()?;
            let now = now_ms();
            ledger.prune(now);
            ledger.settle(holder, seq, batch, now)
        };
        self.append(&journal_lines(&deltas)).await
    }

    async fn totals(&self, key: &CounterKey) -> Result<Totals, StoreError> {
        let (totals, deltas) = self.lock()?.totals(key, now_ms());
        self.append(&journal_lines(&deltas)).await?;
        Ok(totals)
    }
}

/// Journal lines (`name settled-delta`) for settled spend (a settlement,
/// or leases that expired).
fn journal_lines(deltas: &Deltas) -> String {
    deltas
        .iter()
        .map(|(name, settled)| format!("{name} {settled}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(limit: u64) -> CounterKey {
        let start = now_ms() - 1000;
        CounterKey {
            id: "b/cost/x".into(),
            start_ms: start,
            end_ms: start + 60_000,
            limit,
            sliding: false,
        }
    }

    const TTL: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn grants_never_exceed_the_limit() {
        let store = MemoryStore::ephemeral();
        let k = key(100);
        assert_eq!(store.grant("a", &k, 60, 1, TTL).await.unwrap().granted, 60);
        assert_eq!(store.grant("b", &k, 60, 1, TTL).await.unwrap().granted, 40);
        assert_eq!(store.grant("b", &k, 10, 1, TTL).await.unwrap().granted, 0);
        // a spends 50 of its 60 and hands back 10: 10 is free again.
        let s = Settlement {
            key: k.clone(),
            spent: 50,
            unused: 10,
            unleased: 0,
        };
        store.settle("a", 0, &[s]).await.unwrap();
        assert_eq!(
            store.totals(&k).await.unwrap(),
            Totals {
                settled: 50,
                leased: 40
            }
        );
        assert_eq!(
            store.grant("a", &k, 60, 20, TTL).await.unwrap().granted,
            0,
            "at_least"
        );
        assert_eq!(store.grant("a", &k, 60, 5, TTL).await.unwrap().granted, 10);
    }

    #[tokio::test]
    async fn expired_leases_count_as_spent() {
        let store = MemoryStore::ephemeral();
        let k = key(100);
        store.grant("a", &k, 30, 1, Duration::ZERO).await.unwrap();
        let totals = store.totals(&k).await.unwrap();
        assert_eq!((totals.settled, totals.leased), (30, 0));
        // A late settlement of the expired lease adds nothing.
        let s = Settlement {
            key: k.clone(),
            spent: 30,
            unused: 0,
            unleased: 0,
        };
        store.settle("a", 0, &[s]).await.unwrap();
        assert_eq!(store.totals(&k).await.unwrap().settled, 30);
    }

    #[tokio::test]
    async fn settled_spend_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("sluice-store-{}", fastrand::u64(..)));
        let path = dir.join("counters.log");
        let k = key(1000);
        {
            let store = MemoryStore::open(path.clone()).await.unwrap();
            store.grant("a", &k, 100, 1, TTL).await.unwrap();
            let s = Settlement {
                key: k.clone(),
                spent: 70,
                unused: 0,
                unleased: 5,
            };
            store.settle("a", 0, &[s]).await.unwrap();
        }
        let store = MemoryStore::open(path).await.unwrap();
        assert_eq!(
            store.totals(&k).await.unwrap(),
            Totals {
                settled: 75,
                leased: 0
            }
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn expired_leases_survive_a_restart_as_spent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.log");
        let k = key(1000);
        {
            let store = MemoryStore::open(path.clone()).await.unwrap();
            store.grant("a", &k, 100, 1, TTL).await.unwrap();
            store.grant("b", &k, 30, 1, Duration::ZERO).await.unwrap();
            // b's lease expired: counted (and journaled) as spent.
            assert_eq!(store.totals(&k).await.unwrap().settled, 30);
        }
        let store = MemoryStore::open(path).await.unwrap();
        assert_eq!(
            store.totals(&k).await.unwrap(),
            Totals {
                settled: 30,
                leased: 0
            }
        );
    }

    #[tokio::test]
    async fn a_sliding_window_weighs_the_previous_one() {
        let store = MemoryStore::ephemeral();
        let now = now_ms();
        let current = CounterKey {
            id: "b/rpm/x".into(),
            start_ms: now - 30_000,
            end_ms: now + 30_000,
            limit: 100,
            sliding: true,
        };
        let previous = current.previous();
        store.grant("a", &previous, 80, 1, TTL).await.unwrap();
        let s = Settlement {
            key: previous.clone(),
            spent: 80,
            unused: 0,
            unleased: 0,
        };
        store.settle("a", 0, &[s]).await.unwrap();
        // Half the previous window still overlaps: 40 of its 80 count.
        let grant = store.grant("a", &current, 100, 1, TTL).await.unwrap();
        assert!((59..=61).contains(&grant.granted), "{grant:?}");
    }

    #[tokio::test]
    async fn a_sliding_window_counts_the_previous_ones_leases() {
        let store = MemoryStore::ephemeral();
        let now = now_ms();
        let current = CounterKey {
            id: "b/rpm/y".into(),
            start_ms: now - 30_000,
            end_ms: now + 30_000,
            limit: 100,
            sliding: true,
        };
        let previous = current.previous();
        // A replica died holding 40 of the previous window (expired: spent);
        // another still holds 40 it has not settled.
        store
            .grant("dead", &previous, 40, 1, Duration::ZERO)
            .await
            .unwrap();
        store.grant("live", &previous, 40, 1, TTL).await.unwrap();
        // Half of the 80 counts.
        let grant = store.grant("a", &current, 100, 1, TTL).await.unwrap();
        assert!((59..=61).contains(&grant.granted), "{grant:?}");
    }
}
