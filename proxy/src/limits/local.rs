//! One counter as this process sees it: the lease it holds from the
//! store, what it has spent and not settled yet, and what it hands back.
//! Plain atomics: admission on the hot path is a compare-and-swap here.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use super::store::{now_ms, CounterKey};

/// One counter as this process sees it.
pub(super) struct Local {
    pub(super) key: CounterKey,
    /// Leased and not reserved; below 0 when spend outgrew reservations.
    pub(super) balance: AtomicI64,
    /// Spent from leases, not yet settled with the store.
    pub(super) unsettled: AtomicU64,
    /// Spent without a lease (FailOpen while the store was away).
    pub(super) unleased: AtomicU64,
    /// Lease handed back at the next settlement.
    pub(super) returning: AtomicU64,
    /// Spend in a settlement under way (reports count it meanwhile).
    pub(super) settling: AtomicU64,
    /// Bumped as a settlement batch leaves for the store (odd) and when its
    /// answer is back (even): reports read a consistent pair of this
    /// process's pending spend and the store's total.
    pub(super) settle_epoch: AtomicU64,
    /// The store's `used` at the last grant, minus what this process has
    /// reserved from it since: for the remaining-allowance headers.
    pub(super) used: AtomicU64,
    pub(super) last_use_ms: AtomicI64,
    /// When the store last granted (or renewed) this process's lease.
    pub(super) granted_ms: AtomicI64,
    /// One grant in flight at a time.
    pub(super) refill: tokio::sync::Mutex<()>,
    /// The store could not be reached at the last try.
    pub(super) degraded: AtomicBool,
    /// When a store call for this counter last failed (Unix ms).
    pub(super) store_failed_at_ms: AtomicI64,
    /// Taken from the lease since the last grant: the recent rate that
    /// sizes the next lease.
    pub(super) taken_since_grant: AtomicU64,
    /// A background top-up is under way.
    pub(super) topping_up: AtomicBool,
    /// The store had nothing left at the last grant (until the window ends).
    pub(super) exhausted: AtomicBool,
}

impl Local {
    pub(super) fn new(key: CounterKey) -> Self {
        Self {
            key,
            balance: AtomicI64::new(0),
            unsettled: AtomicU64::new(0),
            unleased: AtomicU64::new(0),
            returning: AtomicU64::new(0),
            settling: AtomicU64::new(0),
            settle_epoch: AtomicU64::new(0),
            store_failed_at_ms: AtomicI64::new(0),
            used: AtomicU64::new(0),
            last_use_ms: AtomicI64::new(now_ms()),
            granted_ms: AtomicI64::new(0),
            refill: tokio::sync::Mutex::new(()),
            degraded: AtomicBool::new(false),
            taken_since_grant: AtomicU64::new(0),
            topping_up: AtomicBool::new(false),
            exhausted: AtomicBool::new(false),
        }
    }

    /// Takes `amount` from the balance if it is there.
    pub(super) fn try_take(&self, amount: u64) -> bool {
        let taken = i64::try_from(amount).unwrap_or(i64::MAX);
        let ok = self
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b >= taken).then(|| b - taken)
            })
            .is_ok();
        if ok {
            self.taken_since_grant.fetch_add(amount, Ordering::AcqRel);
        }
        ok
    }

    pub(super) fn remaining(&self) -> u64 {
        let balance = u64::try_from(self.balance.load(Ordering::Acquire).max(0)).unwrap_or(0);
        let used = self.used.load(Ordering::Acquire);
        self.key.limit.saturating_sub(used.saturating_sub(balance))
    }
}
