//! Anthropic's Claude models on Vertex AI:
//! `POST /v1/projects/{p}/locations/{l}/publishers/anthropic/models/{model}:rawPredict`
//! (`:streamRawPredict` for streams, `count-tokens:rawPredict` to count).
//! Checks what Vertex AI checks on top of Anthropic's rules (the model in
//! the URL and not in the body, `anthropic_version` `vertex-2023-10-16` in
//! the body, `stream` matching the method), then answers as the Anthropic
//! face does, in Anthropic's shapes (errors included). The bearer token is
//! checked by the caller, as for Gemini on Vertex AI.

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Map, Value};

use crate::anthropic;
use crate::control::Control;
use crate::openai::{Ids, Reply};

use super::Answer;

/// The version Vertex AI takes in the body.
pub const VERSION: &str = "vertex-2023-10-16";

/// What a Claude path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// `{model}:rawPredict`.
    Predict,
    /// `{model}:streamRawPredict`.
    Stream,
    /// `count-tokens:rawPredict`.
    Count,
}

/// The method of a Claude-on-Vertex path, if it is one.
pub(crate) fn method(path: &str) -> Option<Method> {
    if !(path.starts_with("/v1/projects/") && path.contains("/publishers/anthropic/models/")) {
        return None;
    }
    if path.ends_with("/count-tokens:rawPredict") {
        Some(Method::Count)
    } else if path.ends_with(":streamRawPredict") {
        Some(Method::Stream)
    } else if path.ends_with(":rawPredict") {
        Some(Method::Predict)
    } else {
        None
    }
}

/// An error in Anthropic's shape (what Claude on Vertex AI answers).
pub(crate) fn error(status: StatusCode, message: &str) -> Answer {
    Answer {
        status,
        body: anthropic::error_body(status, message),
    }
}

/// Answers a Claude request (auth already checked).
pub(crate) fn answer(
    path: &str,
    method: Method,
    body: &[u8],
    control: &Control,
    ids: &Ids,
    stream_error: bool,
) -> Result<Reply, Answer> {
    let bad = |message: &str| Err(error(StatusCode::BAD_REQUEST, message));
    let Ok(mut fields) = serde_json::from_slice::<Map<String, Value>>(body) else {
        return bad("invalid request body: not a JSON object");
    };
    match fields.remove("anthropic_version") {
        Some(Value::String(v)) if v == VERSION => {}
        Some(other) => return bad(&format!("anthropic_version: {other} is not supported")),
        None => return bad("anthropic_version: Field required"),
    }
    let streamed = fields.get("stream").and_then(Value::as_bool) == Some(true);
    if method == Method::Count {
        if !fields.contains_key("model") {
            return bad("model: Field required");
        }
    } else {
        if fields.contains_key("model") {
            return bad("model: Extra inputs are not permitted (the model is in the URL)");
        }
        if streamed != (method == Method::Stream) {
            return bad("stream: true goes with :streamRawPredict, false with :rawPredict");
        }
        let model = path
            .rsplit_once("/models/")
            .and_then(|(_, rest)| rest.split_once(':'))
            .map_or("unknown", |(model, _)| model);
        fields.insert("model".into(), Value::String(model.to_owned()));
    }
    let anthropic_body = Value::Object(fields).to_string();
    let reply = if method == Method::Count {
        anthropic::count_tokens(anthropic_body.as_bytes(), control)
    } else {
        anthropic::messages(anthropic_body.as_bytes(), control, ids, stream_error)
    };
    reply.map_err(|refusal| Answer {
        status: refusal.status,
        body: refusal.body,
    })
}

/// A forced error status, as Claude on Vertex AI sends it.
pub(crate) fn forced(status: StatusCode) -> Bytes {
    anthropic::error_body(
        status,
        &format!(
            "Mock upstream error: status {} was requested.",
            status.as_u16()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_claude_paths() {
        let base = "/v1/projects/p/locations/us-east5/publishers/anthropic/models";
        assert_eq!(
            method(&format!("{base}/claude-x@1:rawPredict")),
            Some(Method::Predict)
        );
        assert_eq!(
            method(&format!("{base}/claude-x:streamRawPredict")),
            Some(Method::Stream)
        );
        assert_eq!(
            method(&format!("{base}/count-tokens:rawPredict")),
            Some(Method::Count)
        );
        assert_eq!(method(&format!("{base}/claude-x:generateContent")), None);
        assert_eq!(method("/v1/messages"), None);
    }

    #[test]
    fn refuses_what_vertex_refuses() {
        let path = "/v1/projects/p/locations/l/publishers/anthropic/models/claude-x:rawPredict";
        let control = Control::default();
        let ids = Ids::default();
        for (body, needle) in [
            (
                r#"{"max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
                "anthropic_version: Field required",
            ),
            (
                r#"{"anthropic_version":"2023-06-01","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
                "not supported",
            ),
            (
                r#"{"anthropic_version":"vertex-2023-10-16","model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
                "Extra inputs",
            ),
            (
                r#"{"anthropic_version":"vertex-2023-10-16","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
                "streamRawPredict",
            ),
            (
                r#"{"anthropic_version":"vertex-2023-10-16","messages":[{"role":"user","content":"x"}]}"#,
                "max_tokens",
            ),
        ] {
            let refusal = answer(
                path,
                Method::Predict,
                body.as_bytes(),
                &control,
                &ids,
                false,
            )
            .err()
            .unwrap();
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
            let text = String::from_utf8_lossy(&refusal.body);
            assert!(text.contains(needle), "{body}: {text}");
            assert!(text.contains("invalid_request_error"), "{text}");
        }
        let ok = answer(
            path,
            Method::Predict,
            br#"{"anthropic_version":"vertex-2023-10-16","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
            &control,
            &ids,
            false,
        );
        assert!(ok.is_ok());
    }
}
