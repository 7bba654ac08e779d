//! OpenAI Chat Completions wire types, the pivot every translator meets at:
//! requests, responses and stream chunks, borrowed from the bytes they are
//! read from (`Cow<str>` borrows when a string has no escapes; opaque
//! pieces such as tool JSON schemas stay `RawValue`). Only the fields a
//! translation carries are modelled; the rest is ignored on purpose.
//! Knows nothing of any other provider.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `POST /v1/chat/completions` body.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct ChatRequest<'a> {
    /// `model`.
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    /// `messages`.
    #[serde(borrow)]
    pub messages: Vec<Message<'a>>,
    /// `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// `max_completion_tokens` (newer name of `max_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    /// `temperature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// `top_p`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// `n` (choices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    /// `stream`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// `stream_options`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// `stop`: one string or several.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop<'a>>,
    /// `tools`.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool<'a>>>,
    /// `tool_choice`.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice<'a>>,
    /// `parallel_tool_calls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// `user`.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Cow<'a, str>>,
    /// `response_format` (JSON mode).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat<'a>>,
    /// `modalities`: `["text"]`, or `["text", "audio"]` for spoken answers.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub modalities: Option<Vec<Cow<'a, str>>>,
}

impl ChatRequest<'_> {
    /// Refuses a request for spoken answers: only OpenAI's own models
    /// answer with audio, so a translated backend cannot.
    pub fn refuse_audio_output(&self, backend: &str) -> Result<(), super::TranslateError> {
        if self.modalities.iter().flatten().any(|m| m == "audio") {
            return Err(super::TranslateError::Request(format!(
                "`modalities`: audio output is not available from {backend} backends (ask for [\"text\"])"
            )));
        }
        Ok(())
    }
}

/// `response_format`.
#[derive(Debug, Deserialize, Serialize)]
pub struct ResponseFormat<'a> {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// With `json_schema`: `{"name":...,"schema":{...},"strict":...}`.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<JsonSchemaFormat<'a>>,
}

/// `response_format.json_schema`.
#[derive(Debug, Deserialize, Serialize)]
pub struct JsonSchemaFormat<'a> {
    /// The schema, copied as is.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<&'a RawValue>,
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct StreamOptions {
    /// `include_usage`.
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Stop<'a> {
    /// One sequence.
    One(#[serde(borrow)] Cow<'a, str>),
    /// Several.
    Many(#[serde(borrow)] Vec<Cow<'a, str>>),
}

/// One chat message, any role.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Message<'a> {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    #[serde(borrow)]
    pub role: Cow<'a, str>,
    /// A string or content parts; `null` on an assistant turn with tool calls.
    #[serde(borrow, default)]
    pub content: Option<Content<'a>>,
    /// An assistant's tool calls.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall<'a>>>,
    /// A tool message's call id.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<Cow<'a, str>>,
    /// A participant name.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Cow<'a, str>>,
}

/// Message content.
#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Content<'a> {
    /// Plain text.
    Text(#[serde(borrow)] Cow<'a, str>),
    /// Content parts.
    Parts(#[serde(borrow)] Vec<Part<'a>>),
}

/// One content part.
#[derive(Debug, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part<'a> {
    /// `{"type":"text","text":...}`.
    Text {
        /// The text.
        #[serde(borrow)]
        text: Cow<'a, str>,
    },
    /// `{"type":"image_url","image_url":{"url":...}}`: an http(s) or data URL.
    ImageUrl {
        /// The image.
        #[serde(borrow)]
        image_url: ImageUrl<'a>,
    },
    /// `{"type":"input_audio","input_audio":{"data":...,"format":"wav"}}`.
    InputAudio {
        /// The recording.
        #[serde(borrow)]
        input_audio: InputAudio<'a>,
    },
    /// `{"type":"file","file":{"file_data":"data:application/pdf;base64,...","filename":...}}`.
    File {
        /// The file.
        #[serde(borrow)]
        file: File<'a>,
    },
    /// Whatever comes next.
    #[serde(other)]
    Unsupported,
}

impl Part<'_> {
    /// The part's `type`, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::ImageUrl { .. } => "image_url",
            Self::InputAudio { .. } => "input_audio",
            Self::File { .. } => "file",
            Self::Unsupported => "unknown",
        }
    }
}

/// `input_audio`.
#[derive(Debug, Deserialize, Serialize)]
pub struct InputAudio<'a> {
    /// Base64 (missing: empty, refused by the translators with a message).
    #[serde(borrow, default)]
    pub data: Cow<'a, str>,
    /// `wav` or `mp3`.
    #[serde(borrow, default)]
    pub format: Cow<'a, str>,
}

/// `file` of a file part: inline data or an id of OpenAI's Files API.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct File<'a> {
    /// `data:application/pdf;base64,...`.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub file_data: Option<Cow<'a, str>>,
    /// `file-...` (only OpenAI knows it).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<Cow<'a, str>>,
    /// The file's name.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<Cow<'a, str>>,
}

/// `image_url`.
#[derive(Debug, Deserialize, Serialize)]
pub struct ImageUrl<'a> {
    /// `https://...` or `data:image/png;base64,...`.
    #[serde(borrow)]
    pub url: Cow<'a, str>,
    /// `low`, `high` or `auto`.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Cow<'a, str>>,
}

/// One tool call of an assistant message.
#[derive(Debug, Deserialize, Serialize)]
pub struct ToolCall<'a> {
    /// `call_...`.
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// Always `function`.
    #[serde(rename = "type", borrow, default = "function")]
    pub kind: Cow<'a, str>,
    /// What is called.
    #[serde(borrow)]
    pub function: FunctionCall<'a>,
}

fn function() -> Cow<'static, str> {
    Cow::Borrowed("function")
}

/// `function` of a tool call.
#[derive(Debug, Deserialize, Serialize)]
pub struct FunctionCall<'a> {
    /// The tool's name.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// The arguments, a JSON document in a string.
    #[serde(borrow, default)]
    pub arguments: Cow<'a, str>,
}

/// One tool definition.
#[derive(Debug, Deserialize, Serialize)]
pub struct Tool<'a> {
    /// Always `function`.
    #[serde(rename = "type", borrow, default = "function")]
    pub kind: Cow<'a, str>,
    /// The function.
    #[serde(borrow)]
    pub function: FunctionDef<'a>,
}

/// `function` of a tool definition.
#[derive(Debug, Deserialize, Serialize)]
pub struct FunctionDef<'a> {
    /// Its name.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// What it does.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Cow<'a, str>>,
    /// The JSON schema of its arguments, copied as is.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<&'a RawValue>,
}

/// `tool_choice`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ToolChoice<'a> {
    /// `none`, `auto` or `required`.
    Mode(#[serde(borrow)] Cow<'a, str>),
    /// `{"type":"function","function":{"name":...}}`.
    Named {
        /// Always `function`.
        #[serde(rename = "type", borrow, default = "function")]
        kind: Cow<'a, str>,
        /// The function to call.
        #[serde(borrow)]
        function: Named<'a>,
    },
}

/// `{"name":...}`.
#[derive(Debug, Deserialize, Serialize)]
pub struct Named<'a> {
    /// The name.
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

/// A `chat.completion` response.
#[derive(Debug, Deserialize, Serialize)]
pub struct ChatCompletion<'a> {
    /// `chatcmpl-...`.
    #[serde(borrow, default)]
    pub id: Cow<'a, str>,
    /// `chat.completion`.
    #[serde(borrow, default)]
    pub object: Cow<'a, str>,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answered.
    #[serde(borrow, default)]
    pub model: Cow<'a, str>,
    /// The choices (translations use the first).
    #[serde(borrow)]
    pub choices: Vec<Choice<'a>>,
    /// Token counts.
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// One choice of a completion.
#[derive(Debug, Deserialize, Serialize)]
pub struct Choice<'a> {
    /// Its index.
    #[serde(default)]
    pub index: u32,
    /// The answer.
    #[serde(borrow)]
    pub message: AssistantMessage<'a>,
    /// Always `null` here.
    #[serde(default)]
    pub logprobs: Option<&'a RawValue>,
    /// `stop`, `length`, `tool_calls`, `content_filter`.
    #[serde(borrow, default)]
    pub finish_reason: Option<Cow<'a, str>>,
}

/// The assistant message of a completion.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct AssistantMessage<'a> {
    /// `assistant`.
    #[serde(borrow, default = "assistant")]
    pub role: Cow<'a, str>,
    /// The text, if any.
    #[serde(borrow, default)]
    pub content: Option<Cow<'a, str>>,
    /// Reasoning text (DeepSeek, vLLM and others; not OpenAI's own field).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<Cow<'a, str>>,
    /// Tool calls, if any.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall<'a>>>,
    /// A refusal, if any.
    #[serde(borrow, default)]
    pub refusal: Option<Cow<'a, str>>,
}

fn assistant() -> Cow<'static, str> {
    Cow::Borrowed("assistant")
}

/// `usage`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct Usage {
    /// Input tokens, cached ones included.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Output tokens, reasoning included.
    #[serde(default)]
    pub completion_tokens: u64,
    /// The sum.
    #[serde(default)]
    pub total_tokens: u64,
    /// Cache hits among the input tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptDetails>,
    /// Reasoning among the output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionDetails>,
}

/// `prompt_tokens_details`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct PromptDetails {
    /// Input tokens read from the provider's prompt cache.
    #[serde(default)]
    pub cached_tokens: u64,
}

/// `completion_tokens_details`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct CompletionDetails {
    /// Output tokens spent reasoning.
    #[serde(default)]
    pub reasoning_tokens: u64,
}

/// One `chat.completion.chunk` as read from a stream.
#[derive(Debug, Deserialize)]
pub struct ChunkIn<'a> {
    /// Same on every chunk.
    #[serde(borrow, default)]
    pub id: Cow<'a, str>,
    /// Same on every chunk.
    #[serde(borrow, default)]
    pub model: Cow<'a, str>,
    /// Empty on the usage chunk.
    #[serde(borrow, default)]
    pub choices: Vec<ChunkChoiceIn<'a>>,
    /// Only on the usage chunk.
    #[serde(default)]
    pub usage: Option<Usage>,
    /// An error reported mid-stream (`{"error":{...}}`).
    #[serde(borrow, default)]
    pub error: Option<ErrorDetail<'a>>,
}

/// A choice of a chunk read from a stream.
#[derive(Debug, Deserialize)]
pub struct ChunkChoiceIn<'a> {
    /// Which choice.
    #[serde(default)]
    pub index: u32,
    /// What is new.
    #[serde(borrow, default)]
    pub delta: DeltaIn<'a>,
    /// Set on the last chunk of the choice.
    #[serde(borrow, default)]
    pub finish_reason: Option<Cow<'a, str>>,
}

/// `delta` of a chunk read from a stream.
#[derive(Debug, Default, Deserialize)]
pub struct DeltaIn<'a> {
    /// More text.
    #[serde(borrow, default)]
    pub content: Option<Cow<'a, str>>,
    /// More reasoning text (not OpenAI's own field).
    #[serde(borrow, default)]
    pub reasoning_content: Option<Cow<'a, str>>,
    /// Tool call fragments.
    #[serde(borrow, default)]
    pub tool_calls: Option<Vec<ToolCallDeltaIn<'a>>>,
}

/// A tool call fragment read from a stream.
#[derive(Debug, Deserialize)]
pub struct ToolCallDeltaIn<'a> {
    /// Which call of the message.
    #[serde(default)]
    pub index: u32,
    /// Set on a call's first fragment.
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    /// Name and arguments fragments.
    #[serde(borrow, default)]
    pub function: Option<FunctionDeltaIn<'a>>,
}

/// `function` of a tool call fragment.
#[derive(Debug, Default, Deserialize)]
pub struct FunctionDeltaIn<'a> {
    /// Set on a call's first fragment.
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    /// More of the arguments.
    #[serde(borrow, default)]
    pub arguments: Option<Cow<'a, str>>,
}

/// One `chat.completion.chunk` as written to a client.
#[derive(Debug, Serialize)]
pub struct ChunkOut<'a> {
    /// Same on every chunk.
    pub id: &'a str,
    /// `chat.completion.chunk`.
    pub object: &'static str,
    /// Same on every chunk.
    pub created: u64,
    /// Same on every chunk.
    pub model: &'a str,
    /// One choice, or none on the usage chunk.
    pub choices: &'a [ChunkChoiceOut<'a>],
    /// `null` on content chunks, the totals on the usage chunk. Last, so
    /// that the stream filter can drop `,"usage":null` byte for byte.
    pub usage: Option<Usage>,
}

/// A choice of a chunk written to a client.
#[derive(Debug, Serialize)]
pub struct ChunkChoiceOut<'a> {
    /// Always 0.
    pub index: u32,
    /// What is new.
    pub delta: DeltaOut<'a>,
    /// Always `null`.
    pub logprobs: Option<()>,
    /// Set on the finish chunk.
    pub finish_reason: Option<&'a str>,
}

/// `delta` of a chunk written to a client.
#[derive(Debug, Default, Serialize)]
pub struct DeltaOut<'a> {
    /// On the first chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// More text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    /// More reasoning text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<&'a str>,
    /// A tool call fragment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<[ToolCallDeltaOut<'a>; 1]>,
}

/// A tool call fragment written to a client.
#[derive(Debug, Serialize)]
pub struct ToolCallDeltaOut<'a> {
    /// Which call of the message.
    pub index: u32,
    /// On the call's first fragment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    /// `function`, on the call's first fragment.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// Name (first fragment) and arguments.
    pub function: FunctionDeltaOut<'a>,
}

/// `function` of a tool call fragment written to a client.
#[derive(Debug, Serialize)]
pub struct FunctionDeltaOut<'a> {
    /// On the call's first fragment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    /// More of the arguments.
    pub arguments: &'a str,
}

/// `{"error":{...}}`.
#[derive(Debug, Deserialize)]
pub struct ErrorBody<'a> {
    /// The error.
    #[serde(borrow)]
    pub error: ErrorDetail<'a>,
}

/// `error` of an error body.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorDetail<'a> {
    /// What went wrong.
    #[serde(borrow, default)]
    pub message: Cow<'a, str>,
    /// `invalid_request_error`, `rate_limit_exceeded`, ...
    #[serde(rename = "type", borrow, default)]
    pub kind: Option<Cow<'a, str>>,
}

/// A translated stream that answers OpenAI clients: one `data:` event per
/// `chat.completion.chunk`, all with the same id, creation time and model.
/// Implementors say who they are; the writing is shared.
pub trait ChunkEmitter {
    /// The stream's id, creation time (Unix seconds) and model.
    fn head(&self) -> (&str, u64, &str);

    /// A chunk of one choice.
    fn chunk(&self, out: &mut Vec<u8>, delta: DeltaOut<'_>, finish_reason: Option<&str>) {
        let choice = [ChunkChoiceOut {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        }];
        self.write(out, &choice, None);
    }

    /// A chunk of these choices (none: the usage chunk).
    fn write(&self, out: &mut Vec<u8>, choices: &[ChunkChoiceOut<'_>], usage: Option<Usage>) {
        let (id, created, model) = self.head();
        let chunk = ChunkOut {
            id,
            object: "chat.completion.chunk",
            created,
            model,
            choices,
            usage,
        };
        out.extend_from_slice(b"data: ");
        // Writing plain structs into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &chunk);
        out.extend_from_slice(b"\n\n");
    }
}

/// Tool call arguments (a JSON document in a string) as an input object;
/// `None` when they are not a JSON object. Empty arguments are `{}`.
pub fn tool_input(arguments: &str) -> Option<Cow<'_, RawValue>> {
    let trimmed = arguments.trim();
    if trimmed.is_empty() {
        return RawValue::from_string("{}".to_owned()).ok().map(Cow::Owned);
    }
    if !trimmed.starts_with('{') {
        return None;
    }
    serde_json::from_str::<&RawValue>(trimmed)
        .ok()
        .map(Cow::Borrowed)
}

/// `{"type":"object","properties":{}}`: the input schema of a tool that
/// declared none (Anthropic and Converse require one).
pub fn empty_schema<'a>() -> Cow<'a, RawValue> {
    RawValue::from_string(r#"{"type":"object","properties":{}}"#.to_owned())
        // Unreachable: the text is valid JSON. An empty schema would be
        // refused by the provider with a clear message, not corrupt anything.
        .map_or_else(|_| Cow::Owned(Box::<RawValue>::default()), Cow::Owned)
}
