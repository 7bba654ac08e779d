//! OpenAI embeddings on Gemini. AI Studio: `POST {base}/models/{model}:batchEmbedContents`
//! with one `EmbedContentRequest` per text (`outputDimensionality` from
//! `dimensions`), and `{"embeddings":[{"values":[...]}]}` back as OpenAI's
//! list; it reports no token count, so the input is the gateway's estimate
//! (see `limits::estimate`). Vertex AI: `POST {base}/models/{model}:predict`
//! with `{"instances":[{"content"}],"parameters":{"outputDimensionality"}}`
//! and `{"predictions":[{"embeddings":{"values","statistics":
//! {"token_count"}}}]}` back, its token counts summed.
//!
//! Reference: ai.google.dev/api/embeddings (`models.batchEmbedContents`),
//! cloud.google.com/vertex-ai/generative-ai/docs/model-reference/text-embeddings-api.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::llm::translate::embed::{self, Ask};
use crate::llm::translate::{TokenUsage, TranslateError};

/// The method replacing `:generateContent`.
pub const METHOD: &str = ":batchEmbedContents";
/// Vertex AI's method.
pub const VERTEX_METHOD: &str = ":predict";

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

#[derive(Serialize)]
struct PredictOut<'a> {
    instances: Vec<InstanceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<ParametersOut>,
}

#[derive(Serialize)]
struct InstanceOut<'a> {
    content: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ParametersOut {
    output_dimensionality: u64,
}

/// The Vertex AI `:predict` body for an OpenAI embeddings request.
pub fn to_vertex(body: &[u8]) -> Result<Vec<u8>, TranslateError> {
    let request = embed::read(body)?;
    let predict = PredictOut {
        instances: request
            .texts
            .iter()
            .map(|text| InstanceOut { content: text })
            .collect(),
        parameters: request.dimensions.map(|d| ParametersOut {
            output_dimensionality: d,
        }),
    };
    serde_json::to_vec(&predict).map_err(TranslateError::request)
}

/// AI Studio's answer or Vertex AI's.
#[derive(Deserialize)]
struct BatchIn<'a> {
    #[serde(borrow, default)]
    embeddings: Option<Vec<ValuesIn<'a>>>,
    #[serde(borrow, default)]
    predictions: Option<Vec<PredictionIn<'a>>>,
}

#[derive(Deserialize)]
struct PredictionIn<'a> {
    #[serde(borrow)]
    embeddings: VertexValuesIn<'a>,
}

#[derive(Deserialize)]
struct VertexValuesIn<'a> {
    #[serde(borrow)]
    values: &'a RawValue,
    #[serde(default)]
    statistics: Option<Statistics>,
}

#[derive(Deserialize)]
struct Statistics {
    #[serde(default)]
    token_count: Option<f64>,
}

#[derive(Deserialize)]
struct ValuesIn<'a> {
    #[serde(borrow)]
    values: &'a RawValue,
}

/// A `batchEmbedContents` (or Vertex AI `:predict`) answer as OpenAI's
/// list for `model`. Returns whether the usage is the estimate in `ask`
/// (always for AI Studio, which reports no tokens).
pub fn to_openai(
    body: &[u8],
    model: &str,
    ask: Ask,
) -> Result<(Vec<u8>, TokenUsage, bool), TranslateError> {
    let batch: BatchIn<'_> = serde_json::from_slice(body).map_err(TranslateError::response)?;
    if let Some(predictions) = batch.predictions {
        let vectors: Vec<&RawValue> = predictions.iter().map(|p| p.embeddings.values).collect();
        let counts: Vec<Option<f64>> = predictions
            .iter()
            .map(|p| p.embeddings.statistics.as_ref().and_then(|s| s.token_count))
            .collect();
        let reported = counts.iter().all(Option::is_some) && !counts.is_empty();
        // Vertex writes counts as JSON numbers that may carry a fraction.
        let tokens = counts
            .iter()
            .flatten()
            .map(|c| c.max(0.0).round() as u64)
            .sum();
        let tokens = if reported { tokens } else { ask.estimate };
        let (bytes, usage) = embed::write_list(&vectors, model, tokens, ask.base64)?;
        return Ok((bytes, usage, !reported));
    }
    let Some(embeddings) = batch.embeddings else {
        return Err(TranslateError::Response(
            "the upstream answer holds no `embeddings` nor `predictions`".into(),
        ));
    };
    let vectors: Vec<&RawValue> = embeddings.iter().map(|e| e.values).collect();
    let (bytes, usage) = embed::write_list(&vectors, model, ask.estimate, ask.base64)?;
    Ok((bytes, usage, true))
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
        let (bytes, usage, estimated) = to_openai(
            br#"{"embeddings":[{"values":[0.1,0.2]},{"values":[0.3,0.4]}]}"#,
            "e",
            ask,
        )
        .unwrap();
        assert!(estimated);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["data"][1]["embedding"], serde_json::json!([0.3, 0.4]));
        assert_eq!(json["data"][1]["index"], 1);
        assert_eq!(usage.input, 5);
        assert!(to_openai(br#"{"embeddings":[{"vals":[]}]}"#, "e", ask).is_err());
        assert!(to_openai(br#"{"id":"x"}"#, "e", ask).is_err());
    }

    #[test]
    fn vertex_predicts_with_token_counts() {
        let out = to_vertex(br#"{"input":["a","b"],"dimensions":8}"#).unwrap();
        assert_eq!(
            out,
            br#"{"instances":[{"content":"a"},{"content":"b"}],"parameters":{"outputDimensionality":8}}"#
        );
        assert_eq!(
            to_vertex(br#"{"input":"a"}"#).unwrap(),
            br#"{"instances":[{"content":"a"}]}"#
        );
        let ask = Ask {
            base64: false,
            estimate: 9,
        };
        let body = br#"{"predictions":[{"embeddings":{"statistics":{"truncated":false,"token_count":2},"values":[0.5]}},{"embeddings":{"statistics":{"truncated":false,"token_count":3.0},"values":[0.25]}}],"metadata":{"billableCharacterCount":2}}"#;
        let (bytes, usage, estimated) = to_openai(body, "text-embedding-005", ask).unwrap();
        assert_eq!((usage.input, estimated), (5, false));
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["data"][1]["embedding"], serde_json::json!([0.25]));
        let (_, usage, estimated) = to_openai(
            br#"{"predictions":[{"embeddings":{"values":[1]}}]}"#,
            "m",
            ask,
        )
        .unwrap();
        assert_eq!((usage.input, estimated), (9, true));
    }
}
