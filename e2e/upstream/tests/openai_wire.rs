//! The OpenAI wire format as a client sees it: bodies compared exactly with
//! the golden fixtures, stream framing, endpoints and their errors.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed assumption is a failed test"
)]

mod common;

use std::time::Duration;

use common::{base64_decode, dechunk, fixture, get, json_fixture, post, raw};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sluice_test_upstream::{Options, Upstream};

const CHAT: &str = "/v1/chat/completions";

async fn upstream() -> Upstream {
    Upstream::start(Options::default()).await.unwrap()
}

fn chat_body(extra: Value) -> String {
    let mut body = json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body.to_string()
}

#[tokio::test]
async fn chat_completion_matches_fixture() {
    let up = upstream().await;
    let reply = post(up.addr, CHAT, &[], &chat_body(json!({}))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("x-upstream-name"), Some("upstream"));
    assert_eq!(reply.body(), json_fixture("chat_completion.json"));
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body().len().to_string().as_str())
    );
}

#[tokio::test]
async fn chat_stream_matches_fixture() {
    let up = upstream().await;
    let reply = post(up.addr, CHAT, &[], &chat_body(json!({"stream":true}))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert_eq!(reply.body_error, None);
    assert_eq!(reply.body(), fixture("chat_completion_stream.sse"));
    // Without include_usage no chunk mentions usage at all.
    assert!(reply.chunks().iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn chat_stream_with_usage_matches_fixture() {
    let up = upstream().await;
    let body = chat_body(json!({"stream":true,"stream_options":{"include_usage":true}}));
    let reply = post(up.addr, CHAT, &[], &body).await;
    assert_eq!(reply.body(), fixture("chat_completion_stream_usage.sse"));

    let chunks = reply.chunks();
    let (last, rest) = chunks.split_last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["total_tokens"], 12);
    assert!(rest
        .iter()
        .all(|c| c["usage"].is_null() && c.get("usage").is_some()));
    assert_eq!(reply.events().last().unwrap(), "data: [DONE]\n\n");
}

#[tokio::test]
async fn chat_stream_event_sequence() {
    let up = upstream().await;
    let reply = post(
        up.addr,
        CHAT,
        &[("x-mock-chunks", "3")],
        &chat_body(json!({"stream":true})),
    )
    .await;
    let chunks = reply.chunks();
    let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert_eq!(
        deltas,
        [
            &json!({"role":"assistant","content":""}),
            &json!({"content":"tok0 "}),
            &json!({"content":"tok1 "}),
            &json!({"content":"tok2 "}),
            &json!({}),
        ]
    );
    let finishes: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .collect();
    assert_eq!(
        finishes,
        [
            &Value::Null,
            &Value::Null,
            &Value::Null,
            &Value::Null,
            &json!("stop")
        ]
    );
    assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]
        && c["created"] == chunks[0]["created"]
        && c["model"] == "gpt-4o-mini"
        && c["object"] == "chat.completion.chunk"));
    assert_eq!(reply.events().len(), 6);
}

#[tokio::test]
async fn stream_events_are_separate_chunks_on_the_wire() {
    let up = upstream().await;
    let body = chat_body(json!({"stream":true,"stream_options":{"include_usage":true}}));
    let request = format!(
        "POST {CHAT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let response = raw(up.addr, &request).await;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let chunks = dechunk(&response[split + 4..]);
    let expected: Vec<Vec<u8>> = fixture("chat_completion_stream_usage.sse")
        .split_inclusive("\n\n")
        .map(|e| e.as_bytes().to_vec())
        .chain([Vec::new()])
        .collect();
    assert_eq!(chunks, expected);
}

#[tokio::test]
async fn events_are_flushed_before_a_chunk_delay() {
    let up = upstream().await;
    let reply = post(
        up.addr,
        CHAT,
        &[("x-mock-chunks", "2"), ("x-mock-chunk-delay-ms", "300")],
        &chat_body(json!({"stream":true})),
    )
    .await;
    assert_eq!(reply.events().len(), 5);
    // The role chunk left before the first delay; each content chunk waited.
    let role_at = reply.frames[0].0;
    let first_content_at = reply
        .frames
        .iter()
        .find(|(_, b)| b.starts_with(b"data: ") && String::from_utf8_lossy(b).contains("tok0"))
        .unwrap()
        .0;
    assert!(first_content_at - role_at >= Duration::from_millis(250));
    assert!(reply.frames.last().unwrap().0 - reply.sent >= Duration::from_millis(600));
}

#[tokio::test]
async fn tool_call_matches_fixtures() {
    let up = upstream().await;
    let tool = [("x-mock-tool-call", "get_weather")];
    let reply = post(up.addr, CHAT, &tool, &chat_body(json!({}))).await;
    assert_eq!(reply.body(), json_fixture("chat_completion_tool_call.json"));

    let up = upstream().await;
    let reply = post(up.addr, CHAT, &tool, &chat_body(json!({"stream":true}))).await;
    assert_eq!(
        reply.body(),
        fixture("chat_completion_tool_call_stream.sse")
    );
}

#[tokio::test]
async fn required_tool_choice_streams_a_call_of_the_first_tool() {
    let up = upstream().await;
    let body = chat_body(json!({
        "stream": true,
        "tool_choice": "required",
        "tools": [
            {"type":"function","function":{"name":"lookup","parameters":{"type":"object"}}},
            {"type":"function","function":{"name":"other"}}
        ]
    }));
    let reply = post(up.addr, CHAT, &[], &body).await;
    let chunks = reply.chunks();
    let call = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(call["index"], 0);
    assert_eq!(call["id"], "call_mock_0");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"], json!({"name":"lookup","arguments":""}));
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, r#"{"q":"mock"}"#);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn legacy_completions_match_fixtures() {
    let up = upstream().await;
    let body = json!({"model":"gpt-4o-mini","prompt":"Say hi"}).to_string();
    let reply = post(up.addr, "/v1/completions", &[], &body).await;
    assert_eq!(reply.body(), json_fixture("completion.json"));

    let up = upstream().await;
    let body = json!({"model":"gpt-4o-mini","prompt":"Say hi","stream":true,
        "stream_options":{"include_usage":true}})
    .to_string();
    let reply = post(up.addr, "/v1/completions", &[], &body).await;
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert_eq!(reply.body(), fixture("completion_stream_usage.sse"));
}

#[tokio::test]
async fn embeddings_as_floats_match_fixture() {
    let up = upstream().await;
    let body = json!({"model":"text-embedding-3-small","input":["hello","world"]}).to_string();
    let reply = post(up.addr, "/v1/embeddings", &[], &body).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body(), json_fixture("embeddings.json"));
    let answer = reply.json();
    for item in answer["data"].as_array().unwrap() {
        let values = item["embedding"].as_array().unwrap();
        assert_eq!(values.len(), 8);
        assert!(values
            .iter()
            .all(|v| (-1.0..1.0).contains(&v.as_f64().unwrap())));
    }
}

#[tokio::test]
async fn embeddings_as_base64_decode_to_the_same_floats() {
    let up = upstream().await;
    let inputs = [
        json!("hello"),
        json!(["hello", "world"]),
        json!([1, 2, 3]),
        json!([[1, 2], [3]]),
    ];
    for input in inputs {
        let floats = post(
            up.addr,
            "/v1/embeddings",
            &[],
            &json!({"model":"e","input":input}).to_string(),
        )
        .await
        .json();
        let b64 = post(
            up.addr,
            "/v1/embeddings",
            &[],
            &json!({"model":"e","input":input,"encoding_format":"base64"}).to_string(),
        )
        .await
        .json();
        assert_eq!(
            floats["data"].as_array().unwrap().len(),
            b64["data"].as_array().unwrap().len()
        );
        for (f, b) in floats["data"]
            .as_array()
            .unwrap()
            .iter()
            .zip(b64["data"].as_array().unwrap())
        {
            assert_eq!(f["index"], b["index"]);
            let bytes = base64_decode(b["embedding"].as_str().unwrap());
            let decoded: Vec<f64> = bytes
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
            let expected: Vec<f64> = f["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(decoded, expected, "input {input}");
        }
        assert_eq!(b64["object"], "list");
        assert_eq!(b64["model"], "e");
        assert_eq!(b64["usage"], json!({"prompt_tokens":7,"total_tokens":7}));
    }
}

#[tokio::test]
async fn models_list_names_the_owner() {
    let up = Upstream::start(Options {
        name: "alpha".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let reply = get(up.addr, "/v1/models").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body(),
        r#"{"object":"list","data":[{"id":"mock-model","object":"model","created":0,"owned_by":"alpha"}]}"#
    );
    assert_eq!(reply.header("x-upstream-name"), Some("alpha"));
}

#[tokio::test]
async fn base_path_prefixes_are_accepted() {
    let up = upstream().await;
    let reply = post(
        up.addr,
        "/openai/v1/chat/completions?api-version=1",
        &[],
        &chat_body(json!({})),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["object"], "chat.completion");
}

#[tokio::test]
async fn unknown_paths_are_openai_404s() {
    let up = upstream().await;
    let reply = get(up.addr, "/v1/nope").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.header("x-upstream-name"), Some("upstream"));
    let error = &reply.json()["error"];
    assert_eq!(error["type"], "invalid_request_error");
    assert!(error["message"].as_str().unwrap().contains("/v1/nope"));
}

#[tokio::test]
async fn malformed_json_is_an_openai_400() {
    let up = upstream().await;
    for path in [CHAT, "/v1/completions", "/v1/embeddings"] {
        let reply = post(up.addr, path, &[], "{not json").await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let body = reply.json();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], Value::Null);
        assert_eq!(body["error"]["code"], Value::Null);
        assert!(body["error"]["message"].as_str().unwrap().len() > 10);
    }
}

#[tokio::test]
async fn wrong_method_is_a_405() {
    let up = upstream().await;
    let reply = common::send(up.addr, Method::GET, CHAT, &[], "")
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("POST"));
    assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn connections_are_kept_alive() {
    let up = upstream().await;
    let body = chat_body(json!({"stream":true}));
    let one = format!(
        "POST {CHAT} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let two = format!(
        "POST {CHAT} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let response = String::from_utf8(raw(up.addr, &format!("{one}{two}")).await).unwrap();
    assert_eq!(response.matches("HTTP/1.1 200 OK").count(), 2);
    assert_eq!(response.matches("data: [DONE]").count(), 2);
}
