//! OpenAI embeddings on Gemini (AI Studio): `POST {base}/models/{model}:batchEmbedContents`
//! with one `EmbedContentRequest` per text (`outputDimensionality` from
//! `dimensions`), and `{"embeddings":[{"values":[...]}]}` back as OpenAI's
//! list. Gemini reports no token count: the input is the gateway's
//! estimate (see `limits::estimate`). Vertex AI's `:predict` is not spoken
//! here (the forwarder refuses embeddings on Vertex backends).
//!
//! Reference: ai.google.dev/api/embeddings (`models.batchEmbedContents`).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::llm::translate::embed::{self, Ask};
use crate::llm::translate::{TokenUsage, TranslateError};

/// The method replacing `:generateContent`.
pub const METHOD: &str = ":batchEmbedContents";

#[derive(Serialize)]
struct BatchOut<'a> {
    requests: Vec<EmbedOut<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EmbedOut<'a> {
    model: &'a str,
    content: ContentOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dimensionality: Option<u64>,
}

#[derive(Serialize)]
struct ContentOut<'a> {
    parts: [TextOut<'a>; 1],
}

#[derive(Serialize)]
struct TextOut<'a> {
    text: &'a str,
}

/// The `batchEmbedContents` body for an OpenAI embeddings request, for
/// `model` (with or without its `models/` prefix).
pub fn to_gemini(body: &[u8], model: &str) -> Result<Vec<u8>, TranslateError> {
    let request = embed::read(body)?;
    let name = format!("models/{}", model.strip_prefix("models/").unwrap_or(model));
    let batch = BatchOut {
        requests: request
            .texts
            .iter()
            .map(|text| EmbedOut {
                model: &name,
                content: ContentOut {
                    parts: [TextOut { text }],
                },
                output_dimensionality: request.dimensions,
            })
            .collect(),
    };
    serde_json::to_vec(&batch).map_err(TranslateError::request)
}

#[derive(Deserialize)]
struct BatchIn<'a> {
    #[serde(borrow)]
    embeddings: Vec<ValuesIn<'a>>,
}

#[derive(Deserialize)]
struct ValuesIn<'a> {
    #[serde(borrow)]
    values: &'a RawValue,
}

/// A `batchEmbedContents` answer as OpenAI's list for `model`; the usage is
/// the estimate in `ask`.
pub fn to_openai(
    body: &[u8],
    model: &str,
    ask: Ask,
) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let batch: BatchIn<'_> = serde_json::from_slice(body).map_err(TranslateError::response)?;
    let vectors: Vec<&RawValue> = batch.embeddings.iter().map(|e| e.values).collect();
    embed::write_list(&vectors, model, ask.estimate, ask.base64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_per_text() {
        let out = to_gemini(
            br#"{"model":"e","input":["a","b"],"dimensions":8,"user":"u"}"#,
            "gemini-embedding-001",
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"requests":[{"model":"models/gemini-embedding-001","content":{"parts":[{"text":"a"}]},"outputDimensionality":8},{"model":"models/gemini-embedding-001","content":{"parts":[{"text":"b"}]},"outputDimensionality":8}]}"#
        );
    }

    #[test]
    fn answers_become_a_list() {
        let ask = Ask {
            base64: false,
            estimate: 5,
        };
        let (bytes, usage) = to_openai(
            br#"{"embeddings":[{"values":[0.1,0.2]},{"values":[0.3,0.4]}]}"#,
            "e",
            ask,
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["data"][1]["embedding"], serde_json::json!([0.3, 0.4]));
        assert_eq!(json["data"][1]["index"], 1);
        assert_eq!(usage.input, 5);
        assert!(to_openai(br#"{"embeddings":[{"vals":[]}]}"#, "e", ask).is_err());
    }
}
