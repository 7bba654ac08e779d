//! ConverseStream's events as OpenAI `chat.completion.chunk`s, message by
//! message as the binary event stream decodes: `messageStart` is the role
//! chunk, text, tool input and reasoning deltas are content chunks, a
//! `toolUse` block start opens a tool call, `messageStop` is the finish
//! chunk and `metadata` the usage chunk and `[DONE]`. The output always
//! carries the usage chunk; the OpenAI stream filter after it drops it when
//! the client did not ask. An exception event, a bad checksum or a stream
//! cut short ends with an error chunk, never a hang.

use std::borrow::Cow;

use serde::Deserialize;

use super::eventstream::{Decoder, Message};
use super::{finish_reason, ToolUseIn, Usage};
use crate::llm::translate::anthropic::stream::openai_error;
use crate::llm::translate::openai::{ChunkEmitter, DeltaOut, FunctionDeltaOut, ToolCallDeltaOut};
use crate::llm::translate::TokenUsage;

/// The payload of any ConverseStream event: the fields the known ones use.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventIn<'a> {
    /// `contentBlock*`.
    #[serde(default)]
    content_block_index: u32,
    /// `contentBlockStart`.
    #[serde(borrow, default)]
    start: Option<StartIn<'a>>,
    /// `contentBlockDelta`.
    #[serde(borrow, default)]
    delta: Option<DeltaIn<'a>>,
    /// `messageStop`.
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    /// `metadata`.
    #[serde(default)]
    usage: Option<Usage>,
    /// An exception's text.
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartIn<'a> {
    #[serde(borrow, default)]
    tool_use: Option<ToolUseIn<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeltaIn<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_use: Option<ToolInputIn<'a>>,
    #[serde(borrow, default)]
    reasoning_content: Option<ReasoningDeltaIn<'a>>,
}

#[derive(Debug, Default, Deserialize)]
struct ToolInputIn<'a> {
    #[serde(borrow, default)]
    input: Cow<'a, str>,
}

#[derive(Debug, Default, Deserialize)]
struct ReasoningDeltaIn<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

/// ConverseStream → OpenAI chunks.
pub struct ToOpenAI {
    decoder: Decoder,
    id: String,
    model: String,
    created: u64,
    /// (Bedrock block index, OpenAI tool call index) of each tool use.
    tools: Vec<(u32, u32)>,
    usage: Option<Usage>,
    stopped: bool,
    ended: bool,
}

impl ToOpenAI {
    /// A new stream; `id`, `model` and `created` go on every chunk.
    pub fn new(id: String, model: String, created: u64) -> Self {
        Self {
            decoder: Decoder::default(),
            id,
            model,
            created,
            tools: Vec::new(),
            usage: None,
            stopped: false,
            ended: false,
        }
    }

    /// The model named on every chunk (Bedrock's events do not say).
    pub fn set_model(&mut self, model: &str) {
        model.clone_into(&mut self.model);
    }

    /// Usage, once `metadata` came.
    pub fn usage(&self) -> Option<TokenUsage> {
        self.usage.map(|u| u.tokens())
    }

    /// Takes upstream bytes; appends the chunks they complete to `out`.
    pub fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.decoder.push(data);
        while let Some(message) = self.decoder.next_message() {
            match message {
                Ok(message) => self.on_message(&message, out),
                Err(error) => {
                    self.ended = true;
                    openai_error(
                        out,
                        &format!("the upstream stream cannot be read: {error}"),
                        "upstream_error",
                        "upstream_bad_response",
                    );
                }
            }
            if self.ended {
                return;
            }
        }
    }

    /// The upstream body ended: a stream cut before `messageStop` (or inside
    /// a message) gets an error chunk; one cut after it, `[DONE]`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        match self.decoder.finish() {
            Err(error) => openai_error(
                out,
                &format!("the upstream stream cannot be read: {error}"),
                "upstream_error",
                "upstream_stream_error",
            ),
            Ok(()) if self.stopped => out.extend_from_slice(b"data: [DONE]\n\n"),
            Ok(()) => openai_error(
                out,
                "the upstream stream ended before messageStop",
                "upstream_error",
                "upstream_stream_error",
            ),
        }
    }

    fn on_message(&mut self, message: &Message, out: &mut Vec<u8>) {
        match message.message_type.as_deref() {
            Some("event") | None => {}
            Some("exception") => {
                self.ended = true;
                let text = serde_json::from_slice::<EventIn<'_>>(&message.payload)
                    .ok()
                    .and_then(|e| e.message.map(Cow::into_owned))
                    .unwrap_or_else(|| "the upstream failed mid-stream".to_owned());
                let exception = message.exception_type.as_deref().unwrap_or("exception");
                let kind = if exception == "throttlingException" {
                    "rate_limit_error"
                } else {
                    "upstream_error"
                };
                openai_error(out, &text, kind, exception);
                return;
            }
            Some(_) => {
                self.ended = true;
                let text = message
                    .error_message
                    .as_deref()
                    .unwrap_or("the upstream failed mid-stream");
                let code = message.error_code.as_deref().unwrap_or("upstream_error");
                openai_error(out, text, "upstream_error", code);
                return;
            }
        }
        let event: EventIn<'_> = match serde_json::from_slice(&message.payload) {
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
        match message.event_type.as_deref() {
            Some("messageStart") => self.chunk(
                out,
                DeltaOut {
                    role: Some("assistant"),
                    content: Some(""),
                    ..DeltaOut::default()
                },
                None,
            ),
            Some("contentBlockStart") => {
                if let Some(tool) = event.start.and_then(|s| s.tool_use) {
                    let index = u32::try_from(self.tools.len()).unwrap_or(u32::MAX);
                    self.tools.push((event.content_block_index, index));
                    self.chunk(
                        out,
                        DeltaOut {
                            tool_calls: Some([ToolCallDeltaOut {
                                index,
                                id: Some(&tool.tool_use_id),
                                kind: Some("function"),
                                function: FunctionDeltaOut {
                                    name: Some(&tool.name),
                                    arguments: "",
                                },
                            }]),
                            ..DeltaOut::default()
                        },
                        None,
                    );
                }
            }
            Some("contentBlockDelta") => {
                let delta = event.delta.unwrap_or_default();
                if let Some(text) = delta.text.as_deref().filter(|t| !t.is_empty()) {
                    self.chunk(
                        out,
                        DeltaOut {
                            content: Some(text),
                            ..DeltaOut::default()
                        },
                        None,
                    );
                } else if let Some(input) = delta.tool_use.as_ref().filter(|t| !t.input.is_empty())
                {
                    let tool = self
                        .tools
                        .iter()
                        .find(|(block, _)| *block == event.content_block_index)
                        .map(|(_, tool)| *tool);
                    if let Some(index) = tool {
                        self.chunk(
                            out,
                            DeltaOut {
                                tool_calls: Some([ToolCallDeltaOut {
                                    index,
                                    id: None,
                                    kind: None,
                                    function: FunctionDeltaOut {
                                        name: None,
                                        arguments: &input.input,
                                    },
                                }]),
                                ..DeltaOut::default()
                            },
                            None,
                        );
                    }
                } else if let Some(text) = delta
                    .reasoning_content
                    .as_ref()
                    .and_then(|r| r.text.as_deref())
                    .filter(|t| !t.is_empty())
                {
                    self.chunk(
                        out,
                        DeltaOut {
                            reasoning_content: Some(text),
                            ..DeltaOut::default()
                        },
                        None,
                    );
                }
            }
            Some("messageStop") => {
                self.stopped = true;
                let reason = finish_reason(event.stop_reason.as_deref());
                self.chunk(out, DeltaOut::default(), Some(reason));
            }
            Some("metadata") => {
                self.ended = true;
                let usage = event.usage.unwrap_or_default();
                self.usage = Some(usage);
                self.write(out, &[], Some(usage.to_openai()));
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            // contentBlockStop, and event types yet to come.
            _ => {}
        }
    }
}

impl ChunkEmitter for ToOpenAI {
    fn head(&self) -> (&str, u64, &str) {
        (&self.id, self.created, &self.model)
    }
}
