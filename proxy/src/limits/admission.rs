//! A request's hold on its budgets: what it reserved on each counter, the
//! extra a stream draws as it grows, the settlement that charges what was
//! used and hands back the rest, and what a refused request is told
//! (`Reached`, the `x-ratelimit-*` headers). Knows nothing of stores.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use sluice_crds::snapshot::{Metric, TokenKind};

use super::local::Local;
use super::store::now_ms;
use super::{LimitRuntime, Limiter};

/// What a request needs, or used, in each metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    /// Input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Cost in micro-USD.
    pub cost: u64,
    /// Requests (1, or 0 for a refund).
    pub requests: u64,
}

impl Amounts {
    pub(super) fn of(&self, metric: Metric) -> u64 {
        match metric {
            Metric::Cost => self.cost,
            Metric::Requests => self.requests,
            Metric::Tokens(TokenKind::Total) => self.input + self.output,
            Metric::Tokens(TokenKind::Input) => self.input,
            Metric::Tokens(TokenKind::Output) => self.output,
        }
    }
}

/// The reservation a request holds on one counter.
pub(super) struct Take {
    pub(super) local: Arc<Local>,
    pub(super) limit: Arc<LimitRuntime>,
    pub(super) budget: Arc<str>,
    pub(super) reserved: u64,
    pub(super) leased: bool,
}

/// A request that passed admission: settle it when it is done (dropping it
/// settles what was reserved as unused, i.e. refunds everything).
pub struct Admission {
    pub(super) takes: Vec<Take>,
    pub(super) strict: bool,
    pub(super) settled: bool,
    /// For background top-ups of the leases its streams draw on.
    pub(super) limiter: std::sync::Weak<Limiter>,
}

/// A budget's hold on a streamed response: as output grows past what was
/// reserved, more is drawn from the leases (locally, no store round trip);
/// when a limit has no more and the budget is Strict, the stream must end.
pub struct StreamGuard {
    pub(super) admission: Arc<Mutex<Admission>>,
    /// Output tokens reserved so far.
    pub(super) reserved_output: u64,
    /// Micro-USD per million output tokens, for the cost of more output.
    pub(super) output_price: u64,
}

impl StreamGuard {
    /// A guard over `admission` (shared with its settlement).
    pub fn new(admission: Arc<Mutex<Admission>>, reserved_output: u64, output_price: u64) -> Self {
        Self {
            admission,
            reserved_output,
            output_price,
        }
    }

    /// Output has reached `output` tokens: draw more if needed. `Err` names
    /// the limit that has no room when the budget is Strict (the stream
    /// must end); Lenient streams go on and are charged in full.
    pub fn on_output(&mut self, output: u64) -> Result<(), String> {
        if output <= self.reserved_output {
            return Ok(());
        }
        let needed = output - self.reserved_output;
        let price = self.output_price;
        let amounts = |more: u64| Amounts {
            output: more,
            cost: u64::try_from((u128::from(more) * u128::from(price)).div_ceil(1_000_000))
                .unwrap_or(u64::MAX),
            ..Amounts::default()
        };
        let Ok(mut admission) = self.admission.lock() else {
            return Ok(());
        };
        // Draw in steps, not per token; near the end of a limit, only what
        // is needed.
        let step = needed.max(64);
        let outcome = match admission.extend(amounts(step)) {
            Ok(()) => Ok(step),
            Err(_) => admission.extend(amounts(needed)).map(|()| needed),
        };
        match outcome {
            Ok(more) => {
                self.reserved_output += more;
                Ok(())
            }
            Err(limit) if admission.strict => Err(limit),
            Err(_) => {
                // Lenient: spend past the lease; settlement charges it.
                admission.force_extend(amounts(needed));
                self.reserved_output += needed;
                Ok(())
            }
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// A limit has no room for it.
    Reached(Reached),
    /// The store cannot be reached and the budget fails closed.
    Unavailable {
        /// `budget/limit`.
        limit: String,
        /// What the store said.
        detail: String,
    },
}

/// A limit that refused a request, for the 429.
#[derive(Debug, Clone)]
pub struct Reached {
    /// The budget.
    pub budget: String,
    /// The limit's name.
    pub limit: String,
    /// What it counts.
    pub metric: Metric,
    /// Its amount.
    pub amount: u64,
    /// What this request would have needed.
    pub needed: u64,
    /// What is left now.
    pub remaining: u64,
    /// Whether it is a calendar budget (vs. a rolling rate limit).
    pub calendar: bool,
    /// Seconds until the window (or the rolling weight) frees room.
    pub retry_after_s: u64,
    /// When the calendar window resets, Unix ms.
    pub resets_at_ms: i64,
}

/// One header row: the tightest limit of a metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headroom {
    /// `requests`, `tokens` or `cost`.
    pub metric: &'static str,
    /// The limit's amount.
    pub limit: u64,
    /// What is left.
    pub remaining: u64,
    /// Seconds until it resets.
    pub reset_s: u64,
}

/// `12.50 USD`, `1000 tokens`, `5 requests`.
pub fn format_amount(metric: Metric, amount: u64) -> String {
    match metric {
        Metric::Cost => format!("{} USD", sluice_crds::values::MicroUsd(amount)),
        Metric::Tokens(TokenKind::Input) => format!("{amount} input tokens"),
        Metric::Tokens(TokenKind::Output) => format!("{amount} output tokens"),
        Metric::Tokens(TokenKind::Total) => format!("{amount} tokens"),
        Metric::Requests => format!("{amount} requests"),
    }
}

/// Sets `x-ratelimit-limit-{metric}`, `x-ratelimit-remaining-{metric}` and
/// `x-ratelimit-reset-{metric}` (seconds, as `12s`); cost in USD.
pub fn insert_headroom(headers: &mut http::HeaderMap, rows: &[Headroom]) {
    for row in rows {
        let (limit, remaining) = if row.metric == "cost" {
            (
                sluice_crds::values::MicroUsd(row.limit).to_string(),
                sluice_crds::values::MicroUsd(row.remaining).to_string(),
            )
        } else {
            (row.limit.to_string(), row.remaining.to_string())
        };
        for (what, value) in [
            ("limit", limit),
            ("remaining", remaining),
            ("reset", format!("{}s", row.reset_s)),
        ] {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(
                    format!("x-ratelimit-{what}-{}", row.metric).as_bytes(),
                ),
                http::HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        }
    }
}

/// `requests`, `tokens` or `cost`.
pub fn metric_label(metric: Metric) -> &'static str {
    match metric {
        Metric::Requests => "requests",
        Metric::Tokens(_) => "tokens",
        Metric::Cost => "cost",
    }
}

impl Admission {
    /// Admits everything (no budget applies).
    pub fn none() -> Self {
        Self {
            takes: Vec::new(),
            strict: false,
            settled: true,
            limiter: std::sync::Weak::new(),
        }
    }

    /// Asks for more lease in the background where it runs low.
    fn top_up(&self) {
        if let Some(limiter) = self.limiter.upgrade() {
            for take in &self.takes {
                if take.leased {
                    limiter.top_up(&take.local);
                }
            }
        }
    }

    /// Whether any limit applies.
    pub fn is_limited(&self) -> bool {
        !self.takes.is_empty()
    }

    /// Whether a stream must be ended when it outgrows its reservation.
    pub fn strict(&self) -> bool {
        self.strict
    }

    /// `x-ratelimit-*` rows: per metric, the limit with the least left.
    pub fn headroom(&self) -> Vec<Headroom> {
        let now = now_ms();
        let mut rows: Vec<Headroom> = Vec::new();
        for take in &self.takes {
            let metric = metric_label(take.limit.limit.metric);
            let row = Headroom {
                metric,
                limit: take.local.key.limit,
                remaining: take.local.remaining(),
                reset_s: seconds_until(take.local.key.end_ms, now),
            };
            match rows.iter_mut().find(|r| r.metric == metric) {
                Some(existing) if existing.remaining > row.remaining => *existing = row,
                Some(_) => {}
                None => rows.push(row),
            }
        }
        rows
    }

    /// Draws `more` output tokens (and their cost) for a stream that
    /// outgrew its reservation; false when a limit has no room left (a
    /// Strict stream then ends). Local only: never waits on the store.
    pub fn extend(&mut self, more: Amounts) -> Result<(), String> {
        let mut taken: Vec<(usize, u64)> = Vec::new();
        for (i, take) in self.takes.iter().enumerate() {
            let amount = more.of(take.limit.limit.metric);
            if amount == 0 {
                continue;
            }
            if take.leased && !take.local.try_take(amount) {
                for (j, amount) in taken {
                    let back = i64::try_from(amount).unwrap_or(0);
                    self.takes[j]
                        .local
                        .balance
                        .fetch_add(back, Ordering::AcqRel);
                }
                self.top_up();
                return Err(format!("{}/{}", take.budget, take.limit.limit.name));
            }
            taken.push((i, amount));
        }
        for (i, amount) in taken {
            self.takes[i].reserved += amount;
        }
        self.top_up();
        Ok(())
    }

    /// Like [`extend`](Self::extend), past what the leases hold (Lenient).
    fn force_extend(&mut self, more: Amounts) {
        for take in &mut self.takes {
            let amount = more.of(take.limit.limit.metric);
            if take.leased {
                take.local
                    .taken_since_grant
                    .fetch_add(amount, Ordering::AcqRel);
                let amount = i64::try_from(amount).unwrap_or(i64::MAX);
                take.local.balance.fetch_sub(amount, Ordering::AcqRel);
            }
            take.reserved += amount;
        }
        self.top_up();
    }

    /// Charges what the request used; the rest of each reservation goes
    /// back to the lease.
    pub fn settle(mut self, used: Amounts) {
        self.settle_with(used);
    }

    /// Settles through a shared handle (see [`StreamGuard`]).
    pub fn settle_shared(admission: &Mutex<Admission>, used: Amounts) {
        if let Ok(mut admission) = admission.lock() {
            admission.settle_with(used);
        }
    }

    fn settle_with(&mut self, used: Amounts) {
        if self.settled {
            return;
        }
        self.settled = true;
        let now = now_ms();
        for take in &self.takes {
            let spent = used.of(take.limit.limit.metric);
            take.local.last_use_ms.store(now, Ordering::Release);
            if take.leased {
                // The store counts the whole lease as used already:
                // spending from it changes nothing there.
                let back = i128::from(take.reserved) - i128::from(spent);
                let back =
                    i64::try_from(back).unwrap_or(if back > 0 { i64::MAX } else { i64::MIN });
                take.local.balance.fetch_add(back, Ordering::AcqRel);
                take.local.unsettled.fetch_add(spent, Ordering::AcqRel);
            } else {
                take.local.unleased.fetch_add(spent, Ordering::AcqRel);
                take.local.used.fetch_add(spent, Ordering::AcqRel);
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        // Never settled: refund everything.
        self.settle_with(Amounts::default());
    }
}

pub(super) fn seconds_until(end_ms: i64, now_ms: i64) -> u64 {
    u64::try_from((end_ms - now_ms).max(0))
        .unwrap_or(0)
        .div_ceil(1000)
}
