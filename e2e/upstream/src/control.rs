//! Per-request control headers (`x-mock-*`): parsing them into a [`Control`].
//! Knows nothing of response bodies or of how the controls are carried out.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, StatusCode};

/// Help text for the control headers; the binary's `--help` shows it.
pub const CONTROL_HEADERS_HELP: &str = "\
Control headers (all optional, read on every request):
  x-mock-status: CODE          Answer CODE (400-599) with an OpenAI-shaped error body
                               (server_error for 5xx, rate_limit_error/rate_limit_exceeded
                               for 429, invalid_request_error otherwise).
  x-mock-retry-after: SECS     With x-mock-status or --always-status: add `retry-after: SECS`.
  x-mock-delay-ms: N           Wait N ms before sending the response headers.
  x-mock-chunks: N             Number of content chunks `tok{i} ` (default 5, at most 1000000);
                               also the completion_tokens count.
  x-mock-chunk-delay-ms: N     Streaming: wait N ms before each content chunk.
  x-mock-error-after: N        Streaming: abort the connection after N content chunks (never
                               sends the final chunk or [DONE]). Non-streaming: send the
                               headers, then abort the body.
  x-mock-close: 1              Close the TCP connection without any HTTP response.
  x-mock-prompt-tokens: N      prompt_tokens to report (default 7).
  x-mock-cached-tokens: N      Of those, cache hits: reported as prompt_tokens_details.cached_tokens
                               (Responses: input_tokens_details.cached_tokens); default 0.
  x-mock-tool-call: NAME       Chat: answer with a call of tool NAME (finish_reason tool_calls).
                               Without it, a request whose tool_choice is \"required\" calls its
                               first tool, and one naming a function calls that function.

  x-mock-malformed: 1          Answer 200 with a body that cannot be read (cut-off JSON, or an
                               event whose data is not JSON when the request streams).
  x-mock-stream-error: 1       Anthropic streams: end with an overloaded_error event after the
                               content instead of message_delta/message_stop.
Anthropic's /v1/messages and /v1/messages/count_tokens need x-api-key and anthropic-version;
x-mock-status answers them in Anthropic's error shape.
Gemini's .../models/M:generateContent and :streamGenerateContent?alt=sse need x-goog-api-key
(or, on Vertex paths /v1/projects/..., a Bearer token from POST .../token, which checks the
JWT assertion of the test service account; ?expires_in=N and ?status=N on the token URL steer
it); x-mock-status answers them in Google's error shape, x-mock-stream-error ends a stream
with an UNAVAILABLE error event.
Bedrock's /model/{id}/converse and /converse-stream need a SigV4 Authorization for service
bedrock (recomputed for the test key id AKIDSLUICETEST) or a bearer API key; x-mock-status
answers them in Bedrock's shape ({message} and x-amzn-errortype: ThrottlingException for 429,
ServiceUnavailableException for 503, ...); x-mock-stream-error ends a stream with a
modelStreamErrorException; x-mock-malformed sends a message with a bad checksum.
Cohere's POST /v2/chat needs a Bearer key and refuses unknown (OpenAI-only) fields;
x-mock-status answers it in Cohere's shape ({id, message}); x-mock-stream-error ends a
stream with a message-end whose finish_reason is ERROR; x-mock-tool-call (or tool_choice
REQUIRED) answers with a call (a tool plan, then the call).

Embeddings and rerank: Gemini's .../models/M:batchEmbedContents (AI Studio key) and Vertex
AI's .../publishers/google/models/M:predict (issued Bearer token), Bedrock's
/model/{id}/invoke (Titan Text Embeddings and Cohere Embed bodies, SigV4 checked; answers carry
X-Amzn-Bedrock-Input-Token-Count), Cohere's /v2/embed and /v2/rerank (Bearer key), and
OpenAI-compatible {base}/rerank; each refuses what its API refuses, answers x-mock-status in
its provider's shape, and x-mock-malformed with cut-off JSON. Token counts are
x-mock-prompt-tokens (except /rerank: the words of the query and documents).
An invalid control header value is answered with 400 and a message naming the header.
";

/// The most content chunks one response may ask for; keeps a typo from
/// building a multi-gigabyte non-streaming body.
const MAX_CHUNKS: u32 = 1_000_000;

/// Default `x-mock-chunks`.
pub(crate) const DEFAULT_CHUNKS: u32 = 5;
/// Default `x-mock-prompt-tokens`.
pub(crate) const DEFAULT_PROMPT_TOKENS: u64 = 7;

/// What the `x-mock-*` headers of one request ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Control {
    pub status: Option<StatusCode>,
    pub retry_after: Option<u64>,
    pub delay: Option<Duration>,
    pub chunks: u32,
    pub chunk_delay: Option<Duration>,
    pub error_after: Option<u32>,
    pub close: bool,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub tool_call: Option<String>,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            status: None,
            retry_after: None,
            delay: None,
            chunks: DEFAULT_CHUNKS,
            chunk_delay: None,
            error_after: None,
            close: false,
            prompt_tokens: DEFAULT_PROMPT_TOKENS,
            cached_tokens: 0,
            tool_call: None,
        }
    }
}

/// A control header whose value could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidControl {
    pub header: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl fmt::Display for InvalidControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sluice-test-upstream: invalid control header {}: {:?} (expected {})",
            self.header, self.value, self.expected
        )
    }
}

impl std::error::Error for InvalidControl {}

impl Control {
    /// Reads the control headers of a request.
    pub fn from_headers(headers: &HeaderMap) -> Result<Control, InvalidControl> {
        let mut control = Control::default();
        if let Some(v) = header(headers, "x-mock-status")? {
            control.status = Some(parse_status("x-mock-status", v)?);
        }
        if let Some(v) = header(headers, "x-mock-retry-after")? {
            control.retry_after = Some(parse_num("x-mock-retry-after", v)?);
        }
        if let Some(v) = header(headers, "x-mock-delay-ms")? {
            control.delay = Some(Duration::from_millis(parse_num("x-mock-delay-ms", v)?));
        }
        if let Some(v) = header(headers, "x-mock-chunks")? {
            let chunks: u32 = parse_num("x-mock-chunks", v)?;
            if chunks > MAX_CHUNKS {
                return Err(invalid("x-mock-chunks", v, "a number up to 1000000"));
            }
            control.chunks = chunks;
        }
        if let Some(v) = header(headers, "x-mock-chunk-delay-ms")? {
            control.chunk_delay = Some(Duration::from_millis(parse_num(
                "x-mock-chunk-delay-ms",
                v,
            )?));
        }
        if let Some(v) = header(headers, "x-mock-error-after")? {
            control.error_after = Some(parse_num("x-mock-error-after", v)?);
        }
        if let Some(v) = header(headers, "x-mock-close")? {
            control.close = parse_flag("x-mock-close", v)?;
        }
        if let Some(v) = header(headers, "x-mock-prompt-tokens")? {
            control.prompt_tokens = parse_num("x-mock-prompt-tokens", v)?;
        }
        if let Some(v) = header(headers, "x-mock-cached-tokens")? {
            control.cached_tokens = parse_num("x-mock-cached-tokens", v)?;
        }
        if let Some(v) = header(headers, "x-mock-tool-call")? {
            if v.is_empty() {
                return Err(invalid("x-mock-tool-call", v, "a tool name"));
            }
            control.tool_call = Some(v.to_owned());
        }
        Ok(control)
    }
}

/// Parses a status code for an error response (400..=599).
pub(crate) fn parse_error_status(value: &str) -> Option<StatusCode> {
    error_status(value.trim().parse().ok()?)
}

/// `code` as a status, if it is an error status (400..=599).
pub(crate) fn error_status(code: u16) -> Option<StatusCode> {
    if (400..=599).contains(&code) {
        StatusCode::from_u16(code).ok()
    } else {
        None
    }
}

fn header<'h>(
    headers: &'h HeaderMap,
    name: &'static str,
) -> Result<Option<&'h str>, InvalidControl> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
            invalid(
                name,
                &String::from_utf8_lossy(v.as_bytes()),
                "visible ASCII",
            )
        }),
    }
}

fn parse_status(name: &'static str, value: &str) -> Result<StatusCode, InvalidControl> {
    parse_error_status(value).ok_or_else(|| invalid(name, value, "a status code from 400 to 599"))
}

fn parse_num<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, InvalidControl> {
    value
        .parse()
        .map_err(|_| invalid(name, value, "a non-negative integer"))
}

fn parse_flag(name: &'static str, value: &str) -> Result<bool, InvalidControl> {
    match value {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(invalid(name, value, "1 or 0")),
    }
}

fn invalid(header: &'static str, value: &str, expected: &'static str) -> InvalidControl {
    InvalidControl {
        header,
        value: value.to_owned(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn no_headers_give_defaults() {
        let control = Control::from_headers(&HeaderMap::new()).unwrap();
        assert_eq!(control, Control::default());
        assert_eq!(control.chunks, 5);
        assert_eq!(control.prompt_tokens, 7);
    }

    #[test]
    fn every_header_is_read() {
        let control = Control::from_headers(&headers(&[
            ("x-mock-status", "429"),
            ("x-mock-retry-after", "3"),
            ("x-mock-delay-ms", "10"),
            ("x-mock-chunks", "2"),
            ("x-mock-chunk-delay-ms", "4"),
            ("x-mock-error-after", "1"),
            ("x-mock-close", "1"),
            ("x-mock-prompt-tokens", "11"),
            ("x-mock-cached-tokens", "4"),
            ("x-mock-tool-call", "lookup"),
        ]))
        .unwrap();
        assert_eq!(
            control,
            Control {
                status: Some(StatusCode::TOO_MANY_REQUESTS),
                retry_after: Some(3),
                delay: Some(Duration::from_millis(10)),
                chunks: 2,
                chunk_delay: Some(Duration::from_millis(4)),
                error_after: Some(1),
                close: true,
                prompt_tokens: 11,
                cached_tokens: 4,
                tool_call: Some("lookup".to_owned()),
            }
        );
    }

    #[test]
    fn bad_values_name_the_header() {
        for (name, value) in [
            ("x-mock-status", "200"),
            ("x-mock-status", "abc"),
            ("x-mock-chunks", "-1"),
            ("x-mock-chunks", "1000001"),
            ("x-mock-close", "yes"),
            ("x-mock-tool-call", ""),
        ] {
            let err = Control::from_headers(&headers(&[(name, value)])).unwrap_err();
            assert_eq!(err.header, name);
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
