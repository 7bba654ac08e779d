//! Server-to-client requests (sampling, elicitation, roots) relayed from an
//! upstream's SSE answer to the client that caused them. Their JSON-RPC ids
//! belong to the upstream's id space, so on the way out each id is wrapped
//! with the position of its upstream (`s2c.{position}.{id}`); when the
//! client answers, the wrapper tells which upstream gets the answer and
//! with which original id. Upstream SSE event ids are kept, prefixed with
//! the kind of stream and the upstream's position (`c1.{id}` in a call's
//! answer, `g1.{id}` on the session's stream), so that a client resuming
//! with `Last-Event-ID` can be sent to the server that issued the id.
//! Knows nothing of sessions or HTTP.

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use super::names::{outward, prefix_uris, URI_SEPARATOR};
use crate::llm::sse::{last_boundary, next_event_len};

const PREFIX: &str = "s2c.";

/// Which stream an event id came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// The SSE answer to one of the client's requests.
    Call,
    /// The session's own stream (`GET`).
    Session,
}

impl StreamKind {
    fn tag(self) -> char {
        match self {
            Self::Call => 'c',
            Self::Session => 'g',
        }
    }
}

/// A client's `Last-Event-ID`, read back: the stream kind, the upstream's
/// position and that upstream's own event id.
pub fn parse_event_id(id: &str) -> Option<(StreamKind, usize, &str)> {
    let kind = match id.as_bytes().first()? {
        b'c' => StreamKind::Call,
        b'g' => StreamKind::Session,
        _ => return None,
    };
    let (position, upstream) = id.get(1..)?.split_once('.')?;
    let position = position.parse().ok()?;
    (!upstream.is_empty()).then_some((kind, position, upstream))
}

/// Rewrites one upstream SSE stream on its way to the client.
pub struct Relay {
    kind: StreamKind,
    position: usize,
    /// The upstream's prefix for resource URIs, if the route gives one.
    prefix: Option<String>,
    /// The client's request this stream answers.
    request_id: Value,
    pending: BytesMut,
}

impl Relay {
    /// A relay for a stream of the upstream at this route position.
    pub fn new(
        kind: StreamKind,
        position: usize,
        prefix: Option<String>,
        request_id: Value,
    ) -> Self {
        Self {
            kind,
            position,
            prefix,
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
        let kept = |line: &&str| !line.is_empty() && !line.starts_with("data:");
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        let message: Option<Value> = (!data.is_empty())
            .then(|| serde_json::from_str(&data.join("\n")).ok())
            .flatten();
        for line in text.lines().filter(kept) {
            match line.strip_prefix("id:") {
                Some(id) => {
                    let id = id.strip_prefix(' ').unwrap_or(id);
                    if !id.is_empty() {
                        let prefix = format!("id: {}{}.", self.kind.tag(), self.position);
                        out.extend_from_slice(prefix.as_bytes());
                        out.extend_from_slice(id.as_bytes());
                        out.extend_from_slice(b"\n");
                    }
                }
                None => {
                    out.extend_from_slice(line.as_bytes());
                    out.extend_from_slice(b"\n");
                }
            }
        }
        match message {
            Some(mut message) if message.get("method").is_some() && message.get("id").is_some() => {
                message["id"] = Value::String(wrap(self.position, &message["id"]));
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(message.to_string().as_bytes());
                out.extend_from_slice(b"\n");
            }
            // Links to resources in a result: the client reads them back
            // through the gateway, under the prefix.
            Some(mut message)
                if self.prefix.is_some()
                    && self.kind == StreamKind::Call
                    && message.get("result").is_some()
                    && text.contains("\"uri\"") =>
            {
                if let Some(prefix) = self.prefix.as_deref() {
                    prefix_uris(&mut message["result"], prefix);
                }
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(message.to_string().as_bytes());
                out.extend_from_slice(b"\n");
            }
            // A subscribed resource changed: the client knows it by its
            // prefixed URI.
            Some(mut message)
                if self.prefix.is_some()
                    && message["method"] == "notifications/resources/updated" =>
            {
                if let (Some(prefix), Some(uri)) =
                    (self.prefix.as_deref(), message["params"]["uri"].as_str())
                {
                    message["params"]["uri"] =
                        Value::String(outward(Some(prefix), URI_SEPARATOR, uri));
                }
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
        let mut relay = Relay::new(StreamKind::Call, 1, None, Value::Null);
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
            text.starts_with("id: c1.1\ndata: \n\nevent: message\nid: c1.2\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\""),
            "{text}"
        );
        assert!(text.contains("\"id\":\"s2c.1.7\""), "{text}");
        assert!(
            text.ends_with(
                "event: message\nid: c1.4\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n\n"
            ),
            "the response keeps the client's id: {text}"
        );
    }

    #[test]
    fn event_ids_name_their_stream_and_server() {
        let mut relay = Relay::new(StreamKind::Session, 2, Some("kiwi".into()), Value::Null);
        let out = relay.on_data(Bytes::from_static(b"id: abc_1.2\nretry: 500\ndata: \n\n"));
        assert_eq!(&out[..], b"id: g2.abc_1.2\nretry: 500\ndata: \n\n");
        let updated = b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/resources/updated\",\"params\":{\"uri\":\"demo://a\"}}\n\n";
        let out = relay.on_data(Bytes::from_static(updated));
        assert!(
            std::str::from_utf8(&out)
                .unwrap()
                .contains("\"uri\":\"kiwi+demo://a\""),
            "{out:?}"
        );
        assert_eq!(
            parse_event_id("g2.abc_1.2"),
            Some((StreamKind::Session, 2, "abc_1.2"))
        );
        assert_eq!(parse_event_id("c0.7"), Some((StreamKind::Call, 0, "7")));
        for bad in ["", "c", "c1", "c1.", "x1.2", "cx.2", "7"] {
            assert_eq!(parse_event_id(bad), None, "{bad}");
        }
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
