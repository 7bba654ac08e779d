//! The Anthropic wire format: `POST /v1/messages` (a `message`, or the
//! event sequence `message_start`, `content_block_start`, `ping`,
//! `content_block_delta`s, `content_block_stop`, `message_delta`,
//! `message_stop`) and `POST /v1/messages/count_tokens`. It checks what
//! Anthropic checks before answering (an `x-api-key`, the
//! `anthropic-version` header, `max_tokens`, alternating user/assistant
//! turns starting with a user turn, no `system` role in `messages`) and
//! answers 400 in Anthropic's error shape when a request breaks a rule.
//! Knows nothing of HTTP plumbing or control headers' parsing.

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::body::{Event, EventKind, EventSource};
use crate::control::Control;
use crate::openai::{content, json_str, to_json, ChunkText, Ids, Reply};

/// The id of the one tool use the mock makes.
pub const TOOL_USE_ID: &str = "toolu_mock_0";
/// The input of that call, streamed in two fragments.
pub const TOOL_INPUT: [&str; 2] = ["{\"q\":", "\"mock\"}"];

/// A request Anthropic would refuse: the status and error body to send.
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Anthropic's error `type` for a status.
pub(crate) fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// `{"type":"error","error":{"type":...,"message":...}}`.
pub(crate) fn error_body(status: StatusCode, message: &str) -> Bytes {
    #[derive(Serialize)]
    struct Envelope<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        error: Detail<'a>,
        request_id: &'static str,
    }
    #[derive(Serialize)]
    struct Detail<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        message: &'a str,
    }
    to_json(&Envelope {
        kind: "error",
        error: Detail {
            kind: error_type(status),
            message,
        },
        request_id: "req_mock",
    })
}

fn refuse(status: StatusCode, message: &str) -> Refusal {
    Refusal {
        status,
        body: error_body(status, message),
    }
}

/// The headers every Anthropic request needs.
pub(crate) fn check_headers(headers: &HeaderMap) -> Result<(), Refusal> {
    if headers
        .get("x-api-key")
        .is_none_or(|v| v.as_bytes().is_empty())
    {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "x-api-key header is required",
        ));
    }
    if headers.get("anthropic-version").is_none() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "anthropic-version: header is required",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct MessagesRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(borrow)]
    messages: Vec<Turn<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow, default)]
    tools: Option<Vec<Tool<'a>>>,
    #[serde(borrow, default)]
    tool_choice: Option<ToolChoice<'a>>,
    #[serde(default)]
    system: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Turn<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(default)]
    content: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    input_schema: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ToolChoice<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

/// Checks a Messages body as Anthropic does (for count_tokens,
/// `max_tokens` is not needed).
fn parse<'a>(body: &'a [u8], count_only: bool) -> Result<MessagesRequest<'a>, Refusal> {
    let request: MessagesRequest<'a> = serde_json::from_slice(body).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            &format!("invalid request body: {e}"),
        )
    })?;
    let bad = |message: String| Err(refuse(StatusCode::BAD_REQUEST, &message));
    if !count_only && request.max_tokens.is_none() {
        return bad("max_tokens: Field required".into());
    }
    if request.messages.is_empty() {
        return bad("messages: at least one message is required".into());
    }
    for (i, turn) in request.messages.iter().enumerate() {
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if turn.role == "system" {
            return bad(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant' (use the top-level `system` parameter)"
            ));
        }
        if turn.role != expected {
            return bad(format!(
                "messages: roles must alternate between \"user\" and \"assistant\", starting with \"user\"; messages.{i} is \"{}\"",
                turn.role
            ));
        }
        if turn.content.is_none() {
            return bad(format!("messages.{i}.content: Field required"));
        }
        if let Some(serde_json::Value::Array(blocks)) = &turn.content {
            for (j, block) in blocks.iter().enumerate() {
                if let Err(message) = media_block(block) {
                    return bad(format!("messages.{i}.content.{j}.{message}"));
                }
            }
        }
    }
    for (i, tool) in request.tools.iter().flatten().enumerate() {
        if tool.input_schema.is_none() {
            return bad(format!("tools.{i}.input_schema: Field required"));
        }
    }
    let _ = &request.system;
    Ok(request)
}

/// Checks an `image` or `document` block (also inside a `tool_result`) as
/// Anthropic does: the source kinds, the media types it takes, base64
/// that decodes to what the media type says. `Err` is the rest of the
/// message after `messages.{i}.content.{j}.`.
fn media_block(block: &serde_json::Value) -> Result<(), String> {
    const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];
    let kind = block["type"].as_str().unwrap_or_default();
    if kind == "tool_result" {
        if let Some(inner) = block["content"].as_array() {
            for (k, inner) in inner.iter().enumerate() {
                media_block(inner).map_err(|m| format!("content.{k}.{m}"))?;
            }
        }
        return Ok(());
    }
    if kind != "image" && kind != "document" {
        return Ok(());
    }
    let source = &block["source"];
    let source_kind = source["type"].as_str().unwrap_or_default();
    let field = |name: &str| source[name].as_str().unwrap_or_default();
    match (kind, source_kind) {
        (_, "base64") => {
            let media_type = field("media_type");
            let accepted: &[&str] = if kind == "image" {
                &IMAGE_TYPES
            } else {
                &["application/pdf"]
            };
            if !accepted.contains(&media_type) {
                return Err(format!(
                    "{kind}.source.base64.media_type: Input should be {}",
                    accepted
                        .iter()
                        .map(|t| format!("'{t}'"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ));
            }
            crate::media::check(media_type, field("data"))
                .map_err(|e| format!("{kind}.source.base64.data: {e}"))
        }
        (_, "url") if field("url").starts_with("https://") || field("url").starts_with("http://") => {
            Ok(())
        }
        (_, "url") => Err(format!("{kind}.source.url.url: Input should be an http(s) URL")),
        ("document", "text") if field("media_type") == "text/plain" => Ok(()),
        (_, other) => Err(format!(
            "{kind}.source: Input tag '{other}' found using 'type' does not match any of the expected tags: 'base64', 'url'"
        )),
    }
}

impl MessagesRequest<'_> {
    /// The tool the answer uses, if any: the control header wins, then a
    /// named tool choice, then the first tool when one is required (`any`).
    fn forced_tool(&self, control: &Control) -> Option<String> {
        if let Some(name) = &control.tool_call {
            return Some(name.clone());
        }
        let choice = self.tool_choice.as_ref()?;
        match &*choice.kind {
            "tool" => choice.name.as_deref().map(str::to_owned),
            "any" => self
                .tools
                .iter()
                .flatten()
                .next()
                .map(|t| t.name.clone().into_owned()),
            _ => None,
        }
    }
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, N the
/// `x-mock-prompt-tokens` count.
pub(crate) fn count_tokens(body: &[u8], control: &Control) -> Result<Reply, Refusal> {
    parse(body, true)?;
    Ok(Reply::Json(Bytes::from(format!(
        "{{\"input_tokens\":{}}}",
        control.prompt_tokens
    ))))
}

/// `POST /v1/messages`. `stream_error`: end the stream with an
/// `overloaded_error` event after the content.
pub(crate) fn messages(
    body: &[u8],
    control: &Control,
    ids: &Ids,
    stream_error: bool,
) -> Result<Reply, Refusal> {
    let request = parse(body, false)?;
    let id = format!("msg_mock_{}", ids.next());
    let tool = request.forced_tool(control);
    let usage = Usage {
        input_tokens: control.prompt_tokens,
        output_tokens: u64::from(control.chunks),
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
    };
    if request.stream == Some(true) {
        return Ok(Reply::Stream(Box::new(MessageStream {
            id,
            model: json_str(&request.model),
            tool: tool.map(|name| json_str(&name)),
            chunks: control.chunks,
            usage,
            stream_error,
            step: 0,
        })));
    }
    let content = match &tool {
        Some(name) => vec![Block::ToolUse {
            id: TOOL_USE_ID,
            name,
            input: serde_json::json!({"q": "mock"}),
        }],
        None => vec![Block::Text {
            text: content(control.chunks),
        }],
    };
    let message = Message {
        id: &id,
        kind: "message",
        role: "assistant",
        model: &request.model,
        content,
        stop_reason: if tool.is_some() {
            "tool_use"
        } else {
            "end_turn"
        },
        stop_sequence: None,
        usage,
    };
    Ok(Reply::Json(to_json(&message)))
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    input_tokens: u64,
    output_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
}

#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Block<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<()>,
    usage: Usage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: String,
    },
    ToolUse {
        id: &'static str,
        name: &'a str,
        input: serde_json::Value,
    },
}

/// The events of a streamed message, made one at a time.
struct MessageStream {
    id: String,
    /// JSON string literals.
    model: String,
    tool: Option<String>,
    chunks: u32,
    usage: Usage,
    stream_error: bool,
    step: u32,
}

fn event(kind: EventKind, name: &str, data: &str) -> Event {
    let mut s = String::with_capacity(data.len() + 32);
    let _ = write!(s, "event: {name}\ndata: {data}\n\n");
    Event {
        kind,
        bytes: Bytes::from(s),
    }
}

impl MessageStream {
    fn content_events(&self) -> u32 {
        match self.tool {
            Some(_) => TOOL_INPUT.len() as u32,
            None => self.chunks,
        }
    }

    fn content(&self, i: u32) -> Event {
        let data = match &self.tool {
            Some(_) => format!(
                "{{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":{}}}}}",
                json_str(TOOL_INPUT.get(i as usize).copied().unwrap_or_default())
            ),
            None => format!(
                "{{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{}\"}}}}",
                ChunkText(i)
            ),
        };
        event(EventKind::Content, "content_block_delta", &data)
    }

    /// The events after the content, in order.
    fn tail(&self, i: u32) -> Option<Event> {
        if self.stream_error {
            return (i == 0).then(|| {
                event(
                    EventKind::Tail,
                    "error",
                    "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}",
                )
            });
        }
        let stop_reason = if self.tool.is_some() {
            "tool_use"
        } else {
            "end_turn"
        };
        Some(match i {
            0 => event(
                EventKind::Tail,
                "content_block_stop",
                "{\"type\":\"content_block_stop\",\"index\":0}",
            ),
            1 => event(
                EventKind::Tail,
                "message_delta",
                &format!(
                    "{{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{stop_reason}\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}",
                    self.usage.output_tokens
                ),
            ),
            2 => event(EventKind::Tail, "message_stop", "{\"type\":\"message_stop\"}"),
            _ => return None,
        })
    }
}

impl EventSource for MessageStream {
    fn next_event(&mut self) -> Option<Event> {
        let step = self.step;
        self.step = self.step.saturating_add(1);
        match step {
            0 => {
                let usage = Usage {
                    output_tokens: 1,
                    ..self.usage
                };
                let data = format!(
                    "{{\"type\":\"message_start\",\"message\":{{\"id\":{},\"type\":\"message\",\"role\":\"assistant\",\"model\":{},\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{}}}}}",
                    json_str(&self.id),
                    self.model,
                    String::from_utf8_lossy(&to_json(&usage))
                );
                Some(event(EventKind::Lead, "message_start", &data))
            }
            1 => {
                let block = match &self.tool {
                    Some(name) => format!(
                        "{{\"type\":\"tool_use\",\"id\":\"{TOOL_USE_ID}\",\"name\":{name},\"input\":{{}}}}"
                    ),
                    None => "{\"type\":\"text\",\"text\":\"\"}".to_owned(),
                };
                Some(event(
                    EventKind::Lead,
                    "content_block_start",
                    &format!("{{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{block}}}"),
                ))
            }
            2 => Some(event(EventKind::Lead, "ping", "{\"type\": \"ping\"}")),
            _ => {
                let i = step - 3;
                let n = self.content_events();
                if i < n {
                    Some(self.content(i))
                } else {
                    self.tail(i - n)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(body: &str, control: &Control) -> String {
        match messages(body.as_bytes(), control, &Ids::default(), false) {
            Ok(Reply::Stream(mut source)) => std::iter::from_fn(|| source.next_event())
                .map(|e| String::from_utf8(e.bytes.to_vec()).unwrap())
                .collect(),
            _ => panic!("expected a stream"),
        }
    }

    #[test]
    fn streams_the_documented_event_sequence() {
        let control = Control {
            chunks: 2,
            ..Control::default()
        };
        let text = stream(
            r#"{"model":"claude","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
            &control,
        );
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
            let _: serde_json::Value = serde_json::from_str(line).unwrap();
        }
        assert!(text.contains("\"input_tokens\":7"), "{text}");
    }

    #[test]
    fn refuses_what_anthropic_refuses() {
        for (body, needle) in [
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"x"}]}"#,
                "system",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"},{"role":"user","content":"y"}]}"#,
                "alternate",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"assistant","content":"x"}]}"#,
                "alternate",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[]}"#,
                "at least one",
            ),
            (
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"t"}]}"#,
                "input_schema",
            ),
        ] {
            let Err(refusal) =
                messages(body.as_bytes(), &Control::default(), &Ids::default(), false)
            else {
                panic!("{body} was accepted");
            };
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
            let text = String::from_utf8(refusal.body.to_vec()).unwrap();
            assert!(
                text.contains(needle) && text.contains("invalid_request_error"),
                "{text}"
            );
        }
    }

    #[test]
    fn any_tool_choice_uses_the_first_tool() {
        let body = r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"search","input_schema":{"type":"object"}}],"tool_choice":{"type":"any"}}"#;
        let Ok(Reply::Json(bytes)) =
            messages(body.as_bytes(), &Control::default(), &Ids::default(), false)
        else {
            panic!("expected JSON");
        };
        let message: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(message["stop_reason"], "tool_use");
        assert_eq!(
            message["content"][0]["input"],
            serde_json::json!({"q":"mock"})
        );
    }

    #[test]
    fn refuses_media_as_anthropic_does() {
        const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";
        let with = |block: &str| {
            format!(
                r#"{{"model":"m","max_tokens":1,"messages":[{{"role":"user","content":[{{"type":"text","text":"x"}},{block}]}}]}}"#
            )
        };
        for (block, needle) in [
            (
                format!(r#"{{"type":"image","source":{{"type":"base64","media_type":"image/tiff","data":"{PNG}"}}}}"#),
                "messages.0.content.1.image.source.base64.media_type",
            ),
            (
                format!(r#"{{"type":"image","source":{{"type":"base64","media_type":"image/jpeg","data":"{PNG}"}}}}"#),
                "does not match the declared media type image/jpeg",
            ),
            (
                r#"{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBOR"}}"#.into(),
                "not valid base64",
            ),
            (
                r#"{"type":"image","source":{"type":"url","url":"ftp://x"}}"#.into(),
                "http(s) URL",
            ),
            (
                r#"{"type":"document","source":{"type":"base64","media_type":"image/png","data":"JVBERi0="}}"#.into(),
                "'application/pdf'",
            ),
            (
                format!(r#"{{"type":"tool_result","tool_use_id":"t","content":[{{"type":"image","source":{{"type":"base64","media_type":"image/gif","data":"{PNG}"}}}}]}}"#),
                "messages.0.content.1.content.0.image.source.base64.data",
            ),
        ] {
            let body = with(&block);
            let Err(refusal) =
                messages(body.as_bytes(), &Control::default(), &Ids::default(), false)
            else {
                panic!("{body} was accepted");
            };
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
            let text = String::from_utf8(refusal.body.to_vec()).unwrap();
            assert!(text.contains(needle), "{text}");
        }
        for block in [
            format!(r#"{{"type":"image","source":{{"type":"base64","media_type":"image/png","data":"{PNG}"}}}}"#),
            r#"{"type":"image","source":{"type":"url","url":"https://x.test/a.png"}}"#.into(),
            r#"{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0="}}"#.into(),
            r#"{"type":"document","source":{"type":"text","media_type":"text/plain","data":"notes"}}"#.into(),
        ] {
            let body = with(&block);
            assert!(
                messages(body.as_bytes(), &Control::default(), &Ids::default(), false).is_ok(),
                "{body}"
            );
        }
    }
}
