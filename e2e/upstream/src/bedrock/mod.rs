//! AWS Bedrock's Converse API: `POST /model/{modelId}/converse` (a JSON
//! answer) and `/converse-stream` (the binary event stream,
//! `application/vnd.amazon.eventstream`: `messageStart`,
//! `contentBlockStart` for a tool use, `contentBlockDelta`s,
//! `contentBlockStop`, `messageStop`, `metadata`, each framed with both
//! CRCs). It checks what Bedrock checks before answering: a SigV4
//! `Authorization` for service `bedrock` with an `x-amz-date` (recomputed
//! with [`TEST_SECRET_ACCESS_KEY`] when the key id is [`TEST_ACCESS_KEY_ID`])
//! or a Bedrock API key as a bearer token; a body with only Converse's
//! fields, turns alternating from a user turn. Refusals and forced errors
//! use Bedrock's shape: `{"message": ...}` with `x-amzn-errortype`.

mod invoke;
mod sign;

pub(crate) use invoke::{invoke, route as invoke_route};

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::body::{Event, EventKind, EventSource};
use crate::control::Control;
use crate::openai::{json_str, ChunkText, Ids};

pub use sign::{TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY};

/// The id of the one tool use the mock makes.
pub const TOOL_USE_ID: &str = "tooluse_mock_0";
/// The input of that call, streamed in two fragments.
pub const TOOL_INPUT: [&str; 2] = ["{\"q\":", "\"mock\"}"];

/// Content type of ConverseStream answers.
pub const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// An answer that is not a success: status, `x-amzn-errortype`, body.
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub body: Bytes,
}

/// What a Bedrock request gets.
pub(crate) enum Answer {
    /// A Converse JSON body.
    Json(Bytes),
    /// ConverseStream events.
    Stream(Box<dyn EventSource>),
}

/// The exception Bedrock names for a status.
pub(crate) fn exception_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "ValidationException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

/// `{"message": ...}` and the `x-amzn-errortype` value.
pub(crate) fn refuse(status: StatusCode, message: &str) -> Refusal {
    refuse_as(status, exception_for(status), message)
}

fn refuse_as(status: StatusCode, error_type: &'static str, message: &str) -> Refusal {
    Refusal {
        status,
        error_type,
        body: Bytes::from(format!("{{\"message\":{}}}", json_str(message))),
    }
}

/// The `x-amzn-errortype` header value for an exception.
pub(crate) fn error_type_header(error_type: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("InternalServerException"))
}

/// Whether a path is Converse's: `(model id, streaming)`.
pub(crate) fn route(path: &str) -> Option<(&str, bool)> {
    let rest = path.strip_prefix("/model/")?;
    if let Some(model) = rest.strip_suffix("/converse-stream") {
        Some((model, true))
    } else {
        rest.strip_suffix("/converse").map(|model| (model, false))
    }
}

/// Checks the credentials Bedrock would: a well-formed SigV4 signature for
/// service `bedrock` (verified when made with the test keys) or a bearer
/// API key.
pub(crate) fn check_auth(
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Refusal> {
    sign::verify(method, path, headers, body)
        .map_err(|(status, kind, message)| refuse_as(status, kind, &message))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConverseRequest<'a> {
    #[serde(borrow, default)]
    messages: Vec<Turn<'a>>,
    #[serde(default)]
    system: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    inference_config: Option<InferenceConfig>,
    #[serde(borrow, default)]
    tool_config: Option<ToolConfig<'a>>,
    #[serde(default)]
    additional_model_request_fields: Option<IgnoredAny>,
    #[serde(default)]
    guardrail_config: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InferenceConfig {
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Turn<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    content: Vec<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    #[serde(borrow)]
    tools: Vec<ToolEntry<'a>>,
    #[serde(default)]
    tool_choice: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolEntry<'a> {
    #[serde(borrow)]
    tool_spec: ToolSpec<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolSpec<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    input_schema: InputSchema,
}

#[derive(Deserialize)]
struct InputSchema {
    json: serde_json::Value,
}

const BLOCK_KINDS: [&str; 7] = [
    "text",
    "image",
    "document",
    "toolUse",
    "toolResult",
    "reasoningContent",
    "cachePoint",
];

fn parse(body: &[u8]) -> Result<ConverseRequest<'_>, Refusal> {
    let bad = |message: String| refuse(StatusCode::BAD_REQUEST, &message);
    let request: ConverseRequest<'_> = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "Malformed input request: {e}, please reformat your input and try again."
        ))
    })?;
    if request.messages.is_empty() {
        return Err(bad("A conversation must start with a user message. Try again with a conversation that starts with a user message.".into()));
    }
    for (i, turn) in request.messages.iter().enumerate() {
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if turn.role != expected {
            return Err(bad(format!(
                "A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again. (messages.{i}.role is {})",
                turn.role
            )));
        }
        if turn.content.is_empty() {
            return Err(bad(format!("The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again.")));
        }
        for (j, block) in turn.content.iter().enumerate() {
            let kinds: Vec<&String> = block.keys().collect();
            if kinds.len() != 1 || !BLOCK_KINDS.contains(&kinds[0].as_str()) {
                return Err(bad(format!(
                    "messages.{i}.content.{j}: a ContentBlock holds exactly one of {BLOCK_KINDS:?}"
                )));
            }
            if block
                .get("text")
                .is_some_and(|t| t.as_str().is_none_or(|t| t.trim().is_empty()))
            {
                return Err(bad(format!("messages.{i}.content.{j}: The text field in the ContentBlock object is blank. Add text to the text field, and try again.")));
            }
            media_block(block)
                .map_err(|message| bad(format!("messages.{i}.content.{j}.{message}")))?;
        }
    }
    let uses_tools = request.messages.iter().any(|turn| {
        turn.content
            .iter()
            .any(|b| b.contains_key("toolUse") || b.contains_key("toolResult"))
    });
    if uses_tools && request.tool_config.is_none() {
        return Err(bad("The toolConfig field must be defined when using toolUse and toolResult content blocks.".into()));
    }
    for tool in request.tool_config.iter().flat_map(|c| &c.tools) {
        if !tool.tool_spec.input_schema.json.is_object() {
            return Err(bad(format!(
                "tool {}: inputSchema.json must be a JSON object",
                tool.tool_spec.name
            )));
        }
    }
    let _ = (&request.system, &request.inference_config);
    if let Some(config) = &request.inference_config {
        let _ = (
            config.max_tokens,
            config.temperature,
            config.top_p,
            &config.stop_sequences,
        );
    }
    let _ = (
        &request.additional_model_request_fields,
        &request.guardrail_config,
    );
    Ok(request)
}

/// Checks an `image` or `document` block (also inside a `toolResult`) as
/// Converse does: the format enum, the source union (exactly one of
/// `bytes` and `s3Location`), base64 that decodes to the format, a
/// document name in the characters Converse allows. `Err` is the rest of
/// the message after `messages.{i}.content.{j}.`.
fn media_block(block: &serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
    const IMAGE_FORMATS: [&str; 4] = ["png", "jpeg", "gif", "webp"];
    const DOCUMENT_FORMATS: [&str; 9] = [
        "pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md",
    ];
    if let Some(result) = block.get("toolResult") {
        for (k, inner) in result["content"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(inner) = inner.as_object() {
                media_block(inner).map_err(|m| format!("toolResult.content.{k}.{m}"))?;
            }
        }
        return Ok(());
    }
    let (kind, value, formats): (&str, _, &[&str]) =
        match (block.get("image"), block.get("document")) {
            (Some(image), _) => ("image", image, &IMAGE_FORMATS),
            (_, Some(document)) => ("document", document, &DOCUMENT_FORMATS),
            _ => return Ok(()),
        };
    let format = value["format"].as_str().unwrap_or_default();
    if !formats.contains(&format) {
        return Err(format!(
            "{kind}.format: Value '{format}' at '{kind}.format' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            formats.join(", ")
        ));
    }
    if kind == "document" {
        let name = value["name"].as_str().unwrap_or_default();
        let allowed = |c: char| c.is_ascii_alphanumeric() || " -()[]".contains(c);
        if name.is_empty() || !name.chars().all(allowed) || name.contains("  ") {
            return Err(format!(
                "document.name: The document name {name:?} can only contain alphanumeric characters, whitespace characters (no more than one in a row), hyphens, parentheses and square brackets"
            ));
        }
    }
    let source = value["source"].as_object().cloned().unwrap_or_default();
    match (source.get("bytes"), source.get("s3Location"), source.len()) {
        (Some(bytes), None, 1) => {
            let media_type = match (kind, format) {
                ("image", format) => format!("image/{format}"),
                (_, "pdf") => "application/pdf".to_owned(),
                _ => String::new(),
            };
            crate::media::check(&media_type, bytes.as_str().unwrap_or_default())
                .map_err(|e| format!("{kind}.source.bytes: {e}"))
        }
        (None, Some(location), 1)
            if location["uri"].as_str().is_some_and(|uri| uri.starts_with("s3://")) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{kind}.source: a {kind} source holds exactly one of bytes (base64) and s3Location ({{\"uri\": \"s3://...\"}})"
        )),
    }
}

impl ConverseRequest<'_> {
    /// The tool the answer uses: the control header, then a `tool` choice,
    /// then the first tool when `any` is asked.
    fn forced_tool(&self, control: &Control) -> Option<String> {
        if let Some(name) = &control.tool_call {
            return Some(name.clone());
        }
        let config = self.tool_config.as_ref()?;
        let choice = config.tool_choice.as_ref()?;
        if let Some(name) = choice
            .get("tool")
            .and_then(|t| t.get("name"))
            .and_then(|n| n.as_str())
        {
            return Some(name.to_owned());
        }
        choice
            .contains_key("any")
            .then(|| {
                config
                    .tools
                    .first()
                    .map(|t| t.tool_spec.name.clone().into_owned())
            })
            .flatten()
    }
}

/// `x-mock-prompt-tokens` is every input token; `x-mock-cached-tokens` of
/// them are cache reads (Bedrock's `inputTokens` leaves those out).
fn usage_json(control: &Control) -> String {
    let cached = control.cached_tokens.min(control.prompt_tokens);
    let input = control.prompt_tokens - cached;
    let output = u64::from(control.chunks);
    format!(
        "{{\"inputTokens\":{input},\"outputTokens\":{output},\"totalTokens\":{},\"cacheReadInputTokens\":{cached},\"cacheWriteInputTokens\":0}}",
        input + output + cached
    )
}

/// Answers a Converse request (the path said whether it streams).
pub(crate) fn converse(
    body: &[u8],
    stream: bool,
    control: &Control,
    ids: &Ids,
    stream_error: bool,
) -> Result<Answer, Refusal> {
    let request = parse(body)?;
    let tool = request.forced_tool(control);
    let _ = ids.next();
    if stream {
        return Ok(Answer::Stream(Box::new(ConverseStream {
            tool: tool.map(|name| json_str(&name)),
            chunks: control.chunks,
            usage: usage_json(control),
            stream_error,
            step: 0,
        })));
    }
    let (content, stop) = match &tool {
        Some(name) => (
            format!(
                "{{\"toolUse\":{{\"toolUseId\":\"{TOOL_USE_ID}\",\"name\":{},\"input\":{{\"q\":\"mock\"}}}}}}",
                json_str(name)
            ),
            "tool_use",
        ),
        None => (
            format!("{{\"text\":{}}}", json_str(&crate::openai::content(control.chunks))),
            "end_turn",
        ),
    };
    Ok(Answer::Json(Bytes::from(format!(
        "{{\"output\":{{\"message\":{{\"role\":\"assistant\",\"content\":[{content}]}}}},\"stopReason\":\"{stop}\",\"usage\":{},\"metrics\":{{\"latencyMs\":42}}}}",
        usage_json(control)
    ))))
}

/// A ConverseStream event, framed.
fn event(kind: EventKind, event_type: &str, payload: &str) -> Event {
    Event {
        kind,
        bytes: Bytes::from(sign::frame(
            &[
                (":event-type", event_type),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )),
    }
}

/// The events of a streamed answer, made one at a time.
struct ConverseStream {
    /// A JSON string literal.
    tool: Option<String>,
    chunks: u32,
    usage: String,
    stream_error: bool,
    step: u32,
}

impl ConverseStream {
    fn content_events(&self) -> u32 {
        match self.tool {
            Some(_) => TOOL_INPUT.len() as u32,
            None => self.chunks,
        }
    }
}

impl EventSource for ConverseStream {
    fn next_event(&mut self) -> Option<Event> {
        let step = self.step;
        self.step = self.step.saturating_add(1);
        if step == 0 {
            return Some(event(
                EventKind::Lead,
                "messageStart",
                "{\"role\":\"assistant\",\"p\":\"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0\"}",
            ));
        }
        // The tool use block opens with contentBlockStart; text needs none.
        let lead = u32::from(self.tool.is_some());
        if step == 1 && lead == 1 {
            let name = self.tool.as_deref().unwrap_or("\"\"");
            return Some(event(
                EventKind::Lead,
                "contentBlockStart",
                &format!("{{\"contentBlockIndex\":0,\"start\":{{\"toolUse\":{{\"toolUseId\":\"{TOOL_USE_ID}\",\"name\":{name}}}}},\"p\":\"abc\"}}"),
            ));
        }
        let i = step - 1 - lead;
        let n = self.content_events();
        if i < n {
            let delta = match &self.tool {
                Some(_) => format!(
                    "{{\"toolUse\":{{\"input\":{}}}}}",
                    json_str(TOOL_INPUT.get(i as usize).copied().unwrap_or_default())
                ),
                None => format!("{{\"text\":\"{}\"}}", ChunkText(i)),
            };
            return Some(event(
                EventKind::Content,
                "contentBlockDelta",
                &format!("{{\"contentBlockIndex\":0,\"delta\":{delta},\"p\":\"abcdef\"}}"),
            ));
        }
        if self.stream_error {
            return (i == n).then(|| Event {
                kind: EventKind::Tail,
                bytes: Bytes::from(sign::frame(
                    &[
                        (":exception-type", "modelStreamErrorException"),
                        (":content-type", "application/json"),
                        (":message-type", "exception"),
                    ],
                    b"{\"message\":\"The model stream failed mid-response.\",\"originalStatusCode\":500}",
                )),
            });
        }
        let stop = if self.tool.is_some() {
            "tool_use"
        } else {
            "end_turn"
        };
        Some(match i - n {
            0 => event(
                EventKind::Tail,
                "contentBlockStop",
                "{\"contentBlockIndex\":0,\"p\":\"abcdefgh\"}",
            ),
            1 => event(
                EventKind::Tail,
                "messageStop",
                &format!("{{\"stopReason\":\"{stop}\",\"p\":\"ab\"}}"),
            ),
            2 => event(
                EventKind::Tail,
                "metadata",
                &format!(
                    "{{\"usage\":{},\"metrics\":{{\"latencyMs\":42}},\"p\":\"abcd\"}}",
                    self.usage
                ),
            ),
            _ => return None,
        })
    }
}

/// `x-mock-malformed` on a stream: a message whose checksum is wrong.
pub(crate) fn malformed_stream() -> Bytes {
    let mut bytes = sign::frame(
        &[(":event-type", "messageStart"), (":message-type", "event")],
        b"{\"role\":\"assistant\"}",
    );
    let at = bytes.len() - 6;
    bytes[at] ^= 0x20;
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(answer: Answer) -> Vec<(String, String)> {
        let Answer::Stream(mut source) = answer else {
            panic!("expected a stream");
        };
        std::iter::from_fn(|| source.next_event())
            .map(|e| sign::unframe(&e.bytes))
            .collect()
    }

    #[test]
    fn streams_the_documented_event_sequence() {
        let control = Control {
            chunks: 2,
            ..Control::default()
        };
        let body = br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;
        let seen = events(
            converse(body, true, &control, &Ids::default(), false)
                .unwrap_or_else(|_| panic!("refused")),
        );
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "messageStart",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockStop",
                "messageStop",
                "metadata"
            ]
        );
        assert!(seen[5].1.contains("\"inputTokens\":7"), "{seen:?}");
        let tools = br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}],"toolConfig":{"tools":[{"toolSpec":{"name":"search","inputSchema":{"json":{"type":"object"}}}}],"toolChoice":{"any":{}}}}"#;
        let seen = events(
            converse(tools, true, &control, &Ids::default(), false)
                .unwrap_or_else(|_| panic!("refused")),
        );
        assert_eq!(seen[1].0, "contentBlockStart");
        assert!(seen[1].1.contains("\"name\":\"search\""));
    }

    #[test]
    fn refuses_what_bedrock_refuses() {
        for (body, needle) in [
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"text":"x"}]}]}"#,
                "model",
            ),
            (r#"{"messages":[]}"#, "start with a user message"),
            (
                r#"{"messages":[{"role":"assistant","content":[{"text":"x"}]}]}"#,
                "alternate",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"text":" "}]}]}"#,
                "blank",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"toolResult":{"toolUseId":"t","content":[]}}]}]}"#,
                "toolConfig",
            ),
        ] {
            let Err(refusal) = converse(
                body.as_bytes(),
                false,
                &Control::default(),
                &Ids::default(),
                false,
            ) else {
                panic!("{body} was accepted");
            };
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
            assert_eq!(refusal.error_type, "ValidationException");
            let text = String::from_utf8(refusal.body.to_vec()).unwrap();
            assert!(text.contains(needle), "{text}");
        }
    }

    #[test]
    fn routes_converse_paths() {
        assert_eq!(
            route("/model/a.b-v1%3A0/converse"),
            Some(("a.b-v1%3A0", false))
        );
        assert_eq!(route("/model/m/converse-stream"), Some(("m", true)));
        assert_eq!(route("/v1/chat/completions"), None);
    }

    #[test]
    fn refuses_media_as_bedrock_does() {
        const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";
        let with = |block: &str| {
            format!(r#"{{"messages":[{{"role":"user","content":[{{"text":"x"}},{block}]}}]}}"#)
        };
        let converse_body = |body: &str| {
            converse(
                body.as_bytes(),
                false,
                &Control::default(),
                &Ids::default(),
                false,
            )
        };
        for (block, needle) in [
            (
                format!(r#"{{"image":{{"format":"image/png","source":{{"bytes":"{PNG}"}}}}}}"#),
                "enum value set: [png, jpeg, gif, webp]",
            ),
            (
                format!(r#"{{"image":{{"format":"jpeg","source":{{"bytes":"{PNG}"}}}}}}"#),
                "does not match the declared media type image/jpeg",
            ),
            (
                r#"{"image":{"format":"png","source":{"bytes":"iVBOR"}}}"#.into(),
                "messages.0.content.1.image.source.bytes",
            ),
            (
                r#"{"image":{"format":"png","source":{"url":"https://x.test/a.png"}}}"#.into(),
                "exactly one of bytes",
            ),
            (
                r#"{"document":{"format":"pdf","name":"a.pdf","source":{"bytes":"JVBERi0="}}}"#
                    .into(),
                "document name",
            ),
            (
                r#"{"document":{"format":"pdf","source":{"bytes":"JVBERi0="}}}"#.into(),
                "document name",
            ),
        ] {
            let body = with(&block);
            let Err(refusal) = converse_body(&body) else {
                panic!("{body} was accepted");
            };
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
            assert_eq!(refusal.error_type, "ValidationException");
            let text = String::from_utf8(refusal.body.to_vec()).unwrap();
            assert!(text.contains(needle), "{text}");
        }
        for block in [
            format!(r#"{{"image":{{"format":"png","source":{{"bytes":"{PNG}"}}}}}}"#),
            r#"{"image":{"format":"jpeg","source":{"s3Location":{"uri":"s3://b/a.jpg"}}}}"#.into(),
            r#"{"document":{"format":"pdf","name":"Q3 report (final)","source":{"bytes":"JVBERi0="}}}"#.into(),
        ] {
            assert!(converse_body(&with(&block)).is_ok(), "{block}");
        }
    }
}
