//! `POST {base}/rerank` as OpenAI-compatible servers serve it (vLLM, Jina,
//! and others): `{"model","query","documents" (strings or {"text"}),
//! "top_n"?, "return_documents"?}` → `{"id","model","usage":
//! {"total_tokens":N},"results":[{"index","relevance_score",
//! "document"?:{"text"}}]}`, best first. `total_tokens` counts words of the
//! query and documents (a stand-in for a tokenizer).

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::embed;
use crate::openai::{json_str, BadRequest, Ids};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RerankRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    query: String,
    #[serde(borrow)]
    documents: Vec<&'a RawValue>,
    #[serde(default)]
    top_n: Option<usize>,
    #[serde(default)]
    return_documents: Option<bool>,
}

#[derive(Deserialize)]
struct TextDocument {
    text: String,
}

fn bad(message: String, param: &'static str) -> BadRequest {
    BadRequest {
        message,
        param: Some(param),
    }
}

/// Answers one rerank request.
pub(crate) fn reply(body: &[u8], ids: &Ids) -> Result<Bytes, BadRequest> {
    let request: RerankRequest<'_> =
        serde_json::from_slice(body).map_err(|e| BadRequest::json(&e))?;
    if request.documents.is_empty() {
        return Err(bad("documents must not be empty".into(), "documents"));
    }
    let documents = request
        .documents
        .iter()
        .map(|raw| {
            serde_json::from_str::<String>(raw.get())
                .or_else(|_| serde_json::from_str::<TextDocument>(raw.get()).map(|d| d.text))
                .map_err(|_| {
                    bad(
                        "each document must be a string or {\"text\": ...}".into(),
                        "documents",
                    )
                })
        })
        .collect::<Result<Vec<String>, BadRequest>>()?;
    if request.top_n == Some(0) {
        return Err(bad("top_n must be at least 1".into(), "top_n"));
    }
    let words = |t: &str| t.split_whitespace().count() as u64;
    let tokens = words(&request.query) + documents.iter().map(|d| words(d)).sum::<u64>();
    let results: Vec<String> = embed::rank(&request.query, &documents, request.top_n)
        .into_iter()
        .map(|(index, score)| {
            let document = if request.return_documents == Some(true) {
                format!(",\"document\":{{\"text\":{}}}", json_str(&documents[index]))
            } else {
                String::new()
            };
            format!("{{\"index\":{index},\"relevance_score\":{score}{document}}}")
        })
        .collect();
    Ok(Bytes::from(format!(
        "{{\"id\":\"rerank-mock-{}\",\"model\":{},\"usage\":{{\"total_tokens\":{tokens}}},\"results\":[{}]}}",
        ids.next(),
        json_str(&request.model),
        results.join(",")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn ranks_and_counts() {
        let body = json!({"model": "jina-reranker-v2", "query": "red fox",
            "documents": ["a red fox", {"text": "blue sky"}], "return_documents": true});
        let bytes = reply(body.to_string().as_bytes(), &Ids::default()).unwrap();
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(answer["results"][0]["index"], 0);
        assert_eq!(answer["results"][0]["document"]["text"], "a red fox");
        assert_eq!(answer["usage"]["total_tokens"], 7);
        for body in [
            json!({"model": "m", "query": "q", "documents": []}),
            json!({"model": "m", "query": "q", "documents": [1]}),
            json!({"model": "m", "documents": ["a"]}),
            json!({"model": "m", "query": "q", "documents": ["a"], "top_n": 0}),
        ] {
            assert!(
                reply(body.to_string().as_bytes(), &Ids::default()).is_err(),
                "{body}"
            );
        }
    }
}
