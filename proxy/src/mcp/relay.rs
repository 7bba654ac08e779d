//! Server-to-client requests (sampling, elicitation, roots) relayed from an
//! upstream's SSE answer to the client that caused them. Their JSON-RPC ids
//! belong to the upstream's id space, so on the way out each id is wrapped
//! with the position of its upstream (`s2c.{position}.{id}`); when the
//! client answers, the wrapper tells which upstream gets the answer and
//! with which original id. Upstream SSE event ids are dropped: resuming a
//! stream (GET + `Last-Event-ID`) is not served. Knows nothing of sessions
//! or HTTP.

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use crate::llm::sse::{last_boundary, next_event_len};

const PREFIX: &str = "s2c.";

/// Rewrites one upstream SSE stream on its way to the client.
pub struct Relay {
    position: usize,
    /// The client's request this stream answers.
    request_id: Value,
    pending: BytesMut,
}

impl Relay {
    /// A relay for the upstream at this route position.
    pub fn new(position: usize, request_id: Value) -> Self {
        Self {
            position,
            request_id,
            pending: BytesMut::new(),
        }
    }

    /// The server failed mid-answer: whatever complete events it sent, then
    /// a JSON-RPC error answering the client's request.
    pub fn fail(&mut self, message: &str) -> Bytes {
        self.pending.clear();
        let error = serde_json::json!({
            "jsonrpc": "2.0",
            "id": self.request_id,
            "error": {"code": -32603, "message": format!("the MCP server failed mid-answer: {message}")},
        });
        Bytes::from(format!("event: message\ndata: {error}\n\n"))
    }

    /// Takes upstream bytes; returns the whole events to forward now.
    pub fn on_data(&mut self, data: Bytes) -> Bytes {
        self.pending.extend_from_slice(&data);
        let Some(end) = last_boundary(&self.pending) else {
            return Bytes::new();
        };
        let complete = self.pending.split_to(end).freeze();
        let mut out = BytesMut::with_capacity(complete.len() + 64);
        let mut rest: &[u8] = &complete;
        while let Some(len) = next_event_len(rest) {
            let (event, tail) = rest.split_at(len);
            rest = tail;
            self.rewrite(event, &mut out);
        }
        out.freeze()
    }

    /// Whatever is left at the end, as is.
    pub fn finish(&mut self) -> Bytes {
        std::mem::take(&mut self.pending).freeze()
    }

    fn rewrite(&self, event: &[u8], out: &mut BytesMut) {
        let Ok(text) = std::str::from_utf8(event) else {
            out.extend_from_slice(event);
            return;
        };
        let kept = |line: &&str| {
            !line.is_empty() && !line.starts_with("data:") && !line.starts_with("id:")
        };
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        let message: Option<Value> = (!data.is_empty())
            .then(|| serde_json::from_str(&data.join("\n")).ok())
            .flatten();
        for line in text.lines().filter(kept) {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\n");
        }
        match message {
            Some(mut message) if message.get("method").is_some() && message.get("id").is_some() => {
                message["id"] = Value::String(wrap(self.position, &message["id"]));
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(message.to_string().as_bytes());
                out.extend_from_slice(b"\n");
            }
            _ => {
                for line in text.lines().filter(|l| l.starts_with("data:")) {
                    out.extend_from_slice(line.as_bytes());
                    out.extend_from_slice(b"\n");
                }
            }
        }
        out.extend_from_slice(b"\n");
    }
}

/// The client-facing id of an upstream's request.
pub fn wrap(position: usize, id: &Value) -> String {
    format!("{PREFIX}{position}.{id}")
}

/// The upstream position and original id behind a client-facing id.
pub fn unwrap(id: &Value) -> Option<(usize, Value)> {
    let rest = id.as_str()?.strip_prefix(PREFIX)?;
    let (position, original) = rest.split_once('.')?;
    Some((position.parse().ok()?, serde_json::from_str(original).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wraps_server_request_ids_and_leaves_the_rest() {
        let mut relay = Relay::new(1, Value::Null);
        let stream = concat!(
            "id: 1\ndata: \n\n",
            "event: message\nid: 2\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n",
            "event: message\nid: 3\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"sampling/createMessage\",\"params\":{}}\n\n",
            "event: message\nid: 4\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n\n",
        );
        let (a, b) = stream.as_bytes().split_at(150);
        let mut out = relay.on_data(Bytes::copy_from_slice(a)).to_vec();
        out.extend_from_slice(&relay.on_data(Bytes::copy_from_slice(b)));
        out.extend_from_slice(&relay.finish());
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains("id: "),
            "event ids are dropped (no resumption): {text}"
        );
        assert!(
            text.starts_with("data: \n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\""),
            "{text}"
        );
        assert!(text.contains("\"id\":\"s2c.1.7\""), "{text}");
        assert!(
            text.ends_with(
                "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n\n"
            ),
            "the response keeps the client's id: {text}"
        );
    }

    #[test]
    fn ids_round_trip() {
        for id in [json!(7), json!("abc"), json!("s2c.weird.1")] {
            assert_eq!(unwrap(&Value::String(wrap(3, &id))), Some((3, id)));
        }
        assert_eq!(unwrap(&json!(5)), None);
        assert_eq!(unwrap(&json!("plain")), None);
        assert_eq!(unwrap(&json!("s2c.x.1")), None);
    }
}
