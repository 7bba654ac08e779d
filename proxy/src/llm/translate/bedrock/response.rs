//! Whole Converse answers as OpenAI `chat.completion`s ([`to_openai`]) and
//! Bedrock errors (`{"message": ...}` with the `x-amzn-errortype` header)
//! as OpenAI errors ([`error_to_openai`]), with a status the gateway's
//! fallback and OpenAI clients understand.

use std::borrow::Cow;

use http::StatusCode;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{finish_reason, ConverseResponse};
use crate::llm::translate::openai::{
    AssistantMessage, ChatCompletion, Choice, FunctionCall, ToolCall,
};
use crate::llm::translate::{TokenUsage, TranslateError};

/// A Converse response as an OpenAI `chat.completion` with this `id`,
/// `model` and `created`.
pub fn to_openai(
    body: &[u8],
    id: &str,
    model: &str,
    created: u64,
) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let response: ConverseResponse<'_> =
        serde_json::from_slice(body).map_err(TranslateError::response)?;
    let mut texts: Vec<&str> = Vec::new();
    let mut reasoning: Vec<&str> = Vec::new();
    let mut calls = Vec::new();
    for block in &response.output.message.content {
        if let Some(text) = &block.text {
            texts.push(text);
        } else if let Some(tool) = &block.tool_use {
            calls.push(ToolCall {
                id: Cow::Borrowed(&tool.tool_use_id),
                kind: Cow::Borrowed("function"),
                function: FunctionCall {
                    name: Cow::Borrowed(&tool.name),
                    arguments: Cow::Borrowed(tool.input.map_or("{}", RawValue::get)),
                },
            });
        } else if let Some(text) = block
            .reasoning_content
            .as_ref()
            .and_then(|r| r.reasoning_text.as_ref())
        {
            reasoning.push(&text.text);
        }
        // Images, documents, citations: nothing an OpenAI client reads.
    }
    let completion = ChatCompletion {
        id: Cow::Borrowed(id),
        object: Cow::Borrowed("chat.completion"),
        created,
        model: Cow::Borrowed(model),
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: Cow::Borrowed("assistant"),
                content: joined(&texts),
                reasoning_content: joined(&reasoning),
                tool_calls: (!calls.is_empty()).then_some(calls),
                refusal: None,
            },
            logprobs: None,
            finish_reason: Some(Cow::Borrowed(finish_reason(
                response.stop_reason.as_deref(),
            ))),
        }],
        usage: Some(response.usage.to_openai()),
    };
    let bytes = serde_json::to_vec(&completion).map_err(TranslateError::response)?;
    Ok((bytes, response.usage.tokens()))
}

fn joined<'a>(texts: &[&'a str]) -> Option<Cow<'a, str>> {
    match texts {
        [] => None,
        [one] => Some(Cow::Borrowed(*one)),
        many => Some(Cow::Owned(many.concat())),
    }
}

/// A Bedrock error body as read: `message` (some services say `Message`).
#[derive(Deserialize)]
struct ErrorIn<'a> {
    #[serde(borrow, default, alias = "Message")]
    message: Option<Cow<'a, str>>,
    #[serde(rename = "__type", borrow, default)]
    kind: Option<Cow<'a, str>>,
}

/// At most this much of an unreadable error body is quoted.
const MAX_QUOTED: usize = 512;

/// The exception name of an `x-amzn-errortype` value or `__type`
/// (`ThrottlingException:http://internal...` or `ns#ThrottlingException`).
fn exception_name(text: &str) -> &str {
    let text = text.split(':').next().unwrap_or(text);
    text.rsplit('#').next().unwrap_or(text)
}

/// The status an exception is answered with: Bedrock's own, except that
/// an unready or overloaded model is a 503 (so that fallback moves on).
fn status_of(exception: &str, status: StatusCode) -> StatusCode {
    match exception {
        "ThrottlingException" => StatusCode::TOO_MANY_REQUESTS,
        "ServiceUnavailableException" | "ModelNotReadyException" => StatusCode::SERVICE_UNAVAILABLE,
        "ValidationException" => StatusCode::BAD_REQUEST,
        "AccessDeniedException" => StatusCode::FORBIDDEN,
        "ResourceNotFoundException" => StatusCode::NOT_FOUND,
        "ModelTimeoutException" => StatusCode::GATEWAY_TIMEOUT,
        _ => status,
    }
}

/// OpenAI's error `type` for a status.
fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 404 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "upstream_error",
    }
}

/// A Bedrock error as an OpenAI one: `(status, body)`. `error_type` is the
/// `x-amzn-errortype` header, if any; its exception name becomes `code`.
pub fn error_to_openai(
    status: StatusCode,
    error_type: Option<&str>,
    body: &[u8],
) -> (StatusCode, Vec<u8>) {
    let parsed = serde_json::from_slice::<ErrorIn<'_>>(body).ok();
    let (kind, message) = parsed.map_or((None, None), |e| (e.kind, e.message));
    let exception = error_type
        .map(exception_name)
        .or_else(|| kind.as_deref().map(exception_name))
        .filter(|e| !e.is_empty());
    let status = exception.map_or(status, |e| status_of(e, status));
    let message = match message {
        Some(message) if !message.is_empty() => message.into_owned(),
        _ => {
            let text = String::from_utf8_lossy(&body[..body.len().min(MAX_QUOTED)]);
            match text.trim() {
                "" => "the upstream gave no details".to_owned(),
                text => text.to_owned(),
            }
        }
    };
    let code = exception.unwrap_or_else(|| openai_type(status));
    let body = crate::error::error_body(&message, openai_type(status), code);
    (status, body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_fallback_statuses() {
        for (status, header, expected, code) in [
            (
                429,
                Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
                429,
                "ThrottlingException",
            ),
            (
                503,
                Some("ServiceUnavailableException"),
                503,
                "ServiceUnavailableException",
            ),
            (
                429,
                Some("ModelNotReadyException"),
                503,
                "ModelNotReadyException",
            ),
            (400, Some("ValidationException"), 400, "ValidationException"),
            (
                403,
                Some("AccessDeniedException"),
                403,
                "AccessDeniedException",
            ),
            (500, None, 500, "upstream_error"),
        ] {
            let (got, body) = error_to_openai(
                StatusCode::from_u16(status).unwrap(),
                header,
                br#"{"message":"Too many requests, please wait before trying again."}"#,
            );
            assert_eq!(got.as_u16(), expected, "{header:?}");
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"]["code"], code);
            assert_eq!(
                body["error"]["message"],
                "Too many requests, please wait before trying again."
            );
        }
        // `__type` in the body, and a body that is not JSON.
        let (status, body) = error_to_openai(
            StatusCode::BAD_REQUEST,
            None,
            br#"{"__type":"com.amazon.coral#ValidationException","Message":"bad"}"#,
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&body).contains("\"code\":\"ValidationException\""));
        let (_, body) = error_to_openai(StatusCode::BAD_GATEWAY, None, b"<html>oops</html>");
        assert!(String::from_utf8_lossy(&body).contains("<html>oops</html>"));
    }
}
