//! `/v1/rerank` on Cohere: `POST {base}/v2/rerank`. The client's request
//! (Cohere's and Jina's shape: `model`, `query`, `documents`, `top_n`) is
//! passed on with the backend's model and only the fields Cohere v2 takes
//! (`max_tokens_per_doc` too; Jina's `return_documents` is dropped: v2
//! never returns documents). The answer goes back as Cohere sent it (see
//! `translate::rerank` for its usage).
//!
//! Reference: docs.cohere.com/reference/rerank.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::llm::translate::TranslateError;

/// The path after the base URL (`.../v2`).
pub const PATH: &str = "/rerank";

#[derive(Deserialize, Serialize)]
struct Rerank<'a> {
    #[serde(default, skip_deserializing)]
    model: &'a str,
    #[serde(borrow)]
    query: &'a RawValue,
    #[serde(borrow)]
    documents: &'a RawValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    top_n: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_tokens_per_doc: Option<u64>,
}

/// The `/v2/rerank` body for a rerank request, for `model`.
pub fn to_cohere<'a>(body: &'a [u8], model: &'a str) -> Result<Vec<u8>, TranslateError> {
    let mut request: Rerank<'a> = serde_json::from_slice(body).map_err(TranslateError::request)?;
    if !request.query.get().starts_with('"') {
        return Err(TranslateError::Request("`query` must be a string".into()));
    }
    if !request.documents.get().starts_with('[') {
        return Err(TranslateError::Request(
            "`documents` must be an array".into(),
        ));
    }
    request.model = model;
    serde_json::to_vec(&request).map_err(TranslateError::request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_cohere_takes() {
        let out = to_cohere(
            br#"{"model":"r","query":"q","documents":["a","b"],"top_n":1,"return_documents":true}"#,
            "rerank-v3.5",
        )
        .unwrap();
        assert_eq!(
            out,
            br#"{"model":"rerank-v3.5","query":"q","documents":["a","b"],"top_n":1}"#
        );
        for body in [
            r#"{"query":"q"}"#,
            r#"{"query":1,"documents":[]}"#,
            r#"{"query":"q","documents":"a"}"#,
        ] {
            assert!(to_cohere(body.as_bytes(), "m").is_err(), "{body}");
        }
    }
}
