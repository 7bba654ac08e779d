//! What each object's `status` should say: the `Accepted`, `ResolvedRefs`
//! and `Programmed` conditions (metav1.Condition shape, with
//! `observedGeneration`), and for a Budget its spend as the proxies report
//! it. Pure: computes values, writes nothing.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sluice_crds::values::MicroUsd;

use crate::hub::Rollout;
use crate::objects::{Kind, SourceObject};
use crate::render::{Rendered, Verdict};

/// Longest condition message written (the API allows 32768 bytes).
const MAX_MESSAGE: usize = 4000;

/// One condition, before its `lastTransitionTime` is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// `Accepted`, `ResolvedRefs` or `Programmed`.
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// CamelCase, for machines.
    pub reason: &'static str,
    /// For people: what is wrong and what to do.
    pub message: String,
}

fn condition(
    type_: &'static str,
    ok: bool,
    reason: &'static str,
    message: impl Into<String>,
) -> Condition {
    let mut message = message.into();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(" ...");
    }
    Condition {
        type_,
        status: if ok { "True" } else { "False" },
        reason,
        message,
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The three conditions of one object.
pub fn conditions(object: &SourceObject, rendered: &Rendered, rollout: &Rollout) -> Vec<Condition> {
    let empty = Verdict::default();
    let verdict = rendered.verdicts.get(&object.key).unwrap_or(&empty);
    let accepted = if verdict.invalid.is_empty() {
        condition("Accepted", true, "Accepted", "the object is valid")
    } else {
        condition(
            "Accepted",
            false,
            "Invalid",
            format!("fix the spec: {}", verdict.invalid.join("; ")),
        )
    };
    let resolved = match verdict.unresolved.first() {
        None => condition(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "every reference resolved",
        ),
        Some((problem, _)) => {
            let all: Vec<&str> = verdict.unresolved.iter().map(|(_, m)| m.as_str()).collect();
            condition("ResolvedRefs", false, problem.reason(), all.join("; "))
        }
    };
    let keep = if rollout.version == 0 {
        "no version has been published yet".to_owned()
    } else {
        format!("replicas keep running version {}", rollout.version)
    };
    let programmed = if rendered.bundle.is_none() {
        if verdict.is_clean() {
            let mut blame = rendered.failing.join(", ");
            if blame.is_empty() {
                blame = rendered.other_errors.join("; ");
            }
            condition(
                "Programmed",
                false,
                "Pending",
                format!("the config is not published because of errors in {blame} (see their conditions); {keep}"),
            )
        } else {
            condition(
                "Programmed",
                false,
                "Invalid",
                format!("the config is not published until this object's errors are fixed; {keep}"),
            )
        }
    } else if !rollout.rejected.is_empty() {
        let (replica, error) = &rollout.rejected[0];
        condition(
            "Programmed",
            false,
            "Rejected",
            format!(
                "{} of {} rejected version {}; they keep serving their previous version. {replica}: {error}",
                plural(rollout.rejected.len(), "replica", "replicas"),
                rollout.connected,
                rollout.version
            ),
        )
    } else if rollout.connected == 0 {
        condition(
            "Programmed",
            false,
            "NoReplicas",
            format!(
                "version {} is published, but no proxy replica is connected to the controller",
                rollout.version
            ),
        )
    } else if rollout.running < rollout.connected {
        condition(
            "Programmed",
            false,
            "Pending",
            format!(
                "{}/{} replicas run version {}; waiting for the others",
                rollout.running, rollout.connected, rollout.version
            ),
        )
    } else {
        condition(
            "Programmed",
            true,
            "Programmed",
            format!(
                "{}/{} replicas run version {}",
                rollout.running, rollout.connected, rollout.version
            ),
        )
    };
    vec![accepted, resolved, programmed]
}

/// The full status to write: conditions (keeping `lastTransitionTime` of
/// those whose status did not change), `observedGeneration` and, for a
/// Budget, its spend (`budget`; `None` keeps what the status already says).
/// `written` is the status this controller wrote last, newer than the
/// object's until the watch catches up.
pub fn status_value(
    object: &SourceObject,
    written: Option<&Value>,
    conditions: &[Condition],
    budget: Option<Value>,
    now: &str,
) -> Value {
    let existing: Vec<Value> = written
        .or(object.status.as_ref())
        .and_then(|s| s.get("conditions"))
        .and_then(|c| c.as_array())
        .cloned()
        .unwrap_or_default();
    let listed: Vec<Value> = conditions
        .iter()
        .map(|c| {
            let since = existing
                .iter()
                .find(|e| e["type"] == c.type_ && e["status"] == c.status)
                .and_then(|e| e.get("lastTransitionTime"))
                .and_then(|t| t.as_str())
                .unwrap_or(now);
            let mut value = json!({
                "type": c.type_,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": since,
            });
            if let Some(generation) = object.generation {
                value["observedGeneration"] = json!(generation);
            }
            value
        })
        .collect();
    let mut status = json!({ "conditions": listed });
    if let Some(generation) = object.generation {
        status["observedGeneration"] = json!(generation);
    }
    if object.key.kind == Kind::Budget {
        let figures = budget.or_else(|| {
            let current = written.or(object.status.as_ref())?;
            let kept: serde_json::Map<String, Value> = BUDGET_FIELDS
                .iter()
                .filter_map(|f| Some(((*f).to_owned(), current.get(*f)?.clone())))
                .collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        });
        if let Some(Value::Object(figures)) = figures {
            for (field, value) in figures {
                status[field] = value;
            }
        }
    }
    status
}

/// The status fields a Budget's spend fills.
const BUDGET_FIELDS: [&str; 5] = ["spent", "remaining", "resetsAt", "limits", "reportedBy"];

/// Whether writing `desired` would change nothing but the time of a
/// transition that did not happen.
pub fn unchanged(current: Option<&Value>, desired: &Value) -> bool {
    fn timeless(status: &Value) -> Value {
        let mut status = status.clone();
        if let Some(conditions) = status.get_mut("conditions").and_then(|c| c.as_array_mut()) {
            for condition in conditions {
                if let Some(condition) = condition.as_object_mut() {
                    condition.remove("lastTransitionTime");
                }
            }
        }
        status
    }
    current.is_some_and(|current| timeless(current) == timeless(desired))
}

/// `camelCase` status key of a `/budgets` metric.
fn metric_key(metric: &str) -> &str {
    match metric {
        "input-tokens" => "inputTokens",
        "output-tokens" => "outputTokens",
        other => other,
    }
}

fn amount(metric: &str, value: &Value) -> Option<u64> {
    if metric == "cost" {
        MicroUsd::parse(value.as_str()?).ok().map(|m| m.0)
    } else {
        value.as_u64()
    }
}

fn render_amount(metric: &str, amount: u64) -> Value {
    if metric == "cost" {
        Value::String(MicroUsd(amount).to_string())
    } else {
        json!(amount)
    }
}

/// A Budget's spend from the replicas' `/budgets` reports. With a shared
/// counter store (`shared`: Redis) every replica reads the same totals, so
/// the highest (freshest) figure wins; with per-replica `memory` counters
/// the replicas' figures add up. `None` when no replica reported it.
pub fn budget_figures(name: &str, reports: &[(String, Value)], shared: bool) -> Option<Value> {
    // Per limit, in the budget's order: metric, limit, spent, resetsAt.
    let mut limits: Vec<(String, String, u64, u64, String)> = Vec::new();
    let mut reporters = 0usize;
    for (_, report) in reports {
        let Some(budget) = report
            .as_array()
            .and_then(|budgets| budgets.iter().find(|b| b["name"] == name))
        else {
            continue;
        };
        reporters += 1;
        // A replica on a shared store (raft, redis) reports the fleet's
        // spend: the figures are then the same everywhere, not to be added.
        let shared = shared || budget["shared"] == true;
        for limit in budget["limits"].as_array().into_iter().flatten() {
            if limit.get("error").is_some() {
                continue;
            }
            let (Some(limit_name), Some(metric)) =
                (limit["name"].as_str(), limit["metric"].as_str())
            else {
                continue;
            };
            let (Some(of), Some(spent)) = (
                amount(metric, &limit["limit"]),
                amount(metric, &limit["spent"]),
            ) else {
                continue;
            };
            let resets_at = limit["resetsAt"].as_str().unwrap_or_default().to_owned();
            match limits.iter_mut().find(|l| l.0 == limit_name) {
                Some(entry) => {
                    entry.3 = if shared {
                        entry.3.max(spent)
                    } else {
                        entry.3.saturating_add(spent)
                    };
                    entry.4 = entry.4.clone().max(resets_at);
                }
                None => limits.push((
                    limit_name.to_owned(),
                    metric.to_owned(),
                    of,
                    spent,
                    resets_at,
                )),
            }
        }
    }
    if reporters == 0 {
        return None;
    }
    let mut spent = BTreeMap::new();
    let mut remaining = BTreeMap::new();
    let mut rows = Vec::new();
    for (limit_name, metric, of, used, resets_at) in &limits {
        let key = metric_key(metric).to_owned();
        // The first limit of each metric speaks for it in the summary.
        if !spent.contains_key(&key) {
            spent.insert(key.clone(), render_amount(metric, *used));
            remaining.insert(key, render_amount(metric, of.saturating_sub(*used)));
        }
        rows.push(json!({
            "name": limit_name,
            "metric": metric,
            "limit": render_amount(metric, *of),
            "spent": render_amount(metric, *used),
            "remaining": render_amount(metric, of.saturating_sub(*used)),
            "resetsAt": resets_at,
        }));
    }
    let mut figures = json!({
        "spent": spent,
        "remaining": remaining,
        "limits": rows,
        "reportedBy": reporters,
    });
    if let Some((_, _, _, _, resets_at)) = limits.first() {
        figures["resetsAt"] = json!(resets_at);
    }
    Some(figures)
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
