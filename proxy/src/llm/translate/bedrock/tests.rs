//! Bedrock translator tests against fixtures written from AWS's Converse
//! and ConverseStream API references (`tests/fixtures/bedrock/`). The
//! binary stream is built from the documented events by
//! [`super::eventstream::encode`]; golden outputs are compared byte for
//! byte (`UPDATE_FIXTURES=1` rewrites them, to be reviewed like code).

use std::path::PathBuf;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;

use super::eventstream::encode;
use super::{request, response};
use crate::llm::translate::{self, Pipe, Plan, Schema};
use crate::llm::Endpoint;

const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bedrock")
        .join(name)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn golden(name: &str, actual: &str) {
    let path = fixture_path(name);
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap();
    assert_eq!(actual, expected, "{name}");
}

/// The binary ConverseStream of a `*.events.json` fixture.
pub fn stream_of(name: &str) -> Vec<u8> {
    let events: Vec<Value> = serde_json::from_slice(&fixture(name)).unwrap();
    let mut out = Vec::new();
    for event in events {
        let payload = serde_json::to_vec(&event["payload"]).unwrap();
        out.extend(encode(
            &[
                (":event-type", event["event"].as_str().unwrap()),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            &payload,
        ));
    }
    out
}

fn pipe(client: Schema, status: StatusCode, stream: bool, include_usage: bool) -> Pipe {
    let endpoint = if client == Schema::Anthropic {
        Endpoint::Messages
    } else {
        Endpoint::ChatCompletions
    };
    let mut pipe = Pipe::for_answer(
        Plan::Translate {
            client,
            backend: Schema::Bedrock,
        },
        endpoint,
        status,
        stream,
        include_usage,
        3,
    )
    .unwrap();
    let mut headers = HeaderMap::new();
    if status == StatusCode::TOO_MANY_REQUESTS {
        headers.insert(
            "x-amzn-errortype",
            HeaderValue::from_static(
                "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
            ),
        );
    }
    pipe.note_upstream(MODEL, &headers);
    pipe
}

/// Runs bytes through a pipe in two pieces split at `split`.
fn run(pipe: &mut Pipe, input: &[u8], split: usize) -> String {
    let (a, b) = input.split_at(split);
    let mut out = Vec::new();
    for piece in [a, b] {
        out.extend_from_slice(&pipe.on_data(Bytes::copy_from_slice(piece), None).unwrap());
    }
    out.extend_from_slice(&pipe.finish());
    String::from_utf8(out).unwrap()
}

/// Chunk ids are random and `created` is the clock: the golden files hold
/// `chatcmpl-ID` and 0.
fn stable_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = ids(text).as_str().to_owned();
    while let Some(at) = rest.find("\"created\":") {
        out.push_str(&rest[..at + 10]);
        out.push('0');
        let after = &rest[at + 10..];
        let end = after.find(|c: char| !c.is_ascii_digit()).unwrap();
        rest = after[end..].to_owned();
    }
    out.push_str(&rest);
    out
}

fn ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\"chatcmpl-") {
        out.push_str(&rest[..at]);
        out.push_str("\"chatcmpl-ID\"");
        let after = &rest[at + 1..];
        let end = after.find('"').unwrap();
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn requests_translate_exactly() {
    let body = request::to_bedrock(&fixture("chat_request.json")).unwrap();
    assert_eq!(json(&body), json(&fixture("chat_request.converse.json")));
    // The translation layer's entry point, and the model stays out of the body.
    let plan = Plan::Translate {
        client: Schema::OpenAI,
        backend: Schema::Bedrock,
    };
    let via_layer = translate::request(
        plan,
        crate::llm::Endpoint::ChatCompletions,
        &fixture("chat_request.json"),
        MODEL,
    )
    .unwrap();
    assert_eq!(json(&via_layer), json(&body));
    assert!(!String::from_utf8_lossy(&body).contains("\"model\""));
}

#[test]
fn tool_choices_and_refusals() {
    let with = |choice: &str| {
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"type":"object"}}}}}}],"tool_choice":{choice}}}"#
        );
        json(&request::to_bedrock(body.as_bytes()).unwrap())
    };
    assert_eq!(
        with("\"auto\"")["toolConfig"]["toolChoice"],
        serde_json::json!({"auto": {}})
    );
    assert_eq!(
        with(r#"{"type":"function","function":{"name":"f"}}"#)["toolConfig"]["toolChoice"],
        serde_json::json!({"tool": {"name": "f"}})
    );
    assert!(with("\"none\"").get("toolConfig").is_none());
    for (body, needle) in [
        (
            r#"{"model":"m","n":2,"messages":[{"role":"user","content":"hi"}]}"#,
            "`n`",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#,
            "does not fetch images by http(s) URL",
        ),
        (
            r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f","arguments":"[1]"}}]}]}"#,
            "not a JSON object",
        ),
        (
            r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#,
            "tool_call_id",
        ),
        (r#"{"model":"m","messages":"#, "not valid JSON"),
    ] {
        let error = request::to_bedrock(body.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(error.contains(needle), "{body}: {error}");
    }
}

#[test]
fn anthropic_clients_go_through_the_pivot() {
    let plan = Plan::Translate {
        client: Schema::Anthropic,
        backend: Schema::Bedrock,
    };
    let body = br#"{"model":"claude","max_tokens":100,"system":"Be brief.","messages":[{"role":"user","content":"hi"}],"stop_sequences":["END"]}"#;
    let converse =
        json(&translate::request(plan, crate::llm::Endpoint::Messages, body, MODEL).unwrap());
    assert_eq!(
        converse,
        serde_json::json!({
            "messages": [{"role": "user", "content": [{"text": "hi"}]}],
            "system": [{"text": "Be brief."}],
            "inferenceConfig": {"maxTokens": 100, "stopSequences": ["END"]}
        })
    );
    assert_eq!(translate::plan(Endpoint::Messages, Schema::Bedrock), plan);
    assert_eq!(
        translate::plan(Endpoint::CountTokens, Schema::Bedrock),
        Plan::Local
    );
    assert_eq!(
        translate::plan(Endpoint::Embeddings, Schema::Bedrock),
        Plan::Translate {
            client: Schema::OpenAI,
            backend: Schema::Bedrock
        }
    );
    assert_eq!(
        translate::plan(Endpoint::Rerank, Schema::Bedrock),
        Plan::Unsupported
    );
}

#[test]
fn whole_answers_translate() {
    let (bytes, usage) = response::to_openai(
        &fixture("converse_tool_use.json"),
        "chatcmpl-test",
        MODEL,
        1_700_000_000,
    )
    .unwrap();
    assert_eq!(
        json(&bytes),
        json(&fixture("converse_tool_use.openai.json"))
    );
    assert_eq!(
        (usage.input, usage.output, usage.cache_creation),
        (1496, 37, 1486)
    );

    // Through the pipe, for an Anthropic client.
    let mut anthropic = pipe(Schema::Anthropic, StatusCode::OK, false, false);
    let out = json(run(&mut anthropic, &fixture("converse_tool_use.json"), 7).as_bytes());
    assert_eq!(out["stop_reason"], "tool_use");
    assert_eq!(
        out["content"][1]["input"],
        serde_json::json!({"city": "Paris"})
    );
    assert_eq!(anthropic.answer_status(), Some(StatusCode::OK));
    assert_eq!(anthropic.usage(0).0.unwrap().input, 1496);

    // A body that is not a Converse answer is a 502, not a panic.
    let mut broken = pipe(Schema::OpenAI, StatusCode::OK, false, false);
    let out = run(&mut broken, b"{\"output\":", 3);
    assert_eq!(broken.answer_status(), Some(StatusCode::BAD_GATEWAY));
    assert!(out.contains("upstream_bad_response"), "{out}");
}

#[test]
fn errors_translate_with_fallback_statuses() {
    let mut openai = pipe(Schema::OpenAI, StatusCode::TOO_MANY_REQUESTS, false, false);
    let out = json(run(&mut openai, &fixture("error_throttling.json"), 5).as_bytes());
    assert_eq!(openai.answer_status(), Some(StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(out["error"]["code"], "ThrottlingException");
    assert_eq!(out["error"]["type"], "rate_limit_error");
    let mut anthropic = pipe(
        Schema::Anthropic,
        StatusCode::TOO_MANY_REQUESTS,
        false,
        false,
    );
    let out = json(run(&mut anthropic, &fixture("error_throttling.json"), 5).as_bytes());
    assert_eq!(out["error"]["type"], "rate_limit_error");
    assert_eq!(
        out["error"]["message"],
        "Too many requests, please wait before trying again."
    );
}

#[test]
fn streams_translate_split_at_every_byte() {
    let input = stream_of("converse_stream_tool.events.json");
    let first = stable_ids(&run(
        &mut pipe(Schema::OpenAI, StatusCode::OK, true, true),
        &input,
        0,
    ));
    golden("converse_stream_tool.openai.sse", &first);
    for split in 1..=input.len() {
        let mut p = pipe(Schema::OpenAI, StatusCode::OK, true, true);
        assert_eq!(
            stable_ids(&run(&mut p, &input, split)),
            first,
            "split {split}"
        );
    }
    let mut p = pipe(Schema::OpenAI, StatusCode::OK, true, true);
    run(&mut p, &input, 100);
    let (usage, estimated) = p.usage(3);
    let usage = usage.unwrap();
    assert!(!estimated);
    assert_eq!(
        (usage.input, usage.output, usage.cached_input),
        (612, 61, 200)
    );

    // Without include_usage the usage chunk is dropped, and still accounted.
    let mut p = pipe(Schema::OpenAI, StatusCode::OK, true, false);
    let out = run(&mut p, &input, 50);
    assert!(!out.contains("\"usage\""), "{out}");
    assert!(out.ends_with("data: [DONE]\n\n"));
    assert_eq!(p.usage(3).0.unwrap().output, 61);

    // An Anthropic client gets Anthropic's event sequence.
    let mut p = pipe(Schema::Anthropic, StatusCode::OK, true, false);
    let out = run(&mut p, &input, 77);
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(out.contains("\"stop_reason\":\"tool_use\""), "{out}");
}

#[test]
fn broken_streams_end_with_an_error_chunk() {
    let input = stream_of("converse_stream_tool.events.json");
    // A flipped byte in the third message's payload: its CRC fails.
    let mut bad = input.clone();
    let next = |at: usize| {
        at + u32::from_be_bytes([input[at], input[at + 1], input[at + 2], input[at + 3]]) as usize
    };
    let second = next(0);
    let fourth = next(next(second));
    bad[fourth - 6] ^= 0x20;
    let out = run(
        &mut pipe(Schema::OpenAI, StatusCode::OK, true, true),
        &bad,
        9,
    );
    assert!(out.contains("Let me check"), "{out}");
    assert!(
        out.contains("bad checksum") && out.contains("upstream_bad_response"),
        "{out}"
    );
    assert!(!out.contains("[DONE]"), "{out}");

    // Cut mid-message, and cut between messages before messageStop.
    for cut in [input.len() - 3, second] {
        let out = run(
            &mut pipe(Schema::OpenAI, StatusCode::OK, true, true),
            &input[..cut],
            1,
        );
        assert!(out.contains("upstream_stream_error"), "{out}");
        assert!(!out.contains("[DONE]"), "{out}");
    }

    // An exception event (ConverseStream's modelStreamErrorException etc.).
    let mut stream = input[..second].to_vec();
    stream.extend(encode(
        &[
            (":exception-type", "throttlingException"),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        br#"{"message":"Too many tokens, please wait before trying again."}"#,
    ));
    let out = run(
        &mut pipe(Schema::OpenAI, StatusCode::OK, true, true),
        &stream,
        30,
    );
    assert!(out.contains("\"code\":\"throttlingException\""), "{out}");
    assert!(out.contains("Too many tokens"), "{out}");

    // Garbage that is no event stream at all.
    let out = run(
        &mut pipe(Schema::OpenAI, StatusCode::OK, true, true),
        b"<html>502 Bad Gateway</html>",
        4,
    );
    assert!(out.contains("upstream_bad_response"), "{out}");
}
