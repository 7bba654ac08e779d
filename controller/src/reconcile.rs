//! The control loop. On a change of the objects (debounced), it renders and
//! compiles the namespace and publishes the bundle; on that, on a replica's
//! ACK or NACK, and every `--status-interval`, the leader writes each
//! object's status (only where it changed) and publishes Events for
//! rejections and NACKs. The gateway's config is one compile of every
//! object, so one pass covers them all; each pass is idempotent.
//! Writes go through [`StatusWriter`], so tests need no API server.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::objects::{Kind, ObjectKey, Objects, SourceObject};
use crate::render::{render, Rendered};
use crate::status::{budget_figures, conditions, status_value, unchanged};

/// An Event to publish about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `Warning` (true) or `Normal`.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What happened, for people.
    pub message: String,
}

/// Where status and Events go.
pub trait StatusWriter: Send + Sync + 'static {
    /// Replaces the controller's part of the object's `status`.
    fn write_status(
        &self,
        object: &SourceObject,
        status: Value,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Publishes an Event about the object.
    fn publish_event(
        &self,
        object: &SourceObject,
        note: Note,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// Loop settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Wait after a change for more changes before acting.
    pub debounce: Duration,
    /// How often status (Budget spend, replica counts) is refreshed anyway.
    pub status_interval: Duration,
}

/// The loop's memory between passes.
#[derive(Default)]
struct Memory {
    /// Status last written, per object.
    written: BTreeMap<ObjectKey, Value>,
    /// Events already published: (object, reason, message).
    announced: BTreeSet<(ObjectKey, &'static str, String)>,
}

/// Runs the loop until `shutdown`.
pub async fn run<W: StatusWriter>(
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    writer: W,
    settings: Settings,
    mut objects: watch::Receiver<Option<Arc<Objects>>>,
    shutdown: CancellationToken,
) {
    let mut memory = Memory::default();
    let mut rendered: Option<(Arc<Objects>, Rendered)> = None;
    let mut tick = tokio::time::interval(settings.status_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    objects.mark_changed();
    loop {
        // Budget spend changes with every request: it is refreshed on the
        // interval (and with the objects), not on every replica report.
        let refresh_budgets = tokio::select! {
            changed = objects.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::time::sleep(settings.debounce).await;
                true
            }
            () = hub.replica_changes.notified() => {
                tokio::time::sleep(settings.debounce).await;
                false
            }
            _ = tick.tick() => true,
            () = shutdown.cancelled() => return,
        };
        let Some(current) = objects.borrow_and_update().clone() else {
            continue;
        };
        if rendered
            .as_ref()
            .is_none_or(|(seen, _)| !Arc::ptr_eq(seen, &current))
        {
            let result = render(&current);
            match &result.bundle {
                Some(bundle) => {
                    metrics.render("published");
                    hub.publish(bundle.clone());
                }
                None => {
                    metrics.render("invalid");
                    tracing::warn!(objects = ?result.failing, "config not published: it does not compile");
                }
            }
            rendered = Some((current.clone(), result));
        }
        if !hub.is_leader() {
            // A new leader compares with what the objects say, not with
            // what this replica wrote long ago.
            memory = Memory::default();
            continue;
        }
        if let Some((objects, result)) = &rendered {
            pass(
                &hub,
                &metrics,
                &writer,
                (objects, result),
                refresh_budgets,
                &mut memory,
            )
            .await;
        }
    }
}

/// Writes every object's status and publishes new Events.
async fn pass<W: StatusWriter>(
    hub: &Hub,
    metrics: &Metrics,
    writer: &W,
    (objects, rendered): (&Objects, &Rendered),
    refresh_budgets: bool,
    memory: &mut Memory,
) {
    let rollout = hub.rollout();
    let reports = if refresh_budgets {
        hub.budget_reports()
    } else {
        Vec::new()
    };
    let now = k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let mut notes: Vec<(&SourceObject, Note)> = Vec::new();
    let gateways: Vec<&SourceObject> = objects
        .objects
        .iter()
        .filter(|o| o.key.kind == Kind::AIGateway)
        .collect();
    let config_objects: Vec<&SourceObject> = if gateways.is_empty() {
        objects.objects.iter().collect()
    } else {
        gateways
    };
    for (replica, error) in &rollout.rejected {
        for object in &config_objects {
            notes.push((
                object,
                Note {
                    warning: true,
                    reason: "Rejected",
                    message: format!(
                        "replica {replica} rejected version {}: {error}",
                        rollout.version
                    ),
                },
            ));
        }
    }
    for object in &objects.objects {
        let conditions = conditions(object, rendered, &rollout);
        for condition in conditions.iter().filter(|c| c.status == "False") {
            if matches!(condition.type_, "Accepted" | "ResolvedRefs") {
                notes.push((
                    object,
                    Note {
                        warning: true,
                        reason: condition.reason,
                        message: condition.message.clone(),
                    },
                ));
            }
        }
        // No reports: the figures last written stay.
        let budget = (object.key.kind == Kind::Budget)
            .then(|| budget_figures(&object.key.name, &reports, rendered.shared_counters))
            .flatten();
        let written = memory.written.get(&object.key);
        let status = status_value(object, written, &conditions, budget, &now);
        if unchanged(written.or(object.status.as_ref()), &status) {
            continue;
        }
        let result = writer.write_status(object, status.clone()).await;
        metrics.status_write(result.is_ok());
        match result {
            Ok(()) => {
                memory.written.insert(object.key.clone(), status);
            }
            Err(error) => tracing::warn!(object = %object.key, %error, "cannot write status"),
        }
    }
    // Forget problems that went away, so they are announced again if they return.
    memory.announced.retain(|(key, reason, message)| {
        notes
            .iter()
            .any(|(o, n)| o.key == *key && n.reason == *reason && n.message == *message)
    });
    for (object, note) in notes {
        let id = (object.key.clone(), note.reason, note.message.clone());
        if memory.announced.contains(&id) {
            continue;
        }
        match writer.publish_event(object, note).await {
            Ok(()) => {
                memory.announced.insert(id);
            }
            Err(error) => tracing::warn!(object = %object.key, %error, "cannot publish an Event"),
        }
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
