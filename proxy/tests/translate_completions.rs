//! `/v1/completions` (OpenAI's legacy text completions) on chat-only
//! backends through a real `sluice run`: the prompt goes as a chat message
//! in the backend's own schema (the test upstream's faces refuse anything
//! else), the answer comes back as a `text_completion`, whole or streamed,
//! with usage in the access log; what a chat API cannot do is a clear 400.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use serde_json::{json, Value};
use sluice_test_upstream::{Options, Upstream};
use support::{config, post_json, sse_events, Sluice, ENV};

fn native_backend(name: &str, provider: &str, url: &str) -> String {
    format!(
        "---\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  provider: {provider}\n  endpoint: {url}\n  auth: {{apiKey: {{valueFrom: {{env: UPSTREAM_KEY}}}}}}\n  timeout: 2s\n"
    )
}

/// `claude-*` on an Anthropic upstream, `gemini-*` on a Gemini one,
/// `command-*` on a Cohere one.
async fn start() -> (Upstream, Upstream, Sluice) {
    let upstream = Upstream::start(Options {
        name: "native".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let cohere = Upstream::start(Options {
        name: "cohere".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let routes = "      - models: [\"claude-*\"]\n        backends: [{backend: claude}]\n      - models: [\"gemini-*\"]\n        backends: [{backend: gemini}]\n      - models: [\"command-*\"]\n        backends: [{backend: cohere}]";
    let backends = format!(
        "{}{}{}",
        native_backend("claude", "Anthropic", &upstream.url()),
        native_backend("gemini", "Gemini", &upstream.url()),
        native_backend("cohere", "Cohere", &cohere.url()),
    );
    let sluice = Sluice::start(&config(routes, &backends), ENV);
    (upstream, cohere, sluice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_completions_reach_chat_only_backends() {
    let (upstream, cohere, sluice) = start().await;

    // Anthropic, whole.
    let request =
        json!({"model": "claude-haiku-4-5", "prompt": "Say hi", "max_tokens": 16, "stop": ["\n"]});
    let response = post_json(&sluice, "/completions", &request, &[]).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["model"], "claude-haiku-4-5");
    assert_eq!(body["choices"][0]["text"], "tok0 tok1 tok2 tok3 tok4 ");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["choices"][0]["logprobs"], Value::Null);
    assert_eq!(body["usage"]["completion_tokens"], 5);
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(
        seen.json(),
        json!({"model": "claude-haiku-4-5", "max_tokens": 16, "stop_sequences": ["\n"],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}]})
    );
    let line = sluice.last_log(1);
    assert_eq!(line["path"], "/v1/completions");
    assert_eq!(line["upstream"], "claude");
    assert_eq!(line["tokens_out"], 5);

    // Gemini, streamed with usage.
    let request = json!({"model": "gemini-2.5-flash", "prompt": ["Say hi"], "stream": true,
        "stream_options": {"include_usage": true}});
    let response = post_json(&sluice, "/completions", &request, &[]).await;
    assert_eq!(response.status(), 200);
    let events = sse_events(&response.text().await.unwrap());
    let text: String = events
        .iter()
        .filter_map(|(_, e)| e["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3 tok4 ");
    assert!(events
        .iter()
        .filter(|(_, e)| e.is_object())
        .all(|(_, e)| e["object"] == "text_completion"));
    let finish: Vec<_> = events
        .iter()
        .filter_map(|(_, e)| e["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["stop"]);
    let usage = events
        .iter()
        .find(|(_, e)| e["usage"].is_object())
        .expect("a usage chunk");
    assert_eq!(usage.1["usage"]["completion_tokens"], 5);
    assert_eq!(events.last().unwrap().1, json!("[DONE]"));
    let seen = upstream.requests().pop().unwrap();
    assert!(
        seen.path.contains(":streamGenerateContent"),
        "{}",
        seen.path
    );

    // Cohere, whole.
    let request = json!({"model": "command-r", "prompt": "Say hi"});
    let response = post_json(&sluice, "/completions", &request, &[]).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "text_completion");
    assert!(body["choices"][0]["text"].as_str().unwrap().len() > 1);
    assert_eq!(cohere.requests().pop().unwrap().path, "/v2/chat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_chat_backend_cannot_do_is_a_clear_400() {
    let (upstream, _cohere, sluice) = start().await;
    for (request, needle) in [
        (
            json!({"model": "claude-haiku-4-5", "prompt": "x", "echo": true}),
            "`echo`",
        ),
        (
            json!({"model": "claude-haiku-4-5", "prompt": ["a", "b"]}),
            "2 prompts",
        ),
        (
            json!({"model": "gemini-2.5-flash", "prompt": [1, 2, 3]}),
            "token-id",
        ),
        (
            json!({"model": "gemini-2.5-flash", "prompt": "x", "logprobs": 1}),
            "`logprobs`",
        ),
    ] {
        let response = post_json(&sluice, "/completions", &request, &[]).await;
        assert_eq!(response.status(), 400, "{request}");
        let body: Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
    }
    assert!(upstream.requests().is_empty());
}
