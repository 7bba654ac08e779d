//! Whole response bodies: a Gemini `GenerateContentResponse` as an OpenAI
//! `chat.completion` ([`to_openai`]) and Google's error bodies in OpenAI's
//! shape ([`error_to_openai`]). A success body that cannot be read is an
//! error for the caller to turn into a 502; an error body that cannot be
//! read is passed on as the message of a well-formed error.

use std::borrow::Cow;

use http::StatusCode;
use serde_json::value::RawValue;

use super::{call_id, finish_reason, GenerateResponseIn, GoogleError};
use crate::llm::translate::openai::{
    AssistantMessage, ChatCompletion, Choice, FunctionCall, ToolCall,
};
use crate::llm::translate::{TokenUsage, TranslateError};

/// A Gemini answer as an OpenAI `chat.completion` created at `created`.
pub fn to_openai(body: &[u8], created: u64) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let response: GenerateResponseIn<'_> =
        serde_json::from_slice(body).map_err(TranslateError::response)?;
    let response_id = response_id(response.response_id.as_deref(), created);
    let candidate = response.candidates.iter().find(|c| c.index == 0);
    let mut texts: Vec<&str> = Vec::new();
    let mut thoughts: Vec<&str> = Vec::new();
    let mut calls = Vec::new();
    for part in candidate
        .and_then(|c| c.content.as_ref())
        .map_or(&[][..], |c| &c.parts)
    {
        if let Some(call) = &part.function_call {
            calls.push(ToolCall {
                id: Cow::Owned(call_id(
                    &response_id,
                    calls.len(),
                    part.thought_signature.as_deref(),
                )),
                kind: Cow::Borrowed("function"),
                function: FunctionCall {
                    name: Cow::Borrowed(&call.name),
                    arguments: Cow::Borrowed(call.args.map_or("{}", RawValue::get)),
                },
            });
        } else if let Some(text) = part.text.as_deref() {
            if part.thought == Some(true) {
                thoughts.push(text);
            } else {
                texts.push(text);
            }
        }
    }
    let finish = match candidate {
        Some(candidate) => finish_reason(candidate.finish_reason.as_deref(), !calls.is_empty()),
        // No candidate: the prompt was blocked.
        None if response.prompt_feedback.is_some() => "content_filter",
        None => "stop",
    };
    let usage = response.usage_metadata.unwrap_or_default();
    let completion = ChatCompletion {
        id: Cow::Borrowed(&response_id),
        object: Cow::Borrowed("chat.completion"),
        created,
        model: response.model_version.clone().unwrap_or_default(),
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: Cow::Borrowed("assistant"),
                content: joined(&texts),
                reasoning_content: joined(&thoughts),
                tool_calls: (!calls.is_empty()).then_some(calls),
                refusal: None,
            },
            logprobs: None,
            finish_reason: Some(Cow::Borrowed(finish)),
        }],
        usage: Some(usage.to_openai()),
    };
    let bytes = serde_json::to_vec(&completion).map_err(TranslateError::response)?;
    Ok((bytes, usage.tokens()))
}

/// The response's id, or one made from `created` when Google gave none.
pub fn response_id(id: Option<&str>, created: u64) -> String {
    match id {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => format!("gemini-{created:x}"),
    }
}

fn joined<'a>(texts: &[&'a str]) -> Option<Cow<'a, str>> {
    match texts {
        [] => None,
        [one] => Some(Cow::Borrowed(*one)),
        many => Some(Cow::Owned(many.concat())),
    }
}

/// OpenAI's error `type` for an HTTP status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_exceeded",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// At most this much of an unreadable error body is quoted.
const MAX_QUOTED: usize = 512;

/// A Google error response as an OpenAI one, with the same status (429
/// and 5xx still trigger fallback): `{"error":{"message","type","code"}}`
/// with Google's `status` (`RESOURCE_EXHAUSTED`, ...) as `code`. Older
/// streaming errors come as a one-element array; both are read.
pub fn error_to_openai(status: StatusCode, body: &[u8]) -> (StatusCode, Vec<u8>) {
    let trimmed = body.trim_ascii();
    let parsed = if trimmed.starts_with(b"[") {
        serde_json::from_slice::<Vec<GoogleError<'_>>>(trimmed)
            .ok()
            .and_then(|v| v.into_iter().next())
    } else {
        serde_json::from_slice::<GoogleError<'_>>(trimmed).ok()
    };
    let kind = error_type(status);
    let (message, code) = match parsed {
        Some(error) if !error.error.message.is_empty() => (
            error.error.message.into_owned(),
            error
                .error
                .status
                .map_or_else(|| kind.to_owned(), Cow::into_owned),
        ),
        _ => {
            let text = String::from_utf8_lossy(&trimmed[..trimmed.len().min(MAX_QUOTED)]);
            let text = if text.trim().is_empty() {
                "the upstream gave no details".to_owned()
            } else {
                text.trim().to_owned()
            };
            (text, kind.to_owned())
        }
    };
    let body = crate::error::error_body(&message, kind, &code);
    (status, body.to_vec())
}
