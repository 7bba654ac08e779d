//! The ledger every counter store keeps, as plain arithmetic: per counter
//! window, settled spend and the outstanding lease of each holder, with
//! the store's one rule `settled + leases <= limit` when granting. The
//! memory store runs it in process; the Raft store applies it, command by
//! command, on every replica (so `now` is always an argument, never read
//! here). Knows nothing of I/O.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::store::{CounterKey, Grant, Settlement, Totals};

/// How long a window's counter is kept after it ended (beyond one more
/// window, which a rolling limit still reads).
const KEEP_AFTER_MS: i64 = 60_000;

/// One counter window.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Spend that happened (expired leases included).
    pub settled: u64,
    /// holder -> (amount, expiry in Unix ms)
    pub leases: HashMap<String, (u64, i64)>,
    /// After this (Unix ms) nobody reads the window any more.
    pub keep_until: i64,
    /// holder -> the last settlement batch it applied here.
    #[serde(default)]
    pub batches: HashMap<String, u64>,
}

impl Entry {
    /// Outstanding leases.
    pub fn leased(&self) -> u64 {
        self.leases.values().map(|(amount, _)| amount).sum()
    }

    /// Expired leases count as spent; returns how much that added.
    fn expire(&mut self, now_ms: i64) -> u64 {
        let mut expired = 0;
        self.leases.retain(|_, (amount, until)| {
            let keep = *until > now_ms;
            if !keep {
                expired += *amount;
            }
            keep
        });
        self.settled += expired;
        expired
    }
}

/// Settled spend added to a counter by one operation, for journals.
pub type Deltas = Vec<(String, u64)>;

/// Counter windows by name (`{id}@{start}`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    entries: HashMap<String, Entry>,
}

impl Ledger {
    /// Adds settled spend read back from a journal (window unknown: kept).
    pub fn replay(&mut self, name: &str, settled: u64) {
        let entry = self
            .entries
            .entry(name.to_owned())
            .or_insert_with(|| Entry {
                keep_until: i64::MAX,
                ..Entry::default()
            });
        entry.settled += settled;
    }

    /// Number of counter windows held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Outstanding leases over all counters: (count, amount).
    pub fn outstanding(&self) -> (usize, u64) {
        self.entries
            .values()
            .flat_map(|e| e.leases.values())
            .filter(|(amount, _)| *amount > 0)
            .fold((0, 0), |(n, sum), (amount, _)| (n + 1, sum + amount))
    }

    fn entry(&mut self, key: &CounterKey, deltas: &mut Deltas, now_ms: i64) -> &mut Entry {
        let name = key.name();
        let len = key.end_ms - key.start_ms;
        let keep_until = key.end_ms.saturating_add(len).saturating_add(KEEP_AFTER_MS);
        let entry = self.entries.entry(name.clone()).or_default();
        entry.keep_until = entry.keep_until.max(keep_until);
        let expired = entry.expire(now_ms);
        if expired > 0 {
            deltas.push((name, expired));
        }
        entry
    }

    /// Leases up to `want` of what is left of `key` to `holder` until
    /// `now_ms + ttl_ms`; nothing when less than `at_least` is left.
    pub fn grant(
        &mut self,
        holder: &str,
        key: &CounterKey,
        want: u64,
        at_least: u64,
        ttl_ms: i64,
        now_ms: i64,
    ) -> (Grant, Deltas) {
        let mut deltas = Deltas::new();
        let previous = if key.sliding {
            let weight = key.previous_weight_ppm(now_ms);
            // Its leases count too (an expired one as spent): a replica
            // that died holding one cannot say it did not spend it.
            let previous = key.previous();
            let used = if self.entries.contains_key(&previous.name()) {
                let e = self.entry(&previous, &mut deltas, now_ms);
                e.settled + e.leased()
            } else {
                0
            };
            u64::try_from(used as u128 * weight as u128 / 1_000_000).unwrap_or(u64::MAX)
        } else {
            0
        };
        let entry = self.entry(key, &mut deltas, now_ms);
        let used = entry.settled + entry.leased() + previous;
        let left = key.limit.saturating_sub(used);
        let granted = if left < at_least { 0 } else { want.min(left) };
        let lease = entry.leases.entry(holder.to_owned()).or_insert((0, 0));
        lease.0 += granted;
        lease.1 = now_ms.saturating_add(ttl_ms);
        let grant = Grant {
            granted,
            used: used + granted,
        };
        (grant, deltas)
    }

    /// Settles spend and takes back unused lease. Without a lease (it
    /// expired and was counted as spent), only `unleased` spend is added. A
    /// batch `seq` this holder already settled on a counter is skipped there.
    pub fn settle(&mut self, holder: &str, seq: u64, batch: &[Settlement], now_ms: i64) -> Deltas {
        let mut deltas = Deltas::new();
        for settlement in batch {
            let entry = self.entry(&settlement.key, &mut deltas, now_ms);
            if seq > 0 {
                let last = entry.batches.entry(holder.to_owned()).or_insert(0);
                if *last >= seq {
                    continue;
                }
                *last = seq;
            }
            let mut added = settlement.unleased;
            if let Some(lease) = entry.leases.get_mut(holder) {
                let from_lease = lease.0.min(settlement.spent + settlement.unused);
                lease.0 -= from_lease;
                added += settlement.spent;
            }
            entry.settled += added;
            if added > 0 {
                deltas.push((settlement.key.name(), added));
            }
        }
        deltas
    }

    /// A counter's totals (expiring leases first).
    pub fn totals(&mut self, key: &CounterKey, now_ms: i64) -> (Totals, Deltas) {
        let mut deltas = Deltas::new();
        let entry = self.entry(key, &mut deltas, now_ms);
        let totals = Totals {
            settled: entry.settled,
            leased: entry.leased(),
        };
        (totals, deltas)
    }

    /// Totals without changing anything (a read on a follower).
    pub fn peek(&self, key: &CounterKey, now_ms: i64) -> Totals {
        self.entries
            .get(&key.name())
            .map_or_else(Totals::default, |e| {
                let (live, expired) =
                    e.leases
                        .values()
                        .fold((0, 0), |(live, expired), (amount, until)| {
                            if *until > now_ms {
                                (live + amount, expired)
                            } else {
                                (live, expired + amount)
                            }
                        });
                Totals {
                    settled: e.settled + expired,
                    leased: live,
                }
            })
    }

    /// Drops windows nobody reads any more.
    pub fn prune(&mut self, now_ms: i64) {
        self.entries.retain(|_, e| e.keep_until > now_ms);
    }
}
