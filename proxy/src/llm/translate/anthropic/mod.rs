//! Anthropic Messages (`/v1/messages`) both ways: OpenAI chat requests out
//! to an Anthropic backend and its responses and event streams back
//! (`request::to_anthropic`, `response::to_openai`, `stream::ToOpenAI`),
//! and the client side, Anthropic clients served by OpenAI-schema backends
//! (`request::to_openai`, `response::to_anthropic`, `stream::ToAnthropic`).
//! The wire types below are borrowed from the bytes they are read from;
//! content blocks are flat structs (a `type` plus optional fields) because
//! serde's tagged enums cannot hold `RawValue`s. Knows nothing of routing,
//! limits or HTTP.

pub mod request;
pub mod response;
pub mod stream;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The `anthropic-version` header the gateway sends when the client did not.
pub const VERSION: &str = "2023-06-01";

/// `max_tokens` sent when an OpenAI client set none (Anthropic requires it).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// `POST /v1/messages` body as read from a client.
#[derive(Debug, Deserialize)]
pub struct MessagesRequestIn<'a> {
    /// `model`.
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    /// `max_tokens` (required by Anthropic; optional for count_tokens).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// `messages`.
    #[serde(borrow)]
    pub messages: Vec<MessageIn<'a>>,
    /// `system`: a string or text blocks.
    #[serde(borrow, default)]
    pub system: Option<&'a RawValue>,
    /// `stop_sequences`.
    #[serde(borrow, default)]
    pub stop_sequences: Option<Vec<Cow<'a, str>>>,
    /// `temperature`.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// `top_p`.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// `stream`.
    #[serde(default)]
    pub stream: Option<bool>,
    /// `tools`.
    #[serde(borrow, default)]
    pub tools: Option<Vec<ToolIn<'a>>>,
    /// `tool_choice`.
    #[serde(borrow, default)]
    pub tool_choice: Option<ToolChoiceIn<'a>>,
    /// `metadata`.
    #[serde(borrow, default)]
    pub metadata: Option<Metadata<'a>>,
}

/// One message as read from a client.
#[derive(Debug, Deserialize)]
pub struct MessageIn<'a> {
    /// `user` or `assistant`.
    #[serde(borrow)]
    pub role: Cow<'a, str>,
    /// A string or content blocks.
    #[serde(borrow)]
    pub content: &'a RawValue,
}

/// A content block as read (request or response): its `type` and the
/// fields the known types use.
#[derive(Debug, Default, Deserialize)]
pub struct BlockIn<'a> {
    /// `text`, `image`, `tool_use`, `tool_result`, `thinking`, ...
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// `text`.
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
    /// `image` and `document`: where the image or document is.
    #[serde(borrow, default)]
    pub source: Option<ImageSourceIn<'a>>,
    /// `document`: its title.
    #[serde(borrow, default)]
    pub title: Option<Cow<'a, str>>,
    /// `tool_use`: the call id.
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    /// `tool_use`: the tool.
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    /// `tool_use`: the arguments object.
    #[serde(borrow, default)]
    pub input: Option<&'a RawValue>,
    /// `tool_result`: the call answered.
    #[serde(borrow, default)]
    pub tool_use_id: Option<Cow<'a, str>>,
    /// `tool_result`: a string or blocks.
    #[serde(borrow, default)]
    pub content: Option<&'a RawValue>,
    /// `tool_result`: whether the tool failed.
    #[serde(default)]
    pub is_error: Option<bool>,
    /// `thinking`: the reasoning text.
    #[serde(borrow, default)]
    pub thinking: Option<Cow<'a, str>>,
}

/// `source` of an image or document block as read.
#[derive(Debug, Deserialize)]
pub struct ImageSourceIn<'a> {
    /// `base64` or `url` (and `text` for a document).
    #[serde(rename = "type", borrow, default)]
    pub kind: Cow<'a, str>,
    /// `base64`: `image/png`, ...
    #[serde(borrow, default)]
    pub media_type: Option<Cow<'a, str>>,
    /// `base64`: the encoded image; `text`: the document's text.
    #[serde(borrow, default)]
    pub data: Option<Cow<'a, str>>,
    /// `url`: where to fetch it.
    #[serde(borrow, default)]
    pub url: Option<Cow<'a, str>>,
}

/// A tool definition as read.
#[derive(Debug, Deserialize)]
pub struct ToolIn<'a> {
    /// Absent on client tools; set on server tools (`web_search_20250305`, ...).
    #[serde(rename = "type", borrow, default)]
    pub kind: Option<Cow<'a, str>>,
    /// Its name.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// What it does.
    #[serde(borrow, default)]
    pub description: Option<Cow<'a, str>>,
    /// The JSON schema of its input.
    #[serde(borrow, default)]
    pub input_schema: Option<&'a RawValue>,
}

/// `tool_choice` as read.
#[derive(Debug, Deserialize)]
pub struct ToolChoiceIn<'a> {
    /// `auto`, `any`, `tool` or `none`.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// With `tool`: which.
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    /// At most one tool call.
    #[serde(default)]
    pub disable_parallel_tool_use: Option<bool>,
}

/// `metadata`.
#[derive(Debug, Deserialize, Serialize)]
pub struct Metadata<'a> {
    /// An opaque id of the end user.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Cow<'a, str>>,
}

/// `POST /v1/messages` body as sent to an Anthropic backend.
#[derive(Debug, Serialize)]
pub struct MessagesRequestOut<'a> {
    /// `model`.
    pub model: &'a str,
    /// `max_tokens`.
    pub max_tokens: u64,
    /// The system prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<Cow<'a, str>>,
    /// Alternating user and assistant turns, user first.
    pub messages: Vec<MessageOut<'a>>,
    /// `stop_sequences`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<&'a str>,
    /// `temperature`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// `top_p`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// `stream`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// `tools`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolOut<'a>>,
    /// `tool_choice`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoiceOut<'a>>,
    /// `metadata`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataOut<'a>>,
}

/// `metadata` as sent.
#[derive(Debug, Serialize)]
pub struct MetadataOut<'a> {
    /// The OpenAI request's `user`.
    pub user_id: &'a str,
}

/// One message as sent.
#[derive(Debug, Serialize)]
pub struct MessageOut<'a> {
    /// `user` or `assistant`.
    pub role: &'static str,
    /// Its blocks.
    pub content: Vec<BlockOut<'a>>,
}

/// A content block as sent (request or response).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockOut<'a> {
    /// Text.
    Text {
        /// The text.
        text: Cow<'a, str>,
    },
    /// An image.
    Image {
        /// Where it is.
        source: ImageSourceOut<'a>,
    },
    /// A document (a PDF).
    Document {
        /// Where it is.
        source: ImageSourceOut<'a>,
        /// Its title (the client's file name).
        #[serde(skip_serializing_if = "Option::is_none")]
        title: Option<&'a str>,
    },
    /// A tool call.
    ToolUse {
        /// `toolu_...` (or the OpenAI call id, kept).
        id: &'a str,
        /// The tool.
        name: &'a str,
        /// The arguments object, copied as is.
        input: Cow<'a, RawValue>,
    },
    /// A tool's answer.
    ToolResult {
        /// The call answered.
        tool_use_id: &'a str,
        /// Text and image blocks.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        content: Vec<BlockOut<'a>>,
    },
    /// Reasoning text (responses only).
    Thinking {
        /// The reasoning.
        thinking: &'a str,
        /// Anthropic's signature over it; none when translated.
        signature: &'a str,
    },
}

/// `source` of an image or document block as sent.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSourceOut<'a> {
    /// Inline.
    Base64 {
        /// `image/png`, ...
        media_type: &'a str,
        /// The encoded image.
        data: &'a str,
    },
    /// Fetched by Anthropic.
    Url {
        /// The URL.
        url: &'a str,
    },
}

/// A tool definition as sent.
#[derive(Debug, Serialize)]
pub struct ToolOut<'a> {
    /// Its name.
    pub name: &'a str,
    /// What it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    /// The JSON schema of its input.
    pub input_schema: Cow<'a, RawValue>,
}

/// `tool_choice` as sent.
#[derive(Debug, Serialize)]
pub struct ToolChoiceOut<'a> {
    /// `auto`, `any`, `tool` or `none`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// With `tool`: which.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    /// At most one tool call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_parallel_tool_use: Option<bool>,
}

/// A `message` response as read from an Anthropic backend.
#[derive(Debug, Deserialize)]
pub struct MessageResponseIn<'a> {
    /// `msg_...`.
    #[serde(borrow, default)]
    pub id: Cow<'a, str>,
    /// The model that answered.
    #[serde(borrow, default)]
    pub model: Cow<'a, str>,
    /// Text, tool use and thinking blocks.
    #[serde(borrow)]
    pub content: Vec<BlockIn<'a>>,
    /// Why it stopped.
    #[serde(borrow, default)]
    pub stop_reason: Option<Cow<'a, str>>,
    /// Token counts.
    #[serde(default)]
    pub usage: Usage,
}

/// A `message` response as written to an Anthropic client.
#[derive(Debug, Serialize)]
pub struct MessageResponseOut<'a> {
    /// The upstream's id.
    pub id: &'a str,
    /// `message`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `assistant`.
    pub role: &'static str,
    /// The model that answered.
    pub model: &'a str,
    /// Text and tool use blocks.
    pub content: Vec<BlockOut<'a>>,
    /// Why it stopped.
    pub stop_reason: Option<&'static str>,
    /// Always `null` (OpenAI does not say which sequence matched).
    pub stop_sequence: Option<()>,
    /// Token counts.
    pub usage: Usage,
}

/// Anthropic `usage`: `input_tokens` excludes cache reads and writes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct Usage {
    /// Input tokens neither read from nor written to the cache.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens written to the cache.
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the cache.
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

/// The `usage` of a `message_delta` event: cumulative counts, each optional.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct DeltaUsage {
    /// Input tokens, when restated.
    #[serde(default)]
    pub input_tokens: Option<u64>,
    /// Output tokens so far.
    #[serde(default)]
    pub output_tokens: Option<u64>,
    /// Cache writes, when restated.
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    /// Cache reads, when restated.
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

impl Usage {
    /// Folds a `message_delta`'s cumulative counts in.
    pub fn update(&mut self, delta: &DeltaUsage) {
        if let Some(n) = delta.input_tokens {
            self.input_tokens = n;
        }
        if let Some(n) = delta.output_tokens {
            self.output_tokens = n;
        }
        if let Some(n) = delta.cache_creation_input_tokens {
            self.cache_creation_input_tokens = n;
        }
        if let Some(n) = delta.cache_read_input_tokens {
            self.cache_read_input_tokens = n;
        }
    }

    /// As the gateway accounts it.
    pub fn tokens(&self) -> super::TokenUsage {
        super::TokenUsage {
            input: self
                .input_tokens
                .saturating_add(self.cache_creation_input_tokens)
                .saturating_add(self.cache_read_input_tokens),
            output: self.output_tokens,
            cached_input: self.cache_read_input_tokens,
            cache_creation: self.cache_creation_input_tokens,
            reasoning: 0,
        }
    }

    /// In OpenAI's terms: `prompt_tokens` counts every input token, with
    /// cache reads as `prompt_tokens_details.cached_tokens`.
    pub fn to_openai(&self) -> super::openai::Usage {
        let tokens = self.tokens();
        super::openai::Usage {
            prompt_tokens: tokens.input,
            completion_tokens: tokens.output,
            total_tokens: tokens.input.saturating_add(tokens.output),
            prompt_tokens_details: Some(super::openai::PromptDetails {
                cached_tokens: tokens.cached_input,
            }),
            completion_tokens_details: None,
        }
    }

    /// From OpenAI's terms.
    pub fn from_openai(usage: &super::openai::Usage) -> Self {
        let cached = usage
            .prompt_tokens_details
            .map_or(0, |d| d.cached_tokens)
            .min(usage.prompt_tokens);
        Self {
            input_tokens: usage.prompt_tokens - cached,
            output_tokens: usage.completion_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: cached,
        }
    }
}

/// Anthropic's `stop_reason` in OpenAI's `finish_reason` terms.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, and anything new.
        _ => "stop",
    }
}

/// OpenAI's `finish_reason` in Anthropic's `stop_reason` terms.
pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// A string-or-blocks field (`content`, `system`): the text of a string,
/// or the blocks.
pub enum TextOrBlocks<'a> {
    /// A plain string.
    Text(Cow<'a, str>),
    /// Content blocks.
    Blocks(Vec<BlockIn<'a>>),
}

impl<'a> TextOrBlocks<'a> {
    /// Reads a string-or-blocks value.
    pub fn parse(raw: &'a RawValue) -> Result<Self, serde_json::Error> {
        if raw.get().starts_with('"') {
            serde_json::from_str(raw.get()).map(|Borrowed(text)| Self::Text(text))
        } else {
            serde_json::from_str(raw.get()).map(Self::Blocks)
        }
    }
}

/// A string, borrowed from the body when it has no escapes.
#[derive(Deserialize)]
struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
