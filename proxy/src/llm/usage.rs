//! Finding token usage in OpenAI-shaped JSON without parsing the whole body:
//! locate the last `"usage"` key and decode just that object. Chat and text
//! completions report `prompt_tokens`/`completion_tokens` (cache hits in
//! `prompt_tokens_details.cached_tokens`); the Responses API reports
//! `input_tokens`/`output_tokens` (`input_tokens_details.cached_tokens`).

use serde::Deserialize;

use crate::telemetry::Usage;

#[derive(Deserialize)]
struct UsageFields {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: u64,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: u64,
    #[serde(default, alias = "input_tokens_details")]
    prompt_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

/// The last `"usage": {...}` object in `json`, if any. (A `"usage"` inside a
/// JSON string would have escaped quotes, so it cannot match.)
pub fn find_usage(json: &[u8]) -> Option<Usage> {
    let mut end = json.len();
    while let Some(at) = rfind(&json[..end], b"\"usage\"") {
        if let Some(usage) = usage_at(&json[at + 7..]) {
            return Some(usage);
        }
        end = at;
    }
    None
}

/// Decodes `: {...}` following a `"usage"` key; `None` for `null` or junk.
fn usage_at(rest: &[u8]) -> Option<Usage> {
    let rest = trim_start(rest);
    let rest = trim_start(rest.strip_prefix(b":")?);
    if !rest.starts_with(b"{") {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(rest);
    let fields = UsageFields::deserialize(&mut de).ok()?;
    Some(Usage {
        input: fields.prompt_tokens,
        output: fields.completion_tokens,
        cached_input: fields
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0),
    })
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[skip..]
}

/// Last occurrence of `needle` in `hay` (SIMD-accelerated).
pub fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::rfind(hay, needle)
}

/// First occurrence of `needle` in `hay` (SIMD-accelerated).
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_usage_in_responses_and_chunks() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"say \"usage\": {}"}}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":0}}}"#;
        assert_eq!(
            find_usage(body),
            Some(Usage {
                input: 12,
                output: 5,
                cached_input: 0
            })
        );
        let spaced = b"{\"usage\" : {\"prompt_tokens\": 3}}";
        assert_eq!(
            find_usage(spaced),
            Some(Usage {
                input: 3,
                output: 0,
                cached_input: 0
            })
        );
        assert_eq!(find_usage(br#"{"choices":[],"usage":null}"#), None);
        assert_eq!(find_usage(br#"{"id":"no usage"}"#), None);
        assert_eq!(find_usage(br#"{"usage":{"prompt_tokens":"many"}}"#), None);
    }

    #[test]
    fn reads_cached_tokens_in_both_shapes() {
        let chat = br#"{"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#;
        assert_eq!(
            find_usage(chat),
            Some(Usage {
                input: 2006,
                output: 300,
                cached_input: 1920
            })
        );
        let responses = br#"{"type":"response.completed","response":{"id":"resp_1","output":[],"usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":16},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123}},"sequence_number":9}"#;
        assert_eq!(
            find_usage(responses),
            Some(Usage {
                input: 36,
                output: 87,
                cached_input: 16
            })
        );
        let null_details =
            br#"{"usage":{"prompt_tokens":1,"completion_tokens":1,"prompt_tokens_details":null}}"#;
        assert_eq!(find_usage(null_details).map(|u| u.cached_input), Some(0));
    }
}
