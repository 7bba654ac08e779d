//! Remembers the last requests the upstream received, for tests to inspect.
//! Knows nothing of what the requests mean or how they were answered.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// How many requests are kept; older ones are dropped first.
pub const CAPACITY: usize = 256;

/// One request as the upstream received it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path including the query string, e.g. `/v1/chat/completions?x=1`.
    pub path: String,
    /// Headers in arrival order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, decoded as UTF-8 (lossily).
    pub body: String,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, or `Null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A bounded log of recent requests. A test tool, so a plain mutex will do;
/// benchmarks turn recording off instead.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    requests: Mutex<VecDeque<RecordedRequest>>,
}

impl Recorder {
    pub fn push(&self, request: RecordedRequest) {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        if requests.len() == CAPACITY {
            requests.pop_front();
        }
        requests.push_back(request);
    }

    /// Recorded requests, oldest first.
    pub fn snapshot(&self) -> Vec<RecordedRequest> {
        let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        requests.iter().cloned().collect()
    }

    pub fn clear(&self) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: usize) -> RecordedRequest {
        RecordedRequest {
            method: "POST".to_owned(),
            path: format!("/v1/{n}"),
            headers: vec![("x-trace".to_owned(), n.to_string())],
            body: format!("{{\"n\":{n}}}"),
        }
    }

    #[test]
    fn keeps_the_newest_requests() {
        let recorder = Recorder::default();
        for n in 0..CAPACITY + 3 {
            recorder.push(request(n));
        }
        let kept = recorder.snapshot();
        assert_eq!(kept.len(), CAPACITY);
        assert_eq!(kept[0].path, "/v1/3");
        assert_eq!(kept[CAPACITY - 1].path, format!("/v1/{}", CAPACITY + 2));
        recorder.clear();
        assert!(recorder.snapshot().is_empty());
    }

    #[test]
    fn header_and_json() {
        let r = request(4);
        assert_eq!(r.header("X-Trace"), Some("4"));
        assert_eq!(r.header("missing"), None);
        assert_eq!(r.json()["n"], 4);
        let not_json = RecordedRequest {
            body: "nope".to_owned(),
            ..r
        };
        assert_eq!(not_json.json(), serde_json::Value::Null);
    }
}
