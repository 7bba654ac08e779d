//! Vertex AI beyond Gemini, through a real `sluice run`: Claude models on
//! a `VertexAI` backend (the `anthropic` publisher's `rawPredict` and
//! `streamRawPredict`, Anthropic's body without `model` and with
//! `anthropic_version`), for OpenAI clients (translated, tools, errors,
//! fallback) and Anthropic clients (near passthrough, count-tokens), one
//! backend serving Gemini and Claude on one token; express mode (an API
//! key on the global endpoint); and tokens kept across config reloads.
//! The test upstream plays Vertex AI and refuses what Vertex refuses.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use sluice_test_upstream::gemini::TEST_SERVICE_ACCOUNT;
use sluice_test_upstream::Upstream;
use support::{client, config, post_json, sse_events, upstream_with, Sluice};

const CLAUDE: &str = "claude-sonnet-4@20250514";
const CLAUDE_PATH: &str =
    "/v1/projects/sluice-test/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514";

fn vertex_backend(name: &str, url: &str) -> String {
    format!(
        "---\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  provider: VertexAI\n  endpoint: {url}\n  auth:\n    gcp:\n      serviceAccountKey: {{valueFrom: {{env: GCP_KEY}}}}\n      location: us-east5\n  timeout: 2s\n"
    )
}

fn express_backend(name: &str, url: &str) -> String {
    format!(
        "---\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  provider: VertexAI\n  endpoint: {url}\n  auth: {{apiKey: {{valueFrom: {{env: UPSTREAM_KEY}}}}}}\n  timeout: 2s\n"
    )
}

/// `claude-*` and `gemini-*` on Vertex AI, `fallback` from a Vertex AI
/// upstream that answers 529 to the good one, `express-*` on express mode.
fn gateway(vertex: &Upstream, busy: &Upstream, express: &Upstream) -> String {
    let routes = "      - models: [\"claude-*\", \"gemini-*\"]\n        backends: [{backend: vertex}]\n      - models: [fallback]\n        backends: [{backend: busy, model: claude-opus-4@20250514, priority: 0}, {backend: vertex, model: claude-sonnet-4@20250514, priority: 1}]\n        retry: {attempts: 2, on: [\"5xx\"]}\n      - models: [overloaded]\n        backends: [{backend: busy, model: claude-opus-4@20250514}]\n      - models: [express-flash]\n        backends: [{backend: express, model: gemini-2.5-flash}]\n      - models: [express-claude]\n        backends: [{backend: express, model: claude-sonnet-4@20250514}]";
    let backends = format!(
        "{}{}{}",
        vertex_backend("vertex", &vertex.url()),
        vertex_backend("busy", &busy.url()),
        express_backend("express", &express.url()),
    );
    config(routes, &backends)
}

struct World {
    vertex: Upstream,
    busy: Upstream,
    express: Upstream,
    sluice: Sluice,
}

async fn start() -> World {
    let vertex = upstream_with("vertex", None).await;
    let busy = upstream_with("busy", Some(529)).await;
    let express = upstream_with("express", None).await;
    let mut key: Value = serde_json::from_str(TEST_SERVICE_ACCOUNT).unwrap();
    key["token_uri"] = json!(format!("{}/token", vertex.url()));
    let key = key.to_string();
    let env = [
        ("TEAM_A_KEY", "sk-team-a"),
        ("UPSTREAM_KEY", "sk-express-secret"),
        ("GCP_KEY", key.as_str()),
    ];
    let sluice = Sluice::start(&gateway(&vertex, &busy, &express), &env);
    World {
        vertex,
        busy,
        express,
        sluice,
    }
}

/// `POST /v1/messages` as an Anthropic client.
async fn messages(sluice: &Sluice, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client()
        .post(sluice.v1("/messages"))
        .header("x-api-key", "sk-team-a")
        .header("anthropic-version", "2023-06-01")
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn token_fetches(upstream: &Upstream) -> usize {
    upstream
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/token"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_on_claude_on_vertex() {
    let world = start().await;
    let request = json!({"model": CLAUDE, "max_tokens": 50, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"}]});
    let response = post_json(
        &world.sluice,
        "/chat/completions",
        &request,
        &[("x-mock-chunks", "3"), ("x-mock-prompt-tokens", "11")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-upstream-name"], "vertex");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "tok0 tok1 tok2 ");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 11);
    assert_eq!(body["usage"]["completion_tokens"], 3);
    let seen = world.vertex.requests();
    let sent = seen.last().unwrap();
    assert_eq!(sent.path, format!("{CLAUDE_PATH}:rawPredict"));
    assert!(sent
        .header("authorization")
        .unwrap()
        .starts_with("Bearer ya29.mock-"));
    assert_eq!(sent.header("anthropic-version"), None);
    assert_eq!(sent.header("x-api-key"), None);
    assert_eq!(
        sent.json(),
        json!({"max_tokens": 50, "system": "Be brief.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
            "anthropic_version": "vertex-2023-10-16"})
    );
    let log = world.sluice.last_log(1);
    assert_eq!(
        (log["tokens_in"].as_u64(), log["tokens_out"].as_u64()),
        (Some(11), Some(3)),
        "{log}"
    );
    assert_eq!(log["upstream"], "vertex", "{log}");

    // Streamed, with usage asked for.
    let request = json!({"model": CLAUDE, "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(
        &world.sluice,
        "/chat/completions",
        &request,
        &[("x-mock-chunks", "4")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let events = sse_events(&response.text().await.unwrap());
    let text: String = events
        .iter()
        .filter_map(|(_, e)| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 ");
    let usage = &events[events.len() - 2].1["usage"];
    assert_eq!(usage["completion_tokens"], 4, "{events:?}");
    assert_eq!(events.last().unwrap().1, json!("[DONE]"));
    let sent = world.vertex.requests().last().unwrap().clone();
    assert_eq!(sent.path, format!("{CLAUDE_PATH}:streamRawPredict"));
    assert_eq!(sent.json()["stream"], true);
    assert!(sent.json().get("model").is_none());

    // Tools, whole and streamed: Anthropic's tool_use comes back as tool_calls.
    let tools = json!([{"type": "function", "function": {"name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
    for stream in [false, true] {
        let request = json!({"model": CLAUDE, "stream": stream,
            "messages": [{"role": "user", "content": "look it up"}],
            "tools": tools, "tool_choice": "required"});
        let response = post_json(&world.sluice, "/chat/completions", &request, &[]).await;
        assert_eq!(response.status(), 200);
        let sent = world.vertex.requests().last().unwrap().json();
        assert_eq!(sent["tool_choice"], json!({"type": "any"}), "{sent}");
        assert_eq!(sent["tools"][0]["name"], "lookup");
        if stream {
            let events = sse_events(&response.text().await.unwrap());
            let call = events
                .iter()
                .find_map(|(_, e)| e["choices"][0]["delta"]["tool_calls"].get(0).cloned())
                .unwrap();
            assert_eq!(call["function"]["name"], "lookup");
            let arguments: String = events
                .iter()
                .filter_map(|(_, e)| {
                    e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
                })
                .collect();
            assert_eq!(arguments, "{\"q\":\"mock\"}");
            assert!(events
                .iter()
                .any(|(_, e)| e["choices"][0]["finish_reason"] == "tool_calls"));
        } else {
            let body: Value = response.json().await.unwrap();
            let call = &body["choices"][0]["message"]["tool_calls"][0];
            assert_eq!(call["function"]["name"], "lookup");
            assert_eq!(call["function"]["arguments"], "{\"q\":\"mock\"}");
            assert_eq!(call["id"], "toolu_mock_0");
            assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_client_on_claude_on_vertex() {
    let world = start().await;
    let request = json!({"model": CLAUDE, "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hello"}],
        "metadata": {"user_id": "u-1"}});
    let response = messages(
        &world.sluice,
        &request,
        &[
            ("x-mock-chunks", "2"),
            ("x-mock-prompt-tokens", "9"),
            ("anthropic-beta", "prompt-caching-2024-07-31"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["model"], CLAUDE);
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "tok0 tok1 "}])
    );
    assert_eq!(body["usage"]["input_tokens"], 9);
    let sent = world.vertex.requests().last().unwrap().clone();
    assert_eq!(sent.path, format!("{CLAUDE_PATH}:rawPredict"));
    // The body as sent, but for `model` and `anthropic_version`.
    let mut expected = request.clone();
    expected.as_object_mut().unwrap().remove("model");
    expected["anthropic_version"] = json!("vertex-2023-10-16");
    assert_eq!(sent.json(), expected);
    assert_eq!(sent.header("anthropic-version"), None);
    assert_eq!(
        sent.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31")
    );
    let log = world.sluice.last_log(1);
    assert_eq!(
        (log["tokens_in"].as_u64(), log["tokens_out"].as_u64()),
        (Some(9), Some(2)),
        "{log}"
    );

    // Streamed: Anthropic's events as they come, usage read on the way.
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let response = messages(&world.sluice, &streamed, &[("x-mock-chunks", "3")]).await;
    assert_eq!(response.status(), 200);
    let events = sse_events(&response.text().await.unwrap());
    let names: Vec<_> = events.iter().filter_map(|(n, _)| n.as_deref()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let text: String = events
        .iter()
        .filter_map(|(_, e)| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 ");
    assert_eq!(
        world.vertex.requests().last().unwrap().path,
        format!("{CLAUDE_PATH}:streamRawPredict")
    );
    let log = world.sluice.last_log(2);
    assert_eq!(log["tokens_out"].as_u64(), Some(3), "{log}");

    // count_tokens: Vertex AI's count-tokens endpoint, the model in the body.
    let response = client()
        .post(world.sluice.v1("/messages/count_tokens"))
        .header("x-api-key", "sk-team-a")
        .header("anthropic-version", "2023-06-01")
        .header("x-mock-prompt-tokens", "42")
        .json(&json!({"model": CLAUDE, "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"input_tokens": 42}));
    let sent = world.vertex.requests().last().unwrap().clone();
    assert_eq!(
        sent.path,
        "/v1/projects/sluice-test/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict"
    );
    assert_eq!(sent.json()["model"], CLAUDE);
    assert_eq!(sent.json()["anthropic_version"], "vertex-2023-10-16");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_and_claude_share_one_vertex_backend_and_token() {
    let world = start().await;
    let gemini =
        json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]});
    let claude = json!({"model": CLAUDE, "messages": [{"role": "user", "content": "hi"}]});
    for body in [&gemini, &claude, &gemini] {
        let response = post_json(&world.sluice, "/chat/completions", body, &[]).await;
        assert_eq!(response.status(), 200);
    }
    let paths: Vec<String> = world
        .vertex
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .filter(|p| !p.starts_with("/token"))
        .collect();
    assert_eq!(
        paths,
        [
            "/v1/projects/sluice-test/locations/us-east5/publishers/google/models/gemini-2.5-flash:generateContent".to_owned(),
            format!("{CLAUDE_PATH}:rawPredict"),
            "/v1/projects/sluice-test/locations/us-east5/publishers/google/models/gemini-2.5-flash:generateContent".to_owned(),
        ]
    );
    assert_eq!(token_fetches(&world.vertex), 1);
    // Endpoints Anthropic has no counterpart for are refused.
    let response = post_json(
        &world.sluice,
        "/embeddings",
        &json!({"model": CLAUDE, "input": "x"}),
        &[],
    )
    .await;
    assert_eq!(response.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_errors_overload_fallback_and_broken_answers() {
    let world = start().await;
    // Anthropic's 529 overloaded is a 503 for OpenAI clients.
    let request = json!({"model": "overloaded", "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(&world.sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error", "{body}");
    // An Anthropic client gets Anthropic's error as it came.
    let request = json!({"model": "overloaded", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let response = messages(&world.sluice, &request, &[]).await;
    assert_eq!(response.status(), 529);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error", "{body}");

    // ... and the route's next backend is tried.
    let request = json!({"model": "fallback", "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(&world.sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-upstream-name"], "vertex");
    assert_eq!(
        world.busy.requests().last().unwrap().path,
        "/v1/projects/sluice-test/locations/us-east5/publishers/anthropic/models/claude-opus-4@20250514:rawPredict"
    );

    // A cut-off JSON answer is a clean 502, a broken stream ends, never hangs.
    let request = json!({"model": CLAUDE, "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(
        &world.sluice,
        "/chat/completions",
        &request,
        &[("x-mock-malformed", "1")],
    )
    .await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be read"),
        "{body}"
    );
    let request =
        json!({"model": CLAUDE, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(
        &world.sluice,
        "/chat/completions",
        &request,
        &[("x-mock-malformed", "1")],
    )
    .await;
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("a broken stream ends")
        .unwrap();
    assert!(!text.contains("tok0"), "{text}");
    let request = json!({"model": CLAUDE, "max_tokens": 5, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let response = messages(&world.sluice, &request, &[("x-mock-malformed", "1")]).await;
    tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("a broken stream ends")
        .unwrap();
    // A stream that fails mid-way ends with an error chunk.
    let response = post_json(
        &world.sluice,
        "/chat/completions",
        &request,
        &[("x-mock-stream-error", "1")],
    )
    .await;
    let text = response.text().await.unwrap();
    let last = sse_events(&text).pop().unwrap().1;
    assert_eq!(last["error"]["type"], "overloaded_error", "{text}");
    // A client body that is not JSON is refused before anything is sent.
    let sent_before = world.vertex.requests().len();
    let response = client()
        .post(world.sluice.v1("/messages"))
        .header("x-api-key", "sk-team-a")
        .header("content-type", "application/json")
        .body("{\"model\": \"claude-x\", ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(world.vertex.requests().len(), sent_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn express_mode_sends_the_key_on_the_global_path() {
    let world = start().await;
    for stream in [false, true] {
        let request = json!({"model": "express-flash", "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]});
        let response = post_json(
            &world.sluice,
            "/chat/completions",
            &request,
            &[("x-mock-chunks", "2")],
        )
        .await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert!(text.contains("tok0"), "{text}");
    }
    let seen = world.express.requests();
    assert_eq!(
        seen[0].path,
        "/v1/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        seen[1].path,
        "/v1/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    for sent in &seen {
        assert_eq!(sent.header("x-goog-api-key"), Some("sk-express-secret"));
        assert_eq!(sent.header("authorization"), None);
    }
    assert_eq!(token_fetches(&world.vertex), 0, "no token in express mode");

    // A Claude model has no express mode: a clear 400, nothing sent.
    let request =
        json!({"model": "express-claude", "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(&world.sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("express mode") && message.contains("auth.gcp"),
        "{message}"
    );
    let request = json!({"model": "express-claude", "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}]});
    let response = messages(&world.sluice, &request, &[]).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(world.express.requests().len(), 2);
    assert!(!world.sluice.stderr().contains("sk-express-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_outlive_config_reloads() {
    let world = start().await;
    let claude = json!({"model": CLAUDE, "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(&world.sluice, "/chat/completions", &claude, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(token_fetches(&world.vertex), 1);
    let first = std::fs::read_to_string(&world.sluice.config_path).unwrap();
    for n in 1..=2 {
        let changed = first.replace("[express-flash]", &format!("[express-flash, extra-{n}]"));
        std::fs::write(&world.sluice.config_path, changed).unwrap();
        world.sluice.signal("HUP");
        let started = std::time::Instant::now();
        while world.sluice.stderr().matches("config reloaded").count() < n {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{}",
                world.sluice.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let response = post_json(&world.sluice, "/chat/completions", &claude, &[]).await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        token_fetches(&world.vertex),
        1,
        "the token outlives both reloads"
    );
    let sent = world.vertex.requests();
    let bearers: Vec<_> = sent
        .iter()
        .filter(|r| r.path.contains(":rawPredict"))
        .map(|r| r.header("authorization").unwrap().to_owned())
        .collect();
    assert_eq!(bearers.len(), 3);
    assert!(bearers.iter().all(|b| *b == bearers[0]), "{bearers:?}");
}
