//! Translator tests against fixtures written from the providers' API
//! references (`tests/fixtures/anthropic/`). Golden outputs (`*.sse` made
//! by a translator) are compared byte for byte; `UPDATE_FIXTURES=1`
//! rewrites them, to be reviewed like code.

use std::path::PathBuf;

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;

use super::anthropic::{request, response, stream};
use super::*;

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/anthropic")
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

/// Runs a whole stream through a pipe, in pieces split at `split`.
fn run_pipe(pipe: &mut Pipe, input: &[u8], split: usize) -> String {
    let (a, b) = input.split_at(split);
    let mut out = Vec::new();
    for piece in [a, b] {
        out.extend_from_slice(&pipe.on_data(Bytes::copy_from_slice(piece), None).unwrap());
    }
    out.extend_from_slice(&pipe.finish());
    String::from_utf8(out).unwrap()
}

fn to_openai_pipe(include_usage: bool) -> Pipe {
    let mut pipe = Pipe::for_answer(
        Plan::Translate {
            client: Schema::OpenAI,
            backend: Schema::Anthropic,
        },
        Endpoint::ChatCompletions,
        StatusCode::OK,
        true,
        include_usage,
        3,
    )
    .unwrap();
    if let PipeKind::StreamToOpenAI { translator, .. } = &mut pipe.kind {
        *translator = stream::ToOpenAI::new(1_700_000_000);
    }
    pipe
}

fn to_anthropic_pipe() -> Pipe {
    Pipe::for_answer(
        Plan::Translate {
            client: Schema::Anthropic,
            backend: Schema::OpenAI,
        },
        Endpoint::Messages,
        StatusCode::OK,
        true,
        false,
        77,
    )
    .unwrap()
}

#[test]
fn plans_follow_client_and_backend_schemas() {
    use Endpoint::*;
    assert_eq!(plan(ChatCompletions, Schema::OpenAI), Plan::Passthrough);
    assert_eq!(plan(Embeddings, Schema::OpenAI), Plan::Passthrough);
    assert_eq!(plan(Messages, Schema::Anthropic), Plan::Passthrough);
    assert_eq!(plan(CountTokens, Schema::Anthropic), Plan::Passthrough);
    assert_eq!(plan(CountTokens, Schema::OpenAI), Plan::Local);
    assert_eq!(plan(Embeddings, Schema::Anthropic), Plan::Unsupported);
    for backend in [
        Schema::Anthropic,
        Schema::Gemini,
        Schema::Bedrock,
        Schema::Cohere,
    ] {
        // Text completions go as chat to chat-only backends.
        assert_eq!(
            plan(Completions, backend),
            Plan::Translate {
                client: Schema::OpenAI,
                backend
            }
        );
    }
    assert_eq!(plan(Completions, Schema::OpenAI), Plan::Passthrough);
    assert_eq!(
        plan(ChatCompletions, Schema::Anthropic),
        Plan::Translate {
            client: Schema::OpenAI,
            backend: Schema::Anthropic
        }
    );
    assert_eq!(
        upstream_suffix(ChatCompletions, Schema::Anthropic),
        "/messages"
    );
    assert_eq!(
        upstream_suffix(Messages, Schema::OpenAI),
        "/chat/completions"
    );
    assert_eq!(
        upstream_suffix(CountTokens, Schema::Anthropic),
        "/messages/count_tokens"
    );
    assert_eq!(upstream_suffix(Embeddings, Schema::OpenAI), "/embeddings");
    // The hot path: an OpenAI answer to an OpenAI client gets no pipe.
    assert!(Pipe::for_answer(
        Plan::Passthrough,
        ChatCompletions,
        StatusCode::OK,
        true,
        false,
        1
    )
    .is_none());
}

#[test]
fn openai_request_becomes_anthropic_messages() {
    let out = request::to_anthropic(&fixture("chat_request.json"), "claude-sonnet-4-5").unwrap();
    assert_eq!(json(&out), json(&fixture("chat_request.anthropic.json")));
}

#[test]
fn openai_request_edge_cases() {
    // No max_tokens: the default; the override model wins; a lone user turn.
    let out = request::to_anthropic(
        br#"{"model":"x","messages":[{"role":"user","content":"hi"}],"max_tokens":7,"tool_choice":{"type":"function","function":{"name":"f"}},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}"#,
        "claude-haiku-4-5",
    )
    .unwrap();
    assert_eq!(
        json(&out),
        serde_json::json!({"model":"claude-haiku-4-5","max_tokens":7,
            "messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
            "tools":[{"name":"f","input_schema":{"type":"object"}}],
            "tool_choice":{"type":"tool","name":"f"}})
    );
    for (body, needle) in [
        (
            r#"{"model":"x","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}"#,
            "(input_audio): Anthropic backends take no audio input",
        ),
        (
            r#"{"model":"x","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://x"}}]}]}"#,
            "(image_url): the URL must be an http(s) URL",
        ),
        (
            r#"{"model":"x","messages":[{"role":"tool","content":"r"}]}"#,
            "needs `tool_call_id`",
        ),
        (
            r#"{"model":"x","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}"#,
            "not a JSON object",
        ),
        (r#"{"model":"x","n":2,"messages":[]}"#, "`n` greater than 1"),
        (
            r#"{"model":"x","messages":[{"role":"wizard","content":"r"}]}"#,
            "role `wizard`",
        ),
        (r#"{"model":"x","messages":"#, "not valid JSON"),
        (r#"{"model":"x"}"#, "messages"),
    ] {
        let error = request::to_anthropic(body.as_bytes(), "m").unwrap_err();
        assert!(
            matches!(&error, TranslateError::Request(m) if m.contains(needle)),
            "{body}: {error}"
        );
    }
}

#[test]
fn anthropic_request_becomes_openai_chat() {
    let out = request::to_openai(&fixture("messages_request.json"), "gpt-4o").unwrap();
    assert_eq!(json(&out), json(&fixture("messages_request.openai.json")));
}

#[test]
fn anthropic_request_edge_cases() {
    let out = request::to_openai(
        br#"{"model":"claude","max_tokens":5,"system":"be brief","messages":[{"role":"user","content":"hi"}]}"#,
        "gpt-4o-mini",
    )
    .unwrap();
    assert_eq!(
        json(&out),
        serde_json::json!({"model":"gpt-4o-mini","max_tokens":5,"messages":[
            {"role":"system","content":"be brief"},{"role":"user","content":"hi"}]})
    );
    for (body, needle) in [
        (
            r#"{"model":"x","max_tokens":1,"messages":[{"role":"user","content":[{"type":"document","source":{}}]}]}"#,
            "(document): a document needs a base64 PDF source",
        ),
        (
            r#"{"model":"x","max_tokens":1,"messages":[],"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#,
            "server tool",
        ),
        (
            r#"{"model":"x","max_tokens":1,"messages":[{"role":"system","content":"hi"}]}"#,
            "must be `user` or `assistant`",
        ),
        (
            r#"{"model":"x","max_tokens":1,"messages":[{"role":"user","content":42}]}"#,
            "messages[0].content",
        ),
        (
            r#"{"model":"x","messages":[{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"f"}}]}]}"#,
            "base64 or url source",
        ),
    ] {
        let error = request::to_openai(body.as_bytes(), "m").unwrap_err();
        assert!(
            matches!(&error, TranslateError::Request(m) if m.contains(needle)),
            "{body}: {error}"
        );
    }
}

#[test]
fn anthropic_message_becomes_openai_completion() {
    let (out, usage) =
        response::to_openai(&fixture("message_tool_use.json"), 1_700_000_000).unwrap();
    assert_eq!(json(&out), json(&fixture("message_tool_use.openai.json")));
    assert_eq!(
        usage,
        TokenUsage {
            input: 1992,
            output: 91,
            cached_input: 1500,
            cache_creation: 20,
            reasoning: 0
        }
    );
}

#[test]
fn openai_completion_becomes_anthropic_message() {
    let (out, usage) = response::to_anthropic(&fixture("chat_completion_tool.json")).unwrap();
    assert_eq!(
        json(&out),
        json(&fixture("chat_completion_tool.anthropic.json"))
    );
    assert_eq!(
        (usage.input, usage.output, usage.cached_input),
        (1117, 46, 1024)
    );
    assert!(matches!(
        response::to_anthropic(br#"{"id":"x","choices":[]}"#),
        Err(TranslateError::Response(_))
    ));
    assert!(matches!(
        response::to_openai(b"<html>bad gateway</html>", 0),
        Err(TranslateError::Response(_))
    ));
}

#[test]
fn errors_change_shape_and_overloaded_is_503() {
    let (status, body) = response::error_to_openai(
        StatusCode::from_u16(529).unwrap(),
        &fixture("error_overloaded.json"),
    );
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        json(&body),
        serde_json::json!({"error":{"message":"Overloaded","type":"overloaded_error","param":null,"code":"overloaded_error"}})
    );
    let (status, body) = response::error_to_openai(StatusCode::TOO_MANY_REQUESTS, b"slow down");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(json(&body)["error"]["type"], "rate_limit_error");
    assert_eq!(json(&body)["error"]["message"], "slow down");

    let body = response::error_to_anthropic(
        StatusCode::TOO_MANY_REQUESTS,
        br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
    );
    assert_eq!(
        json(&body),
        serde_json::json!({"type":"error","error":{"type":"rate_limit_error","message":"Rate limit reached"}})
    );
    let body = response::error_to_anthropic(StatusCode::BAD_GATEWAY, b"");
    assert_eq!(json(&body)["error"]["type"], "api_error");
}

#[test]
fn anthropic_stream_becomes_openai_chunks_split_anywhere() {
    for (input, expected) in [
        ("stream_tool_use.sse", "stream_tool_use.openai.sse"),
        ("stream_text.sse", "stream_text.openai.sse"),
        ("stream_overloaded.sse", "stream_overloaded.openai.sse"),
    ] {
        let input = fixture(input);
        let whole = run_pipe(&mut to_openai_pipe(true), &input, 0);
        golden(expected, &whole);
        for split in 1..input.len() {
            assert_eq!(
                run_pipe(&mut to_openai_pipe(true), &input, split),
                whole,
                "split at {split}"
            );
        }
    }
}

#[test]
fn anthropic_stream_usage_reaches_accounting() {
    let mut pipe = to_openai_pipe(false);
    let out = run_pipe(&mut pipe, &fixture("stream_text.sse"), 0);
    assert!(
        !out.contains("usage"),
        "the client did not ask for usage: {out}"
    );
    assert!(out.ends_with("data: [DONE]\n\n"));
    // 25 fresh + 10 cache reads in, 15 out.
    assert_eq!(
        pipe.usage(3),
        (
            Some(Usage {
                input: 35,
                output: 15,
                cached_input: 10,
            }),
            false
        )
    );
}

#[test]
fn a_cut_anthropic_stream_ends_with_an_error_chunk() {
    let input = fixture("stream_text.sse");
    let text = String::from_utf8(input).unwrap();
    let cut = &text[..text.find("event: message_delta").unwrap()];
    let mut pipe = to_openai_pipe(true);
    let out = run_pipe(&mut pipe, cut.as_bytes(), 0);
    let last = out.trim_end().lines().last().unwrap();
    assert!(last.contains("\"code\":\"upstream_stream_error\""), "{out}");
    assert!(!out.contains("[DONE]"));

    let mut pipe = to_openai_pipe(true);
    let out = run_pipe(&mut pipe, b"event: message_start\ndata: {not json\n\n", 0);
    assert!(out.contains("upstream_bad_response"), "{out}");
}

#[test]
fn openai_stream_becomes_anthropic_events_split_anywhere() {
    let input = fixture("chat_stream_tool.sse");
    let whole = run_pipe(&mut to_anthropic_pipe(), &input, 0);
    golden("chat_stream_tool.anthropic.sse", &whole);
    for split in 1..input.len() {
        assert_eq!(
            run_pipe(&mut to_anthropic_pipe(), &input, split),
            whole,
            "split at {split}"
        );
    }
    let mut pipe = to_anthropic_pipe();
    run_pipe(&mut pipe, &input, 0);
    assert_eq!(
        pipe.usage(0),
        (
            Some(Usage {
                input: 82,
                output: 17,
                cached_input: 64,
            }),
            false
        )
    );
}

#[test]
fn a_cut_openai_stream_ends_with_an_anthropic_error_event() {
    let input = String::from_utf8(fixture("chat_stream_tool.sse")).unwrap();
    let cut = &input[..input.find("\"finish_reason\":\"tool_calls\"").unwrap()];
    let cut = &cut[..cut.rfind("data:").unwrap()];
    let out = run_pipe(&mut to_anthropic_pipe(), cut.as_bytes(), 0);
    assert!(
        out.ends_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"the upstream stream ended before it finished\"}}\n\n"),
        "{out}"
    );
    assert!(!out.contains("message_stop"));

    let out = run_pipe(
        &mut to_anthropic_pipe(),
        b"data: {\"error\":{\"message\":\"boom\"}}\n\n",
        0,
    );
    assert!(out.contains("\"message\":\"boom\""), "{out}");
    let out = run_pipe(&mut to_anthropic_pipe(), b"data: <html>\n\n", 0);
    assert!(out.contains("not valid JSON"), "{out}");
}

#[test]
fn anthropic_passthrough_is_untouched_and_read_for_usage() {
    let input = fixture("stream_tool_use.sse");
    for split in [0, 1, 100, input.len() / 2] {
        let mut pipe = Pipe::for_answer(
            Plan::Passthrough,
            Endpoint::Messages,
            StatusCode::OK,
            true,
            false,
            1,
        )
        .unwrap();
        let out = run_pipe(&mut pipe, &input, split);
        assert_eq!(out.as_bytes(), input.as_slice());
        assert_eq!(
            pipe.usage(1),
            (
                Some(Usage {
                    input: 472,
                    output: 89,
                    cached_input: 0,
                }),
                false
            )
        );
    }
    let mut pipe = Pipe::for_answer(
        Plan::Passthrough,
        Endpoint::Messages,
        StatusCode::OK,
        false,
        false,
        1,
    )
    .unwrap();
    let body = fixture("message_tool_use.json");
    let out = run_pipe(&mut pipe, &body, 10);
    assert_eq!(out.as_bytes(), body.as_slice());
    assert_eq!(
        pipe.usage(1),
        (
            Some(Usage {
                input: 1992,
                output: 91,
                cached_input: 1500,
            }),
            false
        )
    );
}

#[test]
fn a_budget_cuts_a_translated_stream_at_a_content_event() {
    let input = fixture("stream_tool_use.sse");
    let mut pipe = to_openai_pipe(false);
    let mut allow = |n: u64| n <= 2;
    let out = pipe
        .on_data(Bytes::from(input), Some(&mut allow))
        .unwrap_err();
    let text = String::from_utf8(out.to_vec()).unwrap();
    assert!(
        text.contains("Checking.") && !text.contains("Par"),
        "{text}"
    );
    let error =
        String::from_utf8(pipe.fail("budget_exceeded", "budget b/l reached").to_vec()).unwrap();
    assert!(error.contains("insufficient_quota"), "{error}");
}

#[test]
fn whole_bodies_are_translated_at_the_end_or_fail_as_502() {
    let mut pipe = Pipe::for_answer(
        Plan::Translate {
            client: Schema::OpenAI,
            backend: Schema::Anthropic,
        },
        Endpoint::ChatCompletions,
        StatusCode::from_u16(529).unwrap(),
        false,
        false,
        1,
    )
    .unwrap();
    assert!(pipe.is_whole());
    let out = run_pipe(&mut pipe, &fixture("error_overloaded.json"), 5);
    assert_eq!(json(out.as_bytes())["error"]["type"], "overloaded_error");
    assert_eq!(pipe.answer_status(), Some(StatusCode::SERVICE_UNAVAILABLE));

    let mut pipe = Pipe::for_answer(
        Plan::Translate {
            client: Schema::Anthropic,
            backend: Schema::OpenAI,
        },
        Endpoint::Messages,
        StatusCode::OK,
        false,
        false,
        1,
    )
    .unwrap();
    let out = run_pipe(&mut pipe, b"{\"choices\": [", 3);
    assert_eq!(pipe.answer_status(), Some(StatusCode::BAD_GATEWAY));
    assert_eq!(json(out.as_bytes())["type"], "error");
    assert_eq!(json(out.as_bytes())["error"]["type"], "api_error");
}

#[test]
fn never_panics_on_mangled_input() {
    let inputs = [
        fixture("stream_tool_use.sse"),
        fixture("chat_stream_tool.sse"),
        fixture("chat_request.json"),
        fixture("messages_request.json"),
        fixture("message_tool_use.json"),
        fixture("chat_completion_tool.json"),
    ];
    let mut rng = fastrand::Rng::with_seed(5);
    for _ in 0..3_000 {
        let mut body = inputs[rng.usize(..inputs.len())].clone();
        for _ in 0..rng.usize(1..4) {
            if body.is_empty() {
                break;
            }
            match rng.u8(0..3) {
                0 => {
                    let at = rng.usize(..body.len());
                    body[at] = rng.u8(..);
                }
                1 => body.truncate(rng.usize(..body.len())),
                _ => {
                    let at = rng.usize(..=body.len());
                    let junk: &[u8] = b"{}[]\",:\n\\";
                    body.insert(at, junk[rng.usize(..junk.len())]);
                }
            }
        }
        let _ = request::to_anthropic(&body, "m");
        let _ = request::to_openai(&body, "m");
        let _ = response::to_openai(&body, 0);
        let _ = response::to_anthropic(&body);
        let split = rng.usize(..=body.len());
        let _ = run_pipe(&mut to_openai_pipe(rng.bool()), &body, split);
        let _ = run_pipe(&mut to_anthropic_pipe(), &body, split);
    }
}
