//! Budgets and rate limits end to end: a real `sluice run` with Budgets in
//! front of the test upstream, driven over HTTP; the memory store's journal
//! in a temp dir.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use serde_json::{json, Value};
use sluice_test_upstream::{Options, Upstream};
use support::{backend, client, config, Sluice, ENV};

async fn upstream() -> Upstream {
    Upstream::start(Options {
        name: "primary".into(),
        ..Options::default()
    })
    .await
    .unwrap()
}

/// One route to the upstream priced at $1 / $2 per million tokens, the
/// memory store's journal at `path`, and `budget` (a Budget document body).
fn limited(up: &Upstream, path: &std::path::Path, budget: &str) -> String {
    let routes = format!(
        "      - models: [\"gpt-4o\"]\n        backends: [{{backend: primary}}]\n  state: {{type: memory, path: \"{}\"}}",
        path.display()
    );
    let priced = backend("primary", &up.url())
        + "  pricing: {gpt-4o: {input: \"1.00\", output: \"2.00\"}}\n";
    format!(
        "{}---\nkind: Budget\nmetadata: {{name: team-a}}\nspec:\n  tenant: team-a\n{budget}",
        config(&routes, &priced)
    )
}

fn chat() -> Value {
    json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hello"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_limit_answers_429_with_headers_and_names_the_limit() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = limited(
        &up,
        &dir.path().join("counters.log"),
        "  limits:\n    - {requestsPerMinute: 2}\n",
    );
    let sluice = Sluice::start(&cfg, ENV);
    for remaining in ["1", "0"] {
        let response = sluice.chat(&chat(), &[]).await;
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers["x-ratelimit-limit-requests"], "2");
        assert_eq!(headers["x-ratelimit-remaining-requests"], remaining);
        assert!(headers["x-ratelimit-reset-requests"]
            .to_str()
            .unwrap()
            .ends_with('s'));
    }
    let refused = sluice.chat(&chat(), &[]).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(refused.headers()["x-ratelimit-remaining-requests"], "0");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("team-a/requests-per-minute"),
        "{body}"
    );
    let log = sluice.last_log(3);
    assert_eq!(log["status"], 429);
    assert_eq!(log["limit"], "team-a/requests-per-minute");
    assert_eq!(up.requests().len(), 2, "the refused request never left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cost_budget_holds_and_its_spend_survives_a_restart() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("counters.log");
    // Each request reserves its estimate (prompt from the body, 10 output
    // tokens) at $1 / $2 per million and is charged what the upstream
    // reports. $0.0001 = 100 micro-USD lasts a few requests.
    let cfg = limited(
        &up,
        &journal,
        "  limits:\n    - {cost: \"0.0001\", period: Monthly, timeZone: Europe/Paris}\n",
    );
    let sluice = Sluice::start(&cfg, ENV);
    let mut admitted = 0;
    loop {
        let response = sluice.chat(&chat(), &[("x-mock-prompt-tokens", "9")]).await;
        if response.status() == 429 {
            break;
        }
        assert_eq!(response.status(), 200);
        admitted += 1;
        assert!(admitted < 20, "the budget never ran out");
    }
    let lines = sluice.access_log(admitted + 1);
    let spent: f64 = lines.iter().filter_map(|l| l["cost_usd"].as_f64()).sum();
    let one = lines[0]["cost_usd"].as_f64().unwrap();
    assert!(admitted >= 2, "{lines:#?}");
    assert!(spent <= 0.0001 + 1e-12, "spent {spent} of a $0.0001 budget");
    assert!(
        spent + 3.0 * one > 0.0001,
        "refused while {spent} of 0.0001 was spent (one request costs {one})"
    );
    // Spend is settled (journaled) every 100 ms; then SIGKILL.
    std::thread::sleep(std::time::Duration::from_millis(400));
    drop(sluice);

    let sluice = Sluice::start(&cfg, ENV);
    let response = sluice.chat(&chat(), &[("x-mock-prompt-tokens", "9")]).await;
    assert_eq!(
        response.status(),
        429,
        "the spend before the restart still counts"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert_eq!(body["error"]["type"], "insufficient_quota");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("resets at"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_budget_cuts_a_stream_and_a_lenient_one_does_not() {
    for (enforcement, cut) in [("Strict", true), ("Lenient", false)] {
        let up = upstream().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = limited(
            &up,
            &dir.path().join("counters.log"),
            &format!("  enforcement: {enforcement}\n  limits:\n    - {{tokens: 200, tokenType: output, period: Daily}}\n"),
        );
        let sluice = Sluice::start(&cfg, ENV);
        let mut request = chat();
        request["stream"] = json!(true);
        // 10 reserved; the upstream streams 400 chunks (about a token each).
        let response = client()
            .post(sluice.v1("/chat/completions"))
            .bearer_auth("sk-team-a")
            .header("x-mock-chunks", "400")
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let events = text.matches("data: ").count();
        let log = sluice.last_log(1);
        if cut {
            assert!(text.contains("\"code\":\"budget_exceeded\""), "{text}");
            assert!(text.contains("team-a/output-tokens-daily"));
            assert!(events < 300, "cut after about 200 tokens: {events} events");
            assert_eq!(log["error"], "budget_exceeded");
            assert_eq!(log["tokens_estimated"], true);
        } else {
            assert!(!text.contains("budget_exceeded"));
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
            assert!(log.get("error").is_none(), "{log}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_apply_to_their_models_and_keys_only() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "      - models: [\"gpt-4o\", \"gpt-4o-mini\"]\n        backends: [{{backend: primary}}]\n  state: {{type: memory, path: \"{}\"}}",
        dir.path().join("c.log").display()
    );
    let cfg = format!(
        "{}---\nkind: Budget\nmetadata: {{name: mini-only}}\nspec:\n  tenant: team-a\n  models: [\"*-mini\"]\n  apiKey: team-a-ci\n  limits:\n    - {{requests: 1, period: Hourly}}\n",
        config(&routes, &backend("primary", &up.url()))
    );
    let sluice = Sluice::start(&cfg, ENV);
    let mini = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(sluice.chat(&mini, &[]).await.status(), 200);
    assert_eq!(sluice.chat(&mini, &[]).await.status(), 429);
    assert_eq!(
        sluice.chat(&chat(), &[]).await.status(),
        200,
        "gpt-4o is not in the budget's models"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_are_reported_on_the_admin_port_the_cli_and_metrics() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = limited(
        &up,
        &dir.path().join("counters.log"),
        "  alertsAt: [50, 90]\n  limits:\n    - {requests: 4, period: Daily, timeZone: America/New_York}\n    - {cost: \"10.00\", period: Monthly}\n",
    );
    let sluice = Sluice::start(&cfg, ENV);
    for _ in 0..2 {
        assert_eq!(sluice.chat(&chat(), &[]).await.status(), 200);
    }
    // Settled within 100 ms; the gauges and alerts refresh every second.
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let report: Value = client()
        .get(format!("{}/budgets", sluice.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let budget = &report["budgets"][0];
    assert_eq!(budget["name"], "team-a");
    assert_eq!(budget["enforcement"], "Strict");
    let requests = &budget["limits"][0];
    assert_eq!(requests["name"], "requests-daily");
    assert_eq!(requests["spent"], 2);
    assert_eq!(requests["remaining"], 2);
    assert_eq!(requests["percent"], 50);
    assert!(requests["resetsAt"].as_str().unwrap().ends_with('Z'));
    let cost = &budget["limits"][1];
    assert_eq!(cost["metric"], "cost");
    assert_eq!(cost["limit"], "10.000000");
    assert!(
        cost["spent"].as_str().unwrap().starts_with("0.0000"),
        "{cost}"
    );

    let admin = sluice.admin.trim_start_matches("http://").to_owned();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["budgets", "--admin", &admin])
        .output()
        .unwrap();
    assert!(output.status.success());
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.starts_with("BUDGET"), "{table}");
    assert!(table.contains("requests-daily") && table.contains("cost-monthly"));

    let metrics = client()
        .get(format!("{}/metrics", sluice.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sluice_budget_spent{budget=\"team-a\",limit=\"requests-daily\"} 2.0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_budget_remaining{budget=\"team-a\",limit=\"requests-daily\"} 2.0")
    );
    assert!(metrics.contains(
        "sluice_budget_alerts_total{budget=\"team-a\",limit=\"requests-daily\",threshold=\"50\"} 1"
    ));
    assert!(sluice
        .stderr()
        .contains("budget alert: 50% of team-a/requests-daily spent"));
    assert!(
        metrics.contains("gen_ai_client_cost_total{gen_ai_request_model=\"gpt-4o\""),
        "{metrics}"
    );

    // Two more: the limit is spent; a refusal is counted.
    for _ in 0..2 {
        assert_eq!(sluice.chat(&chat(), &[]).await.status(), 200);
    }
    assert_eq!(sluice.chat(&chat(), &[]).await.status(), 429);
    sluice.access_log(5);
    let metrics = client()
        .get(format!("{}/metrics", sluice.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains(
        "sluice_ratelimit_rejections_total{budget=\"team-a\",limit=\"requests-daily\"} 1"
    ));
}
