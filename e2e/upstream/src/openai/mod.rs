//! The OpenAI wire format: request parsing and response bodies for each
//! endpoint, plus the pieces they share (ids, usage, SSE chunk framing).
//! Knows nothing of HTTP plumbing, control headers' parsing or recording.

pub(crate) mod chat;
pub(crate) mod completions;
pub(crate) mod embeddings;
pub(crate) mod error;
pub(crate) mod models;
pub(crate) mod responses;

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::body::{Event, EventKind, EventSource};

/// `created` on every response: fixed, so that bodies can be compared exactly.
pub const CREATED: u64 = 1_700_000_000;
/// `system_fingerprint` on every chat and text completion.
pub const SYSTEM_FINGERPRINT: &str = "fp_mock";
/// The model listed by `GET /v1/models`.
pub const MODEL_ID: &str = "mock-model";

/// What an endpoint answers with.
pub(crate) enum Reply {
    /// A whole JSON body.
    Json(Bytes),
    /// A `text/event-stream` body.
    Stream(Box<dyn EventSource>),
}

/// Why a request body could not be answered: a 400 for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadRequest {
    pub message: String,
    pub param: Option<&'static str>,
}

impl BadRequest {
    pub fn json(err: &serde_json::Error) -> BadRequest {
        BadRequest {
            message: format!("We could not parse the JSON body of your request: {err}"),
            param: None,
        }
    }
}

/// Numbers response ids (`chatcmpl-mock-1`, `cmpl-mock-2`, ...), from 1 per server.
#[derive(Debug)]
pub(crate) struct Ids(AtomicU64);

impl Default for Ids {
    fn default() -> Self {
        Ids(AtomicU64::new(1))
    }
}

impl Ids {
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// Token counts of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Only with `x-mock-cached-tokens`, as OpenAI reports prompt cache hits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// `prompt_tokens_details` of a usage object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct PromptTokensDetails {
    pub cached_tokens: u64,
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            prompt_tokens_details: None,
        }
    }

    /// With `cached` of the prompt tokens read from the cache (0: none reported).
    pub fn with_cached(mut self, cached: u64) -> Usage {
        if cached > 0 {
            self.prompt_tokens_details = Some(PromptTokensDetails {
                cached_tokens: cached,
            });
        }
        self
    }
}

/// `stream_options` of chat and text completion requests.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Text of content chunk `i` (0-based).
pub(crate) struct ChunkText(pub u32);

impl fmt::Display for ChunkText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tok{} ", self.0)
    }
}

/// The whole content of a response with `n` chunks.
pub(crate) fn content(n: u32) -> String {
    let mut s = String::with_capacity(n as usize * 7);
    for i in 0..n {
        let _ = write!(s, "{}", ChunkText(i));
    }
    s
}

/// A JSON string literal for `s`.
pub(crate) fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Serializes a response body.
pub(crate) fn to_json(value: &impl Serialize) -> Bytes {
    // The bodies are plain structs with string keys, which cannot fail to
    // serialize; an empty body would show up in any test.
    serde_json::to_vec(value)
        .map(Bytes::from)
        .unwrap_or_default()
}

/// The terminating event of every OpenAI stream.
pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";

/// Frames the chunks of one stream. The fields every chunk repeats (id,
/// object, created, model, fingerprint) are serialized once, up front.
pub(crate) struct ChunkFrame {
    /// `data: {"id":...,"system_fingerprint":"fp_mock"`, unterminated.
    head: String,
    /// With `stream_options.include_usage`, every choice chunk carries `"usage":null`.
    usage_null: bool,
}

impl ChunkFrame {
    pub fn new(id: &str, object: &str, model: &str, include_usage: bool) -> ChunkFrame {
        let head = format!(
            "data: {{\"id\":{},\"object\":{},\"created\":{CREATED},\"model\":{},\"system_fingerprint\":{}",
            json_str(id),
            json_str(object),
            json_str(model),
            json_str(SYSTEM_FINGERPRINT),
        );
        ChunkFrame {
            head,
            usage_null: include_usage,
        }
    }

    /// A chunk with one choice whose members are `choice` (without braces).
    pub fn choice(&self, kind: EventKind, choice: fmt::Arguments<'_>) -> Event {
        let mut s = String::with_capacity(self.head.len() + 128);
        s.push_str(&self.head);
        s.push_str(",\"choices\":[{");
        let _ = s.write_fmt(choice);
        s.push_str("}]");
        if self.usage_null {
            s.push_str(",\"usage\":null");
        }
        s.push_str("}\n\n");
        Event {
            kind,
            bytes: Bytes::from(s),
        }
    }

    /// The final usage chunk: no choices, the totals.
    pub fn usage(&self, usage: &Usage) -> Event {
        let usage = to_json(usage);
        let s = format!(
            "{},\"choices\":[],\"usage\":{}}}\n\n",
            self.head,
            String::from_utf8_lossy(&usage)
        );
        Event {
            kind: EventKind::Tail,
            bytes: Bytes::from(s),
        }
    }

    pub fn done() -> Event {
        Event {
            kind: EventKind::Tail,
            bytes: Bytes::from_static(DONE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_concatenates_chunks() {
        assert_eq!(content(3), "tok0 tok1 tok2 ");
        assert_eq!(content(0), "");
    }

    #[test]
    fn chunk_frame_escapes_and_terminates() {
        let frame = ChunkFrame::new("id-1", "chat.completion.chunk", "we\"ird", true);
        let event = frame.choice(EventKind::Content, format_args!("\"index\":0"));
        let text = std::str::from_utf8(&event.bytes).unwrap();
        assert!(
            text.starts_with("data: {") && text.ends_with("}\n\n"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(text.trim_start_matches("data: ").trim_end()).unwrap();
        assert_eq!(json["model"], "we\"ird");
        assert_eq!(json["usage"], serde_json::Value::Null);
        assert_eq!(json["choices"][0]["index"], 0);
    }

    #[test]
    fn ids_start_at_one() {
        let ids = Ids::default();
        assert_eq!((ids.next(), ids.next()), (1, 2));
    }
}
