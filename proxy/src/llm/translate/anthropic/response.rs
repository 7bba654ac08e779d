//! Whole response bodies both ways: an Anthropic `message` as an OpenAI
//! `chat.completion` ([`to_openai`]) and back ([`to_anthropic`]), and error
//! bodies in each other's shape. A success body that cannot be read is an
//! error for the caller to turn into a 502; an error body that cannot be
//! read is passed on as the message of a well-formed error.

use std::borrow::Cow;

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{finish_reason, stop_reason, BlockOut, MessageResponseIn, MessageResponseOut, Usage};
use crate::llm::translate::openai::{
    AssistantMessage, ChatCompletion, Choice, ErrorBody, FunctionCall, ToolCall,
};
use crate::llm::translate::{TokenUsage, TranslateError};

/// An Anthropic `message` as an OpenAI `chat.completion` created at `created`.
pub fn to_openai(body: &[u8], created: u64) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let message: MessageResponseIn<'_> =
        serde_json::from_slice(body).map_err(TranslateError::response)?;
    let mut texts: Vec<&str> = Vec::new();
    let mut thinking: Vec<&str> = Vec::new();
    let mut calls = Vec::new();
    for block in &message.content {
        match &*block.kind {
            "text" => texts.push(block.text.as_deref().unwrap_or_default()),
            "thinking" => thinking.push(block.thinking.as_deref().unwrap_or_default()),
            "tool_use" => calls.push(ToolCall {
                id: Cow::Borrowed(block.id.as_deref().unwrap_or_default()),
                kind: Cow::Borrowed("function"),
                function: FunctionCall {
                    name: Cow::Borrowed(block.name.as_deref().unwrap_or_default()),
                    arguments: Cow::Borrowed(block.input.map_or("{}", RawValue::get)),
                },
            }),
            // Redacted thinking, server tool blocks: nothing OpenAI can show.
            _ => {}
        }
    }
    let completion = ChatCompletion {
        id: message.id.clone(),
        object: Cow::Borrowed("chat.completion"),
        created,
        model: message.model.clone(),
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: Cow::Borrowed("assistant"),
                content: joined(&texts),
                reasoning_content: joined(&thinking),
                tool_calls: (!calls.is_empty()).then_some(calls),
                refusal: None,
            },
            logprobs: None,
            finish_reason: Some(Cow::Borrowed(finish_reason(message.stop_reason.as_deref()))),
        }],
        usage: Some(message.usage.to_openai()),
    };
    let bytes = serde_json::to_vec(&completion).map_err(TranslateError::response)?;
    Ok((bytes, message.usage.tokens()))
}

fn joined<'a>(texts: &[&'a str]) -> Option<Cow<'a, str>> {
    match texts {
        [] => None,
        [one] => Some(Cow::Borrowed(*one)),
        many => Some(Cow::Owned(many.concat())),
    }
}

/// An OpenAI `chat.completion` as an Anthropic `message`.
pub fn to_anthropic(body: &[u8]) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let completion: ChatCompletion<'_> =
        serde_json::from_slice(body).map_err(TranslateError::response)?;
    let Some(choice) = completion.choices.first() else {
        return Err(TranslateError::Response(
            "the upstream answered without choices".into(),
        ));
    };
    let message = &choice.message;
    let mut content = Vec::new();
    for text in [&message.content, &message.refusal].into_iter().flatten() {
        if !text.is_empty() {
            content.push(BlockOut::Text {
                text: Cow::Borrowed(text),
            });
        }
    }
    for call in message.tool_calls.iter().flatten() {
        content.push(BlockOut::ToolUse {
            id: &call.id,
            name: &call.function.name,
            input: tool_input(&call.function.arguments),
        });
    }
    let usage = completion
        .usage
        .as_ref()
        .map(Usage::from_openai)
        .unwrap_or_default();
    let out = MessageResponseOut {
        id: &completion.id,
        kind: "message",
        role: "assistant",
        model: &completion.model,
        content,
        stop_reason: Some(stop_reason(choice.finish_reason.as_deref())),
        stop_sequence: None,
        usage,
    };
    let bytes = serde_json::to_vec(&out).map_err(TranslateError::response)?;
    let mut tokens = usage.tokens();
    tokens.reasoning = completion
        .usage
        .and_then(|u| u.completion_tokens_details)
        .map_or(0, |d| d.reasoning_tokens);
    Ok((bytes, tokens))
}

/// A model's tool arguments as an input object. Arguments that are not a
/// JSON object (a model's slip) become `{}`: the tool then reports missing
/// parameters and the model can try again, where refusing the whole answer
/// would end the agent's turn.
pub fn tool_input(arguments: &str) -> Cow<'_, RawValue> {
    let trimmed = arguments.trim();
    if trimmed.starts_with('{') {
        if let Ok(raw) = serde_json::from_str::<&RawValue>(trimmed) {
            return Cow::Borrowed(raw);
        }
    }
    Cow::Owned(
        RawValue::from_string("{}".to_owned()).unwrap_or_else(|_| Box::<RawValue>::default()),
    )
}

/// Anthropic's error `type` for an HTTP status.
pub fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// `{"type":"error","error":{"type":...,"message":...}}`.
pub fn error_body(kind: &str, message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        error: Detail<'a>,
    }
    #[derive(Serialize)]
    struct Detail<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        message: &'a str,
    }
    serde_json::to_vec(&Body {
        kind: "error",
        error: Detail { kind, message },
    })
    .unwrap_or_default()
}

/// An Anthropic error body as read.
#[derive(Deserialize)]
struct AnthropicError<'a> {
    #[serde(borrow)]
    error: AnthropicErrorDetail<'a>,
}

#[derive(Deserialize)]
struct AnthropicErrorDetail<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Cow<'a, str>,
}

/// At most this much of an unreadable error body is quoted.
const MAX_QUOTED: usize = 512;

fn quoted(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_QUOTED)]);
    let text = text.trim();
    if text.is_empty() {
        "the upstream gave no details".to_owned()
    } else {
        text.to_owned()
    }
}

/// An Anthropic error response as an OpenAI one: the status OpenAI clients
/// and the gateway's fallback understand (529 overloaded is 503) and the
/// `{"error":{...}}` body with Anthropic's error type as `type` and `code`.
pub fn error_to_openai(status: StatusCode, body: &[u8]) -> (StatusCode, Vec<u8>) {
    let status = if status.as_u16() == 529 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        status
    };
    let (kind, message) = match serde_json::from_slice::<AnthropicError<'_>>(body) {
        Ok(error) => (
            error
                .error
                .kind
                .map_or_else(|| error_type(status).to_owned(), Cow::into_owned),
            error.error.message.into_owned(),
        ),
        Err(_) => (error_type(status).to_owned(), quoted(body)),
    };
    let body = crate::error::error_body(&message, &kind, &kind);
    (status, body.to_vec())
}

/// An OpenAI error response as an Anthropic one (same status).
pub fn error_to_anthropic(status: StatusCode, body: &[u8]) -> Vec<u8> {
    let message = match serde_json::from_slice::<ErrorBody<'_>>(body) {
        Ok(error) if !error.error.message.is_empty() => error.error.message.into_owned(),
        _ => quoted(body),
    };
    error_body(error_type(status), &message)
}
