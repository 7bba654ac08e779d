//! Event streams both ways, chunk by chunk: [`ToOpenAI`] turns an Anthropic
//! event stream into OpenAI `chat.completion.chunk`s, [`ToAnthropic`] turns
//! OpenAI chunks into Anthropic's event sequence, and [`Observer`] reads the
//! usage of an Anthropic stream passed through untouched. Each keeps only
//! the state a stream needs (ids, open block, tool indices, usage) and
//! never waits for more than one whole event. A stream that breaks off or
//! sends something unreadable ends with an error event, never a hang.

use std::borrow::Cow;
use std::io::Write as _;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{finish_reason, stop_reason, BlockIn, BlockOut, DeltaUsage, MessageResponseOut, Usage};
use crate::llm::translate::openai::{
    self, ChunkEmitter, ChunkIn, DeltaOut, FunctionDeltaOut, ToolCallDeltaOut,
};
use crate::llm::translate::{event_data, Splitter, TokenUsage};
use crate::llm::usage::find;

/// An Anthropic stream event as read: its `type` and the fields the known
/// types use.
#[derive(Debug, Deserialize)]
struct EventIn<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    /// `message_start`.
    #[serde(borrow, default)]
    message: Option<StartIn<'a>>,
    /// `content_block_*`.
    #[serde(default)]
    index: u32,
    /// `content_block_start`.
    #[serde(borrow, default)]
    content_block: Option<BlockIn<'a>>,
    /// `content_block_delta` and `message_delta`.
    #[serde(borrow, default)]
    delta: Option<DeltaIn<'a>>,
    /// `message_delta`: cumulative counts.
    #[serde(default)]
    usage: Option<DeltaUsage>,
    /// `error`.
    #[serde(borrow, default)]
    error: Option<ErrorIn<'a>>,
}

#[derive(Debug, Deserialize)]
struct StartIn<'a> {
    #[serde(borrow, default)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    model: Cow<'a, str>,
    #[serde(default)]
    usage: DeltaUsage,
}

#[derive(Debug, Default, Deserialize)]
struct DeltaIn<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorIn<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Cow<'a, str>,
}

/// Anthropic events → OpenAI chunks. The output always carries
/// `"usage":null` and the final usage chunk, as with
/// `stream_options.include_usage`; the OpenAI stream filter after it drops
/// them when the client did not ask.
pub struct ToOpenAI {
    splitter: Splitter,
    id: String,
    model: String,
    created: u64,
    /// (Anthropic block index, OpenAI tool call index) of each tool use.
    tools: Vec<(u32, u32)>,
    usage: Usage,
    ended: bool,
}

impl ToOpenAI {
    /// A new stream; `created` is stamped on every chunk.
    pub fn new(created: u64) -> Self {
        Self {
            splitter: Splitter::default(),
            id: String::new(),
            model: String::new(),
            created,
            tools: Vec::new(),
            usage: Usage::default(),
            ended: false,
        }
    }

    /// Usage so far.
    pub fn usage(&self) -> TokenUsage {
        self.usage.tokens()
    }

    /// Takes upstream bytes; appends the chunks they complete to `out`.
    pub fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let Some(complete) = self.splitter.push(data) else {
            return;
        };
        for event in super::super::events(&complete) {
            if self.ended {
                return;
            }
            if let Some(data) = event_data(event) {
                self.on_event(&data, out);
            }
        }
    }

    /// The upstream body ended: a stream cut before `message_stop` gets an
    /// error chunk.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.ended {
            self.ended = true;
            openai_error(
                out,
                "the upstream stream ended before message_stop",
                "upstream_error",
                "upstream_stream_error",
            );
        }
    }

    fn on_event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let event: EventIn<'_> = match serde_json::from_slice(data) {
            Ok(event) => event,
            Err(_) => {
                self.ended = true;
                openai_error(
                    out,
                    "the upstream sent an event that is not valid JSON",
                    "upstream_error",
                    "upstream_bad_response",
                );
                return;
            }
        };
        match &*event.kind {
            "message_start" => {
                if let Some(message) = &event.message {
                    self.id = message.id.clone().into_owned();
                    self.model = message.model.clone().into_owned();
                    self.usage.update(&message.usage);
                }
                self.chunk(
                    out,
                    DeltaOut {
                        role: Some("assistant"),
                        content: Some(""),
                        ..DeltaOut::default()
                    },
                    None,
                );
            }
            "content_block_start" => match event.content_block {
                Some(block) if block.kind == "tool_use" => {
                    let tool = u32::try_from(self.tools.len()).unwrap_or(u32::MAX);
                    self.tools.push((event.index, tool));
                    self.chunk(
                        out,
                        DeltaOut {
                            tool_calls: Some([ToolCallDeltaOut {
                                index: tool,
                                id: block.id.as_deref(),
                                kind: Some("function"),
                                function: FunctionDeltaOut {
                                    name: block.name.as_deref(),
                                    arguments: "",
                                },
                            }]),
                            ..DeltaOut::default()
                        },
                        None,
                    );
                }
                Some(block) if block.kind == "text" => {
                    if let Some(text) = block.text.as_deref().filter(|t| !t.is_empty()) {
                        self.text(out, text);
                    }
                }
                _ => {}
            },
            "content_block_delta" => {
                let delta = event.delta.unwrap_or_default();
                match delta.kind.as_deref() {
                    Some("text_delta") => {
                        if let Some(text) = delta.text.as_deref() {
                            self.text(out, text);
                        }
                    }
                    Some("input_json_delta") => {
                        let tool = self
                            .tools
                            .iter()
                            .find(|(block, _)| *block == event.index)
                            .map(|(_, tool)| *tool);
                        if let (Some(tool), Some(json)) = (
                            tool,
                            delta.partial_json.as_deref().filter(|j| !j.is_empty()),
                        ) {
                            self.chunk(
                                out,
                                DeltaOut {
                                    tool_calls: Some([ToolCallDeltaOut {
                                        index: tool,
                                        id: None,
                                        kind: None,
                                        function: FunctionDeltaOut {
                                            name: None,
                                            arguments: json,
                                        },
                                    }]),
                                    ..DeltaOut::default()
                                },
                                None,
                            );
                        }
                    }
                    Some("thinking_delta") => {
                        if let Some(thinking) = delta.thinking.as_deref() {
                            self.chunk(
                                out,
                                DeltaOut {
                                    reasoning_content: Some(thinking),
                                    ..DeltaOut::default()
                                },
                                None,
                            );
                        }
                    }
                    // signature_delta, citations_delta: nothing to show.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(usage) = &event.usage {
                    self.usage.update(usage);
                }
                let reason =
                    finish_reason(event.delta.as_ref().and_then(|d| d.stop_reason.as_deref()));
                self.chunk(out, DeltaOut::default(), Some(reason));
            }
            "message_stop" => {
                self.ended = true;
                let usage = self.usage.to_openai();
                self.write(out, &[], Some(usage));
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            "error" => {
                self.ended = true;
                let error = event.error.unwrap_or_default();
                let kind = error.kind.as_deref().unwrap_or("api_error");
                openai_error(out, &error.message, kind, kind);
            }
            // ping, content_block_stop, and event types yet to come.
            _ => {}
        }
    }

    fn text(&self, out: &mut Vec<u8>, text: &str) {
        self.chunk(
            out,
            DeltaOut {
                content: Some(text),
                ..DeltaOut::default()
            },
            None,
        );
    }
}

/// `data: {"error":{...}}`, as OpenAI reports an error mid-stream.
pub fn openai_error(out: &mut Vec<u8>, message: &str, kind: &str, code: &str) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&crate::error::error_body(message, kind, code));
    out.extend_from_slice(b"\n\n");
}

/// An Anthropic stream event as written.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EventOut<'a> {
    MessageStart {
        message: MessageResponseOut<'a>,
    },
    ContentBlockStart {
        index: u32,
        content_block: BlockOut<'a>,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta<'a>,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDelta,
        usage: Usage,
    },
    MessageStop,
}

// The variants are named as Anthropic's `type` values are.
#[allow(clippy::enum_variant_names)]
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
    ThinkingDelta { thinking: &'a str },
}

#[derive(Serialize)]
struct MessageDelta {
    stop_reason: &'static str,
    stop_sequence: Option<()>,
}

impl EventOut<'_> {
    fn name(&self) -> &'static str {
        match self {
            Self::MessageStart { .. } => "message_start",
            Self::ContentBlockStart { .. } => "content_block_start",
            Self::ContentBlockDelta { .. } => "content_block_delta",
            Self::ContentBlockStop { .. } => "content_block_stop",
            Self::MessageDelta { .. } => "message_delta",
            Self::MessageStop => "message_stop",
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        let _ = write!(out, "event: {}\ndata: ", self.name());
        // Writing plain structs into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, self);
        out.extend_from_slice(b"\n\n");
    }
}

/// `event: error` with Anthropic's error body.
pub fn anthropic_error(out: &mut Vec<u8>, kind: &str, message: &str) {
    out.extend_from_slice(b"event: error\ndata: ");
    out.extend_from_slice(&super::response::error_body(kind, message));
    out.extend_from_slice(b"\n\n");
}

/// The content block being streamed to an Anthropic client.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text(u32),
    Thinking(u32),
    /// (OpenAI tool call index, block index).
    Tool(u32, u32),
}

/// OpenAI chunks → Anthropic events. Expects the upstream to report usage
/// (the translated request asks for it).
pub struct ToAnthropic {
    splitter: Splitter,
    started: bool,
    /// `input_tokens` of `message_start`, before the upstream says.
    estimated_input: u64,
    open: Open,
    next_block: u32,
    stop: Option<&'static str>,
    usage: Option<openai::Usage>,
    ended: bool,
}

impl ToAnthropic {
    /// A new stream; `estimated_input` goes in `message_start` (OpenAI
    /// reports usage only at the end).
    pub fn new(estimated_input: u64) -> Self {
        Self {
            splitter: Splitter::default(),
            started: false,
            estimated_input,
            open: Open::None,
            next_block: 0,
            stop: None,
            usage: None,
            ended: false,
        }
    }

    /// Takes upstream bytes; appends the events they complete to `out`.
    pub fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let Some(complete) = self.splitter.push(data) else {
            return;
        };
        for event in super::super::events(&complete) {
            if self.ended {
                return;
            }
            if let Some(data) = event_data(event) {
                self.on_event(&data, out);
            }
        }
    }

    /// The upstream body ended: finish the message if the upstream said
    /// why it stopped (some servers omit `[DONE]`), else an error event.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if self.stop.is_some() {
            self.end(out);
        } else {
            self.ended = true;
            anthropic_error(
                out,
                "api_error",
                "the upstream stream ended before it finished",
            );
        }
    }

    fn on_event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if data.starts_with(b"[DONE]") {
            self.end(out);
            return;
        }
        let chunk: ChunkIn<'_> = match serde_json::from_slice(data) {
            Ok(chunk) => chunk,
            Err(_) => {
                self.ended = true;
                anthropic_error(
                    out,
                    "api_error",
                    "the upstream sent an event that is not valid JSON",
                );
                return;
            }
        };
        if let Some(error) = &chunk.error {
            self.ended = true;
            let message = if error.message.is_empty() {
                "the upstream failed mid-stream"
            } else {
                &error.message
            };
            anthropic_error(out, "api_error", message);
            return;
        }
        if !self.started {
            self.start(out, &chunk.id, &chunk.model);
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else {
            return;
        };
        let delta = &choice.delta;
        if let Some(thinking) = delta.reasoning_content.as_deref().filter(|t| !t.is_empty()) {
            if !matches!(self.open, Open::Thinking(_)) {
                self.open_block(
                    out,
                    BlockOut::Thinking {
                        thinking: "",
                        signature: "",
                    },
                    Open::Thinking,
                );
            }
            self.delta(out, BlockDelta::ThinkingDelta { thinking });
        }
        if let Some(text) = delta.content.as_deref().filter(|t| !t.is_empty()) {
            if !matches!(self.open, Open::Text(_)) {
                self.open_block(
                    out,
                    BlockOut::Text {
                        text: Cow::Borrowed(""),
                    },
                    Open::Text,
                );
            }
            self.delta(out, BlockDelta::TextDelta { text });
        }
        for call in delta.tool_calls.iter().flatten() {
            let function = call.function.as_ref();
            if let Some(id) = call.id.as_deref() {
                let name = function.and_then(|f| f.name.as_deref()).unwrap_or_default();
                let input = empty_object();
                self.open_block(
                    out,
                    BlockOut::ToolUse {
                        id,
                        name,
                        input: Cow::Borrowed(&input),
                    },
                    |index| Open::Tool(call.index, index),
                );
            }
            let arguments = function
                .and_then(|f| f.arguments.as_deref())
                .filter(|a| !a.is_empty());
            if let (Open::Tool(tool, _), Some(partial_json)) = (self.open, arguments) {
                // Fragments of a call already closed cannot be sent any more.
                if tool == call.index {
                    self.delta(out, BlockDelta::InputJsonDelta { partial_json });
                }
            }
        }
        if let Some(reason) = choice.finish_reason.as_deref() {
            self.stop = Some(stop_reason(Some(reason)));
            self.close_block(out);
        }
    }

    fn start(&mut self, out: &mut Vec<u8>, id: &str, model: &str) {
        self.started = true;
        EventOut::MessageStart {
            message: MessageResponseOut {
                id,
                kind: "message",
                role: "assistant",
                model,
                content: Vec::new(),
                stop_reason: None,
                stop_sequence: None,
                usage: Usage {
                    input_tokens: self.estimated_input,
                    ..Usage::default()
                },
            },
        }
        .write(out);
    }

    fn open_block(
        &mut self,
        out: &mut Vec<u8>,
        block: BlockOut<'_>,
        open: impl FnOnce(u32) -> Open,
    ) {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        EventOut::ContentBlockStart {
            index,
            content_block: block,
        }
        .write(out);
        self.open = open(index);
    }

    fn delta(&self, out: &mut Vec<u8>, delta: BlockDelta<'_>) {
        let index = match self.open {
            Open::Text(i) | Open::Thinking(i) | Open::Tool(_, i) => i,
            Open::None => return,
        };
        EventOut::ContentBlockDelta { index, delta }.write(out);
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        let index = match self.open {
            Open::Text(i) | Open::Thinking(i) | Open::Tool(_, i) => i,
            Open::None => return,
        };
        self.open = Open::None;
        EventOut::ContentBlockStop { index }.write(out);
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.start(out, "", "");
        }
        self.close_block(out);
        self.ended = true;
        let usage = self
            .usage
            .as_ref()
            .map(Usage::from_openai)
            .unwrap_or_default();
        EventOut::MessageDelta {
            delta: MessageDelta {
                stop_reason: self.stop.unwrap_or("end_turn"),
                stop_sequence: None,
            },
            usage,
        }
        .write(out);
        EventOut::MessageStop.write(out);
    }
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).unwrap_or_default()
}

/// Reads the usage of an Anthropic stream passed through as is, and counts
/// its content events for a budget's stream guard.
#[derive(Default)]
pub struct Observer {
    pending: BytesMut,
    usage: Option<Usage>,
    /// `content_block_delta` events forwarded.
    pub content_events: u64,
}

impl Observer {
    /// Usage, once `message_start` was seen.
    pub fn usage(&self) -> Option<TokenUsage> {
        self.usage.map(|u| u.tokens())
    }

    /// Takes upstream bytes, returns what to forward (whole events, as
    /// they came); `allow(n)` is asked before the n-th content event: at the
    /// first refusal, that event and the rest are held back and `Err`
    /// carries what may go out.
    pub fn on_data(
        &mut self,
        data: Bytes,
        mut allow: Option<&mut dyn FnMut(u64) -> bool>,
    ) -> Result<Bytes, Bytes> {
        let complete = if self.pending.is_empty() && crate::llm::translate::ends_event(&data) {
            data
        } else {
            self.pending.extend_from_slice(&data);
            let Some(end) = crate::llm::sse::last_boundary(&self.pending) else {
                return Ok(Bytes::new());
            };
            self.pending.split_to(end).freeze()
        };
        let mut at = 0;
        for event in super::super::events(&complete) {
            let Some(data) = event_data(event) else {
                at += event.len();
                continue;
            };
            if find(&data, b"\"usage\"").is_some() {
                if let Ok(event) = serde_json::from_slice::<EventIn<'_>>(&data) {
                    let usage = self.usage.get_or_insert_with(Usage::default);
                    match (&event.message, &event.usage) {
                        (Some(message), _) => usage.update(&message.usage),
                        (None, Some(delta)) => usage.update(delta),
                        (None, None) => {}
                    }
                }
            } else if find(&data, b"\"content_block_delta\"").is_some() {
                if let Some(allow) = allow.as_deref_mut() {
                    if !allow(self.content_events + 1) {
                        self.pending.clear();
                        return Err(complete.slice(..at));
                    }
                }
                self.content_events += 1;
            }
            at += event.len();
        }
        Ok(complete)
    }

    /// The upstream ended: any trailing partial event, as is.
    pub fn finish(&mut self) -> Bytes {
        std::mem::take(&mut self.pending).freeze()
    }
}

/// The usage of a whole Anthropic `message` body (the last `usage` object).
pub fn json_usage(body: &[u8]) -> Option<TokenUsage> {
    let mut end = body.len();
    while let Some(at) = crate::llm::usage::rfind(&body[..end], b"\"usage\"") {
        let rest = body[at + 7..].trim_ascii_start();
        if let Some(rest) = rest.strip_prefix(b":") {
            let mut de = serde_json::Deserializer::from_slice(rest.trim_ascii_start());
            if let Ok(usage) = Usage::deserialize(&mut de) {
                return Some(usage.tokens());
            }
        }
        end = at;
    }
    None
}

impl ChunkEmitter for ToOpenAI {
    fn head(&self) -> (&str, u64, &str) {
        (&self.id, self.created, &self.model)
    }
}
