//! What operators see of budgets: each limit's spend, what is left and when
//! its window resets (`GET /budgets` on the admin listener, `sluice
//! budgets`, the `sluice_budget_*` gauges), and the alert raised once per
//! window when spend crosses one of a budget's `alertsAt` thresholds.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use sluice_crds::snapshot::{Enforcement, FailureMode, Metric, TokenKind};
use sluice_crds::values::MicroUsd;

use super::{BudgetRuntime, Limiter};

/// How often the gauges are refreshed and thresholds checked.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// One budget, as `GET /budgets` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetReport {
    /// Its name.
    pub name: String,
    /// Its tenant.
    pub tenant: String,
    /// `Strict` or `Lenient`.
    pub enforcement: &'static str,
    /// `FailClosed` or `FailOpen`.
    pub failure_mode: &'static str,
    /// Its limits.
    pub limits: Vec<LimitReport>,
    /// Whether the counters are shared with other replicas (`raft` or
    /// `redis`): every replica then reports the fleet's spend, not its own.
    pub shared: bool,
}

/// One limit in its current window.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitReport {
    /// Its name.
    pub name: String,
    /// `cost` (USD), `tokens`, `input-tokens`, `output-tokens` or `requests`.
    pub metric: &'static str,
    /// The amount per window (USD as a decimal string for cost).
    pub limit: serde_json::Value,
    /// Spent in the window so far.
    pub spent: serde_json::Value,
    /// Left.
    pub remaining: serde_json::Value,
    /// `rolling` or the calendar period.
    pub window: String,
    /// When the window resets (a rolling window: when its current slot ends).
    pub resets_at: String,
    /// Percent of the limit spent.
    pub percent: u64,
    /// Set when the counter store could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    raw: (u64, u64, Metric),
}

fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Cost => "cost",
        Metric::Requests => "requests",
        Metric::Tokens(TokenKind::Total) => "tokens",
        Metric::Tokens(TokenKind::Input) => "input-tokens",
        Metric::Tokens(TokenKind::Output) => "output-tokens",
    }
}

fn value(metric: Metric, amount: u64) -> serde_json::Value {
    match metric {
        Metric::Cost => serde_json::Value::String(MicroUsd(amount).to_string()),
        _ => serde_json::Value::from(amount),
    }
}

/// As a gauge: USD for cost, else the count.
fn gauge(metric: Metric, amount: u64) -> f64 {
    match metric {
        Metric::Cost => amount as f64 / 1_000_000.0,
        _ => amount as f64,
    }
}

fn rfc3339(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Every budget's limits, read from the store now.
pub async fn report(limiter: &Limiter, budgets: &[Arc<BudgetRuntime>]) -> Vec<BudgetReport> {
    let mut out = Vec::with_capacity(budgets.len());
    for budget in budgets {
        let mut limits = Vec::with_capacity(budget.limits.len());
        for limit in &budget.limits {
            let metric = limit.limit.metric;
            let amount = limit.limit.amount;
            let (key, spent) = limiter.spent(limit).await;
            let (spent, error) = match spent {
                Ok(spent) => (spent, None),
                Err(e) => (0, Some(e.0)),
            };
            let window = match &limit.limit.window {
                sluice_crds::snapshot::Window::Calendar { period, time_zone } => {
                    format!("{period:?} ({time_zone})")
                }
                sluice_crds::snapshot::Window::Rolling(d) => {
                    format!("rolling {}", humantime::format_duration(*d))
                }
            };
            limits.push(LimitReport {
                name: limit.limit.name.clone(),
                metric: metric_name(metric),
                limit: value(metric, amount),
                spent: value(metric, spent),
                remaining: value(metric, amount.saturating_sub(spent)),
                window,
                resets_at: rfc3339(key.end_ms),
                percent: u64::try_from(u128::from(spent) * 100 / u128::from(amount.max(1)))
                    .unwrap_or(u64::MAX),
                error,
                raw: (spent, amount, metric),
            });
        }
        out.push(BudgetReport {
            name: budget.budget.name.to_string(),
            tenant: budget.budget.tenant.to_string(),
            enforcement: match budget.budget.enforcement {
                Enforcement::Strict => "Strict",
                Enforcement::Lenient => "Lenient",
            },
            failure_mode: match budget.budget.failure_mode {
                FailureMode::FailClosed => "FailClosed",
                FailureMode::FailOpen => "FailOpen",
            },
            limits,
            shared: limiter.shared(),
        });
    }
    out
}

/// Thresholds already announced, per limit window.
#[derive(Default)]
pub struct Alerts {
    raised: Mutex<HashSet<(String, String, u32)>>,
}

/// Refreshes the gauges and raises alerts, every [`WATCH_EVERY`], for as
/// long as the gateway runs.
pub async fn watch(gateway: Arc<crate::gateway::Gateway>) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        gateway
            .telemetry
            .metrics()
            .cluster(&gateway.limiter.store().report());
        let runtime = gateway.runtime();
        if runtime.budgets.is_empty() {
            continue;
        }
        let reports = report(&gateway.limiter, &runtime.budgets).await;
        let metrics = gateway.telemetry.metrics();
        for (budget, runtime_budget) in reports.iter().zip(runtime.budgets.iter()) {
            for limit in &budget.limits {
                if limit.error.is_some() {
                    continue;
                }
                let (spent, amount, metric) = limit.raw;
                metrics.budget(
                    &budget.name,
                    &limit.name,
                    gauge(metric, spent),
                    gauge(metric, amount.saturating_sub(spent)),
                );
                for &threshold in &runtime_budget.budget.alerts_at {
                    if limit.percent < u64::from(threshold) {
                        continue;
                    }
                    let key = (
                        format!("{}/{}", budget.name, limit.name),
                        limit.resets_at.clone(),
                        threshold,
                    );
                    let new = gateway
                        .limiter
                        .alerts
                        .raised
                        .lock()
                        .map(|mut raised| raised.insert(key))
                        .unwrap_or(false);
                    if new {
                        tracing::warn!(
                            budget = %budget.name,
                            tenant = %budget.tenant,
                            limit = %limit.name,
                            threshold,
                            spent = %limit.spent,
                            of = %limit.limit,
                            resets_at = %limit.resets_at,
                            "budget alert: {}% of {}/{} spent",
                            threshold,
                            budget.name,
                            limit.name
                        );
                        metrics.budget_alert(&budget.name, &limit.name, threshold);
                    }
                }
            }
        }
    }
}
