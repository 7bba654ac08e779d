//! Cohere translator tests against fixtures written from Cohere's API
//! reference (`tests/fixtures/cohere/`). Golden outputs (`*.openai.*`,
//! `*.anthropic.sse`) are compared byte for byte, `created` normalized;
//! `UPDATE_FIXTURES=1` rewrites them, to be reviewed like code.

use std::path::PathBuf;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use super::{request, response};
use crate::llm::translate::{Pipe, Plan, Schema};
use crate::llm::Endpoint;
use crate::telemetry::Usage;

const MODEL: &str = "command-a-03-2025";

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cohere")
        .join(name)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap()
}

fn parsed(bytes: &[u8]) -> Value {
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

/// The text with every `"created":N` made `"created":1700000000`, so that
/// a clock tick cannot make a comparison fail.
fn normalized(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\"created\":") {
        let (head, tail) = rest.split_at(at + "\"created\":".len());
        out.push_str(head);
        out.push_str("1700000000");
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

fn pipe(client: Schema, stream: bool, status: StatusCode, include_usage: bool) -> Pipe {
    let endpoint = match client {
        Schema::Anthropic => Endpoint::Messages,
        _ => Endpoint::ChatCompletions,
    };
    let mut pipe = Pipe::for_answer(
        Plan::Translate {
            client,
            backend: Schema::Cohere,
        },
        endpoint,
        status,
        stream,
        include_usage,
        3,
    )
    .unwrap();
    pipe.note_upstream(MODEL, &HeaderMap::new());
    pipe
}

/// Runs a whole body through a pipe, in two pieces split at `split`.
fn run(pipe: &mut Pipe, input: &[u8], split: usize) -> String {
    let (a, b) = input.split_at(split);
    let mut out = Vec::new();
    for piece in [a, b] {
        out.extend_from_slice(&pipe.on_data(Bytes::copy_from_slice(piece), None).unwrap());
    }
    out.extend_from_slice(&pipe.finish());
    String::from_utf8(out).unwrap()
}

#[test]
fn plans_route_chat_and_messages_to_cohere() {
    use crate::llm::translate::{plan, upstream_suffix};
    use sluice_crds::snapshot::Provider;
    assert_eq!(Schema::of_provider(Provider::Cohere), Schema::Cohere);
    assert_eq!(
        plan(Endpoint::ChatCompletions, Schema::Cohere),
        Plan::Translate {
            client: Schema::OpenAI,
            backend: Schema::Cohere
        }
    );
    assert_eq!(
        plan(Endpoint::Messages, Schema::Cohere),
        Plan::Translate {
            client: Schema::Anthropic,
            backend: Schema::Cohere
        }
    );
    assert_eq!(plan(Endpoint::CountTokens, Schema::Cohere), Plan::Local);
    assert_eq!(
        plan(Endpoint::Embeddings, Schema::Cohere),
        Plan::Translate {
            client: Schema::OpenAI,
            backend: Schema::Cohere
        }
    );
    assert_eq!(plan(Endpoint::Responses, Schema::Cohere), Plan::Unsupported);
    assert_eq!(
        upstream_suffix(Endpoint::ChatCompletions, Schema::Cohere),
        "/chat"
    );
    let preset = Provider::Cohere.preset();
    assert_eq!(preset.default_endpoint, Some("https://api.cohere.com"));
    assert_eq!(preset.version_path, "/v2");
    assert_eq!(preset.key_header, "authorization");
}

#[test]
fn openai_request_becomes_cohere_chat() {
    let out = request::to_cohere(&fixture("chat_request.json"), MODEL).unwrap();
    assert_eq!(parsed(&out), parsed(&fixture("chat_request.cohere.json")));
    // The model the gateway picked wins over the client's.
    let out = request::to_cohere(&fixture("chat_request.json"), "command-r7b-12-2024").unwrap();
    assert_eq!(parsed(&out)["model"], "command-r7b-12-2024");
}

#[test]
fn openai_request_edge_cases() {
    let to = |body: Value| request::to_cohere(body.to_string().as_bytes(), "m");
    // Minimal: exact bytes, no OpenAI-only field.
    let out = to(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":false}"#
    );
    // A named tool choice keeps that tool only, and requires it; JSON mode.
    let out = to(json!({
        "model": "m",
        "messages": [{"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                     {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]},
                     {"role": "assistant", "content": "ok", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]}],
        "tools": [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "g"}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    }))
    .unwrap();
    assert_eq!(
        parsed(&out),
        json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "ab"},
                {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]},
                {"role": "assistant", "content": "ok", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
            ],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "REQUIRED",
            "response_format": {"type": "json_object", "json_schema": {"type": "object"}},
            "stream": false
        })
    );
    let out = to(json!({"model": "m", "messages": [], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none", "response_format": {"type": "json_object"}})).unwrap();
    assert_eq!(parsed(&out)["tool_choice"], "NONE");
    assert_eq!(
        parsed(&out)["response_format"],
        json!({"type": "json_object"})
    );
    // Clear 400s.
    for (body, needle) in [
        (json!({"model": "m", "messages": [], "n": 2}), "`n`"),
        (
            json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
            "tool_call_id",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            "(input_audio): Cohere's chat API takes no audio input",
        ),
        (
            json!({"model": "m", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}]}),
            "only text",
        ),
        (
            json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
            "role `wizard`",
        ),
        (
            json!({"model": "m", "messages": [], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "`nope`",
        ),
        (json!({"model": "m"}), "messages"),
    ] {
        let error = to(body.clone()).unwrap_err().to_string();
        assert!(error.contains(needle), "{body}: {error}");
    }
    assert!(request::to_cohere(b"{not json", "m")
        .unwrap_err()
        .to_string()
        .contains("not valid JSON"));
}

#[test]
fn anthropic_request_reaches_cohere_through_the_pivot() {
    let body = json!({
        "model": "claude-x", "max_tokens": 100, "system": "Be brief.", "stream": true,
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"c": "P"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}
        ]
    });
    let plan = Plan::Translate {
        client: Schema::Anthropic,
        backend: Schema::Cohere,
    };
    let out = crate::llm::translate::request(
        plan,
        crate::llm::Endpoint::Messages,
        body.to_string().as_bytes(),
        MODEL,
    )
    .unwrap();
    assert_eq!(
        parsed(&out),
        json!({
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "w", "arguments": "{\"c\":\"P\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}
            ],
            "max_tokens": 100,
            "stream": true
        })
    );
}

#[test]
fn cohere_answers_become_openai_completions() {
    let (out, usage) =
        response::to_openai(&fixture("response_tool.json"), MODEL, 1_700_000_000).unwrap();
    golden(
        "response_tool.openai.json",
        &String::from_utf8(out).unwrap(),
    );
    assert_eq!((usage.input, usage.output), (1402, 54));
    let (out, usage) =
        response::to_openai(&fixture("response_text.json"), MODEL, 1_700_000_000).unwrap();
    let out = parsed(&out);
    assert_eq!(
        out["choices"][0]["message"]["content"],
        "LLMs stand for Large Language Models, which are a type of neural network."
    );
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert_eq!(out["usage"]["total_tokens"], 512);
    assert_eq!((usage.input, usage.output), (496, 16));
    // Billed units when `tokens` is missing, floats read as counts; finish reasons.
    for (reason, expected) in [
        ("MAX_TOKENS", "length"),
        ("STOP_SEQUENCE", "stop"),
        ("COMPLETE", "stop"),
        ("SOMETHING_NEW", "stop"),
    ] {
        let body = json!({"id": "x", "finish_reason": reason, "message": {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "a"}]}, "usage": {"billed_units": {"input_tokens": 3.0, "output_tokens": 2}}});
        let (out, usage) = response::to_openai(body.to_string().as_bytes(), MODEL, 1).unwrap();
        let out = parsed(&out);
        assert_eq!(out["choices"][0]["finish_reason"], expected);
        assert_eq!(out["choices"][0]["message"]["reasoning_content"], "hm");
        assert_eq!((usage.input, usage.output), (3, 2));
    }
    // A failed generation is an error (a 502 for the client).
    let error = response::to_openai(
        br#"{"id":"x","finish_reason":"ERROR","message":{"role":"assistant"}}"#,
        MODEL,
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("ERROR"), "{error}");
    assert!(response::to_openai(b"{\"id\":", MODEL, 1).is_err());
}

#[test]
fn whole_answers_through_the_pipe_for_both_clients() {
    let input = fixture("response_tool.json");
    let mut openai = pipe(Schema::OpenAI, false, StatusCode::OK, false);
    let out = normalized(&run(&mut openai, &input, 10));
    golden("response_tool.openai.json", &out);
    assert_eq!(openai.answer_status(), Some(StatusCode::OK));
    assert_eq!(
        openai.usage(0),
        (
            Some(Usage {
                input: 1402,
                output: 54,
                cached_input: 0
            }),
            false
        )
    );
    let mut anthropic = pipe(Schema::Anthropic, false, StatusCode::OK, false);
    let out = parsed(run(&mut anthropic, &input, 10).as_bytes());
    assert_eq!(out["type"], "message");
    assert_eq!(out["stop_reason"], "tool_use");
    let blocks = out["content"].as_array().unwrap();
    let tool = blocks.iter().find(|b| b["type"] == "tool_use").unwrap();
    assert_eq!(tool["id"], "get_weather_1byjy32y4hvq");
    assert_eq!(tool["input"], json!({"location": "Toronto"}));
    assert_eq!(out["usage"]["input_tokens"], 1402);
    // Unreadable: a 502 in the client's schema.
    let mut broken = pipe(Schema::OpenAI, false, StatusCode::OK, false);
    let out = run(&mut broken, b"{\"id\":\"x\",\"mess", 3);
    assert_eq!(broken.answer_status(), Some(StatusCode::BAD_GATEWAY));
    assert!(out.contains("upstream_bad_response"), "{out}");
}

#[test]
fn cohere_errors_keep_their_status() {
    let (status, out) =
        response::error_to_openai(StatusCode::TOO_MANY_REQUESTS, &fixture("error_429.json"));
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let out = parsed(&out);
    assert!(out["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("You are using a Trial key"));
    assert_eq!(out["error"]["type"], "rate_limit_exceeded");
    let (status, out) =
        response::error_to_openai(StatusCode::SERVICE_UNAVAILABLE, b"<html>down</html>");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(parsed(&out)["error"]["message"], "<html>down</html>");
    assert_eq!(parsed(&out)["error"]["type"], "api_error");
    let (_, out) = response::error_to_openai(StatusCode::BAD_REQUEST, b"");
    assert_eq!(
        parsed(&out)["error"]["message"],
        "the upstream gave no details"
    );
    // Through the pipe, for an Anthropic client.
    let mut anthropic = pipe(
        Schema::Anthropic,
        false,
        StatusCode::TOO_MANY_REQUESTS,
        false,
    );
    let out = parsed(run(&mut anthropic, &fixture("error_429.json"), 5).as_bytes());
    assert_eq!(
        anthropic.answer_status(),
        Some(StatusCode::TOO_MANY_REQUESTS)
    );
    assert_eq!(out["type"], "error");
    assert_eq!(out["error"]["type"], "rate_limit_error");
}

#[test]
fn cohere_stream_becomes_openai_chunks_split_anywhere() {
    for (input, golden_name) in [
        ("stream_text.sse", "stream_text.openai.sse"),
        ("stream_tool.sse", "stream_tool.openai.sse"),
    ] {
        let input = fixture(input);
        let first = {
            let mut pipe = pipe(Schema::OpenAI, true, StatusCode::OK, true);
            normalized(&run(&mut pipe, &input, 0))
        };
        golden(golden_name, &first);
        for split in 1..input.len() {
            let mut pipe = pipe(Schema::OpenAI, true, StatusCode::OK, true);
            assert_eq!(
                normalized(&run(&mut pipe, &input, split)),
                first,
                "split at {split}"
            );
        }
    }
}

#[test]
fn cohere_stream_usage_reaches_accounting_and_is_hidden_unless_asked() {
    let input = fixture("stream_text.sse");
    let mut asked = pipe(Schema::OpenAI, true, StatusCode::OK, true);
    let out = run(&mut asked, &input, 0);
    assert!(
        out.contains(r#""usage":{"prompt_tokens":71,"completion_tokens":9,"total_tokens":80}"#),
        "{out}"
    );
    assert!(out.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        asked.usage(0),
        (
            Some(Usage {
                input: 71,
                output: 9,
                cached_input: 0
            }),
            false
        )
    );
    let mut hidden = pipe(Schema::OpenAI, true, StatusCode::OK, false);
    let out = run(&mut hidden, &input, 0);
    assert!(!out.contains("usage"), "{out}");
    assert_eq!(hidden.usage(0).0.unwrap().output, 9);
}

#[test]
fn cohere_stream_for_an_anthropic_client_split_anywhere() {
    let input = fixture("stream_tool.sse");
    let first = {
        let mut pipe = pipe(Schema::Anthropic, true, StatusCode::OK, false);
        run(&mut pipe, &input, 0)
    };
    golden("stream_tool.anthropic.sse", &first);
    for split in 1..input.len() {
        let mut pipe = pipe(Schema::Anthropic, true, StatusCode::OK, false);
        assert_eq!(run(&mut pipe, &input, split), first, "split at {split}");
    }
}

#[test]
fn a_cut_or_failing_cohere_stream_ends_with_an_error_chunk() {
    let input = String::from_utf8(fixture("stream_text.sse")).unwrap();
    // Cut before message-end.
    let cut = &input[..input.find("event: message-end").unwrap()];
    let mut pipe1 = pipe(Schema::OpenAI, true, StatusCode::OK, false);
    let out = run(&mut pipe1, cut.as_bytes(), 0);
    let last = out.trim_end().rsplit("\n\n").next().unwrap();
    assert!(
        last.starts_with("data: {\"error\"") && last.contains("upstream_stream_error"),
        "{out}"
    );
    assert!(out.contains("A large"), "{out}");
    assert!(!out.contains("[DONE]"));
    // A failed generation.
    let failing = "event: message-start\ndata: {\"id\":\"x\",\"type\":\"message-start\"}\n\nevent: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"ERROR\",\"error\":\"internal failure\"}}\n\n";
    let mut pipe2 = pipe(Schema::OpenAI, true, StatusCode::OK, false);
    let out = run(&mut pipe2, failing.as_bytes(), 0);
    assert!(out.contains("internal failure"), "{out}");
    assert!(!out.contains("[DONE]"));
    // Not JSON; arguments of no call.
    for bad in [
        "data: {\"type\":\"content-de\n\n",
        "data: {\"type\":\"tool-call-delta\",\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"{\"}}}}}\n\n",
        "data: {\"type\":\"content-delta\",\"delta\":{\"message\":{\"content\":[1]}}}\n\n",
    ] {
        let mut pipe3 = pipe(Schema::OpenAI, true, StatusCode::OK, false);
        let out = run(&mut pipe3, bad.as_bytes(), 0);
        assert!(out.contains("upstream_bad_response"), "{bad}: {out}");
    }
    // For an Anthropic client: an error event.
    let mut pipe4 = pipe(Schema::Anthropic, true, StatusCode::OK, false);
    let out = run(&mut pipe4, cut.as_bytes(), 3);
    assert!(
        out.ends_with("\n\n") && out.contains("event: error"),
        "{out}"
    );
}

#[test]
fn never_panics_on_mangled_input() {
    let inputs = [
        fixture("stream_text.sse"),
        fixture("stream_tool.sse"),
        fixture("response_tool.json"),
        fixture("chat_request.json"),
    ];
    for input in &inputs {
        for cut in (0..input.len()).step_by(7) {
            let piece = &input[..cut];
            let _ = request::to_cohere(piece, "m");
            let _ = response::to_openai(piece, "m", 1);
            let _ = response::error_to_openai(StatusCode::BAD_REQUEST, piece);
            for client in [Schema::OpenAI, Schema::Anthropic] {
                for stream in [true, false] {
                    let mut p = pipe(client, stream, StatusCode::OK, true);
                    let _ = run(&mut p, piece, piece.len() / 2);
                }
            }
        }
    }
}
