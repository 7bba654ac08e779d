//! The LLM proxy end to end: a real `sluice run` process in front of the
//! test upstream, driven over HTTP as a client would.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use serde_json::{json, Value};
use sluice_test_upstream::{Options, Upstream};
use support::{backend, client, config, dead_url, upstream, Sluice, ENV};

fn one_route(upstream: &Upstream) -> String {
    config(
        "      - models: [\"gpt-4o\", \"gpt-4o-*\"]\n        backends: [{backend: primary}]",
        &backend("primary", &upstream.url()),
    )
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

fn stream_chat(model: &str) -> Value {
    let mut request = chat(model);
    request["stream"] = json!(true);
    request
}

/// The JSON of a stream's last `data:` event.
fn last_event(text: &str) -> Value {
    let last = text.trim_end().lines().last().unwrap();
    serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_chat_and_logs_usage_with_session() {
    let up = upstream("primary").await;
    let sluice = Sluice::start(&one_route(&up), ENV);
    let response = sluice
        .chat(&chat("gpt-4o-mini"), &[("x-session-id", "goose-abc123")])
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-upstream-name"], "primary");
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 tok4 "
    );

    // The upstream got the gateway's credential, never the client's.
    let seen = &up.requests()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-upstream-secret")
    );
    assert_eq!(seen.header("x-session-id"), Some("goose-abc123"));
    assert_eq!(seen.json(), chat("gpt-4o-mini"));

    let line = sluice.last_log(1);
    assert_eq!(line["session_id"], "goose-abc123");
    assert_eq!(line["tenant"], "team-a");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/v1/chat/completions");
    assert_eq!(line["status"], 200);
    assert_eq!(line["upstream"], "primary");
    assert_eq!(line["model"], "gpt-4o-mini");
    assert_eq!(line["tokens_in"], 7);
    assert_eq!(line["tokens_out"], 5);
    assert!(line["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(line["ts"].as_str().unwrap().ends_with('Z'));
    assert!(line.get("error").is_none());

    // No secret anywhere in what the gateway wrote.
    for text in [sluice.access_log_text(), sluice.stderr()] {
        assert!(
            !text.contains("sk-team-a") && !text.contains("sk-upstream-secret"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_hides_usage_the_client_did_not_ask_for() {
    let up = upstream("primary").await;
    let sluice = Sluice::start(&one_route(&up), ENV);
    let request = stream_chat("gpt-4o");
    let response = client()
        .post(sluice.v1("/chat/completions"))
        .header("x-api-key", "sk-team-a")
        .header("x-mock-chunks", "3")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("usage"),
        "usage leaked to the client: {text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
    let content: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, "tok0 tok1 tok2 ");

    // The gateway asked the upstream for usage, and accounted it.
    assert_eq!(
        up.requests()[0].json()["stream_options"],
        json!({"include_usage": true})
    );
    let line = sluice.last_log(1);
    assert_eq!(
        (line["tokens_in"].clone(), line["tokens_out"].clone()),
        (json!(7), json!(3))
    );
    assert!(line["ttft_ms"].as_f64().unwrap() > 0.0);
    assert!(line.get("tokens_estimated").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_usage_when_the_client_asks_for_it() {
    let up = upstream("primary").await;
    let sluice = Sluice::start(&one_route(&up), ENV);
    let mut request = stream_chat("gpt-4o");
    request["stream_options"] = json!({"include_usage": true});
    let text = sluice.chat(&request, &[]).await.text().await.unwrap();
    assert!(
        text.contains("\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":5"),
        "{text}"
    );
    assert!(text.contains("\"usage\":null"));
    // Passed through unchanged: the upstream saw the client's own body.
    assert_eq!(up.requests()[0].json(), request);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_the_upstream_model() {
    let up = upstream("primary").await;
    let cfg = config(
        "      - models: [\"fast\"]\n        backends: [{backend: primary, model: gpt-4o-mini-2024-07-18}]",
        &backend("primary", &up.url()),
    );
    let sluice = Sluice::start(&cfg, ENV);
    let response = sluice.chat(&chat("fast"), &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(up.requests()[0].json()["model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(sluice.last_log(1)["model"], "fast");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_on_5xx_and_on_a_dead_backend() {
    let broken = Upstream::start(Options {
        name: "broken".into(),
        always_status: Some(503),
        ..Options::default()
    })
    .await
    .unwrap();
    let backup = upstream("backup").await;
    let dead = dead_url();
    let cfg = config(
        "      - models: [\"gpt-4o\"]\n        backends: [{backend: broken}, {backend: backup, priority: 1}]\n      - models: [\"dead-first\"]\n        backends: [{backend: dead}, {backend: backup, priority: 1}]",
        &[backend("broken", &broken.url()), backend("backup", &backup.url()), backend("dead", &dead)].concat(),
    );
    let sluice = Sluice::start(&cfg, ENV);
    for (i, model) in ["gpt-4o", "dead-first"].iter().enumerate() {
        let response = sluice.chat(&chat(model), &[]).await;
        assert_eq!(response.status(), 200, "{model}");
        assert_eq!(response.headers()["x-upstream-name"], "backup");
        let line = sluice.last_log(i + 1);
        assert_eq!(line["upstream"], "backup");
        let kind = if i == 0 { "status_5xx" } else { "connect" };
        assert_eq!(line["failed_attempts"][0]["error"], kind, "{line}");
    }
    assert_eq!(broken.requests().len(), 1);
    let metrics = client()
        .get(format!("{}/metrics", sluice.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sluice_fallbacks_total{backend=\"backup\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_upstream_errors_total{backend=\"broken\",kind=\"status_5xx\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_upstream_errors_through_when_no_fallback_is_left() {
    let up = upstream("primary").await;
    let sluice = Sluice::start(&one_route(&up), ENV);
    let response = sluice
        .chat(
            &chat("gpt-4o"),
            &[("x-mock-status", "429"), ("x-mock-retry-after", "7")],
        )
        .await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(sluice.last_log(1)["error"], "upstream_429");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_the_same_backend_when_attempts_allow() {
    let up = upstream("primary").await;
    let cfg = config(
        "      - models: [\"gpt-4o\"]\n        backends: [{backend: primary}]\n        retry: {attempts: 3, on: [\"5xx\"]}",
        &backend("primary", &up.url()),
    );
    let sluice = Sluice::start(&cfg, ENV);
    let response = sluice
        .chat(&chat("gpt-4o"), &[("x-mock-status", "500")])
        .await;
    // Every attempt failed: the last upstream answer is what the client sees.
    assert_eq!(response.status(), 500);
    assert_eq!(up.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_map_to_502_and_504() {
    let up = upstream("slow").await;
    let dead = dead_url();
    let cfg = config(
        "      - models: [\"dead\"]\n        backends: [{backend: dead}]\n      - models: [\"slow\"]\n        backends: [{backend: slow}]",
        &[backend("dead", &dead), backend("slow", &up.url())].concat(),
    );
    let sluice = Sluice::start(&cfg, ENV);
    let response = sluice.chat(&chat("dead"), &[]).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_failed");

    // The backend timeout is 2s.
    let response = sluice
        .chat(&chat("slow"), &[("x-mock-delay-ms", "4000")])
        .await;
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout");
    let lines = sluice.access_log(2);
    assert_eq!(lines[0]["error"], "upstream_failed");
    assert_eq!(lines[1]["error"], "upstream_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_openai_errors() {
    let up = upstream("primary").await;
    let cfg = config(
        "      - models: [\"gpt-4o\"]\n        backends: [{backend: primary}]",
        &backend("primary", &up.url()),
    )
    .replace("  llm:\n", "  maxRequestBody: 1KiB\n  llm:\n");
    let sluice = Sluice::start(&cfg, ENV);
    let c = client();
    let post = |body: String, key: Option<&str>| {
        let mut request = c
            .post(sluice.v1("/chat/completions"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let cases: Vec<(u16, &str, reqwest::Response)> = vec![
        (
            400,
            "bad_request",
            post("{\"model\": ".into(), Some("sk-team-a"))
                .await
                .unwrap(),
        ),
        (
            400,
            "bad_request",
            post("[]".into(), Some("sk-team-a")).await.unwrap(),
        ),
        (
            400,
            "bad_request",
            post("{\"messages\":[]}".into(), Some("sk-team-a"))
                .await
                .unwrap(),
        ),
        (
            401,
            "invalid_api_key",
            post(chat("gpt-4o").to_string(), None).await.unwrap(),
        ),
        (
            401,
            "invalid_api_key",
            post(chat("gpt-4o").to_string(), Some("sk-wrong"))
                .await
                .unwrap(),
        ),
        (
            404,
            "model_not_found",
            post(chat("gpt-9").to_string(), Some("sk-team-a"))
                .await
                .unwrap(),
        ),
        (
            413,
            "request_too_large",
            post(
                format!("{{\"model\":\"gpt-4o\",\"pad\":\"{}\"}}", "x".repeat(4096)),
                Some("sk-team-a"),
            )
            .await
            .unwrap(),
        ),
        (
            404,
            "unknown_path",
            c.get(format!("{}/v2/nothing", sluice.url))
                .send()
                .await
                .unwrap(),
        ),
        (
            405,
            "method_not_allowed",
            c.get(sluice.v1("/chat/completions"))
                .bearer_auth("sk-team-a")
                .send()
                .await
                .unwrap(),
        ),
    ];
    for (status, code, response) in cases {
        assert_eq!(response.status().as_u16(), status, "{code}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code);
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert!(body["error"]["type"].is_string());
    }
    let lines = sluice.access_log(9);
    assert_eq!(lines[5]["error"], "model_not_found");
    assert_eq!(lines[5]["model"], "gpt-9", "the unknown model is logged");
    // A chunked body over the limit (no content-length) is refused too.
    let stream = futures_body("x".repeat(8192));
    let response = c
        .post(sluice.v1("/chat/completions"))
        .bearer_auth("sk-team-a")
        .body(stream)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(up.requests().is_empty(), "nothing bad reached the upstream");
    // The gateway is still healthy after all that.
    let response = post(chat("gpt-4o").to_string(), Some("sk-team-a"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

fn futures_body(text: String) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = text
        .into_bytes()
        .chunks(1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    reqwest::Body::wrap_stream(futures_util_stream(chunks))
}

fn futures_util_stream(
    chunks: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    struct Iter(std::vec::IntoIter<Result<Vec<u8>, std::io::Error>>);
    impl futures_core::Stream for Iter {
        type Item = Result<Vec<u8>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    Iter(chunks.into_iter())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_breaks_midway_ends_with_an_error_event() {
    let up = upstream("primary").await;
    let sluice = Sluice::start(&one_route(&up), ENV);
    let request = stream_chat("gpt-4o");
    let text = sluice
        .chat(
            &request,
            &[("x-mock-chunks", "10"), ("x-mock-error-after", "2")],
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("tok1"), "{text}");
    let event = last_event(&text);
    assert_eq!(event["error"]["code"], "upstream_stream_error");
    assert!(!text.contains("[DONE]"));
    let line = sluice.last_log(1);
    assert_eq!(line["error"], "upstream_stream_error");
    assert_eq!(line["tokens_estimated"], true);
    assert_eq!(
        line["tokens_out"], 3,
        "role chunk + 2 content chunks, about a token each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_midstream_is_still_accounted() {
    let up = upstream("primary").await;
    let sluice = Sluice::start(&one_route(&up), ENV);
    let request = stream_chat("gpt-4o");
    let mut response = sluice
        .chat(
            &request,
            &[("x-mock-chunks", "50"), ("x-mock-chunk-delay-ms", "100")],
        )
        .await;
    let mut received = 0;
    while received < 3 {
        let chunk = response.chunk().await.unwrap().unwrap();
        received += chunk.iter().filter(|&&b| b == b'\n').count() / 2;
    }
    drop(response);
    let line = sluice.last_log(1);
    assert_eq!(
        line["error"],
        "client_disconnected",
        "{line} {}",
        sluice.stderr()
    );
    assert_eq!(line["status"], 200);
    let out = line["tokens_out"].as_u64().unwrap();
    assert!(
        (2..50).contains(&out),
        "accounted what was sent, not the whole stream: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_completions_and_models() {
    let up = upstream("primary").await;
    let cfg = config(
        "      - models: [\"gpt-4o\", \"text-embedding-3-small\", \"gpt-3.5-turbo-instruct\"]\n        backends: [{backend: primary}]\n      - models: [\"mistral-*\"]\n        backends: [{backend: primary}]",
        &backend("primary", &up.url()).replace("  timeout: 2s\n", "  timeout: 2s\n  models: [extra-model]\n"),
    );
    let sluice = Sluice::start(&cfg, ENV);
    let c = client();
    let embeddings: Value = c
        .post(sluice.v1("/embeddings"))
        .bearer_auth("sk-team-a")
        .json(&json!({"model": "text-embedding-3-small", "input": ["a", "b"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(embeddings["data"].as_array().unwrap().len(), 2);
    assert_eq!(up.requests()[0].path, "/v1/embeddings");

    let completion: Value = c
        .post(sluice.v1("/completions"))
        .bearer_auth("sk-team-a")
        .json(&json!({"model": "gpt-3.5-turbo-instruct", "prompt": "hi"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(completion["object"], "text_completion");
    assert_eq!(up.requests()[1].path, "/v1/completions");

    let models: Value = c
        .get(sluice.v1("/models"))
        .bearer_auth("sk-team-a")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "gpt-4o",
            "text-embedding-3-small",
            "gpt-3.5-turbo-instruct",
            "extra-model"
        ]
    );
    let lines = sluice.access_log(3);
    assert_eq!(lines[0]["tokens_in"], 7);
    assert_eq!(lines[1]["tokens_out"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stalls_past_the_backend_timeout_is_ended() {
    let up = upstream("primary").await;
    let sluice = Sluice::start(&one_route(&up), ENV);
    let request = stream_chat("gpt-4o");
    // The backend timeout is 2s; the upstream pauses 3s before the second chunk.
    let text = sluice
        .chat(
            &request,
            &[("x-mock-chunks", "2"), ("x-mock-chunk-delay-ms", "3000")],
        )
        .await
        .text()
        .await
        .unwrap();
    let event = last_event(&text);
    assert_eq!(event["error"]["code"], "upstream_stream_timeout", "{text}");
    assert_eq!(sluice.last_log(1)["error"], "upstream_stream_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuses_upstream_connections_and_survives_an_upstream_restart() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let first = Upstream::start_on(
        listener,
        Options {
            name: "first".into(),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let sluice = Sluice::start(&one_route(&first), ENV);
    for _ in 0..3 {
        let response = sluice.chat(&chat("gpt-4o"), &[]).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-upstream-name"], "first");
    }
    // The upstream goes away with the gateway's pooled connection to it...
    first.stop().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // ...and comes back on the same port: the next request must not fail on the stale connection.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let second = Upstream::start_on(
        listener,
        Options {
            name: "second".into(),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let request = stream_chat("gpt-4o");
        let response = sluice.chat(&request, &[]).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-upstream-name"], "second");
        assert!(response.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    }
    assert_eq!(second.requests().len(), 3);
}
