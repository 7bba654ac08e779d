//! A Cohere v2 chat stream as OpenAI `chat.completion.chunk`s
//! ([`ToOpenAI`]), event by event. Cohere sends `message-start`, then text
//! (`content-start`/`content-delta`/`content-end`), a plan
//! (`tool-plan-delta`) and calls (`tool-call-start`/`-delta`/`-end`), and
//! ends with `message-end` carrying `finish_reason` and usage; it sends no
//! `[DONE]`. The usage chunk and `[DONE]` are written at `message-end`;
//! an error chunk when the generation failed or the stream ended before.
//! Never waits for more than one event.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{finish_reason, ContentIn, ToolCallIn, UsageIn};
use crate::llm::translate::anthropic::stream::openai_error;
use crate::llm::translate::openai::{ChunkEmitter, DeltaOut, FunctionDeltaOut, ToolCallDeltaOut};
use crate::llm::translate::{event_data, events, Splitter, TokenUsage};

/// One stream event as read.
#[derive(Debug, Deserialize)]
struct EventIn<'a> {
    /// `message-start`, `content-delta`, ...
    #[serde(rename = "type", borrow, default)]
    kind: Cow<'a, str>,
    /// On `message-start`: the generation's id.
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    delta: Option<DeltaIn<'a>>,
}

#[derive(Debug, Default, Deserialize)]
struct DeltaIn<'a> {
    #[serde(borrow, default)]
    message: Option<DeltaMessageIn<'a>>,
    /// On `message-end`.
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
    /// On `message-end`.
    #[serde(default)]
    usage: Option<UsageIn>,
    /// On a `message-end` whose generation failed.
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
}

/// `delta.message`: its fields' shapes depend on the event (`content` is a
/// list on `message-start`, one part on `content-delta`), so they are read
/// raw and parsed for the events that use them.
#[derive(Debug, Default, Deserialize)]
struct DeltaMessageIn<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_plan: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
}

/// Cohere events → OpenAI chunks. The output always carries
/// `"usage":null` and the final usage chunk, as with
/// `stream_options.include_usage`; the OpenAI stream filter after it drops
/// them when the client did not ask.
pub struct ToOpenAI {
    splitter: Splitter,
    id: String,
    model: String,
    created: u64,
    started: bool,
    /// Calls started so far.
    calls: u32,
    usage: UsageIn,
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
            started: false,
            calls: 0,
            usage: UsageIn::default(),
            ended: false,
        }
    }

    /// The model named on every chunk (Cohere's events do not name it).
    pub fn set_model(&mut self, model: &str) {
        model.clone_into(&mut self.model);
    }

    /// Usage so far.
    pub fn usage(&self) -> TokenUsage {
        self.usage.counts()
    }

    /// Takes upstream bytes; appends the chunks they complete to `out`.
    pub fn on_data(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let Some(complete) = self.splitter.push(data) else {
            return;
        };
        for event in events(&complete) {
            if self.ended {
                return;
            }
            if let Some(data) = event_data(event) {
                self.on_event(&data, out);
            }
        }
    }

    /// The upstream body ended: an error chunk unless `message-end` came.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        // A last event without its blank line still counts, if whole.
        if let Some(rest) = self.splitter.push(b"\n\n") {
            for event in events(&rest) {
                if let Some(data) = event_data(event) {
                    let whole =
                        serde_json::from_slice::<serde::de::IgnoredAny>(data.trim_ascii()).is_ok();
                    if whole && !self.ended {
                        self.on_event(&data, out);
                    }
                }
            }
            if self.ended {
                return;
            }
        }
        self.ended = true;
        openai_error(
            out,
            "the upstream stream ended before message-end",
            "upstream_error",
            "upstream_stream_error",
        );
    }

    fn on_event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let data = data.trim_ascii();
        if data.is_empty() {
            return;
        }
        let Ok(event) = serde_json::from_slice::<EventIn<'_>>(data) else {
            self.bad_event(out);
            return;
        };
        if !self.started {
            self.started = true;
            self.id = match event.id.as_deref() {
                Some(id) if !id.is_empty() => id.to_owned(),
                _ => format!("cohere-{:x}", self.created),
            };
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
        let delta = event.delta.unwrap_or_default();
        let message = delta.message.unwrap_or_default();
        match &*event.kind {
            "content-delta" => {
                let Some(raw) = message.content else {
                    return;
                };
                let Ok(part) = serde_json::from_str::<ContentIn<'_>>(raw.get()) else {
                    self.bad_event(out);
                    return;
                };
                if let Some(text) = part.text.as_deref().filter(|t| !t.is_empty()) {
                    self.chunk(
                        out,
                        DeltaOut {
                            content: Some(text),
                            ..DeltaOut::default()
                        },
                        None,
                    );
                } else if let Some(thinking) = part.thinking.as_deref().filter(|t| !t.is_empty()) {
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
            "tool-plan-delta" => {
                if let Some(plan) = message.tool_plan.as_deref().filter(|t| !t.is_empty()) {
                    self.chunk(
                        out,
                        DeltaOut {
                            reasoning_content: Some(plan),
                            ..DeltaOut::default()
                        },
                        None,
                    );
                }
            }
            kind @ ("tool-call-start" | "tool-call-delta") => {
                let Some(raw) = message.tool_calls else {
                    return;
                };
                let Ok(call) = serde_json::from_str::<ToolCallIn<'_>>(raw.get()) else {
                    self.bad_event(out);
                    return;
                };
                let start = kind == "tool-call-start";
                if start {
                    self.calls = self.calls.saturating_add(1);
                } else if self.calls == 0 {
                    // Arguments of no started call.
                    self.bad_event(out);
                    return;
                }
                let fallback_id;
                let id = match call.id.as_deref() {
                    Some(id) if !id.is_empty() => id,
                    _ => {
                        fallback_id = format!("call_{}_{}", self.id, self.calls - 1);
                        &fallback_id
                    }
                };
                let arguments = call.function.arguments.as_deref().unwrap_or_default();
                if !start && arguments.is_empty() {
                    return;
                }
                self.chunk(
                    out,
                    DeltaOut {
                        tool_calls: Some([ToolCallDeltaOut {
                            index: self.calls - 1,
                            id: start.then_some(id),
                            kind: start.then_some("function"),
                            function: FunctionDeltaOut {
                                name: if start {
                                    Some(call.function.name.as_deref().unwrap_or_default())
                                } else {
                                    None
                                },
                                arguments,
                            },
                        }]),
                        ..DeltaOut::default()
                    },
                    None,
                );
            }
            "message-end" => {
                self.ended = true;
                if let Some(usage) = delta.usage {
                    self.usage = usage;
                }
                match finish_reason(delta.finish_reason.as_deref(), self.calls > 0) {
                    Some(reason) => {
                        self.chunk(out, DeltaOut::default(), Some(reason));
                        let usage = self.usage.to_openai();
                        self.write(out, &[], Some(usage));
                        out.extend_from_slice(b"data: [DONE]\n\n");
                    }
                    None => {
                        let message = delta
                            .error
                            .as_deref()
                            .filter(|e| !e.is_empty())
                            .unwrap_or("the upstream reported that the generation failed");
                        openai_error(out, message, "upstream_error", "upstream_stream_error");
                    }
                }
            }
            // message-start, content-start/-end, tool-call-end, citations.
            _ => {}
        }
    }

    fn bad_event(&mut self, out: &mut Vec<u8>) {
        self.ended = true;
        openai_error(
            out,
            "the upstream sent an event that could not be read",
            "upstream_error",
            "upstream_bad_response",
        );
    }
}

impl ChunkEmitter for ToOpenAI {
    fn head(&self) -> (&str, u64, &str) {
        (&self.id, self.created, &self.model)
    }
}
