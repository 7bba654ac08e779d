//! `/v1/rerank` (Cohere's and Jina's shape: `{"model","query","documents",
//! "top_n"?}` → `{"results":[{"index","relevance_score"}], ...}`), served by
//! Cohere (`cohere::rerank`) and OpenAI-schema backends (passed through).
//! The answer goes back as the backend sent it; this module reads its usage.
//! Rerank is billed in search units by Cohere, not tokens: the access log
//! and budgets count input tokens, taken from the answer's `usage`
//! (`prompt_tokens`, else `total_tokens`: vLLM, Jina) when it has one, else
//! the gateway's estimate of the query and documents (flagged as an
//! estimate). Knows nothing of routing or URLs.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{TokenUsage, TranslateError};
use crate::limits::estimate;

#[derive(Deserialize)]
struct RequestIn<'a> {
    #[serde(borrow, default)]
    query: Option<&'a RawValue>,
    #[serde(borrow, default)]
    documents: Option<Vec<&'a RawValue>>,
}

/// The estimated input tokens of a rerank request: its query and each
/// document (a string, or an object whose JSON text is counted).
pub fn estimate(body: &[u8]) -> u64 {
    let Ok(request) = serde_json::from_slice::<RequestIn<'_>>(body) else {
        return 0;
    };
    request
        .query
        .into_iter()
        .chain(request.documents.unwrap_or_default())
        .map(|raw| {
            let text = serde_json::from_str::<&str>(raw.get()).unwrap_or(raw.get());
            estimate::output_tokens_in(text)
        })
        .fold(0, u64::saturating_add)
}

#[derive(Deserialize)]
struct AnswerIn {
    /// Required: an answer without results is not one.
    #[serde(rename = "results")]
    _results: serde::de::IgnoredAny,
    #[serde(default)]
    usage: Option<UsageIn>,
}

#[derive(Deserialize)]
struct UsageIn {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

/// A rerank answer, checked and passed on as it is, with its input tokens
/// and whether they are the estimate.
pub fn read_answer(
    body: &[u8],
    estimate: u64,
) -> Result<(Vec<u8>, TokenUsage, bool), TranslateError> {
    let answer: AnswerIn = serde_json::from_slice(body).map_err(TranslateError::response)?;
    let reported = answer
        .usage
        .and_then(|u| u.prompt_tokens.or(u.total_tokens));
    let usage = TokenUsage {
        input: reported.unwrap_or(estimate),
        ..TokenUsage::default()
    };
    Ok((body.to_vec(), usage, reported.is_none()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_query_and_documents() {
        let small = estimate(br#"{"query":"q","documents":["a"]}"#);
        let large = estimate(
            br#"{"query":"q","documents":["a long document here", {"text":"and more words"}]}"#,
        );
        assert!(small >= 2 && large > small, "{small} {large}");
        assert_eq!(estimate(b"junk"), 0);
    }

    #[test]
    fn reads_usage_or_estimates() {
        let body =
            br#"{"results":[{"index":0,"relevance_score":0.9}],"usage":{"total_tokens":12}}"#;
        let (bytes, usage, estimated) = read_answer(body, 5).unwrap();
        assert_eq!(
            (bytes.as_slice(), usage.input, estimated),
            (&body[..], 12, false)
        );
        let body = br#"{"id":"r","results":[],"meta":{"billed_units":{"search_units":1}}}"#;
        let (_, usage, estimated) = read_answer(body, 5).unwrap();
        assert_eq!((usage.input, estimated), (5, true));
        assert!(read_answer(br#"{"id":"r"}"#, 5).is_err());
        assert!(read_answer(b"{\"results\":[", 5).is_err());
    }
}
