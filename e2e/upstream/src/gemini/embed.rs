//! Vertex AI's `POST .../publishers/google/models/{model}:predict` for
//! embedding models is here too ([`predict`]): `{"instances":[{"content"}],
//! "parameters":{"outputDimensionality"?}}` → `{"predictions":[{"embeddings":
//! {"statistics":{"token_count","truncated"},"values"}}]}`; it refuses
//! unknown fields, no instances, more than 250 (more than 1 for
//! `gemini-embedding-001`, as Vertex does). Default sizes: 3072 for
//! `gemini-embedding-001`, 768 otherwise (`text-embedding-005`).
//!
//! Gemini's `POST /v1beta/models/{model}:batchEmbedContents` (AI Studio):
//! one `EmbedContentRequest` per text, each naming the URL's model,
//! `{"embeddings":[{"values":[...]}]}` back. It refuses what Google
//! refuses: unknown fields, no requests, more than 100, a request for
//! another model, empty parts, a bad `outputDimensionality`. Vectors are
//! 3072 long unless `outputDimensionality` says otherwise, as for
//! `gemini-embedding-001`.

use std::borrow::Cow;

use http::StatusCode;
use serde::Deserialize;

use super::{error, Answer};
use crate::control::Control;
use crate::embed;

/// The `taskType` values Google knows.
const TASK_TYPES: [&str; 9] = [
    "TASK_TYPE_UNSPECIFIED",
    "RETRIEVAL_QUERY",
    "RETRIEVAL_DOCUMENT",
    "SEMANTIC_SIMILARITY",
    "CLASSIFICATION",
    "CLUSTERING",
    "QUESTION_ANSWERING",
    "FACT_VERIFICATION",
    "CODE_RETRIEVAL_QUERY",
];
/// The most requests one batch may hold.
const MAX_BATCH: usize = 100;
/// `gemini-embedding-001`'s default and largest size.
const DIMENSIONS: u32 = 3072;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest<'a> {
    #[serde(borrow)]
    requests: Vec<EmbedRequest<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EmbedRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    content: Content<'a>,
    #[serde(borrow, default)]
    task_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    #[allow(dead_code)]
    title: Option<Cow<'a, str>>,
    #[serde(default)]
    output_dimensionality: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Content<'a> {
    #[serde(borrow, default)]
    #[allow(dead_code)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    parts: Vec<Part<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Part<'a> {
    #[serde(borrow)]
    text: Cow<'a, str>,
}

/// The model name in a path `.../models/{model}:batchEmbedContents`.
fn path_model(path: &str) -> &str {
    let rest = path.rsplit_once("/models/").map_or(path, |(_, rest)| rest);
    rest.split_once(':').map_or(rest, |(model, _)| model)
}

/// Answers one `batchEmbedContents` call on `path`.
pub(crate) fn batch_embed(path: &str, body: &[u8]) -> Answer {
    let bad = |message: String| error(StatusCode::BAD_REQUEST, &message);
    let request: BatchRequest<'_> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => return bad(format!("Invalid JSON payload received. {e}")),
    };
    if request.requests.is_empty() {
        return bad("* BatchEmbedContentsRequest.requests: contents is not specified".into());
    }
    if request.requests.len() > MAX_BATCH {
        return bad(format!(
            "* BatchEmbedContentsRequest.requests: at most {MAX_BATCH} requests can be in one batch"
        ));
    }
    let model = path_model(path);
    let mut out = String::from("{\"embeddings\":[");
    for (i, item) in request.requests.iter().enumerate() {
        if item.model.strip_prefix("models/") != Some(model) {
            return bad(format!(
                "* BatchEmbedContentsRequest.requests[{i}].model: unexpected model name format; \
                 it must be models/{model}, the batch's model"
            ));
        }
        if item.content.parts.is_empty() {
            return bad(format!(
                "* BatchEmbedContentsRequest.requests[{i}].content.parts: contents is not specified"
            ));
        }
        if let Some(task) = item.task_type.as_deref() {
            if !TASK_TYPES.contains(&task) {
                return bad(format!(
                    "Invalid value at 'requests[{i}].task_type' (type.googleapis.com/google.ai.generativelanguage.v1beta.TaskType), \"{task}\""
                ));
            }
        }
        let dimensions = item.output_dimensionality.unwrap_or(DIMENSIONS);
        if dimensions == 0 || dimensions > DIMENSIONS {
            return bad(format!(
                "* BatchEmbedContentsRequest.requests[{i}].output_dimensionality: must be between 1 and {DIMENSIONS}"
            ));
        }
        let text: String = item.content.parts.iter().map(|p| p.text.as_ref()).collect();
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"values\":");
        out.push_str(&embed::vector_json(&text, dimensions));
        out.push('}');
    }
    out.push_str("]}");
    Answer {
        status: StatusCode::OK,
        body: out.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest<'a> {
    #[serde(borrow)]
    instances: Vec<Instance<'a>>,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Instance<'a> {
    #[serde(borrow)]
    content: Cow<'a, str>,
    #[serde(borrow, default)]
    #[allow(dead_code)]
    task_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    #[allow(dead_code)]
    title: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Parameters {
    #[serde(default)]
    #[allow(dead_code)]
    auto_truncate: Option<bool>,
    #[serde(default)]
    output_dimensionality: Option<u32>,
}

/// Answers one Vertex AI `:predict` call on an embedding model; each
/// instance counts the control's prompt tokens.
pub(crate) fn predict(path: &str, body: &[u8], control: &Control) -> Answer {
    let bad = |message: String| error(StatusCode::BAD_REQUEST, &message);
    let request: PredictRequest<'_> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => return bad(format!("Invalid JSON payload received. {e}")),
    };
    let model = path_model(path);
    let gemini = model.starts_with("gemini-embedding");
    let most = if gemini { 1 } else { 250 };
    if request.instances.is_empty() || request.instances.len() > most {
        return bad(format!(
            "Unable to submit request because the model {model} takes between 1 and {most} instances per request; {} were given.",
            request.instances.len()
        ));
    }
    let default = if gemini { 3072 } else { 768 };
    let dimensions = request
        .parameters
        .and_then(|p| p.output_dimensionality)
        .unwrap_or(default);
    if dimensions == 0 || dimensions > default {
        return bad(format!(
            "outputDimensionality must be between 1 and {default}"
        ));
    }
    let predictions: Vec<String> = request
        .instances
        .iter()
        .map(|i| {
            format!(
                "{{\"embeddings\":{{\"statistics\":{{\"truncated\":false,\"token_count\":{}}},\"values\":{}}}}}",
                control.prompt_tokens,
                embed::vector_json(&i.content, dimensions)
            )
        })
        .collect();
    let characters: usize = request
        .instances
        .iter()
        .map(|i| i.content.chars().count())
        .sum();
    Answer {
        status: StatusCode::OK,
        body: format!(
            "{{\"predictions\":[{}],\"metadata\":{{\"billableCharacterCount\":{characters}}}}}",
            predictions.join(",")
        )
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn call(body: Value) -> (u16, Value) {
        let answer = batch_embed(
            "/v1beta/models/gemini-embedding-001:batchEmbedContents",
            body.to_string().as_bytes(),
        );
        (
            answer.status.as_u16(),
            serde_json::from_slice(&answer.body).unwrap(),
        )
    }

    #[test]
    fn embeds_each_request() {
        let part = |t: &str| json!({"parts": [{"text": t}]});
        let (status, body) = call(json!({"requests": [
            {"model": "models/gemini-embedding-001", "content": part("a"), "outputDimensionality": 4},
            {"model": "models/gemini-embedding-001", "content": part("b")}]}));
        assert_eq!(status, 200);
        assert_eq!(body["embeddings"][0]["values"].as_array().unwrap().len(), 4);
        assert_eq!(
            body["embeddings"][1]["values"].as_array().unwrap().len(),
            3072
        );
    }

    #[test]
    fn vertex_predicts() {
        let path = "/v1/projects/p/locations/l/publishers/google/models/text-embedding-005:predict";
        let body = json!({"instances": [{"content": "a"}, {"content": "b"}], "parameters": {"outputDimensionality": 4}});
        let answer = predict(path, body.to_string().as_bytes(), &Control::default());
        assert_eq!(answer.status, 200);
        let json: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(
            json["predictions"][1]["embeddings"]["values"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
        assert_eq!(
            json["predictions"][0]["embeddings"]["statistics"]["token_count"],
            7
        );
        let gemini =
            "/v1/projects/p/locations/l/publishers/google/models/gemini-embedding-001:predict";
        for (path, body) in [
            (
                gemini,
                json!({"instances": [{"content": "a"}, {"content": "b"}]}),
            ),
            (path, json!({"instances": []})),
            (path, json!({"instances": [{"text": "a"}]})),
        ] {
            let answer = predict(path, body.to_string().as_bytes(), &Control::default());
            assert_eq!(answer.status, 400, "{body}");
        }
    }

    #[test]
    fn refuses_what_google_refuses() {
        let part = json!({"parts": [{"text": "a"}]});
        for body in [
            json!({"requests": []}),
            json!({"requests": [{"model": "models/other", "content": part}]}),
            json!({"requests": [{"model": "models/gemini-embedding-001", "content": {"parts": []}}]}),
            json!({"requests": [{"model": "models/gemini-embedding-001", "content": part, "outputDimensionality": 0}]}),
            json!({"requests": [{"model": "models/gemini-embedding-001", "content": part, "dimensions": 8}]}),
            json!({"input": "a"}),
        ] {
            let (status, answer) = call(body.clone());
            assert_eq!(status, 400, "{body}");
            assert_eq!(answer["error"]["status"], "INVALID_ARGUMENT");
        }
    }
}
