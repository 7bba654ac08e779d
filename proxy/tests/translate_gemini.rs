//! Gemini and Vertex AI through a real `sluice run`: OpenAI and Anthropic
//! clients served by the test upstream's Gemini face (which refuses what
//! Google refuses, so a wrong translation fails here), streams and tool
//! calls, usage, Google errors and fallback, and Vertex AI's service
//! account tokens: fetched, sent, refreshed before expiry, and a failed
//! fetch as a clean 502.

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

fn gemini_backend(name: &str, url: &str) -> String {
    format!(
        "---\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  provider: Gemini\n  endpoint: {url}\n  auth: {{apiKey: {{valueFrom: {{env: UPSTREAM_KEY}}}}}}\n  timeout: 2s\n"
    )
}

fn vertex_backend(name: &str, url: &str) -> String {
    format!(
        "---\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  provider: VertexAI\n  endpoint: {url}\n  auth:\n    gcp:\n      serviceAccountKey: {{valueFrom: {{env: GCP_KEY}}}}\n      location: us-central1\n  timeout: 2s\n"
    )
}

/// The test account's key with its `token_uri` at `token_uri`.
fn key_with(token_uri: &str) -> String {
    let mut key: Value = serde_json::from_str(TEST_SERVICE_ACCOUNT).unwrap();
    key["token_uri"] = json!(token_uri);
    key.to_string()
}

/// `gemini-*` on the Gemini upstream, `fallback` on a busy (429) Gemini
/// upstream then the good one, `busy` on the busy one alone, `vertex-*`
/// on Vertex AI.
fn gateway(good: &Upstream, busy: &Upstream, vertex: &Upstream) -> String {
    let routes = "      - models: [\"gemini-*\"]\n        backends: [{backend: good}]\n      - models: [fallback]\n        backends: [{backend: busy, model: gemini-2.5-pro, priority: 0}, {backend: good, model: gemini-2.0-flash, priority: 1}]\n        retry: {attempts: 2, on: [\"5xx\", \"429\"]}\n      - models: [busy]\n        backends: [{backend: busy}]\n      - models: [\"vertex-*\"]\n        backends: [{backend: vertex, model: gemini-2.5-flash}]";
    let backends = format!(
        "{}{}{}",
        gemini_backend("good", &good.url()),
        gemini_backend("busy", &busy.url()),
        vertex_backend("vertex", &vertex.url()),
    );
    config(routes, &backends)
}

struct World {
    good: Upstream,
    busy: Upstream,
    vertex: Upstream,
    sluice: Sluice,
}

/// `token_query`: appended to the token URL (`expires_in=N`, `status=N`).
async fn start(token_query: &str) -> World {
    let good = upstream_with("good", None).await;
    let busy = upstream_with("busy", Some(429)).await;
    let vertex = upstream_with("vertex", None).await;
    let key = key_with(&format!("{}/token{token_query}", vertex.url()));
    let env = [
        ("TEAM_A_KEY", "sk-team-a"),
        ("UPSTREAM_KEY", "sk-upstream-secret"),
        ("GCP_KEY", key.as_str()),
    ];
    let sluice = Sluice::start(&gateway(&good, &busy, &vertex), &env);
    World {
        good,
        busy,
        vertex,
        sluice,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_on_a_gemini_backend() {
    let world = start("").await;
    let request = json!({"model": "gemini-2.0-flash", "max_tokens": 50, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"}]});
    let response = post_json(
        &world.sluice,
        "/chat/completions",
        &request,
        &[("x-mock-chunks", "3"), ("x-mock-cached-tokens", "2")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gemini-2.0-flash");
    assert_eq!(body["choices"][0]["message"]["content"], "tok0 tok1 tok2 ");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 7);
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
    let seen = world.good.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.path, "/v1beta/models/gemini-2.0-flash:generateContent");
    assert_eq!(last.header("x-goog-api-key"), Some("sk-upstream-secret"));
    assert_eq!(last.header("authorization"), None);
    assert_eq!(
        last.json(),
        json!({
            "contents": [{"role": "user", "parts": [{"text": "hello"}]}],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"maxOutputTokens": 50}
        })
    );
    let log = world.sluice.last_log(1);
    assert_eq!(
        (log["tokens_in"].as_u64(), log["tokens_out"].as_u64()),
        (Some(7), Some(3)),
        "{log}"
    );
    assert_eq!(log["tokens_cached"], 2, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_streams_text_and_tool_calls_from_gemini() {
    let world = start("").await;
    let request = json!({"model": "gemini-2.0-flash", "stream": true,
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
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = sse_events(&response.text().await.unwrap());
    let text: String = events
        .iter()
        .filter_map(|(_, e)| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 ");
    let usage = &events[events.len() - 2].1["usage"];
    assert_eq!(
        (
            usage["prompt_tokens"].as_u64(),
            usage["completion_tokens"].as_u64()
        ),
        (Some(7), Some(4))
    );
    assert_eq!(events.last().unwrap().1, json!("[DONE]"));
    let path = world.good.requests().last().unwrap().path.clone();
    assert_eq!(
        path,
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    );

    // Tools: the schema is cleaned for Gemini, the call comes back with an id.
    let request = json!({"model": "gemini-2.0-flash", "stream": true,
        "messages": [{"role": "user", "content": "look it up"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {
            "type": "object", "properties": {"q": {"type": "string"}}, "additionalProperties": false}}}],
        "tool_choice": "required"});
    let response = post_json(&world.sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 200);
    let events = sse_events(&response.text().await.unwrap());
    let call = events
        .iter()
        .find_map(|(_, e)| e["choices"][0]["delta"]["tool_calls"].get(0).cloned())
        .unwrap();
    assert_eq!(call["function"]["name"], "lookup");
    assert_eq!(call["function"]["arguments"], "{\"q\":\"mock\"}");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert!(events
        .iter()
        .any(|(_, e)| e["choices"][0]["finish_reason"] == "tool_calls"));
    assert!(!events
        .iter()
        .any(|(_, e)| e.get("usage").is_some_and(|u| !u.is_null())));

    // The tool's answer goes back as a functionResponse, matched by name.
    let id = call["id"].as_str().unwrap();
    let request = json!({"model": "gemini-2.0-flash", "messages": [
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": id, "content": "found it"}]});
    let response = post_json(&world.sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 200);
    let sent = world.good.requests().last().unwrap().json();
    assert_eq!(
        sent["contents"][2],
        json!({"role": "user", "parts": [{"functionResponse": {"name": "lookup", "response": {"content": "found it"}}}]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_client_on_a_gemini_backend() {
    let world = start("").await;
    let request = json!({"model": "gemini-2.0-flash", "max_tokens": 100,
        "messages": [{"role": "user", "content": "hello"}]});
    let response = client()
        .post(world.sluice.v1("/messages"))
        .header("x-api-key", "sk-team-a")
        .header("anthropic-version", "2023-06-01")
        .header("x-mock-chunks", "2")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "tok0 tok1 "}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["input_tokens"], 7);

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let response = client()
        .post(world.sluice.v1("/messages"))
        .header("x-api-key", "sk-team-a")
        .header("anthropic-version", "2023-06-01")
        .header("x-mock-chunks", "2")
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = sse_events(&response.text().await.unwrap());
    let names: Vec<_> = events.iter().filter_map(|(n, _)| n.as_deref()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let delta = events
        .iter()
        .find(|(n, _)| n.as_deref() == Some("message_delta"))
        .unwrap();
    assert_eq!(delta.1["usage"]["output_tokens"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_errors_are_openai_errors_and_429_falls_back() {
    let world = start("").await;
    let request = json!({"model": "busy", "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(&world.sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RESOURCE_EXHAUSTED");
    assert_eq!(body["error"]["type"], "rate_limit_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("429"));

    let request = json!({"model": "fallback", "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(&world.sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-upstream-name"], "good");
    assert_eq!(
        world.busy.requests().last().unwrap().path,
        "/v1beta/models/gemini-2.5-pro:generateContent"
    );

    // A stream that fails mid-way ends with an error chunk.
    let request = json!({"model": "gemini-2.0-flash", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(
        &world.sluice,
        "/chat/completions",
        &request,
        &[("x-mock-stream-error", "1")],
    )
    .await;
    let text = response.text().await.unwrap();
    let last = sse_events(&text).pop().unwrap().1;
    assert_eq!(last["error"]["code"], "UNAVAILABLE", "{text}");

    // Endpoints Gemini has no counterpart for are refused up front.
    let response = post_json(
        &world.sluice,
        "/responses",
        &json!({"model": "gemini-2.0-flash", "input": "x"}),
        &[],
    )
    .await;
    assert_eq!(response.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vertex_tokens_are_fetched_sent_and_refreshed() {
    // Tokens live 302 s: the refresher renews them 300 s early, so ~2 s in.
    let world = start("?expires_in=302").await;
    let request = json!({"model": "vertex-flash", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..3 {
        let response = post_json(&world.sluice, "/chat/completions", &request, &[]).await;
        assert_eq!(response.status(), 200);
    }
    let seen = world.vertex.requests();
    let tokens: Vec<_> = seen
        .iter()
        .filter(|r| r.path.starts_with("/token"))
        .collect();
    assert_eq!(tokens.len(), 1, "one fetch serves many requests");
    let calls: Vec<_> = seen
        .iter()
        .filter(|r| r.path.contains(":generateContent"))
        .collect();
    assert_eq!(calls.len(), 3);
    assert_eq!(
        calls[0].path,
        "/v1/projects/sluice-test/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    let first = calls[0].header("authorization").unwrap().to_owned();
    assert!(first.starts_with("Bearer ya29.mock-"), "{first}");
    assert_eq!(calls[0].header("x-goog-api-key"), None);

    tokio::time::sleep(Duration::from_millis(3500)).await;
    let fetched = world
        .vertex
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/token"))
        .count();
    assert!(fetched >= 2, "refreshed in the background: {fetched}");
    let response = post_json(&world.sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 200);
    let seen = world.vertex.requests();
    let last = seen
        .iter()
        .rev()
        .find(|r| r.path.contains(":generateContent"))
        .unwrap();
    assert_ne!(
        last.header("authorization").unwrap(),
        first,
        "the new token is used"
    );
    assert!(
        !world.sluice.stderr().contains("ya29.mock"),
        "tokens are never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_vertex_token_fetch_is_a_clean_502() {
    let world = start("?status=503").await;
    let request = json!({"model": "vertex-flash", "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(&world.sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("could not get a Google Cloud access token") && message.contains("503"),
        "{message}"
    );
    assert!(!world
        .vertex
        .requests()
        .iter()
        .any(|r| r.path.contains(":generateContent")));
    let _ = (&world.good, &world.busy);
}
