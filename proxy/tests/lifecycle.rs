//! The gateway's life cycle as an operator sees it: the built-in default
//! config, `validate`, hot reload (file change and SIGHUP, good and bad
//! configs), and draining on SIGTERM.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_test_upstream::{Options, Upstream};
use support::{backend, client, config, Sluice, ENV};

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_config_serves_the_demo_model_anonymously() {
    let sluice = Sluice::start_with(None, &[], &[]);
    assert!(sluice
        .stderr()
        .contains("sluice-demo -> built-in demo model"));
    let c = client();
    let body: Value = c
        .post(sluice.v1("/chat/completions"))
        .json(&chat("sluice-demo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("sluice-demo"));
    let mut stream_request = chat("sluice-demo");
    stream_request["stream"] = json!(true);
    let text = c
        .post(sluice.v1("/chat/completions"))
        .json(&stream_request)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let models: Value = c
        .get(sluice.v1("/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "sluice-demo");
    let response = c
        .post(sluice.v1("/chat/completions"))
        .json(&chat("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        404,
        "no OpenAI key in the environment: only the demo model"
    );
    assert_eq!(sluice.last_log(1)["tenant"], "local");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_config_routes_other_models_to_openai_when_a_key_is_set() {
    let up = Upstream::start(Options {
        name: "openai".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let base = format!("{}/v1", up.url());
    let sluice = Sluice::start_with(
        None,
        &[
            ("OPENAI_API_KEY", "sk-openai-test"),
            ("OPENAI_BASE_URL", &base),
        ],
        &[],
    );
    let response = client()
        .post(sluice.v1("/chat/completions"))
        .bearer_auth("anything")
        .json(&chat("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        up.requests()[0].header("authorization"),
        Some("Bearer sk-openai-test")
    );
    assert!(!sluice.stderr().contains("sk-openai-test"));
}

#[test]
fn the_default_config_refuses_a_public_address() {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--listen", "0.0.0.0:0", "--admin", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("only listens on loopback"), "{stderr}");
}

#[test]
fn validate_prints_every_error_with_object_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "kind: AIGateway\nmetadata: {name: gw}\nspec:\n  llm:\n    routes:\n      - models: [a]\n        backends: [{backend: ghost}]\n---\nkind: Backend\nmetadata: {name: b}\nspec: {provider: OpenAI, endpiont: x}\n---\nkind: Budget\nmetadata: {name: team}\nspec: {tenant: t}\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["validate", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("3 config errors"), "{stderr}");
    assert!(
        stderr.contains("Backend/b: spec.endpiont: unknown field `endpiont`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Budget/team: spec.limits: list at least one limit"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "AIGateway/gw: spec.llm.routes[0].backends[0].backend: no Backend named `ghost`"
        ),
        "{stderr}"
    );

    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "kind: Backend\nmetadata: {name: demo}\nspec: {provider: Demo}\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["validate", "-f"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let unset = dir.path().join("unset.yaml");
    std::fs::write(&unset, "kind: AIGateway\nmetadata: {name: gw}\nspec: {listen: \"127.0.0.1:${SLUICE_TEST_UNSET_PORT}\"}\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["validate", "-f"])
        .arg(&unset)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("environment variable SLUICE_TEST_UNSET_PORT is not set"));
}

#[test]
fn help_describes_every_command() {
    for args in [&["--help"][..], &["run", "--help"], &["validate", "--help"]] {
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success());
        assert!(!output.stdout.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_good_configs_and_keeps_serving_through_bad_ones() {
    let up = Upstream::start(Options::default()).await.unwrap();
    let first = config(
        "      - models: [\"gpt-4o\"]\n        backends: [{backend: primary}]",
        &backend("primary", &up.url()),
    );
    let sluice = Sluice::start(&first, ENV);
    let c = client();
    let status = |model: &'static str| {
        let c = c.clone();
        let url = sluice.v1("/chat/completions");
        async move {
            c.post(url)
                .bearer_auth("sk-team-a")
                .json(&chat(model))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("gpt-4o").await, 200);
    assert_eq!(status("gpt-4o-mini").await, 404);
    let version = |admin: String| async move {
        let config: Value = client()
            .get(format!("{admin}/config"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        config["version"].as_u64().unwrap()
    };
    assert_eq!(version(sluice.admin.clone()).await, 1);

    // A file change with a new model is picked up.
    let second = first.replace("[\"gpt-4o\"]", "[\"gpt-4o\", \"gpt-4o-mini\"]");
    std::fs::write(&sluice.config_path, &second).unwrap();
    assert!(
        sluice.wait_for_stderr("config reloaded", Duration::from_secs(10)),
        "{}",
        sluice.stderr()
    );
    assert_eq!(status("gpt-4o-mini").await, 200);
    assert_eq!(version(sluice.admin.clone()).await, 2);

    // A broken file is rejected, logged, and the last good config keeps serving.
    std::fs::write(
        &sluice.config_path,
        second.replace("backend: primary}", "backend: nowhere}"),
    )
    .unwrap();
    assert!(
        sluice.wait_for_stderr("config rejected", Duration::from_secs(10)),
        "{}",
        sluice.stderr()
    );
    assert!(sluice.stderr().contains("no Backend named `nowhere`"));
    assert_eq!(status("gpt-4o-mini").await, 200);
    assert_eq!(version(sluice.admin.clone()).await, 2);

    // SIGHUP reloads at once.
    std::fs::write(&sluice.config_path, &first).unwrap();
    sluice.signal("HUP");
    let started = std::time::Instant::now();
    while status("gpt-4o-mini").await != 404 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "reload did not happen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = c
        .get(format!("{}/metrics", sluice.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sluice_config_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let up = Upstream::start(Options::default()).await.unwrap();
    let cfg = config(
        "      - models: [\"gpt-4o\"]\n        backends: [{backend: primary}]",
        &backend("primary", &up.url()),
    );
    let mut sluice = Sluice::start(&cfg, ENV);
    let url = sluice.v1("/chat/completions");
    let in_flight = tokio::spawn(async move {
        let response = client()
            .post(url)
            .bearer_auth("sk-team-a")
            .header("x-mock-delay-ms", "1500")
            .json(&chat("gpt-4o"))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    sluice.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = client()
        .get(format!("{}/readyz", sluice.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "not ready while draining");
    let refused = client()
        .post(sluice.v1("/chat/completions"))
        .json(&chat("gpt-4o"))
        .send()
        .await;
    assert!(refused.is_err(), "no new connections while draining");
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("chat.completion"));
    let exit = sluice
        .wait(Duration::from_secs(10))
        .expect("exits after draining");
    assert!(exit.success());
    assert_eq!(
        sluice.last_log(1)["status"],
        200,
        "the drained request was logged before exit"
    );
}
