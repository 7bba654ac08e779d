//! The client side of OpenAI's `/v1/embeddings` on backends with their own
//! embedding APIs (Gemini, Bedrock, Cohere: each has an `embed` module that
//! writes its request from [`EmbedRequest`] and reads its answer into
//! vectors). The client's body is read once into texts, dimensions and
//! encoding; the backend's vectors go back as OpenAI's `list` through
//! [`write_list`], copied as the number text the backend sent. Only
//! `encoding_format: "base64"` parses them (into little-endian f32, as
//! OpenAI encodes them). Knows nothing of routing, URLs or signing.

use std::borrow::Cow;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{TokenUsage, TranslateError};
use crate::limits::estimate;

/// An OpenAI embeddings request, as a backend module needs it.
#[derive(Debug)]
pub struct EmbedRequest<'a> {
    /// The texts, in order (one for a string `input`).
    pub texts: Vec<Cow<'a, str>>,
    /// `dimensions`, when asked.
    pub dimensions: Option<u64>,
}

#[derive(Deserialize)]
struct RequestIn<'a> {
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    encoding_format: Option<Cow<'a, str>>,
    #[serde(default)]
    dimensions: Option<u64>,
}

/// Reads the client's request; refuses what no native API takes (token-id
/// inputs, an empty list, an unknown `encoding_format`).
pub fn read(body: &[u8]) -> Result<EmbedRequest<'_>, TranslateError> {
    let request: RequestIn<'_> = serde_json::from_slice(body).map_err(TranslateError::request)?;
    match request.encoding_format.as_deref() {
        None | Some("float" | "base64") => {}
        Some(other) => {
            return Err(TranslateError::Request(format!(
                "`encoding_format` must be \"float\" or \"base64\", not {other:?}"
            )))
        }
    }
    if request.dimensions == Some(0) {
        return Err(TranslateError::Request(
            "`dimensions` must be at least 1".into(),
        ));
    }
    let Some(input) = request.input else {
        return Err(TranslateError::Request("`input` is required".into()));
    };
    Ok(EmbedRequest {
        texts: texts(input)?,
        dimensions: request.dimensions,
    })
}

const TOKEN_IDS: &str =
    "`input` as token ids (arrays of integers) is only served by OpenAI-schema \
    backends; send the text as a string or an array of strings";

/// A JSON string, borrowed unless it holds escapes.
fn text(raw: &RawValue) -> Result<Cow<'_, str>, TranslateError> {
    match serde_json::from_str::<&str>(raw.get()) {
        Ok(text) => Ok(Cow::Borrowed(text)),
        Err(_) => serde_json::from_str::<String>(raw.get())
            .map(Cow::Owned)
            .map_err(TranslateError::request),
    }
}

fn texts(input: &RawValue) -> Result<Vec<Cow<'_, str>>, TranslateError> {
    match input.get().as_bytes().first() {
        Some(b'"') => Ok(vec![text(input)?]),
        Some(b'[') => {
            let items: Vec<&RawValue> =
                serde_json::from_str(input.get()).map_err(TranslateError::request)?;
            if items.is_empty() {
                return Err(TranslateError::Request("`input` must not be empty".into()));
            }
            items
                .into_iter()
                .map(|item| match item.get().as_bytes().first() {
                    Some(b'"') => text(item),
                    Some(b'[' | b'0'..=b'9' | b'-') => {
                        Err(TranslateError::Request(TOKEN_IDS.into()))
                    }
                    _ => Err(TranslateError::Request(
                        "`input` must be a string or an array of strings".into(),
                    )),
                })
                .collect()
        }
        _ => Err(TranslateError::Request(
            "`input` must be a string or an array of strings".into(),
        )),
    }
}

/// What the answer's translation needs from the client's request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// `encoding_format: "base64"`.
    pub base64: bool,
    /// The gateway's estimate of the input tokens, for backends that do
    /// not report them (Gemini).
    pub estimate: u64,
}

/// Reads what [`Ask`] holds; a body that cannot be read asks for floats
/// and estimates nothing (the request would have been refused already).
pub fn ask(body: &[u8]) -> Ask {
    let Ok(request) = serde_json::from_slice::<RequestIn<'_>>(body) else {
        return Ask::default();
    };
    let estimate = request
        .input
        .and_then(|input| texts(input).ok())
        .map_or(0, |texts| {
            texts
                .iter()
                .map(|t| estimate::output_tokens_in(t))
                .fold(0u64, u64::saturating_add)
        });
    Ask {
        base64: request.encoding_format.as_deref() == Some("base64"),
        estimate,
    }
}

/// The vectors of a `{"float": [...]}` object or of a plain array of
/// vectors (Cohere's two shapes of `embeddings`).
pub fn float_vectors(embeddings: &RawValue) -> Result<Vec<&RawValue>, TranslateError> {
    #[derive(Deserialize)]
    struct ByType<'a> {
        #[serde(borrow, default)]
        float: Option<Vec<&'a RawValue>>,
    }
    match embeddings.get().as_bytes().first() {
        Some(b'[') => serde_json::from_str(embeddings.get()).map_err(TranslateError::response),
        Some(b'{') => serde_json::from_str::<ByType<'_>>(embeddings.get())
            .map_err(TranslateError::response)?
            .float
            .ok_or_else(|| {
                TranslateError::Response(
                    "the upstream answer has no float embeddings (`embeddings.float`)".into(),
                )
            }),
        _ => Err(TranslateError::Response(
            "the upstream answer's `embeddings` is neither a list nor an object".into(),
        )),
    }
}

#[derive(Serialize)]
struct ListOut<'a> {
    object: &'static str,
    data: Vec<ItemOut<'a>>,
    model: &'a str,
    usage: UsageOut,
}

#[derive(Serialize)]
struct ItemOut<'a> {
    object: &'static str,
    index: usize,
    embedding: VectorOut<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum VectorOut<'a> {
    Floats(&'a RawValue),
    Base64(String),
}

#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// OpenAI's `{"object":"list","data":[...],"model","usage"}` for these
/// vectors (each a JSON array of numbers), for `model`.
pub fn write_list(
    vectors: &[&RawValue],
    model: &str,
    input_tokens: u64,
    base64: bool,
) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    let mut data = Vec::with_capacity(vectors.len());
    for (index, vector) in vectors.iter().enumerate() {
        if !vector.get().starts_with('[') {
            return Err(TranslateError::Response(format!(
                "embedding {index} of the upstream answer is not a list of numbers"
            )));
        }
        let embedding = if base64 {
            VectorOut::Base64(to_base64(vector)?)
        } else {
            VectorOut::Floats(vector)
        };
        data.push(ItemOut {
            object: "embedding",
            index,
            embedding,
        });
    }
    let list = ListOut {
        object: "list",
        data,
        model,
        usage: UsageOut {
            prompt_tokens: input_tokens,
            total_tokens: input_tokens,
        },
    };
    let bytes = serde_json::to_vec(&list).map_err(TranslateError::response)?;
    let usage = TokenUsage {
        input: input_tokens,
        ..TokenUsage::default()
    };
    Ok((bytes, usage))
}

/// A vector as OpenAI's base64: its numbers as little-endian f32 bytes.
fn to_base64(vector: &RawValue) -> Result<String, TranslateError> {
    let numbers: Vec<f32> = serde_json::from_str(vector.get()).map_err(TranslateError::response)?;
    let mut bytes = Vec::with_capacity(numbers.len() * 4);
    for number in numbers {
        bytes.extend_from_slice(&number.to_le_bytes());
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_strings_and_refuses_token_ids() {
        let request = read(br#"{"model":"m","input":["a","b\u00e9"],"dimensions":3}"#).unwrap();
        assert_eq!(request.texts, ["a", "bé"]);
        assert_eq!(request.dimensions, Some(3));
        assert_eq!(read(br#"{"input":"one"}"#).unwrap().texts, ["one"]);
        for (body, needle) in [
            (r#"{"input":[1,2,3]}"#, "token ids"),
            (r#"{"input":[[1,2]]}"#, "token ids"),
            (r#"{"input":[]}"#, "must not be empty"),
            (r#"{"input":{}}"#, "a string or an array"),
            (r#"{"model":"m"}"#, "`input` is required"),
            (
                r#"{"input":"x","encoding_format":"int8"}"#,
                "encoding_format",
            ),
            (r#"{"input":"x","dimensions":0}"#, "dimensions"),
            ("{", "not valid JSON"),
        ] {
            let error = read(body.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(needle), "{body}: {error}");
        }
    }

    #[test]
    fn writes_floats_as_sent_and_base64_as_openai_does() {
        let vectors: Vec<&RawValue> = serde_json::from_str("[[0.5, -1.25e-3], [1]]").unwrap();
        let (bytes, usage) = write_list(&vectors, "m", 4, false).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5, -1.25e-3]},{"object":"embedding","index":1,"embedding":[1]}],"model":"m","usage":{"prompt_tokens":4,"total_tokens":4}}"#
        );
        assert_eq!(usage.input, 4);
        let (bytes, _) = write_list(&vectors[1..], "m", 0, true).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        // 1.0f32 little-endian is 00 00 80 3f.
        assert_eq!(json["data"][0]["embedding"], "AACAPw==");
        let bad: Vec<&RawValue> = serde_json::from_str(r#"["x"]"#).unwrap();
        assert!(write_list(&bad, "m", 0, false).is_err());
        let bad: Vec<&RawValue> = serde_json::from_str(r#"[["x"]]"#).unwrap();
        assert!(write_list(&bad, "m", 0, true).is_err());
    }

    #[test]
    fn asks_for_base64_and_estimates_the_texts() {
        let ask = ask(br#"{"input":["hello world","again"],"encoding_format":"base64"}"#);
        assert!(ask.base64);
        assert!(ask.estimate >= 3, "{ask:?}");
        assert_eq!(super::ask(b"junk"), Ask::default());
    }
}

#[cfg(test)]
#[path = "embed_tests.rs"]
mod golden;
