//! `POST /v1/embeddings`: one deterministic vector per input, as floats or as
//! base64 little-endian f32s (`encoding_format: "base64"`, which the
//! openai-python SDK asks for by default).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{to_json, BadRequest, Reply, Usage};
use crate::base64;
use crate::control::Control;

/// Dimensions of each vector unless the request asks for `dimensions`.
pub const DEFAULT_DIMENSIONS: u32 = 8;
/// The most `dimensions` a request may ask for.
const MAX_DIMENSIONS: u32 = 8192;

#[derive(Debug, Deserialize)]
struct EmbeddingRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    input: Input,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u32>,
}

/// The shapes `input` may take.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<i64>),
    TokenLists(Vec<Vec<i64>>),
}

impl Input {
    /// One hash per input item; each seeds that item's vector.
    fn seeds(&self) -> Vec<u64> {
        match self {
            Input::Text(text) => vec![fnv1a(text.as_bytes())],
            Input::Texts(texts) => texts.iter().map(|t| fnv1a(t.as_bytes())).collect(),
            Input::Tokens(tokens) => vec![hash_tokens(tokens)],
            Input::TokenLists(lists) => lists.iter().map(|t| hash_tokens(t)).collect(),
        }
    }
}

/// Answers one embeddings request.
pub(crate) fn reply(body: &[u8], control: &Control) -> Result<Reply, BadRequest> {
    let request: EmbeddingRequest<'_> =
        serde_json::from_slice(body).map_err(|e| BadRequest::json(&e))?;
    let dimensions = request.dimensions.unwrap_or(DEFAULT_DIMENSIONS);
    if dimensions == 0 || dimensions > MAX_DIMENSIONS {
        return Err(BadRequest {
            message: format!("dimensions must be between 1 and {MAX_DIMENSIONS}"),
            param: Some("dimensions"),
        });
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(BadRequest {
                message: format!("Invalid encoding_format {other:?}: expected 'float' or 'base64'"),
                param: Some("encoding_format"),
            })
        }
    };
    let seeds = request.input.seeds();
    if seeds.is_empty() {
        return Err(BadRequest {
            message: "'$.input' is invalid: it must not be empty".to_owned(),
            param: Some("input"),
        });
    }
    let data = seeds
        .iter()
        .enumerate()
        .map(|(index, &seed)| {
            let values = vector(seed, dimensions);
            Embedding {
                object: "embedding",
                index,
                embedding: if base64 {
                    Vector::Base64(encode_f32s(&values))
                } else {
                    Vector::Floats(values.into_iter().map(f64::from).collect())
                },
            }
        })
        .collect();
    let usage = Usage::new(control.prompt_tokens, 0);
    Ok(Reply::Json(to_json(&EmbeddingList {
        object: "list",
        data,
        model: &request.model,
        usage: EmbeddingUsage {
            prompt_tokens: usage.prompt_tokens,
            total_tokens: usage.total_tokens,
        },
    })))
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    /// Written as f64 so that the decimal text is the exact f32 value, and a
    /// client gets the same numbers from both encodings.
    Floats(Vec<f64>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// A deterministic vector in [-1, 1) for `seed`. The values are multiples of
/// 1/1024, exact in f32 and in decimal.
pub(crate) fn vector(seed: u64, dimensions: u32) -> Vec<f32> {
    (0..u64::from(dimensions))
        .map(|j| {
            let bits = splitmix64(seed ^ j.wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 53;
            // `bits` < 2048, so the conversion is exact.
            (bits as f32 - 1024.0) / 1024.0
        })
        .collect()
}

fn encode_f32s(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::encode(&bytes)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn hash_tokens(tokens: &[i64]) -> u64 {
    let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    // Keep token inputs apart from text inputs with the same bytes.
    fnv1a(&bytes) ^ 0x746f_6b65_6e73
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn answer(body: Value) -> Result<Value, BadRequest> {
        match reply(body.to_string().as_bytes(), &Control::default())? {
            Reply::Json(bytes) => Ok(serde_json::from_slice(&bytes).unwrap()),
            Reply::Stream(_) => panic!("expected JSON"),
        }
    }

    #[test]
    fn every_input_shape_gives_one_vector_per_item() {
        for (input, count) in [
            (json!("a"), 1),
            (json!(["a", "b", "c"]), 3),
            (json!([1, 2, 3]), 1),
            (json!([[1, 2], [3]]), 2),
        ] {
            let a = answer(json!({"model":"e","input":input})).unwrap();
            let data = a["data"].as_array().unwrap();
            assert_eq!(data.len(), count, "{input}");
            for (i, item) in data.iter().enumerate() {
                assert_eq!(item["index"], i);
                assert_eq!(item["embedding"].as_array().unwrap().len(), 8);
            }
        }
    }

    #[test]
    fn same_input_same_vector_and_values_in_range() {
        let v = vector(fnv1a(b"hello"), 64);
        assert_eq!(v, vector(fnv1a(b"hello"), 64));
        assert_ne!(v, vector(fnv1a(b"hellp"), 64));
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
    }

    #[test]
    fn bad_inputs_are_rejected() {
        for body in [
            json!({"model":"e","input":[]}),
            json!({"model":"e","input":"a","encoding_format":"hex"}),
            json!({"model":"e","input":"a","dimensions":0}),
            json!({"model":"e","input":[1,"a"]}),
            json!({"model":"e"}),
        ] {
            assert!(answer(body.clone()).is_err(), "{body}");
        }
    }

    #[test]
    fn dimensions_are_honoured() {
        let a = answer(json!({"model":"e","input":"a","dimensions":3})).unwrap();
        assert_eq!(a["data"][0]["embedding"].as_array().unwrap().len(), 3);
    }
}
