//! Bedrock through a real `sluice run`: OpenAI clients (and Anthropic ones,
//! through the pivot) served by the test upstream's Bedrock face, which
//! speaks Converse and ConverseStream's binary event stream and recomputes
//! every SigV4 signature with the test keys, so that a wrong signature, a
//! wrong path or a body Bedrock would refuse fails here. Also streams,
//! tools, usage, throttling with and without fallback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use serde_json::{json, Value};
use sluice_test_upstream::{Upstream, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY};
use support::{backend, client, config, post_json, sse_events, upstream_with, Sluice};

const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

fn bedrock_backend(name: &str, url: &str, secret_env: &str) -> String {
    format!(
        "---\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  provider: Bedrock\n  endpoint: {url}\n  auth:\n    aws:\n      region: us-east-1\n      accessKeyId: {{valueFrom: {{env: AWS_ID}}}}\n      secretAccessKey: {{valueFrom: {{env: {secret_env}}}}}\n  timeout: 2s\n"
    )
}

struct World {
    bedrock: Upstream,
    gpt: Upstream,
    _busy: Upstream,
    sluice: Sluice,
}

async fn start() -> World {
    let bedrock = upstream_with("bedrock", None).await;
    let gpt = upstream_with("gpt", None).await;
    let busy = upstream_with("busy", Some(429)).await;
    let routes = "      - models: [\"anthropic.*\", \"amazon.*\"]\n        backends: [{backend: bedrock}]\n      - models: [fallback]\n        backends: [{backend: busy, model: anthropic.claude-3-haiku-20240307-v1:0, priority: 0}, {backend: gpt, model: gpt-4o, priority: 1}]\n        retry: {attempts: 2, on: [\"5xx\", \"429\"]}\n      - models: [throttled]\n        backends: [{backend: busy, model: anthropic.claude-3-haiku-20240307-v1:0}]\n      - models: [wrong-secret]\n        backends: [{backend: wrong, model: amazon.nova-lite-v1:0}]\n      - models: [api-key]\n        backends: [{backend: keyed, model: amazon.nova-lite-v1:0}]";
    let backends = format!(
        "{}{}{}{}---\nkind: Backend\nmetadata: {{name: keyed}}\nspec:\n  provider: Bedrock\n  endpoint: {}\n  auth: {{apiKey: {{valueFrom: {{env: UPSTREAM_KEY}}}}}}\n",
        bedrock_backend("bedrock", &bedrock.url(), "AWS_SECRET"),
        bedrock_backend("busy", &busy.url(), "AWS_SECRET"),
        bedrock_backend("wrong", &bedrock.url(), "AWS_WRONG"),
        backend("gpt", &gpt.url()),
        bedrock.url(),
    );
    let env = [
        ("TEAM_A_KEY", "sk-team-a"),
        ("UPSTREAM_KEY", "sk-upstream-secret"),
        ("AWS_ID", TEST_ACCESS_KEY_ID),
        ("AWS_SECRET", TEST_SECRET_ACCESS_KEY),
        ("AWS_WRONG", "not-the-secret"),
    ];
    let sluice = Sluice::start(&config(routes, &backends), &env);
    World {
        bedrock,
        gpt,
        _busy: busy,
        sluice,
    }
}

fn chat(stream: bool) -> Value {
    json!({"model": MODEL, "stream": stream, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_gets_a_signed_converse_answer() {
    let world = start().await;
    let response = post_json(
        &world.sluice,
        "/chat/completions",
        &chat(false),
        &[
            ("x-mock-prompt-tokens", "12"),
            ("x-mock-cached-tokens", "4"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], MODEL);
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 tok4 "
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 12);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
    assert_eq!(body["usage"]["completion_tokens"], 5);

    let seen = world.bedrock.requests();
    let request = seen.last().unwrap();
    assert_eq!(
        request.path,
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let authorization = header("authorization").unwrap();
    assert!(
        authorization.starts_with(&format!(
            "AWS4-HMAC-SHA256 Credential={TEST_ACCESS_KEY_ID}/"
        )) && authorization.contains("/us-east-1/bedrock/aws4_request, SignedHeaders=")
            && authorization.contains("content-type;host;x-amz-date"),
        "{authorization}"
    );
    assert!(!authorization.contains("sk-team-a"));
    assert_eq!(header("x-amz-date").unwrap().len(), 16);
    let sent: Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(sent["system"], json!([{"text": "Be brief."}]));
    assert!(sent.get("model").is_none() && sent.get("stream").is_none());

    let line = world.sluice.last_log(1);
    assert_eq!(line["upstream"], "bedrock");
    assert_eq!(line["tokens_in"], 12);
    assert_eq!(line["tokens_out"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_become_openai_chunks() {
    let world = start().await;
    let mut request = chat(true);
    request["stream_options"] = json!({"include_usage": true});
    let response = post_json(&world.sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    let events = sse_events(&text);
    assert_eq!(events[0].1["choices"][0]["delta"]["role"], "assistant");
    let content: String = events
        .iter()
        .filter_map(|(_, e)| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "tok0 tok1 tok2 tok3 tok4 ");
    let n = events.len();
    assert_eq!(events[n - 3].1["choices"][0]["finish_reason"], "stop");
    assert_eq!(events[n - 2].1["usage"]["prompt_tokens"], 7);
    assert_eq!(events[n - 2].1["usage"]["completion_tokens"], 5);
    assert_eq!(events[n - 1].1, "[DONE]");
    assert!(world
        .bedrock
        .requests()
        .last()
        .unwrap()
        .path
        .ends_with("/converse-stream"));

    // Without include_usage: no usage chunk, and the access log still counts.
    let response = post_json(
        &world.sluice,
        "/chat/completions",
        &chat(true),
        &[("x-mock-chunks", "3")],
    )
    .await;
    let text = response.text().await.unwrap();
    assert!(!text.contains("\"usage\":{"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    let line = world.sluice.last_log(2);
    assert_eq!(line["tokens_in"], 7);
    assert_eq!(line["tokens_out"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_both_ways() {
    let world = start().await;
    let tools = json!([{"type": "function", "function": {"name": "search",
        "description": "Search the web", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
    let request = json!({"model": MODEL, "tools": tools, "tool_choice": "required",
        "messages": [{"role": "user", "content": "find it"}]});
    let body: Value = post_json(&world.sluice, "/chat/completions", &request, &[])
        .await
        .json()
        .await
        .unwrap();
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(call["function"]["name"], "search");
    assert_eq!(call["function"]["arguments"], "{\"q\":\"mock\"}");
    let sent: Value = serde_json::from_str(&world.bedrock.requests().last().unwrap().body).unwrap();
    assert_eq!(sent["toolConfig"]["toolChoice"], json!({"any": {}}));

    // The follow-up turn with the tool's result, streamed.
    let follow_up = json!({"model": MODEL, "tools": tools, "stream": true, "messages": [
        {"role": "user", "content": "find it"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": call["id"], "type": "function",
            "function": {"name": "search", "arguments": "{\"q\":\"mock\"}"}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "found"}]});
    let text = post_json(
        &world.sluice,
        "/chat/completions",
        &follow_up,
        &[("x-mock-tool-call", "search")],
    )
    .await
    .text()
    .await
    .unwrap();
    let events = sse_events(&text);
    let first = events
        .iter()
        .find_map(|(_, e)| {
            e["choices"][0]["delta"]["tool_calls"][0]
                .as_object()
                .cloned()
        })
        .unwrap();
    assert_eq!(first["function"]["name"], "search");
    assert_eq!(first["id"], "tooluse_mock_0");
    let arguments: String = events
        .iter()
        .filter_map(|(_, e)| {
            e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
        })
        .collect();
    assert_eq!(arguments, "{\"q\":\"mock\"}");
    assert!(text.contains("\"finish_reason\":\"tool_calls\""));
    let sent: Value = serde_json::from_str(&world.bedrock.requests().last().unwrap().body).unwrap();
    assert_eq!(
        sent["messages"][2]["content"][0]["toolResult"]["content"],
        json!([{"text": "found"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_falls_back_or_answers_429() {
    let world = start().await;
    let request = json!({"model": "fallback", "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(&world.sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-upstream-name"], "gpt");
    assert_eq!(world.gpt.requests().len(), 1);

    let request = json!({"model": "throttled", "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(&world.sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ThrottlingException");
    assert_eq!(body["error"]["type"], "rate_limit_error");

    // 503 ServiceUnavailableException keeps its status for OpenAI clients.
    let response = post_json(
        &world.sluice,
        "/chat/completions",
        &chat(false),
        &[("x-mock-status", "503")],
    )
    .await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ServiceUnavailableException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_checked_by_the_upstream() {
    let world = start().await;
    let request = json!({"model": "wrong-secret", "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(&world.sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidSignatureException");
    assert!(!world.sluice.access_log_text().contains("not-the-secret"));
    assert!(!world.sluice.stderr().contains("not-the-secret"));

    // A Bedrock API key goes as a bearer token, unsigned.
    let request = json!({"model": "api-key", "messages": [{"role": "user", "content": "hi"}]});
    let response = post_json(&world.sluice, "/chat/completions", &request, &[]).await;
    assert_eq!(response.status(), 200);
    let seen = world.bedrock.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.path, "/model/amazon.nova-lite-v1%3A0/converse");
    assert!(last
        .headers
        .iter()
        .any(|(n, v)| n == "authorization" && v == "Bearer sk-upstream-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_clients_reach_bedrock_through_the_pivot() {
    let world = start().await;
    let request = json!({"model": MODEL, "max_tokens": 100, "system": "Be brief.",
        "messages": [{"role": "user", "content": "hello"}]});
    let response = client()
        .post(world.sluice.v1("/messages"))
        .header("x-api-key", "sk-team-a")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "tok0 tok1 tok2 tok3 tok4 ");
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["input_tokens"], 7);

    let mut request = request;
    request["stream"] = json!(true);
    let text = client()
        .post(world.sluice.v1("/messages"))
        .header("x-api-key", "sk-team-a")
        .json(&request)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let names: Vec<String> = sse_events(&text)
        .into_iter()
        .filter_map(|(n, _)| n)
        .collect();
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    assert!(text.contains("\"output_tokens\":5"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_streams_end_with_an_error_event() {
    let world = start().await;
    for (header, needle) in [
        ("x-mock-stream-error", "modelStreamErrorException"),
        ("x-mock-malformed", "bad checksum"),
    ] {
        let response = post_json(
            &world.sluice,
            "/chat/completions",
            &chat(true),
            &[(header, "1")],
        )
        .await;
        assert_eq!(response.status(), 200);
        let text = tokio::time::timeout(std::time::Duration::from_secs(10), response.text())
            .await
            .expect("no hang")
            .unwrap();
        assert!(text.contains(needle), "{header}: {text}");
        assert!(!text.contains("[DONE]"), "{header}: {text}");
    }
}
