//! AWS Bedrock's Converse API (`POST /model/{modelId}/converse` and
//! `/converse-stream`) for OpenAI chat clients: requests out
//! (`request::to_bedrock`), whole answers and errors back
//! (`response::to_openai`, `response::error_to_openai`), and ConverseStream's
//! binary event stream (`eventstream`) as OpenAI chunks (`stream::ToOpenAI`).
//! Anthropic clients reach Bedrock through the OpenAI pivot (the layer
//! above chains the translations). The wire types below are borrowed from
//! the bytes they are read from; tool schemas and inputs stay raw JSON.
//! Knows nothing of routing, signing or HTTP.

pub mod embed;
pub mod eventstream;
pub mod request;
pub mod response;
pub mod stream;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The path after the endpoint: `/model/{modelId}/converse[-stream]`, the
/// model id percent-encoded (ids such as `...-v1:0` hold a colon).
pub fn path(model: &str, stream: bool) -> String {
    let mut out = String::with_capacity(model.len() + 32);
    out.push_str("/model/");
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str(if stream {
        "/converse-stream"
    } else {
        "/converse"
    });
    out
}

/// A Converse request body as sent (the model is in the path).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConverseRequest<'a> {
    /// Alternating user and assistant turns, user first.
    pub messages: Vec<MessageOut<'a>>,
    /// System prompts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub system: Vec<TextBlock<'a>>,
    /// Sampling settings.
    #[serde(skip_serializing_if = "InferenceConfig::is_empty")]
    pub inference_config: InferenceConfig<'a>,
    /// Tools and the choice among them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig<'a>>,
}

/// `{"text": ...}`.
#[derive(Debug, Serialize)]
pub struct TextBlock<'a> {
    /// The text.
    pub text: &'a str,
}

/// `inferenceConfig`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InferenceConfig<'a> {
    /// `maxTokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// `temperature`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// `topP`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// `stopSequences`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<&'a str>,
}

impl InferenceConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.stop_sequences.is_empty()
    }
}

/// One message as sent.
#[derive(Debug, Serialize)]
pub struct MessageOut<'a> {
    /// `user` or `assistant`.
    pub role: &'static str,
    /// Its blocks.
    pub content: Vec<BlockOut<'a>>,
}

/// A content block as sent: one key naming its kind.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BlockOut<'a> {
    /// `{"text": ...}`.
    Text(Cow<'a, str>),
    /// `{"image": {"format": "png", "source": {"bytes": BASE64}}}`.
    Image(ImageOut<'a>),
    /// `{"document": {"format": "pdf", "name", "source": {"bytes": BASE64}}}`.
    Document(DocumentOut<'a>),
    /// `{"toolUse": {"toolUseId", "name", "input"}}`.
    ToolUse(ToolUseOut<'a>),
    /// `{"toolResult": {"toolUseId", "content", "status"}}`.
    ToolResult(ToolResultOut<'a>),
}

/// `image`.
#[derive(Debug, Serialize)]
pub struct ImageOut<'a> {
    /// `png`, `jpeg`, `gif` or `webp`.
    pub format: &'static str,
    /// The bytes, or where they are in S3.
    pub source: ImageSource<'a>,
}

/// `image.source` and `document.source`: a union, one key.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ImageSource<'a> {
    /// Base64 (the JSON form of a blob).
    Bytes(&'a str),
    /// `{"s3Location": {"uri": "s3://bucket/key"}}`.
    S3Location(S3Location<'a>),
}

/// `s3Location`.
#[derive(Debug, Serialize)]
pub struct S3Location<'a> {
    /// `s3://bucket/key`.
    pub uri: &'a str,
}

/// `document`.
#[derive(Debug, Serialize)]
pub struct DocumentOut<'a> {
    /// `pdf` (the one format the gateway sends).
    pub format: &'static str,
    /// Its name: letters, digits, single spaces, hyphens, parentheses and
    /// square brackets only (Converse refuses others).
    pub name: Cow<'a, str>,
    /// The bytes.
    pub source: ImageSource<'a>,
}

/// `toolUse`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUseOut<'a> {
    /// The call id.
    pub tool_use_id: &'a str,
    /// The tool.
    pub name: &'a str,
    /// The arguments object, as is.
    pub input: Cow<'a, RawValue>,
}

/// `toolResult`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResultOut<'a> {
    /// The call answered.
    pub tool_use_id: &'a str,
    /// Text and image blocks.
    pub content: Vec<BlockOut<'a>>,
}

/// `toolConfig`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig<'a> {
    /// `[{"toolSpec": ...}]`.
    pub tools: Vec<ToolOut<'a>>,
    /// `{"auto":{}}`, `{"any":{}}` or `{"tool":{"name":...}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoiceOut<'a>>,
}

/// One tool.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolOut<'a> {
    /// Its definition.
    pub tool_spec: ToolSpec<'a>,
}

/// `toolSpec`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpec<'a> {
    /// Its name.
    pub name: &'a str,
    /// What it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    /// `{"json": SCHEMA}`.
    pub input_schema: InputSchema<'a>,
}

/// `inputSchema`.
#[derive(Debug, Serialize)]
pub struct InputSchema<'a> {
    /// The JSON schema, as is.
    pub json: Cow<'a, RawValue>,
}

/// `toolChoice`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ToolChoiceOut<'a> {
    /// The model decides.
    Auto(Empty),
    /// Some tool must be called.
    Any(Empty),
    /// This tool must be called.
    Tool(Named<'a>),
}

/// `{}`.
#[derive(Debug, Serialize)]
pub struct Empty {}

/// `{"name": ...}`.
#[derive(Debug, Serialize)]
pub struct Named<'a> {
    /// The tool's name.
    pub name: &'a str,
}

/// A Converse response as read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConverseResponse<'a> {
    /// `{"message": ...}`.
    #[serde(borrow)]
    pub output: Output<'a>,
    /// Why it stopped.
    #[serde(borrow, default)]
    pub stop_reason: Option<Cow<'a, str>>,
    /// Token counts.
    #[serde(default)]
    pub usage: Usage,
}

/// `output`.
#[derive(Debug, Deserialize)]
pub struct Output<'a> {
    /// The assistant's message.
    #[serde(borrow)]
    pub message: MessageIn<'a>,
}

/// A message as read.
#[derive(Debug, Deserialize)]
pub struct MessageIn<'a> {
    /// Its blocks.
    #[serde(borrow, default)]
    pub content: Vec<BlockIn<'a>>,
}

/// A content block as read: the keys the known kinds use.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockIn<'a> {
    /// Text.
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
    /// A tool call.
    #[serde(borrow, default)]
    pub tool_use: Option<ToolUseIn<'a>>,
    /// Reasoning.
    #[serde(borrow, default)]
    pub reasoning_content: Option<ReasoningIn<'a>>,
}

/// `toolUse` as read (whole, or the start of a streamed one).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUseIn<'a> {
    /// The call id.
    #[serde(borrow, default)]
    pub tool_use_id: Cow<'a, str>,
    /// The tool.
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    /// The arguments object.
    #[serde(borrow, default)]
    pub input: Option<&'a RawValue>,
}

/// `reasoningContent` as read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReasoningIn<'a> {
    /// `{"text": ..., "signature": ...}`.
    #[serde(borrow, default)]
    pub reasoning_text: Option<ReasoningText<'a>>,
}

/// `reasoningText`.
#[derive(Debug, Default, Deserialize)]
pub struct ReasoningText<'a> {
    /// The reasoning.
    #[serde(borrow, default)]
    pub text: Cow<'a, str>,
}

/// Bedrock `usage`: `inputTokens` excludes cache reads and writes
/// (`totalTokens` is the sum of all four).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Input tokens neither read from nor written to the cache.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens read from the cache.
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    /// Input tokens written to the cache.
    #[serde(default)]
    pub cache_write_input_tokens: u64,
}

impl Usage {
    /// As the gateway accounts it.
    pub fn tokens(&self) -> super::TokenUsage {
        super::TokenUsage {
            input: self
                .input_tokens
                .saturating_add(self.cache_read_input_tokens)
                .saturating_add(self.cache_write_input_tokens),
            output: self.output_tokens,
            cached_input: self.cache_read_input_tokens,
            cache_creation: self.cache_write_input_tokens,
            reasoning: 0,
        }
    }

    /// In OpenAI's terms: every input token in `prompt_tokens`, cache reads
    /// as `prompt_tokens_details.cached_tokens`.
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
}

/// Bedrock's `stopReason` in OpenAI's `finish_reason` terms.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("tool_use") => "tool_calls",
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("content_filtered" | "guardrail_intervened") => "content_filter",
        // end_turn, stop_sequence, and anything new.
        _ => "stop",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_encode_model_ids() {
        assert_eq!(
            path("anthropic.claude-3-5-sonnet-20240620-v1:0", false),
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
        );
        assert_eq!(
            path("us.amazon.nova-lite-v1:0", true),
            "/model/us.amazon.nova-lite-v1%3A0/converse-stream"
        );
        assert_eq!(
            path("arn:aws:bedrock:us-east-1:1:inference-profile/x", false),
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/converse"
        );
    }

    #[test]
    fn stop_reasons_map() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("tool_use", "tool_calls"),
            ("max_tokens", "length"),
            ("stop_sequence", "stop"),
            ("content_filtered", "content_filter"),
            ("guardrail_intervened", "content_filter"),
        ] {
            assert_eq!(finish_reason(Some(stop)), finish, "{stop}");
        }
        assert_eq!(finish_reason(None), "stop");
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod fixture_tests;
