#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use serde_json::json;

use super::*;
use crate::objects::{Kind, ObjectKey};
use crate::render::render;
use crate::render::tests::namespace;

fn rollout(connected: usize, running: usize) -> Rollout {
    Rollout {
        version: 7,
        connected,
        running,
        rejected: Vec::new(),
    }
}

#[test]
fn programmed_counts_replicas_on_the_current_version() {
    let objects = namespace();
    let rendered = render(&objects);
    let gateway = &objects.objects[1];
    let programmed = |r: &Rollout| conditions(gateway, &rendered, r).pop().unwrap();
    let c = programmed(&rollout(2, 2));
    assert_eq!((c.status, c.reason), ("True", "Programmed"));
    assert_eq!(c.message, "2/2 replicas run version 7");
    let c = programmed(&rollout(3, 1));
    assert_eq!((c.status, c.reason), ("False", "Pending"));
    assert_eq!(
        c.message,
        "1/3 replicas run version 7; waiting for the others"
    );
    assert_eq!(programmed(&rollout(0, 0)).reason, "NoReplicas");
    let mut rejected = rollout(2, 1);
    rejected
        .rejected
        .push(("proxy-b".into(), "Backend/x: spec.y: bad".into()));
    let c = programmed(&rejected);
    assert_eq!((c.status, c.reason), ("False", "Rejected"));
    assert_eq!(
        c.message,
        "1 replica of 2 rejected version 7; they keep serving their previous version. proxy-b: Backend/x: spec.y: bad"
    );
}

#[test]
fn transition_times_move_only_when_a_status_changes() {
    let objects = namespace();
    let rendered = render(&objects);
    let mut gateway = objects.objects[1].clone();
    let first = status_value(
        &gateway,
        None,
        &conditions(&gateway, &rendered, &rollout(1, 0)),
        None,
        "T1",
    );
    assert_eq!(first["observedGeneration"], 2);
    assert_eq!(first["conditions"][2]["lastTransitionTime"], "T1");
    assert_eq!(first["conditions"][2]["observedGeneration"], 2);
    gateway.status = Some(first.clone());
    // Same statuses, new message: the time stays.
    let second = status_value(
        &gateway,
        None,
        &conditions(&gateway, &rendered, &rollout(2, 1)),
        None,
        "T2",
    );
    assert_eq!(second["conditions"][2]["lastTransitionTime"], "T1");
    assert!(!unchanged(gateway.status.as_ref(), &second));
    gateway.status = Some(second);
    // Programmed turns True: its time moves, the others stay.
    let third = status_value(
        &gateway,
        None,
        &conditions(&gateway, &rendered, &rollout(2, 2)),
        None,
        "T3",
    );
    assert_eq!(third["conditions"][0]["lastTransitionTime"], "T1");
    assert_eq!(third["conditions"][2]["lastTransitionTime"], "T3");
    assert!(unchanged(Some(&third), &third));
    // What this controller wrote last counts before the object catches up.
    let fourth = status_value(
        &gateway,
        Some(&third),
        &conditions(&gateway, &rendered, &rollout(2, 2)),
        None,
        "T4",
    );
    assert_eq!(fourth, third);
}

fn report(cost_spent: &str, tokens_spent: u64) -> serde_json::Value {
    json!([{
        "name": "team-a", "tenant": "team-a",
        "limits": [
            {"name": "cost-monthly", "metric": "cost", "limit": "100.000000", "spent": cost_spent,
             "remaining": "0", "window": "Monthly (UTC)", "resetsAt": "2026-12-01T00:00:00Z", "percent": 0},
            {"name": "tokens-daily", "metric": "tokens", "limit": 1000, "spent": tokens_spent,
             "remaining": 0, "window": "Daily (UTC)", "resetsAt": "2026-11-02T00:00:00Z", "percent": 0},
        ]
    }])
}

#[test]
fn budget_spend_adds_up_per_replica_counters_and_takes_the_freshest_shared_one() {
    let reports = vec![
        ("a".to_owned(), report("12.340000", 100)),
        ("b".to_owned(), report("1.000000", 50)),
    ];
    let summed = budget_figures("team-a", &reports, false).unwrap();
    assert_eq!(summed["spent"], json!({"cost": "13.340000", "tokens": 150}));
    assert_eq!(
        summed["remaining"],
        json!({"cost": "86.660000", "tokens": 850})
    );
    assert_eq!(summed["resetsAt"], "2026-12-01T00:00:00Z");
    assert_eq!(summed["limits"][1]["name"], "tokens-daily");
    assert_eq!(summed["reportedBy"], 2);
    let shared = budget_figures("team-a", &reports, true).unwrap();
    assert_eq!(shared["spent"], json!({"cost": "12.340000", "tokens": 100}));
    assert!(budget_figures("team-b", &reports, true).is_none());
    // Replicas that say their store is shared (the chart's raft, set by
    // flags the AIGateway does not show) are not added up either.
    let mut said = reports.clone();
    for (_, report) in &mut said {
        report[0]["shared"] = json!(true);
    }
    let told = budget_figures("team-a", &said, false).unwrap();
    assert_eq!(told["spent"], json!({"cost": "12.340000", "tokens": 100}));
}

#[test]
fn a_budget_keeps_its_spend_until_a_replica_reports() {
    let mut budget = crate::render::tests::object(
        Kind::Budget,
        "team-a",
        json!({"tenant": "team-a", "limits": [{"cost": "100", "period": "Monthly"}]}),
    );
    budget.status = Some(json!({"spent": {"cost": "1.000000"}, "resetsAt": "R"}));
    let status = status_value(&budget, None, &[], None, "T");
    assert_eq!(status["spent"], json!({"cost": "1.000000"}));
    assert_eq!(status["resetsAt"], "R");
    let fresh = status_value(
        &budget,
        None,
        &[],
        Some(json!({"spent": {"cost": "2.000000"}})),
        "T",
    );
    assert_eq!(fresh["spent"], json!({"cost": "2.000000"}));
    assert_eq!(
        budget.key,
        ObjectKey {
            kind: Kind::Budget,
            name: "team-a".into()
        }
    );
}
