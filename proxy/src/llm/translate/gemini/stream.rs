//! A Gemini `streamGenerateContent?alt=sse` stream as OpenAI
//! `chat.completion.chunk`s ([`ToOpenAI`]), event by event. Each Gemini
//! event is a whole `GenerateContentResponse` holding the new parts (text
//! in pieces, function calls whole) and the usage so far; the last one
//! carries `finishReason`. Google ends the stream by closing it (no
//! `[DONE]`): the usage chunk and `[DONE]` are written then, or an error
//! chunk when no `finishReason` came. Never waits for more than one event.

use serde_json::value::RawValue;

use super::response::response_id;
use super::{call_id, finish_reason, GenerateResponseIn, UsageMetadata};
use crate::llm::translate::anthropic::stream::openai_error;
use crate::llm::translate::openai::{ChunkEmitter, DeltaOut, FunctionDeltaOut, ToolCallDeltaOut};
use crate::llm::translate::{event_data, events, Splitter, TokenUsage};

/// Gemini events → OpenAI chunks. The output always carries
/// `"usage":null` and the final usage chunk, as with
/// `stream_options.include_usage`; the OpenAI stream filter after it drops
/// them when the client did not ask.
pub struct ToOpenAI {
    splitter: Splitter,
    id: String,
    model: String,
    created: u64,
    started: bool,
    /// Function calls sent so far.
    calls: usize,
    finish: Option<&'static str>,
    usage: UsageMetadata,
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
            finish: None,
            usage: UsageMetadata::default(),
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
        for event in events(&complete) {
            if self.ended {
                return;
            }
            if let Some(data) = event_data(event) {
                self.on_event(&data, out);
            }
        }
    }

    /// The upstream body ended: the usage chunk and `[DONE]` if the model
    /// finished, else an error chunk.
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
        if self.finish.is_some() {
            let usage = self.usage.to_openai();
            self.write(out, &[], Some(usage));
            out.extend_from_slice(b"data: [DONE]\n\n");
        } else {
            openai_error(
                out,
                "the upstream stream ended before a finishReason",
                "upstream_error",
                "upstream_stream_error",
            );
        }
    }

    fn on_event(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let data = data.trim_ascii();
        if data.is_empty() {
            return;
        }
        let event: GenerateResponseIn<'_> = match serde_json::from_slice(data) {
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
        if let Some(error) = &event.error {
            self.ended = true;
            let kind = error.status.as_deref().unwrap_or("api_error");
            let message = if error.message.is_empty() {
                "the upstream failed mid-stream"
            } else {
                &error.message
            };
            openai_error(out, message, "upstream_error", kind);
            return;
        }
        if let Some(usage) = event.usage_metadata {
            self.usage = usage;
        }
        if !self.started {
            self.started = true;
            self.id = response_id(event.response_id.as_deref(), self.created);
            self.model = event
                .model_version
                .as_deref()
                .unwrap_or_default()
                .to_owned();
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
        let Some(candidate) = event.candidates.iter().find(|c| c.index == 0) else {
            if event
                .prompt_feedback
                .as_ref()
                .is_some_and(|f| f.block_reason.is_some())
                && self.finish.is_none()
            {
                self.finish = Some("content_filter");
                self.chunk(out, DeltaOut::default(), Some("content_filter"));
            }
            return;
        };
        for part in candidate.content.iter().flat_map(|c| &c.parts) {
            if let Some(call) = &part.function_call {
                let id = call_id(&self.id, self.calls, part.thought_signature.as_deref());
                let index = u32::try_from(self.calls).unwrap_or(u32::MAX);
                self.calls += 1;
                self.chunk(
                    out,
                    DeltaOut {
                        tool_calls: Some([ToolCallDeltaOut {
                            index,
                            id: Some(&id),
                            kind: Some("function"),
                            function: FunctionDeltaOut {
                                name: Some(&call.name),
                                arguments: call.args.map_or("{}", RawValue::get),
                            },
                        }]),
                        ..DeltaOut::default()
                    },
                    None,
                );
            } else if let Some(text) = part.text.as_deref().filter(|t| !t.is_empty()) {
                let delta = if part.thought == Some(true) {
                    DeltaOut {
                        reasoning_content: Some(text),
                        ..DeltaOut::default()
                    }
                } else {
                    DeltaOut {
                        content: Some(text),
                        ..DeltaOut::default()
                    }
                };
                self.chunk(out, delta, None);
            }
        }
        if let Some(reason) = candidate.finish_reason.as_deref() {
            if self.finish.is_none() {
                let reason = finish_reason(Some(reason), self.calls > 0);
                self.finish = Some(reason);
                self.chunk(out, DeltaOut::default(), Some(reason));
            }
        }
    }
}

impl ChunkEmitter for ToOpenAI {
    fn head(&self) -> (&str, u64, &str) {
        (&self.id, self.created, &self.model)
    }
}
