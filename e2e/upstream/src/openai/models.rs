//! `GET /v1/models`: the one mock model, owned by the upstream's name.

use bytes::Bytes;
use serde::Serialize;

use super::{to_json, MODEL_ID};

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: [Model<'a>; 1],
}

#[derive(Serialize)]
struct Model<'a> {
    id: &'static str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

/// The model list body; built once per server since it never changes.
pub(crate) fn list(owner: &str) -> Bytes {
    to_json(&ModelList {
        object: "list",
        data: [Model {
            id: MODEL_ID,
            object: "model",
            created: 0,
            owned_by: owner,
        }],
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_the_mock_model() {
        assert_eq!(
            super::list("alpha"),
            &br#"{"object":"list","data":[{"id":"mock-model","object":"model","created":0,"owned_by":"alpha"}]}"#[..]
        );
    }
}
