//! Whole response bodies: a Cohere v2 chat response as an OpenAI
//! `chat.completion` ([`to_openai`]) and Cohere's error bodies in OpenAI's
//! shape ([`error_to_openai`]). A success body that cannot be read, or one
//! whose `finish_reason` is `ERROR`, is an error for the caller to turn
//! into a 502; an error body that cannot be read is passed on as the
//! message of a well-formed error.

use std::borrow::Cow;

use http::StatusCode;

use super::{finish_reason, ChatResponseIn, ErrorIn};
use crate::llm::translate::openai::{
    AssistantMessage, ChatCompletion, Choice, FunctionCall, ToolCall,
};
use crate::llm::translate::{TokenUsage, TranslateError};

/// A Cohere answer as an OpenAI `chat.completion` for `model` (Cohere's
/// answers do not name it), created at `created`.
pub fn to_openai(
    body: &[u8],
    model: &str,
    created: u64,
) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let response: ChatResponseIn<'_> =
        serde_json::from_slice(body).map_err(TranslateError::response)?;
    let message = response.message.unwrap_or_default();
    let mut texts: Vec<&str> = Vec::new();
    let mut thoughts: Vec<&str> = Vec::new();
    if let Some(plan) = message.tool_plan.as_deref().filter(|p| !p.is_empty()) {
        thoughts.push(plan);
    }
    for part in &message.content {
        match &*part.kind {
            "thinking" => thoughts.extend(part.thinking.as_deref()),
            _ => texts.extend(part.text.as_deref()),
        }
    }
    let calls: Vec<ToolCall<'_>> = message
        .tool_calls
        .iter()
        .enumerate()
        .map(|(n, call)| ToolCall {
            id: match call.id.as_deref() {
                Some(id) if !id.is_empty() => Cow::Borrowed(id),
                _ => Cow::Owned(format!("call_{}_{n}", response.id)),
            },
            kind: Cow::Borrowed("function"),
            function: FunctionCall {
                name: Cow::Borrowed(call.function.name.as_deref().unwrap_or_default()),
                arguments: Cow::Borrowed(
                    call.function
                        .arguments
                        .as_deref()
                        .filter(|a| !a.is_empty())
                        .unwrap_or("{}"),
                ),
            },
        })
        .collect();
    let Some(finish) = finish_reason(response.finish_reason.as_deref(), !calls.is_empty()) else {
        return Err(TranslateError::Response(
            "the upstream reported that the generation failed (finish_reason ERROR)".into(),
        ));
    };
    let usage = response.usage.unwrap_or_default();
    let id = if response.id.is_empty() {
        Cow::Owned(format!("cohere-{created:x}"))
    } else {
        Cow::Borrowed(&*response.id)
    };
    let completion = ChatCompletion {
        id,
        object: Cow::Borrowed("chat.completion"),
        created,
        model: Cow::Borrowed(model),
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
    Ok((bytes, usage.counts()))
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

/// A Cohere error response (`{"id":...,"message":...}`) as an OpenAI one,
/// with the same status (429 and 5xx still trigger fallback).
pub fn error_to_openai(status: StatusCode, body: &[u8]) -> (StatusCode, Vec<u8>) {
    let trimmed = body.trim_ascii();
    let kind = error_type(status);
    let message = match serde_json::from_slice::<ErrorIn<'_>>(trimmed) {
        Ok(error) if !error.message.is_empty() => error.message.into_owned(),
        _ => {
            let text = String::from_utf8_lossy(&trimmed[..trimmed.len().min(MAX_QUOTED)]);
            if text.trim().is_empty() {
                "the upstream gave no details".to_owned()
            } else {
                text.trim().to_owned()
            }
        }
    };
    let body = crate::error::error_body(&message, kind, kind);
    (status, body.to_vec())
}
