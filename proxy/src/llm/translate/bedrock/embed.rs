//! OpenAI embeddings on Bedrock: `POST {endpoint}/model/{modelId}/invoke`
//! (signed like Converse) with the model maker's own body, picked by the
//! model id:
//! - Amazon Titan Text Embeddings (`amazon.titan-embed-text-*`):
//!   `{"inputText", "dimensions"?}` → `{"embedding":[...],
//!   "inputTextTokenCount":N}`. Titan embeds ONE text per call: a list of
//!   more than one string is refused (a 400 naming the limit) rather than
//!   fanned out into several signed calls.
//! - Cohere Embed (`cohere.embed-*`): `{"texts":[...],
//!   "input_type":"search_document", "output_dimension"?}` →
//!   `{"embeddings":[[...]] | {"float":[[...]]}, ...}`; its input tokens
//!   come from Bedrock's `X-Amzn-Bedrock-Input-Token-Count` header.
//!
//! Reference: docs.aws.amazon.com/bedrock/latest/userguide/
//! model-parameters-titan-embed-text.html and model-parameters-embed.html.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::llm::translate::embed::{self, Ask};
use crate::llm::translate::{TokenUsage, TranslateError};

/// The path after the endpoint: `/model/{modelId}/invoke`.
pub fn path(model: &str) -> String {
    let converse = super::path(model, false);
    let base = converse.strip_suffix("/converse").unwrap_or(&converse);
    format!("{base}/invoke")
}

/// The embedding models Bedrock serves that this module speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Titan,
    Cohere,
}

/// By id, also behind an inference-profile prefix (`us.`) or in an ARN.
fn family(model: &str) -> Option<Family> {
    if model.contains("amazon.titan-embed-text") {
        Some(Family::Titan)
    } else if model.contains("cohere.embed") {
        Some(Family::Cohere)
    } else {
        None
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TitanOut<'a> {
    input_text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u64>,
}

#[derive(Serialize)]
struct CohereOut<'a> {
    texts: &'a [std::borrow::Cow<'a, str>],
    input_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dimension: Option<u64>,
}

/// The InvokeModel body for an OpenAI embeddings request on `model`.
pub fn to_bedrock(body: &[u8], model: &str) -> Result<Vec<u8>, TranslateError> {
    let request = embed::read(body)?;
    match family(model) {
        Some(Family::Titan) => {
            let [text] = request.texts.as_slice() else {
                return Err(TranslateError::Request(format!(
                    "Amazon Titan embeddings ({model}) take one text per request and this one \
                     has {}; send one string, or use a cohere.embed-* model for batches",
                    request.texts.len()
                )));
            };
            serde_json::to_vec(&TitanOut {
                input_text: text,
                dimensions: request.dimensions,
            })
        }
        Some(Family::Cohere) => serde_json::to_vec(&CohereOut {
            texts: &request.texts,
            input_type: "search_document",
            output_dimension: request.dimensions,
        }),
        None => {
            return Err(TranslateError::Request(format!(
                "embeddings on Bedrock are served for Amazon Titan Text Embeddings \
                 (amazon.titan-embed-text-*) and Cohere Embed (cohere.embed-*) models, not {model}"
            )))
        }
    }
    .map_err(TranslateError::request)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnswerIn<'a> {
    /// Titan's one vector.
    #[serde(borrow, default)]
    embedding: Option<&'a RawValue>,
    #[serde(default)]
    input_text_token_count: Option<u64>,
    /// Cohere's vectors.
    #[serde(borrow, default)]
    embeddings: Option<&'a RawValue>,
}

/// An InvokeModel answer (Titan's or Cohere's shape) as OpenAI's list for
/// `model`. `header_tokens`: Bedrock's input token count header. Returns
/// whether the usage is the gateway's estimate.
pub fn to_openai(
    body: &[u8],
    model: &str,
    header_tokens: Option<u64>,
    ask: Ask,
) -> Result<(Vec<u8>, TokenUsage, bool), TranslateError> {
    let answer: AnswerIn<'_> = serde_json::from_slice(body).map_err(TranslateError::response)?;
    let vectors = match (answer.embedding, answer.embeddings) {
        (Some(one), _) => vec![one],
        (None, Some(many)) => embed::float_vectors(many)?,
        (None, None) => {
            return Err(TranslateError::Response(
                "the upstream answer holds no `embedding` nor `embeddings`".into(),
            ))
        }
    };
    let reported = answer.input_text_token_count.or(header_tokens);
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
    fn picks_the_body_by_model() {
        assert_eq!(
            path("amazon.titan-embed-text-v2:0"),
            "/model/amazon.titan-embed-text-v2%3A0/invoke"
        );
        let titan = to_bedrock(
            br#"{"input":["hi"],"dimensions":256}"#,
            "amazon.titan-embed-text-v2:0",
        )
        .unwrap();
        assert_eq!(titan, br#"{"inputText":"hi","dimensions":256}"#);
        let error = to_bedrock(br#"{"input":["a","b"]}"#, "amazon.titan-embed-text-v2:0")
            .unwrap_err()
            .to_string();
        assert!(error.contains("one text per request"), "{error}");
        let cohere = to_bedrock(br#"{"input":["a","b"]}"#, "us.cohere.embed-english-v3").unwrap();
        assert_eq!(
            cohere,
            br#"{"texts":["a","b"],"input_type":"search_document"}"#
        );
        let error = to_bedrock(br#"{"input":"a"}"#, "anthropic.claude-3")
            .unwrap_err()
            .to_string();
        assert!(error.contains("amazon.titan-embed-text"), "{error}");
    }

    #[test]
    fn reads_both_answers() {
        let ask = Ask {
            base64: false,
            estimate: 99,
        };
        let (bytes, usage, estimated) = to_openai(
            br#"{"embedding":[0.5,0.25],"inputTextTokenCount":3}"#,
            "t",
            None,
            ask,
        )
        .unwrap();
        assert_eq!((usage.input, estimated), (3, false));
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["data"][0]["embedding"], serde_json::json!([0.5, 0.25]));
        let (_, usage, estimated) = to_openai(
            br#"{"id":"x","embeddings":[[1],[2]],"response_type":"embeddings_floats","texts":["a","b"]}"#,
            "c",
            Some(4),
            ask,
        )
        .unwrap();
        assert_eq!((usage.input, estimated), (4, false));
        let (_, usage, estimated) =
            to_openai(br#"{"embeddings":{"float":[[1]]}}"#, "c", None, ask).unwrap();
        assert_eq!((usage.input, estimated), (99, true));
        assert!(to_openai(br#"{"id":"x"}"#, "c", None, ask).is_err());
    }
}
