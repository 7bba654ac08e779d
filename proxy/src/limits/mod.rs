//! Budgets and rate limits: admission before a request is forwarded
//! (reserve an estimate against every applicable limit), settlement after
//! (charge what was used, hand back the rest), and what clients and
//! operators see of it. Counters live in a [`store::CounterStore`]; this
//! module spends from leases the store grants, so a request waits on the
//! store only when its counter's lease runs out, and settles in batches
//! from a background task.

mod admission;
pub mod estimate;
pub mod ledger;
mod local;
pub mod pricing;
pub mod raft;
pub mod redis;
pub mod report;
pub mod store;
pub mod window;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sluice_crds::snapshot::{Budget, Enforcement, FailureMode, Limit, StateStore};

use store::{now_ms, CounterKey, CounterStore, Settlement, StoreError};
use window::Clock;

pub use admission::{
    format_amount, insert_headroom, metric_label, Admission, Amounts, Headroom, Reached, Refusal,
    StreamGuard,
};
use admission::{seconds_until, Take};
use local::Local;

/// How long a lease lasts without a renewal; unused lease is handed back
/// well before (after [`IDLE_RETURN`]).
const LEASE_TTL: Duration = Duration::from_secs(60);
/// A counter unused this long hands its lease back.
const IDLE_RETURN_MS: i64 = 5_000;
/// How often spend is settled with the store.
pub const SETTLE_EVERY: Duration = Duration::from_millis(100);

/// A limit ready to count: its budget's settings and its clock.
#[derive(Debug, Clone)]
pub struct LimitRuntime {
    /// `{budget}/{limit}/{hash of the definition}`: counters survive a
    /// reload that keeps the definition, and start afresh when it changes.
    pub id: Arc<str>,
    /// The limit as configured.
    pub limit: Limit,
    /// Its window.
    pub clock: Clock,
}

/// A budget ready to count.
#[derive(Debug, Clone)]
pub struct BudgetRuntime {
    /// As configured.
    pub budget: Budget,
    /// Its limits, in order.
    pub limits: Vec<LimitRuntime>,
}

impl BudgetRuntime {
    /// Prepares a compiled budget.
    pub fn new(budget: &Budget) -> Self {
        let limits = budget
            .limits
            .iter()
            .map(|limit| {
                // What the limit counts, not how much it allows: raising a
                // budget mid-month keeps the month's spend.
                let definition = format!(
                    "{:?}",
                    (
                        &budget.tenant,
                        &budget.models,
                        &budget.api_key,
                        &limit.name,
                        limit.metric,
                        &limit.window
                    )
                );
                let hash = Sha256::digest(definition.as_bytes());
                let short: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
                LimitRuntime {
                    id: Arc::from(format!("{}/{}/{short}", budget.name, limit.name)),
                    clock: Clock::new(&limit.window),
                    limit: limit.clone(),
                }
            })
            .collect();
        Self {
            budget: budget.clone(),
            limits,
        }
    }

    /// Whether the budget covers a request of `tenant` with this key and
    /// model (`None`: an MCP tool call, covered by budgets without models).
    pub fn covers(&self, tenant: &str, key: Option<&str>, model: Option<&str>) -> bool {
        *self.budget.tenant == *tenant
            && self
                .budget
                .api_key
                .as_deref()
                .is_none_or(|wanted| key == Some(wanted))
            && (self.budget.models.is_empty()
                || model.is_some_and(|m| self.budget.models.iter().any(|p| p.matches(m))))
    }
}

/// A settlement batch and what it took from each counter (spent,
/// unleased, unused).
struct PendingBatch {
    seq: u64,
    batch: Vec<Settlement>,
    taken: Vec<(Arc<Local>, u64, u64, u64)>,
}

/// The limiter of this process: counters by key, the store, and the task
/// that settles with it.
pub struct Limiter {
    store: Arc<dyn CounterStore>,
    holder: String,
    /// Share of a limit one lease may take (1.0: the whole allowance, for
    /// a store no other process shares).
    lease_share: f64,
    counters: Mutex<HashMap<CounterKey, Arc<Local>>>,
    /// The number of the next settlement batch.
    next_batch: std::sync::atomic::AtomicU64,
    /// A batch the store may or may not have applied (its call failed):
    /// sent again, as it was, before any new one.
    unsure: tokio::sync::Mutex<Option<PendingBatch>>,
    /// Alert thresholds already raised.
    pub alerts: report::Alerts,
}

impl Limiter {
    /// A limiter over `store`; `shared` when other replicas use it too
    /// (leases are then a small share of each limit). Starts the
    /// settlement task.
    pub fn start(store: Arc<dyn CounterStore>, shared: bool) -> Arc<Self> {
        let holder = format!(
            "{}-{}-{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "sluice".into()),
            std::process::id(),
            fastrand::u32(..)
        );
        let limiter = Arc::new(Self {
            store,
            holder,
            lease_share: if shared { 0.01 } else { 1.0 },
            counters: Mutex::default(),
            next_batch: std::sync::atomic::AtomicU64::new(1),
            unsure: tokio::sync::Mutex::new(None),
            alerts: report::Alerts::default(),
        });
        let weak = Arc::downgrade(&limiter);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SETTLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else {
                    return;
                };
                limiter.settle_now(false).await;
            }
        });
        limiter
    }

    /// The limiter over the configured store. The memory store's journal
    /// is opened only when a budget needs it; a Redis that is down at start
    /// is not an error (calls then apply each budget's `failureMode`).
    pub async fn open(state: &StateStore) -> anyhow::Result<Arc<Self>> {
        match state {
            StateStore::Memory { path: None } => Ok(Self::start(
                Arc::new(store::MemoryStore::ephemeral()),
                false,
            )),
            StateStore::Memory { path: Some(path) } => {
                let store = store::MemoryStore::open(path.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot open the counter journal: {e}"))?;
                Ok(Self::start(Arc::new(store), false))
            }
            StateStore::Redis { url, cluster } => {
                let store = self::redis::RedisStore::new(url, *cluster)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(Self::start(Arc::new(store), true))
            }
            StateStore::Raft {
                id,
                peers,
                data_dir,
                listen,
            } => {
                if *id == 0 {
                    anyhow::bail!(
                        "the raft store needs this replica's id: set spec.state.raft.id or --raft-id"
                    );
                }
                let data_dir = match data_dir {
                    Some(dir) => dir.clone(),
                    None => crate::controller_client::default_state_dir()
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "no raft dataDir, and neither XDG_STATE_HOME nor HOME is set"
                            )
                        })?
                        .join(format!("raft-{id}")),
                };
                let store = raft::RaftStore::start(raft::RaftOptions {
                    id: *id,
                    peers: peers.clone(),
                    data_dir,
                    listen: *listen,
                    token: std::env::var("SLUICE_RAFT_TOKEN")
                        .ok()
                        .filter(|t| !t.is_empty())
                        .map(Arc::from),
                    tuning: raft::Tuning::default(),
                })
                .await?;
                Ok(Self::start(store, true))
            }
        }
    }

    /// Spent in the current window of `limit`: settled in the store
    /// (the previous window's share for a rolling one) plus what this
    /// process has not settled yet.
    pub async fn spent(&self, limit: &LimitRuntime) -> (CounterKey, Result<u64, StoreError>) {
        let now = now_ms();
        let local = self.local(limit, now);
        let key = local.key.clone();
        // A batch the store applies while this reads would count twice (as
        // settling and as settled): wait until none is on its way, and read
        // again if one went meanwhile (bounded: a slow store gets a
        // possibly high figure rather than no report).
        let mut attempts = 0;
        let (pending, current) = loop {
            attempts += 1;
            let last = attempts == 200;
            let epoch = local.settle_epoch.load(Ordering::Acquire);
            if epoch % 2 == 1 && !last {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                continue;
            }
            let pending = local.unsettled.load(Ordering::Acquire)
                + local.unleased.load(Ordering::Acquire)
                + local.settling.load(Ordering::Acquire);
            let current = match self.store.totals(&key).await {
                Ok(totals) => totals.settled,
                Err(e) => return (key, Err(e)),
            };
            if last || local.settle_epoch.load(Ordering::Acquire) == epoch {
                break (pending, current);
            }
        };
        let previous = if key.sliding {
            match self.store.totals(&key.previous()).await {
                Ok(totals) => u64::try_from(
                    u128::from(totals.settled) * u128::from(key.previous_weight_ppm(now))
                        / 1_000_000,
                )
                .unwrap_or(u64::MAX),
                Err(e) => return (key, Err(e)),
            }
        } else {
            0
        };
        (key, Ok(current + previous + pending))
    }

    /// Whether other replicas share the store (its leases are slices).
    pub fn shared(&self) -> bool {
        self.lease_share < 1.0
    }

    /// The store behind it.
    pub fn store(&self) -> &Arc<dyn CounterStore> {
        &self.store
    }

    /// The counter of `limit` for the window holding `now`.
    fn local(&self, limit: &LimitRuntime, now: i64) -> Arc<Local> {
        let (start_ms, end_ms) = limit.clock.bounds(now);
        let key = CounterKey {
            id: limit.id.clone(),
            start_ms,
            end_ms,
            limit: limit.limit.amount,
            sliding: limit.clock.sliding(),
        };
        let mut counters = match self.counters.lock() {
            Ok(counters) => counters,
            Err(poisoned) => poisoned.into_inner(),
        };
        counters
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Local::new(key)))
            .clone()
    }

    /// Reserves `need` against every limit of every budget that covers the
    /// request. All or nothing: a refusal gives back what was taken.
    pub async fn admit(
        self: &Arc<Self>,
        budgets: &[Arc<BudgetRuntime>],
        need: Amounts,
    ) -> Result<Admission, Refusal> {
        let mut admission = Admission {
            takes: Vec::new(),
            strict: false,
            settled: false,
            limiter: Arc::downgrade(self),
        };
        let now = now_ms();
        for budget in budgets {
            admission.strict |= budget.budget.enforcement == Enforcement::Strict;
            for limit in &budget.limits {
                let amount = need.of(limit.limit.metric);
                let local = self.local(limit, now);
                local.last_use_ms.store(now, Ordering::Release);
                let leased = match self.reserve(&local, amount).await {
                    Ok(true) => true,
                    Ok(false) => {
                        let refusal =
                            Refusal::Reached(self.reached(budget, limit, &local, amount, now));
                        return Err(refusal);
                    }
                    Err(error) => match budget.budget.failure_mode {
                        FailureMode::FailClosed => {
                            return Err(Refusal::Unavailable {
                                limit: format!("{}/{}", budget.budget.name, limit.limit.name),
                                detail: error.0,
                            })
                        }
                        FailureMode::FailOpen => false,
                    },
                };
                if leased {
                    self.top_up(&local);
                }
                admission.takes.push(Take {
                    local,
                    limit: Arc::new(limit.clone()),
                    budget: budget.budget.name.clone(),
                    reserved: amount,
                    leased,
                });
            }
        }
        Ok(admission)
    }

    /// Takes `amount` from the counter's lease, asking the store for more
    /// when it runs short. `Ok(false)`: the limit has no room.
    async fn reserve(&self, local: &Local, amount: u64) -> Result<bool, StoreError> {
        if local.try_take(amount) {
            return Ok(true);
        }
        let arrived = now_ms();
        let _one_at_a_time = local.refill.lock().await;
        // The call this one queued behind failed: the store was just tried
        // in vain, so do not wait for it again (admissions queued behind a
        // dead store fail together, not one timeout after another).
        if local.degraded.load(Ordering::Acquire)
            && local.store_failed_at_ms.load(Ordering::Acquire) >= arrived
        {
            return Err(StoreError(
                "counter store unreachable (the call just before failed)".into(),
            ));
        }
        // Streams may draw on the balance while the store answers: ask
        // again while it still grants something.
        for _ in 0..4 {
            if local.try_take(amount) {
                return Ok(true);
            }
            let balance = local.balance.load(Ordering::Acquire);
            let short = u64::try_from(i128::from(amount) - i128::from(balance)).unwrap_or(u64::MAX);
            let want = short.max(self.lease_size(local));
            if self.grant(local, want, short).await? == 0 {
                return Ok(false);
            }
        }
        Ok(local.try_take(amount))
    }

    /// Sends one settlement batch; when the store took it, its spend stops
    /// counting as "settling" here (reports read it from the store).
    async fn send_batch(&self, pending: &PendingBatch) -> Result<(), StoreError> {
        // Odd while the batch is on its way (see `spent`).
        for (local, ..) in &pending.taken {
            local.settle_epoch.fetch_add(1, Ordering::AcqRel);
        }
        let result = self
            .store
            .settle(&self.holder, pending.seq, &pending.batch)
            .await;
        for (local, spent, unleased, _) in &pending.taken {
            if result.is_ok() {
                local.settling.fetch_sub(spent + unleased, Ordering::AcqRel);
            }
            local.settle_epoch.fetch_add(1, Ordering::AcqRel);
        }
        result
    }

    /// How much to lease at a time: a share of the limit, or what this
    /// process took since its last grant if that is more (the lease follows
    /// the recent rate), at most a tenth of the limit when the store is
    /// shared.
    fn lease_size(&self, local: &Local) -> u64 {
        let share = (local.key.limit as f64 * self.lease_share) as u64;
        if self.lease_share >= 1.0 {
            return share;
        }
        let recent = local.taken_since_grant.load(Ordering::Acquire);
        share.max(recent).min(local.key.limit / 10).max(1)
    }

    /// One grant from the store into the balance; what was granted.
    async fn grant(&self, local: &Local, want: u64, at_least: u64) -> Result<u64, StoreError> {
        let granted = self
            .store
            .grant(&self.holder, &local.key, want, at_least, LEASE_TTL)
            .await;
        let grant = match granted {
            Ok(grant) => {
                local.degraded.store(false, Ordering::Release);
                grant
            }
            Err(error) => {
                local.store_failed_at_ms.store(now_ms(), Ordering::Release);
                if !local.degraded.swap(true, Ordering::AcqRel) {
                    tracing::warn!(counter = %local.key.id, %error, "counter store unreachable; budgets apply their failureMode");
                }
                return Err(error);
            }
        };
        local.used.store(grant.used, Ordering::Release);
        local.granted_ms.store(now_ms(), Ordering::Release);
        local.taken_since_grant.store(0, Ordering::Release);
        local.exhausted.store(grant.granted == 0, Ordering::Release);
        local.balance.fetch_add(
            i64::try_from(grant.granted).unwrap_or(i64::MAX),
            Ordering::AcqRel,
        );
        Ok(grant.granted)
    }

    /// Refills a shared lease in the background when it runs below half a
    /// lease, so that admissions and streams rarely find it empty.
    fn top_up(self: &Arc<Self>, local: &Arc<Local>) {
        if self.lease_share >= 1.0 || local.exhausted.load(Ordering::Acquire) {
            return;
        }
        let low = i64::try_from(self.lease_size(local) / 2).unwrap_or(i64::MAX);
        if local.balance.load(Ordering::Acquire) >= low
            || local.topping_up.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let limiter = self.clone();
        let local = local.clone();
        tokio::spawn(async move {
            {
                let _one_at_a_time = local.refill.lock().await;
                let balance = local.balance.load(Ordering::Acquire);
                let size = limiter.lease_size(&local);
                let want = u64::try_from(i128::from(size) - i128::from(balance.min(0)))
                    .unwrap_or(u64::MAX);
                if let Err(error) = limiter.grant(&local, want, 1).await {
                    tracing::debug!(%error, "lease top-up failed");
                }
            }
            local.topping_up.store(false, Ordering::Release);
        });
    }

    fn reached(
        &self,
        budget: &BudgetRuntime,
        limit: &LimitRuntime,
        local: &Local,
        needed: u64,
        now: i64,
    ) -> Reached {
        let calendar = !limit.clock.sliding();
        let remaining = local.remaining();
        // A rolling window frees room as the previous slot's weight falls;
        // at the latest when the current slot ends.
        let retry_after_s = if calendar {
            seconds_until(local.key.end_ms, now)
        } else {
            let len = local.key.end_ms - local.key.start_ms;
            let step = (len / 10).max(1000);
            seconds_until(now + step, now).min(seconds_until(local.key.end_ms, now))
        };
        Reached {
            budget: budget.budget.name.to_string(),
            limit: limit.limit.name.clone(),
            metric: limit.limit.metric,
            amount: limit.limit.amount,
            needed,
            remaining,
            calendar,
            retry_after_s: retry_after_s.max(1),
            resets_at_ms: local.key.end_ms,
        }
    }

    /// Settles spend with the store; `all` hands back every lease too
    /// (shutdown). Failed settlements stay for the next round.
    pub async fn settle_now(&self, all: bool) {
        let now = now_ms();
        let locals: Vec<Arc<Local>> = match self.counters.lock() {
            Ok(counters) => counters.values().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().values().cloned().collect(),
        };
        // One settlement at a time (the task, or shutdown's last one).
        let mut unsure = self.unsure.lock().await;
        if let Some(pending) = unsure.take() {
            if let Err(error) = self.send_batch(&pending).await {
                tracing::debug!(%error, "settlement still deferred");
                *unsure = Some(pending);
                return;
            }
        }
        let mut batch = Vec::new();
        let mut taken = Vec::new();
        for local in &locals {
            let idle = now - local.last_use_ms.load(Ordering::Acquire) > IDLE_RETURN_MS;
            let over = now >= local.key.end_ms;
            if all || idle || over {
                // Hand the unreserved lease back (only what is not reserved:
                // requests in flight keep theirs).
                let balance = local.balance.swap(0, Ordering::AcqRel);
                if balance > 0 {
                    let back = u64::try_from(balance).unwrap_or(0);
                    local.returning.fetch_add(back, Ordering::AcqRel);
                    // Handed back: no longer used in the store's eyes.
                    let _ = local
                        .used
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                            Some(u.saturating_sub(back))
                        });
                } else if balance < 0 {
                    local.balance.fetch_add(balance, Ordering::AcqRel);
                }
            }
            // Odd while spend moves from unsettled to settling (see `spent`).
            local.settle_epoch.fetch_add(1, Ordering::AcqRel);
            let spent = local.unsettled.swap(0, Ordering::AcqRel);
            let unleased = local.unleased.swap(0, Ordering::AcqRel);
            let unused = local.returning.swap(0, Ordering::AcqRel);
            local.settling.fetch_add(spent + unleased, Ordering::AcqRel);
            local.settle_epoch.fetch_add(1, Ordering::AcqRel);
            if spent + unleased + unused > 0 {
                batch.push(Settlement {
                    key: local.key.clone(),
                    spent,
                    unused,
                    unleased,
                });
                taken.push((local.clone(), spent, unleased, unused));
            }
        }
        if !batch.is_empty() {
            let pending = PendingBatch {
                seq: self.next_batch.fetch_add(1, Ordering::AcqRel),
                batch,
                taken,
            };
            if let Err(error) = self.send_batch(&pending).await {
                // Kept as it is, with its number: the store may have applied
                // part of it, and applies none of it twice.
                tracing::debug!(%error, "settlement deferred");
                *unsure = Some(pending);
                return;
            }
        }
        drop(unsure);
        // Leases in use are renewed well before they expire (an expired
        // lease counts as spent).
        let renew_after = i64::try_from(LEASE_TTL.as_millis() / 3).unwrap_or(i64::MAX);
        for local in &locals {
            if local.balance.load(Ordering::Acquire) > 0
                && now - local.granted_ms.load(Ordering::Acquire) > renew_after
                && now < local.key.end_ms
            {
                match self
                    .store
                    .grant(&self.holder, &local.key, 0, 0, LEASE_TTL)
                    .await
                {
                    Ok(grant) => {
                        local.used.store(grant.used, Ordering::Release);
                        local.granted_ms.store(now, Ordering::Release);
                    }
                    Err(error) => tracing::debug!(%error, "lease not renewed"),
                }
            }
        }
        // Forget counters of windows that ended and owe nothing.
        if let Ok(mut counters) = self.counters.lock() {
            counters.retain(|key, local| {
                now < key.end_ms + 1_000
                    || local.unsettled.load(Ordering::Acquire) > 0
                    || local.unleased.load(Ordering::Acquire) > 0
                    || Arc::strong_count(local) > 1
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_crds::snapshot::{Metric, Period, TokenKind, Window};

    fn budget(limits: Vec<Limit>, enforcement: Enforcement) -> Arc<BudgetRuntime> {
        Arc::new(BudgetRuntime::new(&Budget {
            name: "b".into(),
            tenant: "t".into(),
            models: vec![],
            api_key: None,
            limits,
            enforcement,
            failure_mode: FailureMode::FailClosed,
            alerts_at: vec![],
        }))
    }

    fn limit(metric: Metric, amount: u64) -> Limit {
        Limit {
            name: format!("{metric:?}"),
            metric,
            amount,
            window: Window::Calendar {
                period: Period::Daily,
                time_zone: "UTC".into(),
            },
        }
    }

    fn requests(n: u64) -> Amounts {
        Amounts {
            requests: n,
            ..Amounts::default()
        }
    }

    /// A store that applies a settlement and then says it failed, once.
    struct Flaky {
        inner: store::MemoryStore,
        fail_next: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl CounterStore for Flaky {
        async fn grant(
            &self,
            holder: &str,
            key: &CounterKey,
            want: u64,
            at_least: u64,
            ttl: Duration,
        ) -> Result<store::Grant, StoreError> {
            self.inner.grant(holder, key, want, at_least, ttl).await
        }

        async fn settle(
            &self,
            holder: &str,
            seq: u64,
            batch: &[Settlement],
        ) -> Result<(), StoreError> {
            self.inner.settle(holder, seq, batch).await?;
            if self.fail_next.swap(false, Ordering::AcqRel) {
                return Err(StoreError("timed out (but applied)".into()));
            }
            Ok(())
        }

        async fn totals(&self, key: &CounterKey) -> Result<store::Totals, StoreError> {
            self.inner.totals(key).await
        }
    }

    /// A settlement the store applied but whose answer was lost is sent
    /// again as it was, and counted once; reports count it meanwhile.
    #[tokio::test]
    async fn a_settlement_retried_after_a_lost_answer_counts_once() {
        let flaky = Arc::new(Flaky {
            inner: store::MemoryStore::ephemeral(),
            fail_next: std::sync::atomic::AtomicBool::new(true),
        });
        let limiter = Limiter::start(flaky.clone(), true);
        let budgets = [budget(
            vec![limit(Metric::Requests, 1_000)],
            Enforcement::Strict,
        )];
        for _ in 0..5 {
            limiter
                .admit(&budgets, requests(1))
                .await
                .unwrap()
                .settle(requests(1));
        }
        let spent = || async { limiter.spent(&budgets[0].limits[0]).await.1.unwrap() };
        let (key, _) = limiter.spent(&budgets[0].limits[0]).await;
        limiter.settle_now(false).await; // applied, answer lost
        assert_eq!(flaky.totals(&key).await.unwrap().settled, 5);
        // Unsure whether the store has it, the report counts it (twice
        // here, once the store is found to have it).
        assert_eq!(spent().await, 10);
        limiter.settle_now(false).await; // sent again: skipped by the store
        assert_eq!(spent().await, 5);
        limiter
            .admit(&budgets, requests(1))
            .await
            .unwrap()
            .settle(requests(1));
        limiter.settle_now(false).await;
        assert_eq!(spent().await, 6);
        assert_eq!(flaky.totals(&key).await.unwrap().settled, 6);
    }

    /// A store whose settlement answers wait for the test's word (the
    /// batch applied meanwhile).
    struct Slow {
        inner: store::MemoryStore,
        answer: tokio::sync::Semaphore,
    }

    #[async_trait::async_trait]
    impl CounterStore for Slow {
        async fn grant(
            &self,
            holder: &str,
            key: &CounterKey,
            want: u64,
            at_least: u64,
            ttl: Duration,
        ) -> Result<store::Grant, StoreError> {
            self.inner.grant(holder, key, want, at_least, ttl).await
        }

        async fn settle(
            &self,
            holder: &str,
            seq: u64,
            batch: &[Settlement],
        ) -> Result<(), StoreError> {
            self.inner.settle(holder, seq, batch).await?;
            let _ = self.answer.acquire().await;
            Ok(())
        }

        async fn totals(&self, key: &CounterKey) -> Result<store::Totals, StoreError> {
            self.inner.totals(key).await
        }
    }

    /// A report read while the store has applied a batch whose answer is
    /// still on its way counts the batch once, not as settling and settled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_report_during_a_settlement_counts_it_once() {
        let slow = Arc::new(Slow {
            inner: store::MemoryStore::ephemeral(),
            answer: tokio::sync::Semaphore::new(0),
        });
        let limiter = Arc::new(Limiter::start(slow.clone(), true));
        let budgets = Arc::new([budget(
            vec![limit(Metric::Requests, 1_000)],
            Enforcement::Strict,
        )]);
        for _ in 0..5 {
            limiter
                .admit(&budgets[..], requests(1))
                .await
                .unwrap()
                .settle(requests(1));
        }
        let (key, _) = limiter.spent(&budgets[0].limits[0]).await;
        let settling = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.settle_now(false).await }
        });
        while slow.totals(&key).await.unwrap().settled < 5 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let report = tokio::spawn({
            let (limiter, budgets) = (limiter.clone(), budgets.clone());
            async move { limiter.spent(&budgets[0].limits[0]).await.1.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        slow.answer.add_permits(1);
        settling.await.unwrap();
        assert_eq!(report.await.unwrap(), 5);
    }

    #[tokio::test]
    async fn admits_until_the_limit_and_refunds_what_was_not_used() {
        let limiter = Limiter::start(Arc::new(store::MemoryStore::ephemeral()), false);
        let budgets = [budget(
            vec![limit(Metric::Requests, 3)],
            Enforcement::Strict,
        )];
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(limiter.admit(&budgets, requests(1)).await.unwrap());
        }
        let Err(Refusal::Reached(reached)) = limiter.admit(&budgets, requests(1)).await else {
            panic!("a fourth request fits in a limit of 3");
        };
        assert_eq!(
            (reached.amount, reached.remaining, reached.needed),
            (3, 0, 1)
        );
        // One failed before reaching an upstream: refunded.
        held.pop().unwrap().settle(requests(0));
        let again = limiter.admit(&budgets, requests(1)).await.unwrap();
        assert_eq!(again.headroom()[0].remaining, 0);
        drop(again); // dropped unsettled: refunded too
        assert!(limiter.admit(&budgets, requests(1)).await.is_ok());
    }

    #[test]
    fn a_new_amount_keeps_the_counter_a_new_window_does_not() {
        let id = |limit: Limit| {
            budget(vec![limit], Enforcement::Strict).limits[0]
                .id
                .clone()
        };
        let base = limit(Metric::Cost, 100);
        let raised = Limit {
            amount: 200,
            ..base.clone()
        };
        let monthly = Limit {
            window: Window::Calendar {
                period: Period::Monthly,
                time_zone: "UTC".into(),
            },
            ..base.clone()
        };
        assert_eq!(
            id(base.clone()),
            id(raised),
            "spend survives raising a budget"
        );
        assert_ne!(id(base), id(monthly));
    }

    #[tokio::test]
    async fn remaining_counts_down_one_request_at_a_time() {
        let limiter = Limiter::start(Arc::new(store::MemoryStore::ephemeral()), false);
        let budgets = [budget(
            vec![limit(Metric::Requests, 5)],
            Enforcement::Strict,
        )];
        let mut left = Vec::new();
        for _ in 0..5 {
            let admission = limiter.admit(&budgets, requests(1)).await.unwrap();
            left.push(admission.headroom()[0].remaining);
            admission.settle(requests(1));
        }
        assert_eq!(left, [4, 3, 2, 1, 0]);
    }

    #[tokio::test]
    async fn admission_is_all_or_nothing_across_limits() {
        let limiter = Limiter::start(Arc::new(store::MemoryStore::ephemeral()), false);
        let both = [budget(
            vec![
                limit(Metric::Requests, 10),
                limit(Metric::Tokens(TokenKind::Total), 100),
            ],
            Enforcement::Strict,
        )];
        let big = Amounts {
            input: 80,
            output: 30,
            requests: 1,
            ..Amounts::default()
        };
        assert!(limiter.admit(&both, big).await.is_err());
        // The request reservation taken before the token limit refused was
        // given back: ten fit.
        let small = Amounts {
            input: 5,
            output: 5,
            requests: 1,
            ..Amounts::default()
        };
        for _ in 0..10 {
            limiter.admit(&both, small).await.unwrap().settle(small);
        }
        assert!(limiter.admit(&both, small).await.is_err());
    }

    #[tokio::test]
    async fn a_strict_stream_stops_drawing_when_the_limit_is_spent() {
        let limiter = Limiter::start(Arc::new(store::MemoryStore::ephemeral()), false);
        let tokens = [budget(
            vec![limit(Metric::Tokens(TokenKind::Output), 200)],
            Enforcement::Strict,
        )];
        let need = Amounts {
            output: 10,
            ..Amounts::default()
        };
        let admission = Arc::new(Mutex::new(limiter.admit(&tokens, need).await.unwrap()));
        let mut guard = StreamGuard::new(admission.clone(), 10, 0);
        assert!(guard.on_output(10).is_ok());
        assert!(guard.on_output(150).is_ok());
        assert!(guard.on_output(200).is_ok(), "the whole limit may be used");
        assert_eq!(guard.on_output(201), Err("b/Tokens(Output)".into()));
        Admission::settle_shared(&admission, need);
    }
}
