//! Cohere's v2 Chat API (`POST {base}/v2/chat`, Bearer key): OpenAI chat
//! requests out (`request::to_cohere`), and whole responses, event streams
//! and errors back (`response::to_openai`, `stream::ToOpenAI`,
//! `response::error_to_openai`). Anthropic clients reach Cohere through the
//! OpenAI pivot (see the parent module). Cohere's message and tool shapes
//! are close to OpenAI's: roles, `tool_calls` and `tool_call_id` carry
//! over; `top_p` is `p`, `stop` is `stop_sequences`, a `tool_plan` (the
//! model's reasoning before calling) and `thinking` content become
//! `reasoning_content`. The wire types are borrowed from the bytes they are
//! read from. Knows nothing of routing, limits, URLs or credentials.
//!
//! Reference: docs.cohere.com/reference/chat and /reference/chat-stream.

pub mod embed;
pub mod request;
pub mod rerank;
pub mod response;
pub mod stream;

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::openai;
use super::TokenUsage;

/// `POST /v2/chat` body as sent.
#[derive(Debug, Serialize)]
pub struct ChatRequestOut<'a> {
    /// The model.
    pub model: &'a str,
    /// The turns.
    pub messages: Vec<MessageOut<'a>>,
    /// Functions the model may call, in OpenAI's own shape.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolOut<'a>>,
    /// `REQUIRED` or `NONE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<&'static str>,
    /// `max_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// `temperature`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// `p` (OpenAI's `top_p`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p: Option<f64>,
    /// `stop_sequences`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<&'a str>,
    /// `{"type":"json_object"[,"json_schema":{...}]}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormatOut<'a>>,
    /// Whether to stream.
    pub stream: bool,
}

/// `response_format` as sent.
#[derive(Debug, Serialize)]
pub struct ResponseFormatOut<'a> {
    /// Always `json_object`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The schema of the answer, if the client gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<&'a RawValue>,
}

/// One message as sent.
#[derive(Debug, Serialize)]
pub struct MessageOut<'a> {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: &'static str,
    /// Text, or parts; absent on an assistant turn that only calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentOut<'a>>,
    /// An assistant's calls.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut<'a>>,
    /// A tool message's call id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<&'a str>,
}

/// Message content as sent.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ContentOut<'a> {
    /// Plain text.
    Text(Cow<'a, str>),
    /// Text and image parts.
    Parts(Vec<PartOut<'a>>),
}

/// A content part as sent.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PartOut<'a> {
    /// `{"type":"text","text":...}`.
    Text {
        /// The text.
        text: &'a str,
    },
    /// `{"type":"image_url","image_url":{"url":...}}`.
    ImageUrl {
        /// The image.
        image_url: ImageUrlOut<'a>,
    },
}

/// `image_url` as sent.
#[derive(Debug, Serialize)]
pub struct ImageUrlOut<'a> {
    /// An http(s) or data URL.
    pub url: &'a str,
    /// `low`, `high` or `auto`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
}

/// A past call of the model, as sent.
#[derive(Debug, Serialize)]
pub struct ToolCallOut<'a> {
    /// The call's id.
    pub id: &'a str,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Name and arguments.
    pub function: FunctionOut<'a>,
}

/// `function` of a call as sent.
#[derive(Debug, Serialize)]
pub struct FunctionOut<'a> {
    /// The function.
    pub name: &'a str,
    /// The arguments, a JSON document in a string.
    pub arguments: &'a str,
}

/// A tool definition as sent.
#[derive(Debug, Serialize)]
pub struct ToolOut<'a> {
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The function.
    pub function: FunctionDefOut<'a>,
}

/// `function` of a tool definition as sent.
#[derive(Debug, Serialize)]
pub struct FunctionDefOut<'a> {
    /// Its name.
    pub name: &'a str,
    /// What it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    /// The JSON schema of its arguments, copied as is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<&'a RawValue>,
}

/// A whole `/v2/chat` response as read.
#[derive(Debug, Deserialize)]
pub struct ChatResponseIn<'a> {
    /// The generation's id.
    #[serde(borrow, default)]
    pub id: Cow<'a, str>,
    /// `COMPLETE`, `MAX_TOKENS`, `STOP_SEQUENCE`, `TOOL_CALL`, `ERROR`.
    #[serde(borrow, default)]
    pub finish_reason: Option<Cow<'a, str>>,
    /// The answer.
    #[serde(borrow, default)]
    pub message: Option<AssistantIn<'a>>,
    /// Token counts.
    #[serde(default)]
    pub usage: Option<UsageIn>,
}

/// The assistant message of a response.
#[derive(Debug, Default, Deserialize)]
pub struct AssistantIn<'a> {
    /// Text (and thinking) parts.
    #[serde(borrow, default)]
    pub content: Vec<ContentIn<'a>>,
    /// The model's plan before its calls.
    #[serde(borrow, default)]
    pub tool_plan: Option<Cow<'a, str>>,
    /// Its calls.
    #[serde(borrow, default)]
    pub tool_calls: Vec<ToolCallIn<'a>>,
}

/// A content part as read: `text` or `thinking`.
#[derive(Debug, Default, Deserialize)]
pub struct ContentIn<'a> {
    /// `text` or `thinking`.
    #[serde(rename = "type", borrow, default)]
    pub kind: Cow<'a, str>,
    /// The text of a `text` part.
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
    /// The reasoning of a `thinking` part.
    #[serde(borrow, default)]
    pub thinking: Option<Cow<'a, str>>,
}

/// A call as read (whole, or a stream's fragment).
#[derive(Debug, Default, Deserialize)]
pub struct ToolCallIn<'a> {
    /// The call's id (on the first fragment).
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    /// Name and arguments.
    #[serde(borrow, default)]
    pub function: FunctionIn<'a>,
}

/// `function` of a call as read.
#[derive(Debug, Default, Deserialize)]
pub struct FunctionIn<'a> {
    /// The function (on the first fragment).
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    /// The arguments (or more of them).
    #[serde(borrow, default)]
    pub arguments: Option<Cow<'a, str>>,
}

/// `usage`: `tokens` (what the model saw and wrote) and `billed_units`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct UsageIn {
    /// What was billed.
    #[serde(default)]
    pub billed_units: Option<Tokens>,
    /// What the model read and wrote (prompt template included).
    #[serde(default)]
    pub tokens: Option<Tokens>,
}

/// `{input_tokens, output_tokens}` (numbers, possibly written as floats).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Tokens {
    /// Input tokens.
    #[serde(default, deserialize_with = "count")]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default, deserialize_with = "count")]
    pub output_tokens: u64,
}

/// A token count written as an integer or a float (`12.0`).
fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let value = Option::<f64>::deserialize(deserializer)?.unwrap_or(0.0);
    // Counts are small non-negative integers; anything else is read as 0.
    Ok(if value.is_finite() && value >= 0.0 {
        value as u64
    } else {
        0
    })
}

impl UsageIn {
    /// As the gateway accounts it: `tokens`, else `billed_units`.
    pub fn counts(&self) -> TokenUsage {
        let tokens = self.tokens.or(self.billed_units).unwrap_or_default();
        TokenUsage {
            input: tokens.input_tokens,
            output: tokens.output_tokens,
            ..TokenUsage::default()
        }
    }

    /// In OpenAI's terms.
    pub fn to_openai(&self) -> openai::Usage {
        let tokens = self.counts();
        openai::Usage {
            prompt_tokens: tokens.input,
            completion_tokens: tokens.output,
            total_tokens: tokens.input.saturating_add(tokens.output),
            prompt_tokens_details: None,
            completion_tokens_details: None,
        }
    }
}

/// Cohere's error body: `{"id":...,"message":...}`.
#[derive(Debug, Deserialize)]
pub struct ErrorIn<'a> {
    /// What went wrong.
    #[serde(borrow, default)]
    pub message: Cow<'a, str>,
}

/// Cohere's `finish_reason` in OpenAI's terms; `called`: the answer holds
/// calls. `None` for `ERROR` (the generation failed).
pub fn finish_reason(reason: Option<&str>, called: bool) -> Option<&'static str> {
    match reason {
        Some("ERROR") => None,
        Some("MAX_TOKENS" | "ERROR_LIMIT") => Some("length"),
        Some("ERROR_TOXIC") => Some("content_filter"),
        Some("TOOL_CALL") => Some("tool_calls"),
        _ if called => Some("tool_calls"),
        // COMPLETE, STOP_SEQUENCE, USER_CANCEL and anything new.
        _ => Some("stop"),
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
