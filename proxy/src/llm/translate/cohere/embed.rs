//! OpenAI embeddings on Cohere: `POST {base}/v2/embed` with `{"model",
//! "texts", "input_type":"search_document", "embedding_types":["float"],
//! "output_dimension"?}`, and `{"embeddings":{"float":[[...]]},
//! "meta":{"billed_units":{"input_tokens":N}}}` back as OpenAI's list.
//! OpenAI's request has no input type: documents (what gets stored and
//! searched) is the default chosen.
//!
//! Reference: docs.cohere.com/reference/embed.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::llm::translate::embed::{self, Ask};
use crate::llm::translate::{TokenUsage, TranslateError};

/// The path after the base URL (`.../v2`).
pub const PATH: &str = "/embed";

#[derive(Serialize)]
struct EmbedOut<'a> {
    model: &'a str,
    texts: &'a [Cow<'a, str>],
    input_type: &'static str,
    embedding_types: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dimension: Option<u64>,
}

/// The `/v2/embed` body for an OpenAI embeddings request, for `model`.
pub fn to_cohere(body: &[u8], model: &str) -> Result<Vec<u8>, TranslateError> {
    let request = embed::read(body)?;
    serde_json::to_vec(&EmbedOut {
        model,
        texts: &request.texts,
        input_type: "search_document",
        embedding_types: ["float"],
        output_dimension: request.dimensions,
    })
    .map_err(TranslateError::request)
}

#[derive(Deserialize)]
struct AnswerIn<'a> {
    #[serde(borrow)]
    embeddings: &'a RawValue,
    #[serde(default)]
    meta: Option<Meta>,
}

#[derive(Deserialize)]
pub(super) struct Meta {
    #[serde(default)]
    pub billed_units: Option<BilledUnits>,
}

#[derive(Deserialize)]
pub(super) struct BilledUnits {
    #[serde(default)]
    pub input_tokens: Option<u64>,
}

/// A `/v2/embed` answer as OpenAI's list for `model`. Returns whether the
/// usage is the gateway's estimate (no `meta.billed_units.input_tokens`).
pub fn to_openai(
    body: &[u8],
    model: &str,
    ask: Ask,
) -> Result<(Vec<u8>, TokenUsage, bool), TranslateError> {
    let answer: AnswerIn<'_> = serde_json::from_slice(body).map_err(TranslateError::response)?;
    let vectors = embed::float_vectors(answer.embeddings)?;
    let reported = answer
        .meta
        .and_then(|m| m.billed_units)
        .and_then(|b| b.input_tokens);
    let (bytes, usage) = embed::write_list(
        &vectors,
        model,
        reported.unwrap_or(ask.estimate),
        ask.base64,
    )?;
    Ok((bytes, usage, reported.is_none()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_floats_for_documents() {
        let out = to_cohere(
            br#"{"model":"x","input":"hi","dimensions":512}"#,
            "embed-v4.0",
        )
        .unwrap();
        assert_eq!(
            out,
            br#"{"model":"embed-v4.0","texts":["hi"],"input_type":"search_document","embedding_types":["float"],"output_dimension":512}"#
        );
    }

    #[test]
    fn reads_billed_tokens() {
        let ask = Ask {
            base64: false,
            estimate: 50,
        };
        let body = br#"{"id":"e","embeddings":{"float":[[0.1],[0.2]]},"texts":["a","b"],"meta":{"api_version":{"version":"2"},"billed_units":{"input_tokens":2}}}"#;
        let (bytes, usage, estimated) = to_openai(body, "m", ask).unwrap();
        assert_eq!((usage.input, estimated), (2, false));
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["data"][1]["embedding"], serde_json::json!([0.2]));
        let (_, usage, estimated) = to_openai(br#"{"embeddings":{"float":[]}}"#, "m", ask).unwrap();
        assert_eq!((usage.input, estimated), (50, true));
        assert!(to_openai(br#"{"embeddings":{"int8":[[1]]}}"#, "m", ask).is_err());
    }
}
