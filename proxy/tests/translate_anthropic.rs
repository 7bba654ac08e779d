//! Translation through a real `sluice run`: OpenAI clients served by an
//! Anthropic backend, Anthropic clients served by OpenAI-schema and demo
//! backends, Anthropic passthrough, count_tokens, fallback on overload, and
//! broken upstream answers. The test upstream's Anthropic face refuses
//! requests Anthropic would refuse, so a wrong translation fails here.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use serde_json::{json, Value};
use sluice_test_upstream::{Options, Upstream};
use support::{backend, client, config, sse_events, upstream, Sluice, ENV};

fn anthropic_backend(name: &str, url: &str) -> String {
    format!(
        "---\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  provider: Anthropic\n  endpoint: {url}\n  auth: {{apiKey: {{valueFrom: {{env: UPSTREAM_KEY}}}}}}\n  timeout: 2s\n"
    )
}

/// `claude-*` on the Anthropic upstream, `gpt-*` on the OpenAI one,
/// `fallback` on Anthropic then OpenAI, `demo` on the demo model.
fn gateway(claude: &Upstream, gpt: &Upstream, busy: &Upstream) -> String {
    let routes = "      - models: [\"claude-*\"]\n        backends: [{backend: claude}]\n      - models: [\"gpt-*\"]\n        backends: [{backend: gpt}]\n      - models: [fallback]\n        backends: [{backend: busy, model: claude-haiku-4-5, priority: 0}, {backend: gpt, model: gpt-4o, priority: 1}]\n        retry: {attempts: 2, on: [\"5xx\", \"429\"]}\n      - models: [demo]\n        backends: [{backend: demo}]";
    let backends = format!(
        "{}{}{}---\nkind: Backend\nmetadata: {{name: demo}}\nspec: {{provider: Demo}}\n",
        anthropic_backend("claude", &claude.url()),
        anthropic_backend("busy", &busy.url()),
        backend("gpt", &gpt.url())
    );
    config(routes, &backends)
}

async fn start() -> (Upstream, Upstream, Sluice) {
    let (claude, gpt, _busy, sluice) = start_with_busy().await;
    (claude, gpt, sluice)
}

/// Also a `busy` Anthropic upstream that answers every request 529.
async fn start_with_busy() -> (Upstream, Upstream, Upstream, Sluice) {
    let claude = upstream("claude").await;
    let gpt = upstream("gpt").await;
    let busy = Upstream::start(Options {
        name: "busy".into(),
        always_status: Some(529),
        ..Options::default()
    })
    .await
    .unwrap();
    let sluice = Sluice::start(&gateway(&claude, &gpt, &busy), ENV);
    (claude, gpt, busy, sluice)
}

async fn post(
    sluice: &Sluice,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client()
        .post(sluice.v1(path))
        .header("x-api-key", "sk-team-a")
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_on_an_anthropic_backend() {
    let (claude, _gpt, sluice) = start().await;
    let request = json!({"model": "claude-sonnet-4-5", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"}]});
    let response = post(&sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 tok4 "
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 7);
    assert_eq!(body["usage"]["completion_tokens"], 5);

    let seen = &claude.requests()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some("sk-upstream-secret"));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(
        seen.json(),
        json!({"model": "claude-sonnet-4-5", "max_tokens": 4096, "system": "Be brief.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]})
    );
    let line = sluice.last_log(1);
    assert_eq!(line["upstream"], "claude");
    assert_eq!(line["tokens_in"], 7);
    assert_eq!(line["tokens_out"], 5);
    assert_eq!(line["status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_streams_tool_calls_from_an_anthropic_backend() {
    let (_claude, _gpt, sluice) = start().await;
    let request = json!({"model": "claude-sonnet-4-5", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "tool_choice": "required"});
    let response = post(&sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let events = sse_events(&text);
    let chunks: Vec<&Value> = events.iter().map(|(_, v)| v).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        chunks[1]["choices"][0]["delta"]["tool_calls"][0],
        json!({"index": 0, "id": "toolu_mock_0", "type": "function",
            "function": {"name": "get_weather", "arguments": ""}})
    );
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, "{\"q\":\"mock\"}");
    let finish = chunks
        .iter()
        .find(|c| !c["choices"][0]["finish_reason"].is_null())
        .unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    let usage = &chunks[chunks.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 7);
    assert_eq!(*chunks[chunks.len() - 1], json!("[DONE]"));

    // Without include_usage the client sees no usage, the log still does.
    let mut request = request;
    request.as_object_mut().unwrap().remove("stream_options");
    let text = post(
        &sluice,
        "/chat/completions",
        &request,
        &[("x-mock-chunks", "3")],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(!text.contains("usage"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(sluice.last_log(2)["tokens_in"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_anthropic_backend_falls_back() {
    let (_claude, gpt, busy, sluice) = start_with_busy().await;
    let request = json!({"model": "fallback", "messages": [{"role": "user", "content": "hi"}]});
    let response = post(&sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-upstream-name"], "gpt");
    assert_eq!(busy.requests()[0].path, "/v1/messages");
    assert_eq!(busy.requests()[0].json()["model"], "claude-haiku-4-5");
    assert_eq!(gpt.requests()[0].json()["model"], "gpt-4o");
    let line = sluice.last_log(1);
    assert_eq!(line["upstream"], "gpt");
    assert_eq!(line["failed_attempts"][0]["upstream"], "busy");

    // Only the Anthropic backend overloaded: its 529 becomes a 503 in
    // OpenAI's shape when no backup is left.
    let single = json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]});
    let response = post(
        &sluice,
        "/chat/completions",
        &single,
        &[("x-mock-status", "529")],
    )
    .await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");
    let response = post(
        &sluice,
        "/chat/completions",
        &single,
        &[("x-mock-status", "429")],
    )
    .await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_client_on_an_openai_backend() {
    let (_claude, gpt, sluice) = start().await;
    let request = json!({"model": "gpt-4o", "max_tokens": 100, "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]});
    let response = post(
        &sluice,
        "/messages",
        &request,
        &[("anthropic-version", "2023-06-01")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "tok0 tok1 tok2 tok3 tok4 "}])
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["input_tokens"], 7);
    assert_eq!(body["usage"]["output_tokens"], 5);
    let seen = &gpt.requests()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.json(),
        json!({"model": "gpt-4o", "max_tokens": 100, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]})
    );

    // Streaming, with a tool call.
    let request = json!({"model": "gpt-4o", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"}});
    let response = post(&sluice, "/messages", &request, &[]).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let events = sse_events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "tool_use", "id": "call_mock_0", "name": "get_weather", "input": {}})
    );
    assert_eq!(events[5].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(events[5].1["usage"]["output_tokens"], 5);
    assert_eq!(events[5].1["usage"]["input_tokens"], 7);
    let seen = gpt.requests();
    assert_eq!(
        seen[1].json()["stream_options"],
        json!({"include_usage": true})
    );
    assert_eq!(sluice.last_log(2)["tokens_in"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_passthrough_and_count_tokens() {
    let (claude, _gpt, sluice) = start().await;
    let request = json!({"model": "claude-sonnet-4-5", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let response = post(
        &sluice,
        "/messages",
        &request,
        &[("anthropic-beta", "x-2025")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(
        text.contains("event: ping"),
        "passed through untouched: {text}"
    );
    let seen = &claude.requests()[0];
    assert_eq!(seen.json(), request, "the body goes as the client sent it");
    assert_eq!(seen.header("anthropic-beta"), Some("x-2025"));
    assert_eq!(seen.header("x-api-key"), Some("sk-upstream-secret"));
    let line = sluice.last_log(1);
    assert_eq!(
        (line["tokens_in"].as_u64(), line["tokens_out"].as_u64()),
        (Some(7), Some(5))
    );
    assert_eq!(line["path"], "/v1/messages");

    let count =
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]});
    let response = post(
        &sluice,
        "/messages/count_tokens",
        &count,
        &[("x-mock-prompt-tokens", "42")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"input_tokens": 42})
    );
    assert_eq!(claude.requests()[1].path, "/v1/messages/count_tokens");

    // An OpenAI backend has no count_tokens: the gateway estimates.
    let count =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]});
    let response = post(&sluice, "/messages/count_tokens", &count, &[]).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["input_tokens"].as_u64().unwrap() > 0, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_clients_get_anthropic_errors() {
    let (_claude, _gpt, sluice) = start().await;
    let ok = json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let response = post(
        &sluice,
        "/messages",
        &json!({"model": "nope", "max_tokens": 1, "messages": []}),
        &[],
    )
    .await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "not_found_error");

    let response = client()
        .post(sluice.v1("/messages"))
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");

    let response = post(&sluice, "/messages", &ok, &[("x-mock-status", "429")]).await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");

    let bad = json!({"model": "gpt-4o", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]});
    let response = post(&sluice, "/messages", &bad, &[]).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("document"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_upstream_answers_are_clean_errors() {
    let (_claude, _gpt, sluice) = start().await;
    // Malformed JSON: a 502 in the client's shape.
    let chat = json!({"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]});
    let response = post(
        &sluice,
        "/chat/completions",
        &chat,
        &[("x-mock-malformed", "1")],
    )
    .await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_bad_response");
    let messages = json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let response = post(
        &sluice,
        "/messages",
        &messages,
        &[("x-mock-malformed", "1")],
    )
    .await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "api_error");

    // Malformed and cut streams: an error event, then the end.
    let mut stream_chat = chat.clone();
    stream_chat["stream"] = json!(true);
    let text = post(
        &sluice,
        "/chat/completions",
        &stream_chat,
        &[("x-mock-malformed", "1")],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(text.contains("upstream_bad_response"), "{text}");
    let text = post(
        &sluice,
        "/chat/completions",
        &stream_chat,
        &[("x-mock-error-after", "2")],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        text.contains("tok1") && text.contains("\"error\""),
        "{text}"
    );
    let text = post(
        &sluice,
        "/chat/completions",
        &stream_chat,
        &[("x-mock-stream-error", "1")],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(text.contains("overloaded_error"), "{text}");

    let mut stream_messages = messages.clone();
    stream_messages["stream"] = json!(true);
    for header in ["x-mock-malformed", "x-mock-error-after"] {
        let text = post(&sluice, "/messages", &stream_messages, &[(header, "1")])
            .await
            .text()
            .await
            .unwrap();
        assert!(
            text.contains("event: error\ndata: {\"type\":\"error\""),
            "{header}: {text}"
        );
        assert!(!text.contains("message_stop"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_clients_can_use_the_demo_model() {
    let (_claude, _gpt, sluice) = start().await;
    let request = json!({"model": "demo", "max_tokens": 100, "messages": [{"role": "user", "content": "hello"}]});
    let response = post(&sluice, "/messages", &request, &[]).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert!(
        body["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("sluice-demo"),
        "{body}"
    );
    let mut request = request;
    request["stream"] = json!(true);
    let text = post(&sluice, "/messages", &request, &[])
        .await
        .text()
        .await
        .unwrap();
    assert!(text.starts_with("event: message_start"), "{text}");
    assert!(
        text.trim_end()
            .ends_with("data: {\"type\":\"message_stop\"}"),
        "{text}"
    );
}
