//! The `x-mock-*` control headers and `always_status`, as a client sees them.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed assumption is a failed test"
)]

mod common;

use std::time::Duration;

use common::{get, post, raw, send};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_test_upstream::{Options, Upstream};

const CHAT: &str = "/v1/chat/completions";

async fn upstream() -> Upstream {
    Upstream::start(Options::default()).await.unwrap()
}

fn chat(stream: bool) -> String {
    json!({"model":"m","messages":[{"role":"user","content":"hi"}],"stream":stream}).to_string()
}

#[tokio::test]
async fn status_header_gives_openai_errors() {
    let up = upstream().await;
    for (code, kind, error_code) in [
        ("503", "server_error", Value::Null),
        ("500", "server_error", Value::Null),
        ("429", "rate_limit_error", json!("rate_limit_exceeded")),
        ("401", "invalid_request_error", Value::Null),
        ("400", "invalid_request_error", Value::Null),
    ] {
        let reply = post(up.addr, CHAT, &[("x-mock-status", code)], &chat(true)).await;
        assert_eq!(reply.status.as_str(), code);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.header("x-upstream-name"), Some("upstream"));
        assert_eq!(reply.header("retry-after"), None);
        let error = &reply.json()["error"];
        assert_eq!(error["type"], kind, "{code}");
        assert_eq!(error["code"], error_code, "{code}");
        assert_eq!(error["param"], Value::Null);
        assert!(error["message"].as_str().unwrap().contains(code));
    }
}

#[tokio::test]
async fn retry_after_is_added() {
    let up = upstream().await;
    let reply = post(
        up.addr,
        CHAT,
        &[("x-mock-status", "429"), ("x-mock-retry-after", "7")],
        &chat(false),
    )
    .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("retry-after"), Some("7"));
}

#[tokio::test]
async fn always_status_fails_every_post_only() {
    let up = Upstream::start(Options {
        name: "broken".into(),
        always_status: Some(502),
        ..Options::default()
    })
    .await
    .unwrap();
    for path in [CHAT, "/v1/completions", "/v1/embeddings"] {
        let reply = post(up.addr, path, &[], &chat(false)).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{path}");
        assert_eq!(reply.json()["error"]["type"], "server_error");
        assert_eq!(reply.header("x-upstream-name"), Some("broken"));
    }
    // The header still wins, and GETs still work.
    let reply = post(up.addr, CHAT, &[("x-mock-status", "429")], &chat(false)).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(get(up.addr, "/v1/models").await.status, StatusCode::OK);
}

#[tokio::test]
async fn always_status_must_be_an_error_status() {
    let err = Upstream::start(Options {
        always_status: Some(200),
        ..Options::default()
    })
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn delay_holds_back_the_headers() {
    let up = upstream().await;
    let reply = post(up.addr, CHAT, &[("x-mock-delay-ms", "300")], &chat(false)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers_at - reply.sent >= Duration::from_millis(300));
    let reply = post(up.addr, CHAT, &[], &chat(false)).await;
    assert!(reply.headers_at - reply.sent < Duration::from_millis(300));
}

#[tokio::test]
async fn chunks_and_prompt_tokens_set_content_and_usage() {
    let up = upstream().await;
    let headers = [("x-mock-chunks", "2"), ("x-mock-prompt-tokens", "40")];
    let reply = post(up.addr, CHAT, &headers, &chat(false)).await;
    let body = reply.json();
    assert_eq!(body["choices"][0]["message"]["content"], "tok0 tok1 ");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens":40,"completion_tokens":2,"total_tokens":42})
    );

    let body =
        json!({"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}});
    let reply = post(up.addr, CHAT, &headers, &body.to_string()).await;
    let chunks = reply.chunks();
    assert_eq!(chunks.len(), 1 + 2 + 1 + 1);
    assert_eq!(
        chunks[4]["usage"],
        json!({"prompt_tokens":40,"completion_tokens":2,"total_tokens":42})
    );

    let reply = post(up.addr, CHAT, &[("x-mock-chunks", "0")], &chat(false)).await;
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "");
}

#[tokio::test]
async fn error_after_breaks_a_stream_after_n_content_chunks() {
    let up = upstream().await;
    let reply = post(up.addr, CHAT, &[("x-mock-error-after", "2")], &chat(true)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body_error.is_some(), "the body must end in an error");
    let body = reply.body();
    assert!(!body.contains("[DONE]"));
    let chunks = reply.chunks();
    let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert_eq!(
        deltas,
        [
            &json!({"role":"assistant","content":""}),
            &json!({"content":"tok0 "}),
            &json!({"content":"tok1 "}),
        ]
    );
}

#[tokio::test]
async fn error_after_zero_breaks_before_any_content() {
    let up = upstream().await;
    let reply = post(
        up.addr,
        "/v1/completions",
        &[("x-mock-error-after", "0")],
        &json!({"model":"m","prompt":"p","stream":true}).to_string(),
    )
    .await;
    assert!(reply.body_error.is_some());
    assert_eq!(reply.body(), "");
}

#[tokio::test]
async fn error_after_breaks_a_json_body_after_the_headers() {
    let up = upstream().await;
    let reply = post(up.addr, CHAT, &[("x-mock-error-after", "1")], &chat(false)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let promised: usize = reply.header("content-length").unwrap().parse().unwrap();
    assert!(promised > 0);
    assert!(reply.body_error.is_some());
    assert!(reply.body().len() < promised);
}

#[tokio::test]
async fn close_drops_the_connection_without_a_response() {
    let up = upstream().await;
    let body = chat(false);
    let request = format!(
        "POST {CHAT} HTTP/1.1\r\nhost: x\r\nx-mock-close: 1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(raw(up.addr, &request).await, b"");
    let err = send(up.addr, Method::POST, CHAT, &[("x-mock-close", "1")], &body)
        .await
        .unwrap_err();
    assert!(err.is_incomplete_message() || err.is_closed(), "{err}");
    // The server is still fine for the next request.
    assert_eq!(post(up.addr, CHAT, &[], &body).await.status, StatusCode::OK);
}

#[tokio::test]
async fn invalid_control_values_are_400s_naming_the_header() {
    let up = upstream().await;
    for (name, value) in [
        ("x-mock-status", "200"),
        ("x-mock-chunks", "many"),
        ("x-mock-close", "yes"),
    ] {
        let reply = post(up.addr, CHAT, &[(name, value)], &chat(false)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        let error = &reply.json()["error"];
        assert!(error["message"].as_str().unwrap().contains(name), "{error}");
        assert_eq!(error["param"], name);
    }
}

#[tokio::test]
async fn controls_apply_to_embeddings_too() {
    let up = upstream().await;
    let body = json!({"model":"e","input":"x"}).to_string();
    let reply = post(
        up.addr,
        "/v1/embeddings",
        &[("x-mock-prompt-tokens", "3")],
        &body,
    )
    .await;
    assert_eq!(
        reply.json()["usage"],
        json!({"prompt_tokens":3,"total_tokens":3})
    );
    let reply = post(
        up.addr,
        "/v1/embeddings",
        &[("x-mock-status", "500")],
        &body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
}
