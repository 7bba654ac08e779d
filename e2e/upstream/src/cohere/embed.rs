//! Cohere's v2 `POST /v2/embed` and `POST /v2/rerank`. Embed takes
//! `model`, `texts` (at most 96), `input_type` (required), and optionally
//! `embedding_types` (only `float` is answered here), `truncate`,
//! `output_dimension` (embed-v4 models only) and answers
//! `{"id","embeddings":{"float":[[...]]},"texts","meta":{"billed_units":
//! {"input_tokens":N}},"response_type":"embeddings_by_type"}`. Rerank takes
//! `model`, `query`, `documents` (strings), `top_n`, `max_tokens_per_doc`
//! and answers `{"id","results":[{"index","relevance_score"}],
//! "meta":{"billed_units":{"search_units":1}}}`, best first. Unknown fields
//! are refused, as the chat face does.

use std::borrow::Cow;

use http::StatusCode;
use serde::Deserialize;

use super::{error, Answer};
use crate::control::Control;
use crate::embed;
use crate::openai::json_str;

/// The embed path.
pub const EMBED_PATH: &str = "/v2/embed";
/// The rerank path.
pub const RERANK_PATH: &str = "/v2/rerank";

const MAX_TEXTS: usize = 96;
const MAX_DOCUMENTS: usize = 1000;
const INPUT_TYPES: [&str; 5] = [
    "search_document",
    "search_query",
    "classification",
    "clustering",
    "image",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbedRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    texts: Option<Vec<String>>,
    #[serde(borrow, default)]
    input_type: Option<Cow<'a, str>>,
    #[serde(default)]
    embedding_types: Option<Vec<String>>,
    #[serde(borrow, default)]
    truncate: Option<Cow<'a, str>>,
    #[serde(default)]
    output_dimension: Option<u32>,
    #[serde(default)]
    max_tokens: Option<u64>,
}

fn bad(message: &str) -> Answer {
    error(StatusCode::BAD_REQUEST, message)
}

/// Answers one `/v2/embed` call.
pub(crate) fn embed(body: &[u8], control: &Control, id: u64) -> Answer {
    let request: EmbedRequest<'_> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => return bad(&format!("invalid request: {e}")),
    };
    let Some(texts) = request.texts else {
        return bad("invalid request: texts or inputs must be provided");
    };
    if texts.is_empty() || texts.len() > MAX_TEXTS {
        return bad(&format!(
            "invalid request: texts must hold between 1 and {MAX_TEXTS} texts, not {}",
            texts.len()
        ));
    }
    match request.input_type.as_deref() {
        Some(kind) if INPUT_TYPES.contains(&kind) => {}
        Some(kind) => {
            return bad(&format!(
                "invalid request: input_type {kind:?} is not one of {INPUT_TYPES:?}"
            ))
        }
        None => {
            return bad("invalid request: input_type is required for embed models v3 and higher")
        }
    }
    if let Some(types) = &request.embedding_types {
        if types.iter().any(|t| t != "float") {
            return bad("invalid request: this mock answers only the float embedding type");
        }
    }
    if let Some(mode) = request.truncate.as_deref() {
        if !["NONE", "START", "END"].contains(&mode) {
            return bad("invalid request: truncate must be one of NONE, START, END");
        }
    }
    let v4 = request.model.starts_with("embed-v4");
    let dimensions = match request.output_dimension {
        None if v4 => 1536,
        None => 1024,
        Some(d) if v4 && [256, 512, 1024, 1536].contains(&d) => d,
        Some(_) if v4 => {
            return bad("invalid request: output_dimension must be one of 256, 512, 1024, 1536")
        }
        Some(_) => return bad(
            "invalid request: output_dimension is only supported by embed-v4.0 and newer models",
        ),
    };
    let _ = request.max_tokens;
    let vectors: Vec<String> = texts
        .iter()
        .map(|t| embed::vector_json(t, dimensions))
        .collect();
    let texts_json = serde_json::to_string(&texts).unwrap_or_else(|_| "[]".into());
    Answer {
        status: StatusCode::OK,
        body: format!(
            "{{\"id\":\"mock-embed-{id}\",\"embeddings\":{{\"float\":[{}]}},\"texts\":{texts_json},\"meta\":{{\"api_version\":{{\"version\":\"2\"}},\"billed_units\":{{\"input_tokens\":{}}}}},\"response_type\":\"embeddings_by_type\"}}",
            vectors.join(","),
            control.prompt_tokens
        )
        .into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RerankRequest<'a> {
    #[serde(borrow)]
    #[allow(dead_code)]
    model: Cow<'a, str>,
    query: String,
    documents: Vec<String>,
    #[serde(default)]
    top_n: Option<usize>,
    #[serde(default)]
    max_tokens_per_doc: Option<u64>,
}

/// Answers one `/v2/rerank` call.
pub(crate) fn rerank(body: &[u8], id: u64) -> Answer {
    let request: RerankRequest<'_> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => return bad(&format!("invalid request: {e}")),
    };
    if request.documents.is_empty() || request.documents.len() > MAX_DOCUMENTS {
        return bad(&format!(
            "invalid request: documents must hold between 1 and {MAX_DOCUMENTS} documents"
        ));
    }
    if request.top_n == Some(0) || request.max_tokens_per_doc == Some(0) {
        return bad("invalid request: top_n and max_tokens_per_doc must be at least 1");
    }
    let results: Vec<String> = embed::rank(&request.query, &request.documents, request.top_n)
        .into_iter()
        .map(|(index, score)| format!("{{\"index\":{index},\"relevance_score\":{score}}}"))
        .collect();
    Answer {
        status: StatusCode::OK,
        body: format!(
            "{{\"id\":{},\"results\":[{}],\"meta\":{{\"api_version\":{{\"version\":\"2\"}},\"billed_units\":{{\"search_units\":1}}}}}}",
            json_str(&format!("mock-rerank-{id}")),
            results.join(",")
        )
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(answer: Answer) -> (u16, Value) {
        (
            answer.status.as_u16(),
            serde_json::from_slice(&answer.body).unwrap(),
        )
    }

    #[test]
    fn embeds_and_reports_tokens() {
        let body = json!({"model": "embed-v4.0", "texts": ["a", "b"], "input_type": "search_document",
            "embedding_types": ["float"], "output_dimension": 256});
        let (status, answer) = parse(embed(body.to_string().as_bytes(), &Control::default(), 1));
        assert_eq!(status, 200);
        assert_eq!(
            answer["embeddings"]["float"][1].as_array().unwrap().len(),
            256
        );
        assert_eq!(answer["meta"]["billed_units"]["input_tokens"], 7);
        for body in [
            json!({"model": "embed-v4.0", "texts": ["a"]}),
            json!({"model": "embed-v4.0", "texts": [], "input_type": "search_query"}),
            json!({"model": "embed-english-v3.0", "texts": ["a"], "input_type": "search_query", "output_dimension": 256}),
            json!({"model": "embed-v4.0", "input": "a", "input_type": "search_query"}),
        ] {
            let (status, answer) =
                parse(embed(body.to_string().as_bytes(), &Control::default(), 1));
            assert_eq!(status, 400, "{body}");
            assert!(answer["message"].is_string());
        }
    }

    #[test]
    fn reranks_best_first() {
        let body = json!({"model": "rerank-v3.5", "query": "capital of France",
            "documents": ["bananas", "Paris is the capital of France"], "top_n": 1});
        let (status, answer) = parse(rerank(body.to_string().as_bytes(), 3));
        assert_eq!(status, 200);
        assert_eq!(answer["results"].as_array().unwrap().len(), 1);
        assert_eq!(answer["results"][0]["index"], 1);
        assert_eq!(answer["meta"]["billed_units"]["search_units"], 1);
        let body =
            json!({"model": "r", "query": "q", "documents": ["a"], "return_documents": true});
        assert_eq!(parse(rerank(body.to_string().as_bytes(), 3)).0, 400);
    }
}
