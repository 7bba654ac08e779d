//! A stateless call's answer stream: the server's SSE answer read event by
//! event, its progress and other related notifications passed on, its
//! response given the client's id and a `resultType`, and the requests it
//! sends the client during the call gathered into an `input_required`
//! result (the call then waits in `mrtr::Pending` for the client's retry).
//! Requests the client cannot answer are refused to the server here, and
//! pings answered. Knows nothing of routing or of `requestState`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use tokio::time::{Instant, Sleep};

use super::mrtr::Pending;
use super::servers::{server, Upstream};
use super::*;
use crate::body::BoxError;
use crate::llm::sse::next_event_len;
use crate::upstream::{Conn, Pool};

/// A question a server asked during a call, put to the client.
pub(super) struct Asked {
    /// Its key in `inputRequests` and `inputResponses`.
    pub(super) key: String,
    /// The server's request id, for its answer.
    pub(super) upstream_id: Value,
    pub(super) method: String,
    pub(super) params: Value,
}

/// A server's answer stream, its head read.
pub(super) struct Held {
    pub(super) body: Incoming,
    pub(super) conn: Box<Conn>,
    /// Bytes received and not yet taken apart.
    pub(super) buffer: BytesMut,
    /// The gateway's id of the call, as JSON text.
    pub(super) upstream_id: String,
    pub(super) position: usize,
    /// The upstream session it runs in.
    pub(super) session: Option<String>,
    pub(super) version: String,
    pub(super) timeout: Duration,
}

/// What a call needs to park itself and to answer its server, owned.
pub(super) struct Origin {
    pub(super) runtime: Arc<Runtime>,
    pub(super) pool: Arc<Pool>,
    pub(super) pending: Arc<Pending>,
    pub(super) route: usize,
    pub(super) tenant: String,
    pub(super) method: String,
    pub(super) name: String,
    pub(super) capabilities: Value,
    pub(super) log: bool,
    /// For the access log of a resumed call.
    pub(super) backend: Arc<str>,
    pub(super) tool: Option<String>,
}

/// A JSON-RPC message, read without building a tree of it.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct HasResultType<'a> {
    #[serde(borrow, default, rename = "resultType")]
    result_type: Option<&'a RawValue>,
}

/// A server's response as the client's: its id, and `resultType` in a
/// result (session-based servers do not send it), with the cache hints a
/// `resources/read` result needs in 2026-07-28 (none: `ttlMs` 0). Spliced as
/// text: a tool result can be large, and only its first bytes change.
pub(super) fn answer_bytes(client_id: &str, message: &[u8], method: &str) -> Option<Bytes> {
    let peek: Peek<'_> = serde_json::from_slice(message).ok()?;
    if peek.method.is_some() {
        return None;
    }
    let out = match (peek.result, peek.error) {
        (Some(result), _) => {
            let raw = result.get();
            let typed = serde_json::from_str::<HasResultType<'_>>(raw)
                .ok()
                .and_then(|t| t.result_type)
                .is_some();
            let result = match raw.strip_prefix('{') {
                Some(rest) if !typed => {
                    let rest = rest.trim_start();
                    let comma = if rest.starts_with('}') { "" } else { "," };
                    let hints = if method == "resources/read" {
                        r#","ttlMs":0,"cacheScope":"private""#
                    } else {
                        ""
                    };
                    format!(r#"{{"resultType":"complete"{hints}{comma}{rest}"#)
                }
                _ => raw.to_owned(),
            };
            format!(r#"{{"jsonrpc":"2.0","id":{client_id},"result":{result}}}"#)
        }
        (None, Some(error)) => format!(
            r#"{{"jsonrpc":"2.0","id":{client_id},"error":{}}}"#,
            error.get()
        ),
        (None, None) => return None,
    };
    Some(Bytes::from(out))
}

/// The `data` of one SSE event, its lines joined.
fn event_data(event: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(event).ok()?;
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    let data = lines.join("\n");
    (!data.trim().is_empty()).then_some(data)
}

/// One SSE event carrying a JSON-RPC message.
fn sse_event(out: &mut BytesMut, json: &[u8]) {
    out.extend_from_slice(b"event: message\n");
    for line in json.split(|b| *b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"\n");
}

/// Whether the client declared what a server request needs.
fn declared(capabilities: &Value, method: &str, params: &Value) -> bool {
    match method {
        "elicitation/create" => {
            let Some(elicitation) = capabilities.get("elicitation") else {
                return false;
            };
            let url = params.get("mode").and_then(Value::as_str) == Some("url");
            let form_only = elicitation.get("form").is_none() && elicitation.get("url").is_none();
            if url {
                elicitation.get("url").is_some()
            } else {
                form_only || elicitation.get("form").is_some()
            }
        }
        "sampling/createMessage" => capabilities.get("sampling").is_some(),
        "roots/list" => capabilities.get("roots").is_some(),
        _ => false,
    }
}

/// Sends one message to the server of a call (an answer to its request).
pub(super) fn answer_upstream(
    origin: &Origin,
    held: &Held,
    message: String,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let runtime = origin.runtime.clone();
    let pool = origin.pool.clone();
    let (route, position) = (origin.route, held.position);
    let session = held.session.clone();
    let version = held.version.clone();
    Box::pin(async move {
        let Some(route) = runtime.snapshot.mcp_routes.get(route) else {
            return;
        };
        let Some(Upstream::Http(server)) = server(&runtime, route, position) else {
            return;
        };
        if let Err(error) = server
            .deliver(
                &pool,
                session.as_deref(),
                Some(&version),
                Bytes::from(message),
            )
            .await
        {
            tracing::warn!(%error, "an MCP server did not take the answer to its request");
        }
    })
}

/// A call's answer on its way to the client.
pub struct CallBody {
    held: Option<Held>,
    origin: Arc<Origin>,
    client_id: String,
    out: BytesMut,
    exchange: Option<Exchange>,
    /// Answers the gateway gives the server itself (refusals, pings).
    answering: Vec<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Questions for the client, gathered from the events at hand.
    pub(super) asked: Vec<Asked>,
    idle: Pin<Box<Sleep>>,
    done: bool,
}

impl CallBody {
    pub(super) fn new(
        held: Held,
        origin: Arc<Origin>,
        client_id: &str,
        exchange: &mut Exchange,
    ) -> Self {
        let mut exchange = exchange.hand_off();
        exchange.record.status = 200;
        let idle = Box::pin(tokio::time::sleep(held.timeout));
        Self {
            held: Some(held),
            origin,
            client_id: client_id.to_owned(),
            out: BytesMut::new(),
            exchange: Some(exchange),
            answering: Vec::new(),
            asked: Vec::new(),
            idle,
            done: false,
        }
    }

    /// Ends the answer with a JSON-RPC error.
    fn fail(&mut self, message: &str) {
        let error = format!(
            r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":-32603,"message":{}}}}}"#,
            self.client_id,
            Value::String(format!("the MCP server failed mid-answer: {message}"))
        );
        sse_event(&mut self.out, error.as_bytes());
        if let Some(exchange) = &mut self.exchange {
            exchange.record.error = Some("upstream_failed".into());
        }
        self.held = None;
        self.done = true;
    }

    /// Takes apart the complete events received; parks the call when the
    /// server asked the client something.
    fn take_events(&mut self) {
        loop {
            let Some(held) = &mut self.held else {
                return;
            };
            let Some(len) = next_event_len(&held.buffer) else {
                break;
            };
            let event = held.buffer.split_to(len);
            self.on_event(&event);
            if self.done {
                return;
            }
        }
        if !self.asked.is_empty() {
            self.park();
        }
    }

    fn on_event(&mut self, event: &[u8]) {
        let Some(data) = event_data(event) else {
            return;
        };
        let Ok(peek) = serde_json::from_str::<Peek<'_>>(&data) else {
            return;
        };
        let Some(held) = &self.held else {
            return;
        };
        match (peek.method.as_deref(), peek.id) {
            (Some(method), Some(_)) => {
                let Ok(request) = serde_json::from_str::<Value>(&data) else {
                    return;
                };
                let params = request.get("params").cloned().unwrap_or(Value::Null);
                let upstream_id = request.get("id").cloned().unwrap_or(Value::Null);
                if method == "ping" {
                    let pong = json!({"jsonrpc": "2.0", "id": upstream_id, "result": {}});
                    self.answering
                        .push(answer_upstream(&self.origin, held, pong.to_string()));
                } else if declared(&self.origin.capabilities, method, &params) {
                    let key = match &upstream_id {
                        Value::String(s) => format!("s2c-{s}"),
                        other => format!("s2c-{other}"),
                    };
                    self.asked.push(Asked {
                        key,
                        upstream_id,
                        method: method.to_owned(),
                        params,
                    });
                } else {
                    let refusal = json!({"jsonrpc": "2.0", "id": upstream_id, "error": {
                        "code": -32601,
                        "message": format!("the client did not declare the capability {method} needs"),
                    }});
                    self.answering
                        .push(answer_upstream(&self.origin, held, refusal.to_string()));
                }
            }
            // Log messages only for a client that opted in (`logLevel`).
            (Some(method), None) if method != "notifications/message" || self.origin.log => {
                sse_event(&mut self.out, data.as_bytes());
            }
            (None, Some(id)) if id.get() == held.upstream_id => {
                match answer_bytes(&self.client_id, data.as_bytes(), &self.origin.method) {
                    Some(answer) => sse_event(&mut self.out, &answer),
                    None => self.fail("its response is malformed"),
                }
                self.held = None;
                self.done = true;
            }
            _ => {}
        }
    }

    /// Keeps the server's stream for the client's retry; the client gets
    /// `input_required`.
    pub(super) fn park(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        let asked = std::mem::take(&mut self.asked);
        let parked = self.origin.pending.park(held, asked, self.origin.clone());
        let Some((state, questions)) = parked else {
            self.fail("too many calls wait for input on this gateway");
            return;
        };
        let mut requests = Map::new();
        for question in questions {
            requests.insert(
                question.key,
                json!({"method": question.method, "params": question.params}),
            );
        }
        let result = json!({
            "resultType": "input_required",
            "inputRequests": requests,
            "requestState": state,
        });
        let message = format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{result}}}"#,
            self.client_id
        );
        sse_event(&mut self.out, message.as_bytes());
        self.done = true;
    }

    /// Reads what the server sent so far.
    fn pump(&mut self, cx: &mut Context<'_>) {
        loop {
            self.take_events();
            let Some(held) = &mut self.held else {
                self.done = true;
                return;
            };
            held.conn.drive(cx);
            match Pin::new(&mut held.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        held.buffer.extend_from_slice(&data);
                        let deadline = Instant::now() + held.timeout;
                        self.idle.as_mut().reset(deadline);
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    self.fail(&error.to_string());
                    return;
                }
                Poll::Ready(None) => {
                    // A last event without its blank line still counts.
                    held.buffer.extend_from_slice(b"\n\n");
                    self.take_events();
                    if !self.done {
                        self.fail("it ended its answer without a response");
                    }
                    return;
                }
                Poll::Pending => {
                    if self.idle.as_mut().poll(cx).is_ready() {
                        self.fail("it sent nothing for longer than its timeout");
                    }
                    return;
                }
            }
        }
    }
}

impl Body for CallBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        this.answering
            .retain_mut(|answer| answer.as_mut().poll(cx).is_pending());
        if !this.done {
            this.pump(cx);
        }
        super::stream::flush_or_end(&mut this.out, &mut this.exchange, this.done)
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.out.is_empty() && self.exchange.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_carry_the_client_id_and_a_result_type() {
        let answer = |message: &str| {
            String::from_utf8(
                answer_bytes("7", message.as_bytes(), "tools/call")
                    .unwrap()
                    .to_vec(),
            )
            .unwrap()
        };
        assert_eq!(
            answer(
                r#"{"jsonrpc":"2.0","id":"sluice-1","result":{"content":[{"type":"text","text":"resultType"}]}}"#
            ),
            r#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"complete","content":[{"type":"text","text":"resultType"}]}}"#
        );
        assert_eq!(
            answer(r#"{"id":"sluice-1","result":{ }}"#),
            r#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"complete"}}"#
        );
        assert_eq!(
            answer(
                r#"{"id":"sluice-1","result":{"resultType":"input_required","requestState":"x"}}"#
            ),
            r#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"input_required","requestState":"x"}}"#
        );
        assert_eq!(
            answer(r#"{"id":"sluice-1","error":{"code":-32602,"message":"no"}}"#),
            r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"no"}}"#
        );
        let parsed: Value = serde_json::from_str(&answer(
            r#"{"id":1,"result":{"text":"a \"quoted\" }{ brace"}}"#,
        ))
        .unwrap();
        assert_eq!(parsed["result"]["text"], "a \"quoted\" }{ brace");
        assert!(answer_bytes("7", br#"{"method":"x","id":1}"#, "tools/call").is_none());
        assert!(answer_bytes("7", b"not json", "tools/call").is_none());
        assert_eq!(
            &answer_bytes("1", br#"{"id":1,"result":{"contents":[]}}"#, "resources/read").unwrap()[..],
            br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","ttlMs":0,"cacheScope":"private","contents":[]}}"#
        );
    }

    #[test]
    fn capabilities_gate_what_the_client_is_asked() {
        let form = json!({"elicitation": {}});
        let both = json!({"elicitation": {"form": {}, "url": {}}, "sampling": {}, "roots": {}});
        assert!(declared(
            &form,
            "elicitation/create",
            &json!({"message": "?"})
        ));
        assert!(!declared(
            &form,
            "elicitation/create",
            &json!({"mode": "url"})
        ));
        assert!(declared(
            &both,
            "elicitation/create",
            &json!({"mode": "url"})
        ));
        assert!(!declared(&form, "sampling/createMessage", &json!({})));
        assert!(declared(&both, "sampling/createMessage", &json!({})));
        assert!(declared(&both, "roots/list", &json!({})));
        assert!(!declared(&both, "something/else", &json!({})));
    }

    #[test]
    fn events_are_framed_line_by_line() {
        assert_eq!(
            event_data(b"event: message\ndata: {\"a\":\ndata: 1}\n\n").as_deref(),
            Some("{\"a\":\n1}")
        );
        assert_eq!(event_data(b"id: 1\ndata: \n\n"), None);
        let mut out = BytesMut::new();
        sse_event(&mut out, b"{\"a\":\n1}");
        assert_eq!(&out[..], b"event: message\ndata: {\"a\":\ndata: 1}\n\n");
    }
}
