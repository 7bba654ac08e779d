//! Google Gemini `generateContent` (AI Studio and Vertex AI speak the same
//! body): OpenAI chat requests out (`request::to_gemini`), and responses,
//! event streams and errors back (`response::to_openai`,
//! `stream::ToOpenAI`, `response::error_to_openai`). Anthropic clients reach
//! Gemini through the OpenAI pivot (see the parent module). The wire types
//! below are borrowed from the bytes they are read from; parts are flat
//! structs (one optional field per kind) as Google's `Part` is a union of
//! fields. Knows nothing of routing, limits, URLs or credentials.

pub mod embed;
pub mod request;
pub mod response;
pub mod stream;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::openai;
use super::TokenUsage;

/// The method of a streamed call, replacing `:generateContent`.
pub const STREAM_METHOD: &str = ":streamGenerateContent?alt=sse";

/// Separates a synthesized tool call id from the thought signature it
/// carries (Gemini 3 wants a call's `thoughtSignature` echoed back; OpenAI
/// clients echo only the id).
pub const THOUGHT_MARK: &str = "__thought__";

/// `POST .../models/{model}:generateContent` body as sent.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateRequestOut<'a> {
    /// The turns, `user` and `model`.
    pub contents: Vec<ContentOut<'a>>,
    /// The system prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<SystemOut<'a>>,
    /// One entry holding every function declaration.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolOut<'a>>,
    /// How functions may be called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfigOut<'a>>,
    /// Sampling and output settings.
    #[serde(skip_serializing_if = "GenerationConfigOut::is_empty")]
    pub generation_config: GenerationConfigOut<'a>,
}

/// One turn as sent.
#[derive(Debug, Serialize)]
pub struct ContentOut<'a> {
    /// `user` or `model`.
    pub role: &'static str,
    /// Its parts.
    pub parts: Vec<PartOut<'a>>,
}

/// `systemInstruction`.
#[derive(Debug, Serialize)]
pub struct SystemOut<'a> {
    /// Text parts.
    pub parts: Vec<PartOut<'a>>,
}

/// One part as sent: exactly one of the data fields is set.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartOut<'a> {
    /// Text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<Cow<'a, str>>,
    /// Inline bytes (a base64 data URL's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inline_data: Option<Blob<'a>>,
    /// A file by URI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_data: Option<FileData<'a>>,
    /// A call the model made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCallOut<'a>>,
    /// A function's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_response: Option<FunctionResponseOut<'a>>,
    /// The signature the model gave this call, echoed back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<&'a str>,
}

/// `inlineData`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob<'a> {
    /// `image/png`, `audio/wav`, `application/pdf`, ...
    pub mime_type: &'static str,
    /// Base64.
    pub data: &'a str,
}

/// `fileData`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileData<'a> {
    /// Guessed from the URL's extension, when it has a known one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<&'static str>,
    /// The URL.
    pub file_uri: &'a str,
}

/// `functionCall` as sent (a past call of the model).
#[derive(Debug, Serialize)]
pub struct FunctionCallOut<'a> {
    /// The function.
    pub name: &'a str,
    /// The arguments object.
    pub args: Cow<'a, RawValue>,
}

/// `functionResponse`.
#[derive(Debug, Serialize)]
pub struct FunctionResponseOut<'a> {
    /// The function that answered (Gemini matches answers by name).
    pub name: &'a str,
    /// Its answer, an object.
    pub response: Cow<'a, RawValue>,
}

/// One `tools` entry.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolOut<'a> {
    /// The functions.
    pub function_declarations: Vec<FunctionDeclarationOut<'a>>,
}

/// A function the model may call.
#[derive(Debug, Serialize)]
pub struct FunctionDeclarationOut<'a> {
    /// Its name.
    pub name: &'a str,
    /// What it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    /// Its arguments' schema, in the OpenAPI subset Gemini takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Box<RawValue>>,
}

/// `toolConfig`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfigOut<'a> {
    /// `functionCallingConfig`.
    pub function_calling_config: FunctionCallingConfigOut<'a>,
}

/// `functionCallingConfig`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfigOut<'a> {
    /// `AUTO`, `ANY` or `NONE`.
    pub mode: &'static str,
    /// With `ANY`: the one function named by the client.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_function_names: Vec<&'a str>,
}

/// `generationConfig`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfigOut<'a> {
    /// `stopSequences`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<&'a str>,
    /// `maxOutputTokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    /// `temperature` (0..=2, as OpenAI's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// `topP`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// `application/json` for JSON mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<&'static str>,
    /// The schema of a JSON answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<Box<RawValue>>,
}

impl GenerationConfigOut<'_> {
    fn is_empty(&self) -> bool {
        self.stop_sequences.is_empty()
            && self.max_output_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.response_mime_type.is_none()
            && self.response_schema.is_none()
    }
}

/// A `GenerateContentResponse` as read (a whole body, or one stream event).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateResponseIn<'a> {
    /// The answers (translations use the first).
    #[serde(borrow, default)]
    pub candidates: Vec<CandidateIn<'a>>,
    /// Token counts (cumulative in streams).
    #[serde(default)]
    pub usage_metadata: Option<UsageMetadata>,
    /// The model that answered.
    #[serde(borrow, default)]
    pub model_version: Option<Cow<'a, str>>,
    /// The response's id.
    #[serde(borrow, default)]
    pub response_id: Option<Cow<'a, str>>,
    /// Why a prompt was blocked (no candidates then).
    #[serde(borrow, default)]
    pub prompt_feedback: Option<PromptFeedback<'a>>,
    /// An error reported in a stream.
    #[serde(borrow, default)]
    pub error: Option<GoogleErrorDetail<'a>>,
}

/// One candidate.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateIn<'a> {
    /// Its content (absent when blocked).
    #[serde(borrow, default)]
    pub content: Option<ContentIn<'a>>,
    /// Set when it is finished.
    #[serde(borrow, default)]
    pub finish_reason: Option<Cow<'a, str>>,
    /// Which candidate.
    #[serde(default)]
    pub index: u32,
}

/// A turn as read.
#[derive(Debug, Default, Deserialize)]
pub struct ContentIn<'a> {
    /// Its parts.
    #[serde(borrow, default)]
    pub parts: Vec<PartIn<'a>>,
}

/// A part as read: the fields the translation carries.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartIn<'a> {
    /// Text (or reasoning, with `thought`).
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
    /// The text is the model's reasoning summary.
    #[serde(default)]
    pub thought: Option<bool>,
    /// Opaque; echoed back with function calls.
    #[serde(borrow, default)]
    pub thought_signature: Option<Cow<'a, str>>,
    /// A function call.
    #[serde(borrow, default)]
    pub function_call: Option<FunctionCallIn<'a>>,
}

/// `functionCall` as read.
#[derive(Debug, Deserialize)]
pub struct FunctionCallIn<'a> {
    /// The function.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// The arguments object.
    #[serde(borrow, default)]
    pub args: Option<&'a RawValue>,
}

/// `promptFeedback`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback<'a> {
    /// `SAFETY`, `BLOCKLIST`, ...
    #[serde(borrow, default)]
    pub block_reason: Option<Cow<'a, str>>,
}

/// `usageMetadata`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    /// Input tokens, cached ones included.
    #[serde(default)]
    pub prompt_token_count: u64,
    /// Output tokens, reasoning excluded.
    #[serde(default)]
    pub candidates_token_count: u64,
    /// Input tokens read from the context cache.
    #[serde(default)]
    pub cached_content_token_count: u64,
    /// Reasoning tokens.
    #[serde(default)]
    pub thoughts_token_count: u64,
    /// Tokens of tool results Google ran itself (search and the like).
    #[serde(default)]
    pub tool_use_prompt_token_count: u64,
}

impl UsageMetadata {
    /// As the gateway accounts it: output includes reasoning.
    pub fn tokens(&self) -> TokenUsage {
        TokenUsage {
            input: self
                .prompt_token_count
                .saturating_add(self.tool_use_prompt_token_count),
            output: self
                .candidates_token_count
                .saturating_add(self.thoughts_token_count),
            cached_input: self.cached_content_token_count,
            cache_creation: 0,
            reasoning: self.thoughts_token_count,
        }
    }

    /// In OpenAI's terms.
    pub fn to_openai(&self) -> openai::Usage {
        let tokens = self.tokens();
        openai::Usage {
            prompt_tokens: tokens.input,
            completion_tokens: tokens.output,
            total_tokens: tokens.input.saturating_add(tokens.output),
            prompt_tokens_details: Some(openai::PromptDetails {
                cached_tokens: tokens.cached_input,
            }),
            completion_tokens_details: Some(openai::CompletionDetails {
                reasoning_tokens: tokens.reasoning,
            }),
        }
    }
}

/// Google's error body: `{"error":{"code":429,"message":...,"status":...}}`.
#[derive(Debug, Deserialize)]
pub struct GoogleError<'a> {
    /// The error.
    #[serde(borrow)]
    pub error: GoogleErrorDetail<'a>,
}

/// `error` of a Google error body.
#[derive(Debug, Default, Deserialize)]
pub struct GoogleErrorDetail<'a> {
    /// The HTTP status.
    #[serde(default)]
    pub code: Option<u16>,
    /// What went wrong.
    #[serde(borrow, default)]
    pub message: Cow<'a, str>,
    /// `RESOURCE_EXHAUSTED`, `INVALID_ARGUMENT`, ...
    #[serde(borrow, default)]
    pub status: Option<Cow<'a, str>>,
}

/// Gemini's `finishReason` in OpenAI's `finish_reason` terms; `called`:
/// the answer holds function calls.
pub fn finish_reason(reason: Option<&str>, called: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
            | "LANGUAGE",
        ) => "content_filter",
        _ if called => "tool_calls",
        // STOP, OTHER, MALFORMED_FUNCTION_CALL, and anything new.
        _ => "stop",
    }
}

/// The id of the `n`-th function call of the response `response_id`,
/// carrying its thought signature if it has one.
pub fn call_id(response_id: &str, n: usize, signature: Option<&str>) -> String {
    match signature {
        Some(signature) if !signature.is_empty() => {
            format!("call_{response_id}_{n}{THOUGHT_MARK}{signature}")
        }
        _ => format!("call_{response_id}_{n}"),
    }
}

/// The thought signature a call id carries, if any.
pub fn signature_of(id: &str) -> Option<&str> {
    id.split_once(THOUGHT_MARK)
        .map(|(_, signature)| signature)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
