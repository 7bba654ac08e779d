//! Cohere's v2 Chat API: `POST /v2/chat` with `Authorization: Bearer KEY`.
//! It checks what Cohere checks before answering (known top-level fields
//! only, so OpenAI-only ones such as `top_p`, `stop`, `stream_options` or
//! `max_completion_tokens` are refused; roles `system`/`user`/`assistant`/
//! `tool`; a tool message names its call) and answers in Cohere's shapes:
//! `{id, finish_reason, message, usage}`, errors `{id, message}`, streams
//! of `event: TYPE` / `data: {json}` events ending with `message-end`.
//! Knows nothing of HTTP plumbing or control headers' parsing.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::body::{Event, EventKind, EventSource};
use crate::control::Control;
use crate::openai::{content, json_str, ChunkText, Reply};

mod embed;
pub(crate) use embed::{embed, rerank, EMBED_PATH, RERANK_PATH};

/// The path this module answers.
pub const CHAT_PATH: &str = "/v2/chat";

/// The arguments of the one call the mock makes.
pub const CALL_ARGS: &str = "{\"q\":\"mock\"}";

/// A status and body to answer with.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// `{"id":...,"message":...}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Answer {
    Answer {
        status,
        body: Bytes::from(format!(
            "{{\"id\":\"mock-error\",\"message\":{}}}",
            json_str(message)
        )),
    }
}

/// Checks the Bearer key Cohere wants.
pub(crate) fn check_auth(headers: &HeaderMap) -> Result<(), Answer> {
    match headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        Some(key) if !key.trim().is_empty() => Ok(()),
        _ => Err(error(StatusCode::UNAUTHORIZED, "no api key supplied")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    messages: Vec<Message<'a>>,
    #[serde(borrow, default)]
    tools: Vec<Tool<'a>>,
    #[serde(borrow, default)]
    tool_choice: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: bool,
    #[serde(borrow, default)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    temperature: Option<&'a RawValue>,
    #[serde(borrow, default)]
    p: Option<&'a RawValue>,
    #[serde(borrow, default)]
    k: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stop_sequences: Option<&'a RawValue>,
    #[serde(borrow, default)]
    seed: Option<&'a RawValue>,
    #[serde(borrow, default)]
    frequency_penalty: Option<&'a RawValue>,
    #[serde(borrow, default)]
    presence_penalty: Option<&'a RawValue>,
    #[serde(borrow, default)]
    response_format: Option<&'a RawValue>,
    #[serde(borrow, default)]
    documents: Option<&'a RawValue>,
    #[serde(borrow, default)]
    citation_options: Option<&'a RawValue>,
    #[serde(borrow, default)]
    safety_mode: Option<&'a RawValue>,
    #[serde(borrow, default)]
    strict_tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    logprobs: Option<&'a RawValue>,
    #[serde(borrow, default)]
    thinking: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_call_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    function: ToolFunction<'a>,
}

#[derive(Deserialize)]
struct ToolFunction<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// Checks content parts as Cohere does: the part types it knows, and
/// `image_url` URLs that are http(s) or base64 data URLs of an image type
/// it takes (PNG, JPEG, WebP, GIF). `Err` is the rest of the message
/// after `messages[i].content`.
fn content_parts(content: &str) -> Result<(), String> {
    const IMAGE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/webp", "image/gif"];
    if !content.trim_start().starts_with('[') {
        return Ok(());
    }
    let parts: Vec<serde_json::Value> =
        serde_json::from_str(content).map_err(|e| format!(": {e}"))?;
    for (j, part) in parts.iter().enumerate() {
        match part["type"].as_str().unwrap_or_default() {
            "text" | "document" | "thinking" => {}
            "image_url" => {
                let url = part["image_url"]["url"].as_str().unwrap_or_default();
                crate::media::check_data_url(url, &IMAGE_TYPES)
                    .map_err(|e| format!("[{j}].image_url.url: {e}"))?;
            }
            other => {
                return Err(format!(
                    "[{j}].type {other:?} must be one of text, image_url, document, thinking"
                ))
            }
        }
    }
    Ok(())
}

/// Checks a body as Cohere does.
fn parse(body: &[u8]) -> Result<ChatRequest<'_>, Answer> {
    let bad = |message: String| error(StatusCode::BAD_REQUEST, &message);
    let request: ChatRequest<'_> =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid request: {e}")))?;
    if request.model.is_empty() {
        return Err(bad("invalid request: model must not be empty".into()));
    }
    if request.messages.is_empty() {
        return Err(bad("invalid request: messages must not be empty".into()));
    }
    for (i, message) in request.messages.iter().enumerate() {
        match &*message.role {
            "system" | "user" => {
                if message.content.is_none() {
                    return Err(bad(format!("invalid request: messages[{i}].content is required")));
                }
                if let Some(content) = message.content {
                    content_parts(content.get())
                        .map_err(|e| bad(format!("invalid request: messages[{i}].content{e}")))?;
                }
            }
            "assistant" => {
                if message.content.is_none() && message.tool_calls.is_none() {
                    return Err(bad(format!(
                        "invalid request: messages[{i}] needs content or tool_calls"
                    )));
                }
            }
            "tool" => {
                if message.tool_call_id.as_deref().is_none_or(str::is_empty) {
                    return Err(bad(format!(
                        "invalid request: messages[{i}].tool_call_id is required"
                    )));
                }
            }
            other => {
                return Err(bad(format!(
                    "invalid request: messages[{i}].role {other:?} must be one of system, user, assistant, tool"
                )))
            }
        }
    }
    for (i, tool) in request.tools.iter().enumerate() {
        if tool.kind != "function" {
            return Err(bad(format!(
                "invalid request: tools[{i}].type must be function"
            )));
        }
    }
    match request.tool_choice.as_deref() {
        None | Some("REQUIRED" | "NONE") => {}
        Some(other) => {
            return Err(bad(format!(
                "invalid request: tool_choice {other:?} must be REQUIRED or NONE"
            )))
        }
    }
    let _ = (
        &request.max_tokens,
        &request.temperature,
        &request.p,
        &request.k,
        &request.stop_sequences,
        &request.seed,
        &request.frequency_penalty,
        &request.presence_penalty,
        &request.response_format,
        &request.documents,
        &request.citation_options,
        &request.safety_mode,
        &request.strict_tools,
        &request.logprobs,
        &request.thinking,
    );
    Ok(request)
}

fn usage(control: &Control, output: u64) -> String {
    let input = control.prompt_tokens;
    format!(
        "{{\"billed_units\":{{\"input_tokens\":{input},\"output_tokens\":{output}}},\"tokens\":{{\"input_tokens\":{input},\"output_tokens\":{output}}}}}"
    )
}

/// `POST /v2/chat`. `stream_error`: end a stream with a failed
/// `message-end` after the content.
pub(crate) fn chat(
    body: &[u8],
    control: &Control,
    id: u64,
    stream_error: bool,
) -> Result<Reply, Answer> {
    let request = parse(body)?;
    let call = match &control.tool_call {
        Some(name) => Some(name.clone()),
        None if request.tool_choice.as_deref() == Some("REQUIRED") => request
            .tools
            .first()
            .map(|t| t.function.name.clone().into_owned()),
        None => None,
    };
    let id = format!("mock-cohere-{id}");
    if request.stream {
        return Ok(Reply::Stream(Box::new(ChatStream {
            id,
            call: call.map(|name| json_str(&name)),
            control: control.clone(),
            stream_error,
            step: 0,
        })));
    }
    let chunks = u64::from(control.chunks);
    Ok(Reply::Json(Bytes::from(match &call {
        Some(name) => format!(
            "{{\"id\":\"{id}\",\"message\":{{\"role\":\"assistant\",\"tool_plan\":\"I will call {}.\",\"tool_calls\":[{{\"id\":\"{id}-call-0\",\"type\":\"function\",\"function\":{{\"name\":{},\"arguments\":{}}}}}]}},\"finish_reason\":\"TOOL_CALL\",\"usage\":{}}}",
            json_str(name).trim_matches('"'),
            json_str(name),
            json_str(CALL_ARGS),
            usage(control, chunks)
        ),
        None => format!(
            "{{\"id\":\"{id}\",\"message\":{{\"role\":\"assistant\",\"content\":[{{\"type\":\"text\",\"text\":{}}}]}},\"finish_reason\":\"COMPLETE\",\"usage\":{}}}",
            json_str(&content(control.chunks)),
            usage(control, chunks)
        ),
    })))
}

/// A streamed answer, one `content-delta` per content chunk (or one call).
struct ChatStream {
    id: String,
    /// A JSON string literal.
    call: Option<String>,
    control: Control,
    stream_error: bool,
    step: u32,
}

fn sse(kind: EventKind, event: &str, data: &str) -> Event {
    Event {
        kind,
        bytes: Bytes::from(format!("event: {event}\ndata: {data}\n\n")),
    }
}

impl EventSource for ChatStream {
    fn next_event(&mut self) -> Option<Event> {
        let i = self.step;
        self.step = self.step.saturating_add(1);
        if i == 0 {
            return Some(sse(
                EventKind::Lead,
                "message-start",
                &format!(
                    "{{\"id\":\"{}\",\"type\":\"message-start\",\"delta\":{{\"message\":{{\"role\":\"assistant\",\"content\":[],\"tool_plan\":\"\",\"tool_calls\":[],\"citations\":[]}}}}}}",
                    self.id
                ),
            ));
        }
        if let Some(name) = &self.call {
            return match i {
                1 => Some(sse(
                    EventKind::Lead,
                    "tool-plan-delta",
                    "{\"type\":\"tool-plan-delta\",\"delta\":{\"message\":{\"tool_plan\":\"I will call a tool.\"}}}",
                )),
                2 => Some(sse(
                    EventKind::Content,
                    "tool-call-start",
                    &format!(
                        "{{\"type\":\"tool-call-start\",\"index\":0,\"delta\":{{\"message\":{{\"tool_calls\":{{\"id\":\"{}-call-0\",\"type\":\"function\",\"function\":{{\"name\":{name},\"arguments\":\"\"}}}}}}}}}}",
                        self.id
                    ),
                )),
                3 => Some(sse(
                    EventKind::Content,
                    "tool-call-delta",
                    &format!(
                        "{{\"type\":\"tool-call-delta\",\"index\":0,\"delta\":{{\"message\":{{\"tool_calls\":{{\"function\":{{\"arguments\":{}}}}}}}}}}}",
                        json_str(CALL_ARGS)
                    ),
                )),
                4 => Some(sse(
                    EventKind::Tail,
                    "tool-call-end",
                    "{\"type\":\"tool-call-end\",\"index\":0}",
                )),
                5 => Some(self.end("TOOL_CALL", 1)),
                _ => None,
            };
        }
        let chunks = self.control.chunks;
        match i {
            1 => Some(sse(
                EventKind::Lead,
                "content-start",
                "{\"type\":\"content-start\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"type\":\"text\",\"text\":\"\"}}}}",
            )),
            i if i - 2 < chunks => Some(sse(
                EventKind::Content,
                "content-delta",
                &format!(
                    "{{\"type\":\"content-delta\",\"index\":0,\"delta\":{{\"message\":{{\"content\":{{\"text\":\"{}\"}}}}}}}}",
                    ChunkText(i - 2)
                ),
            )),
            i if i - 2 == chunks => Some(sse(
                EventKind::Tail,
                "content-end",
                "{\"type\":\"content-end\",\"index\":0}",
            )),
            i if i - 2 == chunks + 1 => Some(if self.stream_error {
                sse(
                    EventKind::Tail,
                    "message-end",
                    "{\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"ERROR\",\"error\":\"mock stream failure\"}}",
                )
            } else {
                self.end("COMPLETE", u64::from(chunks))
            }),
            _ => None,
        }
    }
}

impl ChatStream {
    fn end(&self, reason: &str, output: u64) -> Event {
        sse(
            EventKind::Tail,
            "message-end",
            &format!(
                "{{\"type\":\"message-end\",\"delta\":{{\"finish_reason\":\"{reason}\",\"usage\":{}}}}}",
                usage(&self.control, output)
            ),
        )
    }
}

#[cfg(test)]
mod media_tests {
    use super::*;

    #[test]
    fn refuses_media_as_cohere_does() {
        const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";
        let with = |part: &str| {
            format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"text","text":"x"}},{part}]}}]}}"#
            )
        };
        for (part, needle) in [
            (
                r#"{"type":"input_audio","input_audio":{"data":"UklGRg==","format":"wav"}}"#.into(),
                "messages[0].content[1].type",
            ),
            (
                format!(
                    r#"{{"type":"image_url","image_url":{{"url":"data:image/tiff;base64,{PNG}"}}}}"#
                ),
                "unsupported image type image/tiff",
            ),
            (
                r#"{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBOR"}}"#.into(),
                "not valid base64",
            ),
        ] {
            let body = with(&part);
            let refusal = parse(body.as_bytes()).err().unwrap();
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
            let text = String::from_utf8_lossy(&refusal.body);
            assert!(text.contains(needle), "{body}: {text}");
        }
        for part in [
            format!(
                r#"{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{PNG}","detail":"low"}}}}"#
            ),
            r#"{"type":"image_url","image_url":{"url":"https://x.test/a.png"}}"#.into(),
        ] {
            assert!(parse(with(&part).as_bytes()).is_ok(), "{part}");
        }
    }
}
