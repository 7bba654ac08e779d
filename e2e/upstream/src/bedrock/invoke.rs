//! Bedrock's `POST /model/{modelId}/invoke` for the embedding models the
//! gateway translates to, with each maker's body, refused as Bedrock
//! refuses (`ValidationException`, "Malformed input request: ..."):
//! - Amazon Titan Text Embeddings (`amazon.titan-embed-text-v2:0`, v1):
//!   `{"inputText", "dimensions"? (256, 512, 1024; v2 only), "normalize"?,
//!   "embeddingTypes"?}` → `{"embedding":[...],"inputTextTokenCount":N,
//!   "embeddingsByType":{"float":[...]}}`;
//! - Cohere Embed (`cohere.embed-*`): `{"texts" (at most 96),
//!   "input_type", "truncate"?, "embedding_types"?, "output_dimension"?
//!   (v4)}` → `{"embeddings":[[...]],"id","response_type":
//!   "embeddings_floats","texts"}` (`{"float":[[...]]}` and
//!   `embeddings_by_type` when `embedding_types` is set).
//!
//! Every answer carries `X-Amzn-Bedrock-Input-Token-Count` (the control's
//! prompt tokens). Other models are refused.

use std::borrow::Cow;

use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;

use super::{refuse, Refusal};
use crate::control::Control;
use crate::embed;

/// Whether a path is InvokeModel's: the model id (still percent-encoded).
pub(crate) fn route(path: &str) -> Option<&str> {
    path.strip_prefix("/model/")?.strip_suffix("/invoke")
}

/// The model id in a path segment, decoded (`%3A` is `:`).
fn decode(model: &str) -> String {
    let bytes = model.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn malformed(detail: &str) -> Refusal {
    refuse(
        StatusCode::BAD_REQUEST,
        &format!("Malformed input request: {detail}, please reformat your input and try again."),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TitanRequest {
    input_text: String,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(default)]
    normalize: Option<bool>,
    #[serde(default)]
    embedding_types: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CohereRequest<'a> {
    texts: Vec<String>,
    #[serde(borrow)]
    input_type: Cow<'a, str>,
    #[serde(borrow, default)]
    truncate: Option<Cow<'a, str>>,
    #[serde(default)]
    embedding_types: Option<Vec<String>>,
    #[serde(default)]
    output_dimension: Option<u32>,
}

/// Answers one InvokeModel call on the (encoded) `model`: the body and
/// the input token count for the header.
pub(crate) fn invoke(model: &str, body: &[u8], control: &Control) -> Result<(Bytes, u64), Refusal> {
    let model = decode(model);
    let tokens = control.prompt_tokens;
    if model.contains("amazon.titan-embed-text") {
        let request: TitanRequest =
            serde_json::from_slice(body).map_err(|e| malformed(&format!("#: {e}")))?;
        let v2 = model.contains("-v2");
        if !v2
            && (request.dimensions.is_some()
                || request.normalize.is_some()
                || request.embedding_types.is_some())
        {
            return Err(malformed("extraneous key [dimensions] is not permitted"));
        }
        let dimensions = request.dimensions.unwrap_or(if v2 { 1024 } else { 1536 });
        if v2 && ![256, 512, 1024].contains(&dimensions) {
            return Err(malformed(&format!(
                "#/dimensions: {dimensions} is not a valid enum value"
            )));
        }
        if request.input_text.is_empty() {
            return Err(malformed("#/inputText: expected minLength: 1, actual: 0"));
        }
        let vector = embed::vector_json(&request.input_text, dimensions);
        let body = format!(
            "{{\"embedding\":{vector},\"inputTextTokenCount\":{tokens},\"embeddingsByType\":{{\"float\":{vector}}}}}"
        );
        return Ok((Bytes::from(body), tokens));
    }
    if model.contains("cohere.embed") {
        let request: CohereRequest<'_> =
            serde_json::from_slice(body).map_err(|e| malformed(&format!("#: {e}")))?;
        if request.texts.is_empty() || request.texts.len() > 96 {
            return Err(malformed("#/texts: expected between 1 and 96 items"));
        }
        if ![
            "search_document",
            "search_query",
            "classification",
            "clustering",
        ]
        .contains(&request.input_type.as_ref())
        {
            return Err(malformed(&format!(
                "#/input_type: {} is not a valid enum value",
                request.input_type
            )));
        }
        if let Some(mode) = request.truncate.as_deref() {
            if !["NONE", "START", "END"].contains(&mode) {
                return Err(malformed(&format!(
                    "#/truncate: {mode} is not a valid enum value"
                )));
            }
        }
        let v4 = model.contains("embed-v4");
        let dimensions = match request.output_dimension {
            None if v4 => 1536,
            None => 1024,
            Some(d) if v4 && [256, 512, 1024, 1536].contains(&d) => d,
            Some(_) => {
                return Err(malformed(
                    "extraneous key [output_dimension] is not permitted",
                ))
            }
        };
        let vectors: Vec<String> = request
            .texts
            .iter()
            .map(|t| embed::vector_json(t, dimensions))
            .collect();
        let texts = serde_json::to_string(&request.texts).unwrap_or_else(|_| "[]".into());
        let (embeddings, kind) = match &request.embedding_types {
            None => (format!("[{}]", vectors.join(",")), "embeddings_floats"),
            Some(types) if types.iter().all(|t| t == "float") => (
                format!("{{\"float\":[{}]}}", vectors.join(",")),
                "embeddings_by_type",
            ),
            Some(_) => {
                return Err(malformed(
                    "#/embedding_types: only float is answered by this mock",
                ))
            }
        };
        let body = format!(
            "{{\"embeddings\":{embeddings},\"id\":\"mock-embed\",\"response_type\":\"{kind}\",\"texts\":{texts}}}"
        );
        return Ok((Bytes::from(body), tokens));
    }
    Err(refuse(
        StatusCode::BAD_REQUEST,
        &format!("The provided model identifier is invalid or does not support InvokeModel embeddings here: {model}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn call(model: &str, body: Value) -> Result<Value, Refusal> {
        invoke(model, body.to_string().as_bytes(), &Control::default())
            .map(|(bytes, _)| serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[test]
    fn titan_and_cohere_answer() {
        assert_eq!(
            route("/model/amazon.titan-embed-text-v2%3A0/invoke"),
            Some("amazon.titan-embed-text-v2%3A0")
        );
        let titan = call(
            "amazon.titan-embed-text-v2%3A0",
            json!({"inputText": "hi", "dimensions": 256}),
        )
        .ok()
        .unwrap();
        assert_eq!(titan["embedding"].as_array().unwrap().len(), 256);
        assert_eq!(titan["inputTextTokenCount"], 7);
        let cohere = call(
            "cohere.embed-english-v3",
            json!({"texts": ["a", "b"], "input_type": "search_document"}),
        )
        .ok()
        .unwrap();
        assert_eq!(cohere["embeddings"].as_array().unwrap().len(), 2);
        assert_eq!(cohere["response_type"], "embeddings_floats");
    }

    #[test]
    fn refuses_what_bedrock_refuses() {
        for (model, body) in [
            (
                "amazon.titan-embed-text-v2:0",
                json!({"inputText": "a", "dimensions": 300}),
            ),
            ("amazon.titan-embed-text-v2:0", json!({"texts": ["a"]})),
            (
                "amazon.titan-embed-text-v1",
                json!({"inputText": "a", "dimensions": 256}),
            ),
            ("cohere.embed-english-v3", json!({"texts": ["a"]})),
            (
                "cohere.embed-english-v3",
                json!({"texts": ["a"], "input_type": "search_document", "output_dimension": 256}),
            ),
            ("anthropic.claude-3", json!({"inputText": "a"})),
        ] {
            let refusal = call(model, body.clone()).err().unwrap();
            assert_eq!(refusal.status, 400, "{model} {body}");
            assert_eq!(refusal.error_type, "ValidationException");
        }
    }
}
