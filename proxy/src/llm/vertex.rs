//! Anthropic's Claude models on Vertex AI: which requests go to the
//! `anthropic` publisher, their URL
//! (`{location URL}/publishers/anthropic/models/{model}:rawPredict`,
//! `:streamRawPredict` for streams, `count-tokens:rawPredict`), and the two
//! body edits Vertex asks of an Anthropic Messages body (no `model`, an
//! `anthropic_version` of [`ANTHROPIC_VERSION`]). The body is otherwise
//! Anthropic's, and so are the answers: the Anthropic translators and
//! usage readers serve them unchanged. Knows nothing of routing or auth.
//! (cloud.google.com/vertex-ai/generative-ai/docs/partner-models/claude)

use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::Endpoint;

/// The `anthropic_version` Vertex AI expects in the body.
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// Whether a model on a `VertexAI` backend is Anthropic's (served by the
/// `anthropic` publisher) rather than Google's. No allocation.
pub fn is_claude(model: &str) -> bool {
    model.starts_with("claude-")
}

/// The request URL for a Claude model. `base_url` is the backend's
/// Gemini base (`.../locations/{l}/publishers/google`).
pub fn claude_url(base_url: &str, model: &str, endpoint: Endpoint, stream: bool) -> String {
    let location = base_url
        .strip_suffix("/publishers/google")
        .unwrap_or(base_url);
    let (model, method) = match endpoint {
        // The counted model is named in the body.
        Endpoint::CountTokens => ("count-tokens", ":rawPredict"),
        _ if stream => (model, ":streamRawPredict"),
        _ => (model, ":rawPredict"),
    };
    let mut url = String::with_capacity(location.len() + model.len() + 48);
    url.push_str(location);
    url.push_str("/publishers/anthropic/models/");
    url.push_str(&super::forward::path_segment(model));
    url.push_str(method);
    url
}

/// Why a body could not be edited (it is not a JSON object).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the request body is not a JSON object: {0}")]
pub struct BodyError(String);

/// An Anthropic Messages body as Vertex AI takes it: the top-level
/// `model` removed (unless `keep_model`: count-tokens names the model in
/// the body) and `anthropic_version` added when absent. Members are
/// copied as written (values are not parsed into a tree).
pub fn claude_body(body: &[u8], keep_model: bool) -> Result<Bytes, BodyError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let out = de
        .deserialize_map(Members {
            keep_model,
            out: Vec::with_capacity(body.len() + 48),
        })
        .and_then(|out| de.end().map(|()| out))
        .map_err(|e| BodyError(e.to_string()))?;
    Ok(Bytes::from(out))
}

struct Members {
    keep_model: bool,
    out: Vec<u8>,
}

impl<'de> Visitor<'de> for Members {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Vec<u8>, A::Error> {
        let out = &mut self.out;
        out.push(b'{');
        let mut has_version = false;
        let mut first = true;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let value: &'de RawValue = map.next_value()?;
            if &*key == "model" && !self.keep_model {
                continue;
            }
            has_version |= &*key == "anthropic_version";
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut *out, &*key).map_err(de::Error::custom)?;
            out.push(b':');
            out.extend_from_slice(value.get().as_bytes());
        }
        if !has_version {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(b"\"anthropic_version\":\"");
            out.extend_from_slice(ANTHROPIC_VERSION.as_bytes());
            out.push(b'"');
        }
        out.push(b'}');
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edited(body: &str, keep_model: bool) -> serde_json::Value {
        serde_json::from_slice(&claude_body(body.as_bytes(), keep_model).unwrap()).unwrap()
    }

    #[test]
    fn drops_the_model_and_adds_the_version() {
        let body = r#"{"model":"claude-sonnet-4@20250514","max_tokens":9,"messages":[{"role":"user","content":"{\"model\":1}"}],"stream":true}"#;
        assert_eq!(
            edited(body, false),
            serde_json::json!({"max_tokens": 9, "stream": true,
                "messages": [{"role": "user", "content": "{\"model\":1}"}],
                "anthropic_version": "vertex-2023-10-16"})
        );
        // Count-tokens keeps the model; a version already there is kept.
        assert_eq!(
            edited(
                r#"{"model":"claude-x","anthropic_version":"vertex-2099","messages":[]}"#,
                true
            ),
            serde_json::json!({"model": "claude-x", "anthropic_version": "vertex-2099", "messages": []})
        );
        // An escaped key is still the model.
        assert_eq!(
            edited(r#"{"mod\u0065l":"m"}"#, false),
            serde_json::json!({"anthropic_version": "vertex-2023-10-16"})
        );
        assert_eq!(
            &claude_body(b"{ }", false).unwrap()[..],
            br#"{"anthropic_version":"vertex-2023-10-16"}"#
        );
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        for bad in ["", "[1]", "{\"a\":", "{} x", "null"] {
            assert!(claude_body(bad.as_bytes(), false).is_err(), "{bad}");
        }
    }

    #[test]
    fn builds_claude_urls() {
        let base = "https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5/publishers/google";
        assert_eq!(
            claude_url(base, "claude-sonnet-4@20250514", Endpoint::Messages, false),
            "https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"
        );
        assert_eq!(
            claude_url(base, "claude-x", Endpoint::ChatCompletions, true),
            "https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-x:streamRawPredict"
        );
        assert_eq!(
            claude_url(base, "claude-x", Endpoint::CountTokens, false),
            "https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict"
        );
        assert!(is_claude("claude-3-5-haiku@20241022"));
        assert!(!is_claude("gemini-2.5-flash"));
        assert!(!is_claude("my-claude"));
    }
}
