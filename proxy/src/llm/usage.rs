//! Finding token usage in OpenAI-shaped JSON without parsing the whole body:
//! locate the last `"usage"` key and decode just that object.

use serde::Deserialize;

use crate::telemetry::Usage;

#[derive(Deserialize)]
struct UsageFields {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
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
                output: 5
            })
        );
        let spaced = b"{\"usage\" : {\"prompt_tokens\": 3}}";
        assert_eq!(
            find_usage(spaced),
            Some(Usage {
                input: 3,
                output: 0
            })
        );
        assert_eq!(find_usage(br#"{"choices":[],"usage":null}"#), None);
        assert_eq!(find_usage(br#"{"id":"no usage"}"#), None);
        assert_eq!(find_usage(br#"{"usage":{"prompt_tokens":"many"}}"#), None);
    }
}
