//! Cohere (v2 Chat) through a real `sluice run`: OpenAI and Anthropic
//! clients served by the test upstream's Cohere face (which refuses what
//! Cohere refuses, OpenAI-only fields included, so a wrong translation
//! fails here), streams and tool calls, usage, Cohere errors with their
//! statuses, 429 fallback and a stream that fails mid-way.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use serde_json::{json, Value};
use sluice_test_upstream::Upstream;
use support::{client, config, post_json, sse_events, upstream_with, Sluice};

fn cohere_backend(name: &str, url: &str) -> String {
    format!(
        "---\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  provider: Cohere\n  endpoint: {url}\n  auth: {{apiKey: {{valueFrom: {{env: UPSTREAM_KEY}}}}}}\n  timeout: 2s\n"
    )
}

/// `command-*` on the good upstream, `fallback` on a busy (429) upstream
/// then the good one, `busy` on the busy one alone.
async fn start() -> (Upstream, Upstream, Sluice) {
    let good = upstream_with("good", None).await;
    let busy = upstream_with("busy", Some(429)).await;
    let routes = "      - models: [\"command-*\"]\n        backends: [{backend: good}]\n      - models: [fallback]\n        backends: [{backend: busy, model: command-a-03-2025, priority: 0}, {backend: good, model: command-r7b-12-2024, priority: 1}]\n        retry: {attempts: 2, on: [\"5xx\", \"429\"]}\n      - models: [busy]\n        backends: [{backend: busy}]";
    let backends = format!(
        "{}{}",
        cohere_backend("good", &good.url()),
        cohere_backend("busy", &busy.url())
    );
    let env = [
        ("TEAM_A_KEY", "sk-team-a"),
        ("UPSTREAM_KEY", "co-upstream-secret"),
    ];
    let sluice = Sluice::start(&config(routes, &backends), &env);
    (good, busy, sluice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_on_a_cohere_backend() {
    let (good, _busy, sluice) = start().await;
    let request = json!({"model": "command-a-03-2025", "max_completion_tokens": 50,
        "top_p": 0.5, "stop": "END", "user": "u1", "parallel_tool_calls": false,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"}]});
    let response = post_json(
        &sluice,
        "/chat/completions",
        &request,
        &[("x-mock-chunks", "3")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "command-a-03-2025");
    assert_eq!(body["choices"][0]["message"]["content"], "tok0 tok1 tok2 ");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 7);
    assert_eq!(body["usage"]["completion_tokens"], 3);
    let seen = good.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.path, "/v2/chat");
    assert_eq!(
        last.header("authorization"),
        Some("Bearer co-upstream-secret")
    );
    assert_eq!(
        last.json(),
        json!({
            "model": "command-a-03-2025",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hello"}
            ],
            "max_tokens": 50,
            "p": 0.5,
            "stop_sequences": ["END"],
            "stream": false
        })
    );
    let log = sluice.last_log(1);
    assert_eq!(
        (log["tokens_in"].as_u64(), log["tokens_out"].as_u64()),
        (Some(7), Some(3)),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_streams_text_and_tool_calls_from_cohere() {
    let (good, _busy, sluice) = start().await;
    let request = json!({"model": "command-a-03-2025", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(
        &sluice,
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
    assert_eq!(good.requests().last().unwrap().json()["stream"], true);
    let log = sluice.last_log(1);
    assert_eq!(log["tokens_out"].as_u64(), Some(4), "{log}");

    // Tools: required becomes REQUIRED; the call streams back with its id.
    let request = json!({"model": "command-a-03-2025", "stream": true,
        "messages": [{"role": "user", "content": "look it up"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {
            "type": "object", "properties": {"q": {"type": "string"}}}}}],
        "tool_choice": "required"});
    let response = post_json(&sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 200);
    let events = sse_events(&response.text().await.unwrap());
    let sent = good.requests().last().unwrap().json();
    assert_eq!(sent["tool_choice"], "REQUIRED");
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
    let id = call["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("mock-cohere-"), "{id}");
    assert!(events
        .iter()
        .any(|(_, e)| e["choices"][0]["delta"]["reasoning_content"].is_string()));
    assert!(events
        .iter()
        .any(|(_, e)| e["choices"][0]["finish_reason"] == "tool_calls"));
    assert!(!events
        .iter()
        .any(|(_, e)| e.get("usage").is_some_and(|u| !u.is_null())));

    // The tool's answer goes back as a tool message with its call id.
    let request = json!({"model": "command-a-03-2025", "messages": [
        {"role": "user", "content": "look it up"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"mock\"}"}}]},
        {"role": "tool", "tool_call_id": id, "content": "found it"}]});
    let response = post_json(&sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 200);
    let sent = good.requests().last().unwrap().json();
    assert_eq!(
        sent["messages"][2],
        json!({"role": "tool", "tool_call_id": id, "content": "found it"})
    );
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], json!(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_gets_a_whole_tool_call_from_cohere() {
    let (_good, _busy, sluice) = start().await;
    let request = json!({"model": "command-a-03-2025",
        "messages": [{"role": "user", "content": "look it up"}],
        "tools": [{"type": "function", "function": {"name": "lookup"}}]});
    let response = post_json(
        &sluice,
        "/chat/completions",
        &request,
        &[("x-mock-tool-call", "lookup")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let message = &body["choices"][0]["message"];
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "lookup");
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        "{\"q\":\"mock\"}"
    );
    assert_eq!(message["reasoning_content"], "I will call lookup.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_client_on_a_cohere_backend() {
    let (_good, _busy, sluice) = start().await;
    let request = json!({"model": "command-a-03-2025", "max_tokens": 100,
        "messages": [{"role": "user", "content": "hello"}]});
    let send = |body: Value| {
        client()
            .post(sluice.v1("/messages"))
            .header("x-api-key", "sk-team-a")
            .header("anthropic-version", "2023-06-01")
            .header("x-mock-chunks", "2")
            .json(&body)
            .send()
    };
    let response = send(request.clone()).await.unwrap();
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
    let response = send(streamed).await.unwrap();
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
async fn cohere_errors_keep_their_status_and_429_falls_back() {
    let (_good, busy, sluice) = start().await;
    let request = json!({"model": "busy", "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(&sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("429"));

    let request = json!({"model": "fallback", "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(&sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-upstream-name"], "good");
    let tried = busy.requests();
    let tried = tried.last().unwrap();
    assert_eq!(tried.path, "/v2/chat");
    assert_eq!(tried.json()["model"], "command-a-03-2025");

    // Cohere's 400 keeps its status and message.
    let request =
        json!({"model": "command-a-03-2025", "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(
        &sluice,
        "/chat/completions",
        &request,
        &[("x-mock-status", "400")],
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    // A stream that fails mid-way ends with an error chunk.
    let request = json!({"model": "command-a-03-2025", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(
        &sluice,
        "/chat/completions",
        &request,
        &[("x-mock-stream-error", "1")],
    )
    .await;
    let text = response.text().await.unwrap();
    let last = sse_events(&text).pop().unwrap().1;
    assert_eq!(last["error"]["message"], "mock stream failure", "{text}");
    assert!(!text.contains("[DONE]"));

    // A stream cut mid-way (connection aborted) ends with an error chunk.
    let response = post_json(
        &sluice,
        "/chat/completions",
        &request,
        &[("x-mock-error-after", "2")],
    )
    .await;
    let text = response.text().await.unwrap();
    assert!(text.contains("tok1 "), "{text}");
    let last = sse_events(&text).pop().unwrap().1;
    assert!(last["error"].is_object(), "{text}");

    // Endpoints Cohere has no counterpart for here are refused up front.
    let response = post_json(
        &sluice,
        "/responses",
        &json!({"model": "command-a-03-2025", "input": "x"}),
        &[],
    )
    .await;
    assert_eq!(response.status(), 400, "{:?}", response.text().await);
}
