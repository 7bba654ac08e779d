//! What the native embedding and rerank faces share: deterministic vectors
//! for a text (the same as the OpenAI face's, so a vector does not depend
//! on the API that made it), written as JSON numbers, and a deterministic
//! relevance score for rerank. Knows nothing of any provider's shapes.

use crate::openai::embeddings;

/// The vector for `text`, `dimensions` long, values multiples of 1/1024.
pub(crate) fn vector(text: &str, dimensions: u32) -> Vec<f32> {
    embeddings::vector(fnv1a(text.as_bytes()), dimensions)
}

/// The vector for `text` as a JSON array (exact decimals).
pub(crate) fn vector_json(text: &str, dimensions: u32) -> String {
    let values: Vec<f64> = vector(text, dimensions)
        .into_iter()
        .map(f64::from)
        .collect();
    serde_json::to_string(&values).unwrap_or_else(|_| "[]".to_owned())
}

/// A relevance score in (0, 1): the share of the query's words found in
/// the document, nudged by a hash so that ties are rare but stable.
pub(crate) fn relevance(query: &str, document: &str) -> f64 {
    let document = document.to_lowercase();
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    let hits = words
        .iter()
        .filter(|w| document.contains(w.as_str()))
        .count();
    let share = if words.is_empty() {
        0.0
    } else {
        hits as f64 / words.len() as f64
    };
    let nudge = (fnv1a(document.as_bytes()) % 1000) as f64 / 100_000.0;
    ((share * 0.98 + nudge) * 10_000.0).round() / 10_000.0 + 0.0001
}

/// Ranks `documents` for `query`: `(index, score)`, best first, at most
/// `top_n`.
pub(crate) fn rank(query: &str, documents: &[String], top_n: Option<usize>) -> Vec<(usize, f64)> {
    let mut ranked: Vec<(usize, f64)> = documents
        .iter()
        .enumerate()
        .map(|(i, d)| (i, relevance(query, d)))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(top_n.unwrap_or(documents.len()));
    ranked
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_matching_documents_first() {
        let docs = vec![
            "Paris is in France".to_owned(),
            "The capital of France is Paris".to_owned(),
            "Bananas".to_owned(),
        ];
        let ranked = rank("capital of France", &docs, Some(2));
        assert_eq!(ranked.len(), 2);
        assert_eq!(ranked[0].0, 1);
        assert!(ranked[0].1 > ranked[1].1);
        assert_eq!(vector_json("a", 2), vector_json("a", 2));
    }
}
