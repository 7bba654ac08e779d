//! Gemini translator tests against fixtures written from Google's API
//! reference (`tests/fixtures/gemini/`). Golden outputs (`*.openai.sse`,
//! `*.anthropic.sse`) are compared byte for byte; `UPDATE_FIXTURES=1`
//! rewrites them, to be reviewed like code.

use std::path::PathBuf;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};

use super::{request, response};
use crate::llm::translate::{Pipe, Plan, Schema};
use crate::llm::Endpoint;
use crate::telemetry::Usage;

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gemini")
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

fn pipe(client: Schema, stream: bool, status: StatusCode, include_usage: bool) -> Pipe {
    let endpoint = match client {
        Schema::Anthropic => Endpoint::Messages,
        _ => Endpoint::ChatCompletions,
    };
    Pipe::for_answer(
        Plan::Translate {
            client,
            backend: Schema::Gemini,
        },
        endpoint,
        status,
        stream,
        include_usage,
        3,
    )
    .unwrap()
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
fn plans_route_chat_and_messages_to_gemini() {
    use crate::llm::translate::{plan, upstream_suffix};
    use sluice_crds::snapshot::Provider;
    assert_eq!(Schema::of_provider(Provider::Gemini), Schema::Gemini);
    assert_eq!(Schema::of_provider(Provider::VertexAI), Schema::Gemini);
    assert_eq!(
        plan(Endpoint::ChatCompletions, Schema::Gemini),
        Plan::Translate {
            client: Schema::OpenAI,
            backend: Schema::Gemini
        }
    );
    assert_eq!(
        plan(Endpoint::Messages, Schema::Gemini),
        Plan::Translate {
            client: Schema::Anthropic,
            backend: Schema::Gemini
        }
    );
    assert_eq!(plan(Endpoint::CountTokens, Schema::Gemini), Plan::Local);
    assert_eq!(
        plan(Endpoint::Embeddings, Schema::Gemini),
        Plan::Translate {
            client: Schema::OpenAI,
            backend: Schema::Gemini
        }
    );
    assert_eq!(plan(Endpoint::Responses, Schema::Gemini), Plan::Unsupported);
    assert_eq!(
        upstream_suffix(Endpoint::ChatCompletions, Schema::Gemini),
        ":generateContent"
    );
}

#[test]
fn openai_request_becomes_generate_content() {
    let out = request::to_gemini(&fixture("chat_request.json")).unwrap();
    assert_eq!(parsed(&out), parsed(&fixture("chat_request.gemini.json")));
}

#[test]
fn openai_request_edge_cases() {
    let to = |body: Value| request::to_gemini(body.to_string().as_bytes());
    // Minimal: no generationConfig, no tools.
    let out = to(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).unwrap();
    assert_eq!(
        parsed(&out),
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    );
    // A named tool choice allows that function only; json_schema carries a clean schema.
    let out = to(json!({
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "again"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": true, "schema": {"type": "object", "properties": {"n": {"type": "number"}}, "additionalProperties": false}}}
    }))
    .unwrap();
    let out = parsed(&out);
    assert_eq!(
        out["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}})
    );
    assert_eq!(out["contents"][1]["role"], "model");
    assert_eq!(
        out["generationConfig"],
        json!({"responseMimeType": "application/json", "responseSchema": {"type": "object", "properties": {"n": {"type": "number"}}}})
    );
    // Clear 400s.
    for (body, needle) in [
        (json!({"model": "m", "messages": [], "n": 2}), "`n`"),
        (
            json!({"model": "m", "messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}),
            "answers no earlier tool call",
        ),
        (
            json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
            "tool_call_id",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            "(input_audio): the audio format `` is not one of wav, mp3",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
            "http(s) URL",
        ),
        (
            json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
            "not a JSON object",
        ),
        (
            json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
            "role `wizard`",
        ),
        (
            json!({"model": "m", "messages": [], "tools": [{"type": "function", "function": {"name": "f", "parameters": [1]}}]}),
            "tools[0]",
        ),
    ] {
        let error = to(body.clone()).unwrap_err().to_string();
        assert!(error.contains(needle), "{body}: {error}");
    }
    assert!(request::to_gemini(b"{not json")
        .unwrap_err()
        .to_string()
        .contains("not valid JSON"));
}

#[test]
fn anthropic_request_reaches_gemini_through_the_pivot() {
    let body = json!({
        "model": "claude-x", "max_tokens": 100, "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"c": "P"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}
        ]
    });
    let plan = Plan::Translate {
        client: Schema::Anthropic,
        backend: Schema::Gemini,
    };
    let out = crate::llm::translate::request(
        plan,
        crate::llm::Endpoint::Messages,
        body.to_string().as_bytes(),
        "gemini-x",
    )
    .unwrap();
    assert_eq!(
        parsed(&out),
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "weather?"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "w", "args": {"c": "P"}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "w", "response": {"content": "sunny"}}}]}
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"maxOutputTokens": 100}
        })
    );
}

#[test]
fn gemini_answer_becomes_openai_completion() {
    let (out, usage) = response::to_openai(&fixture("response_tool.json"), 1_700_000_000).unwrap();
    assert_eq!(parsed(&out), parsed(&fixture("response_tool.openai.json")));
    assert_eq!(
        (
            usage.input,
            usage.output,
            usage.cached_input,
            usage.reasoning
        ),
        (120, 50, 64, 32)
    );
    // A blocked prompt has no candidates.
    let (out, _) = response::to_openai(
        br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":5}}"#,
        1,
    )
    .unwrap();
    let out = parsed(&out);
    assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(out["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(out["id"], "gemini-1");
    // Finish reasons.
    for (reason, expected) in [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("OTHER", "stop"),
    ] {
        let body = format!(
            r#"{{"candidates":[{{"content":{{"parts":[{{"text":"x"}}]}},"finishReason":"{reason}"}}]}}"#
        );
        let (out, _) = response::to_openai(body.as_bytes(), 1).unwrap();
        assert_eq!(
            parsed(&out)["choices"][0]["finish_reason"],
            expected,
            "{reason}"
        );
    }
}

#[test]
fn gemini_answer_for_an_anthropic_client() {
    let mut pipe = pipe(Schema::Anthropic, false, StatusCode::OK, false);
    assert!(pipe.is_whole());
    let out = run(&mut pipe, &fixture("response_tool.json"), 10);
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["type"], "message");
    assert_eq!(out["stop_reason"], "tool_use");
    assert_eq!(
        out["content"][0],
        json!({"type": "text", "text": "Let me look that up. "})
    );
    assert_eq!(out["content"][1]["type"], "tool_use");
    assert_eq!(out["content"][1]["input"], json!({"city": "Paris"}));
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 56, "output_tokens": 50, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 64})
    );
    assert_eq!(pipe.usage(0).0.unwrap().cached_input, 64);
}

#[test]
fn google_errors_keep_their_status_in_openai_shape() {
    for client in [Schema::OpenAI, Schema::Anthropic] {
        let mut pipe = pipe(client, false, StatusCode::TOO_MANY_REQUESTS, false);
        let out = run(&mut pipe, &fixture("error_429.json"), 7);
        assert_eq!(pipe.answer_status(), Some(StatusCode::TOO_MANY_REQUESTS));
        let out: Value = serde_json::from_str(&out).unwrap();
        match client {
            Schema::OpenAI => assert_eq!(
                out,
                json!({"error": {
                    "message": "You exceeded your current quota, please check your plan and billing details.",
                    "type": "rate_limit_exceeded", "param": null, "code": "RESOURCE_EXHAUSTED"}})
            ),
            _ => {
                assert_eq!(out["type"], "error");
                assert_eq!(out["error"]["type"], "rate_limit_error");
            }
        }
    }
    // The array form, and bodies that are not Google's.
    let (status, out) = response::error_to_openai(
        StatusCode::SERVICE_UNAVAILABLE,
        br#"[{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}]"#,
    );
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(parsed(&out)["error"]["code"], "UNAVAILABLE");
    let (_, out) = response::error_to_openai(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
    assert_eq!(parsed(&out)["error"]["message"], "<html>bad gateway</html>");
    let (_, out) = response::error_to_openai(StatusCode::BAD_GATEWAY, b"");
    assert_eq!(
        parsed(&out)["error"]["message"],
        "the upstream gave no details"
    );
}

#[test]
fn gemini_stream_becomes_openai_chunks_split_anywhere() {
    for (input, golden_name) in [
        ("stream_text.sse", "stream_text.openai.sse"),
        ("stream_tool.sse", "stream_tool.openai.sse"),
    ] {
        let input = fixture(input);
        let first = {
            let mut pipe = pipe(Schema::OpenAI, true, StatusCode::OK, true);
            run(&mut pipe, &input, 0)
        };
        let created = crate::llm::translate::now_s().to_string();
        golden(golden_name, &first.replace(&created, "1700000000"));
        for split in 1..input.len() {
            let mut pipe = pipe(Schema::OpenAI, true, StatusCode::OK, true);
            // The clock may tick a second during the loop.
            assert_eq!(
                without_created(&run(&mut pipe, &input, split)),
                without_created(&first),
                "split at {split}"
            );
        }
    }
}

/// The text with every `"created":N` made `"created":0`.
fn without_created(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\"created\":") {
        let (head, tail) = rest.split_at(at + "\"created\":".len());
        out.push_str(head);
        out.push('0');
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

#[test]
fn gemini_stream_usage_reaches_accounting_and_is_hidden_unless_asked() {
    let input = fixture("stream_text.sse");
    let mut asked = pipe(Schema::OpenAI, true, StatusCode::OK, true);
    let out = run(&mut asked, &input, 0);
    assert!(
        out.contains(r#""usage":{"prompt_tokens":9,"completion_tokens":7"#),
        "{out}"
    );
    assert!(out.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        asked.usage(0),
        (
            Some(Usage {
                input: 9,
                output: 7,
                cached_input: 4
            }),
            false
        )
    );
    let mut hidden = pipe(Schema::OpenAI, true, StatusCode::OK, false);
    let out = run(&mut hidden, &input, 0);
    assert!(!out.contains("usage"), "{out}");
    assert_eq!(hidden.usage(0).0.unwrap().output, 7);
}

#[test]
fn gemini_stream_for_an_anthropic_client_split_anywhere() {
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
fn a_cut_or_failing_gemini_stream_ends_with_an_error_chunk() {
    let input = String::from_utf8(fixture("stream_text.sse")).unwrap();
    // Cut before the finishReason event.
    let cut = &input[..input.find("MAX_TOKENS").unwrap() - 80];
    let mut pipe1 = pipe(Schema::OpenAI, true, StatusCode::OK, false);
    let out = run(&mut pipe1, cut.as_bytes(), 0);
    let last = out.trim_end().rsplit("\n\n").next().unwrap();
    assert!(
        last.starts_with("data: {\"error\"") && last.contains("upstream_stream_error"),
        "{out}"
    );
    assert!(!out.contains("[DONE]"));
    // An error event mid-stream.
    let failing = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\r\n\r\ndata: {\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}\r\n\r\n";
    let mut pipe2 = pipe(Schema::OpenAI, true, StatusCode::OK, false);
    let out = run(&mut pipe2, failing.as_bytes(), 0);
    assert!(out.contains("The model is overloaded."), "{out}");
    assert!(out.contains("\"code\":\"UNAVAILABLE\""), "{out}");
    // Not JSON.
    let mut pipe3 = pipe(Schema::OpenAI, true, StatusCode::OK, false);
    let out = run(&mut pipe3, b"data: {\"candi\r\n\r\n", 0);
    assert!(out.contains("upstream_bad_response"), "{out}");
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
            let _ = request::to_gemini(piece);
            let _ = response::to_openai(piece, 1);
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
