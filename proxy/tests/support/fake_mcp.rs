//! A small session-based MCP server (revision 2025-11-25) for tests of the
//! gateway's stateless path: sessions by `Mcp-Session-Id` (404 for unknown
//! ones), a GET stream per session, and three tools: `ask` elicits a name
//! from the client in the middle of the call (a server request on the call's
//! SSE stream), `touch` announces a tool list change on every GET stream,
//! `forget` drops every session (as a restarted server would).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

/// What the server saw.
#[derive(Default)]
pub struct Seen {
    /// The `capabilities` of every `initialize`.
    pub initialized: Vec<Value>,
    sessions: HashSet<String>,
    next: u64,
    /// Server requests waiting for the client's answer, by id.
    waiting: HashMap<String, oneshot::Sender<Value>>,
    /// Its open GET streams.
    pub streams: Vec<mpsc::Sender<Bytes>>,
}

/// A running fake server.
pub struct FakeMcp {
    /// `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    /// What it saw.
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeMcp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A body fed by a channel (an SSE stream).
struct Channel(mpsc::Receiver<Bytes>);

impl http_body::Body for Channel {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

type Body = http_body_util::Either<http_body_util::Full<Bytes>, Channel>;

fn full(status: u16, body: Value, session: Option<&str>) -> Response<Body> {
    let mut response = Response::new(Body::Left(http_body_util::Full::new(Bytes::from(
        if body.is_null() {
            String::new()
        } else {
            body.to_string()
        },
    ))));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    if let Some(session) = session {
        response
            .headers_mut()
            .insert("mcp-session-id", session.parse().unwrap());
    }
    response
}

fn sse(receiver: mpsc::Receiver<Bytes>) -> Response<Body> {
    let mut response = Response::new(Body::Right(Channel(receiver)));
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    response
}

fn event(message: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {message}\n\n"))
}

impl FakeMcp {
    /// Starts the server on a free port.
    pub async fn start() -> FakeMcp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let state = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(serve(state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeMcp { url, seen, task }
    }
}

async fn serve(state: Arc<Mutex<Seen>>, request: Request<Incoming>) -> Response<Body> {
    let session = request
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let known = session
        .as_ref()
        .is_some_and(|s| state.lock().unwrap().sessions.contains(s));
    let method = request.method().clone();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    if method == hyper::Method::GET {
        if !known {
            return full(404, json!({"error": "Session not found"}), None);
        }
        let (sender, receiver) = mpsc::channel(16);
        state.lock().unwrap().streams.push(sender);
        return sse(receiver);
    }
    if method != hyper::Method::POST {
        return full(200, Value::Null, None);
    }
    let message: Value = serde_json::from_slice(&body).unwrap();
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let Some(name) = message.get("method").and_then(Value::as_str) else {
        // The client's answer to a server request.
        let waiter = state.lock().unwrap().waiting.remove(&id.to_string());
        if let Some(waiter) = waiter {
            let _ = waiter.send(message);
        }
        return full(202, Value::Null, None);
    };
    if name == "initialize" {
        let mut seen = state.lock().unwrap();
        seen.next += 1;
        let session = format!("fake-{}", seen.next);
        seen.sessions.insert(session.clone());
        seen.initialized
            .push(message["params"]["capabilities"].clone());
        let result = json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {"listChanged": true}},
            "serverInfo": {"name": "fake", "version": "1"}});
        return full(
            200,
            json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Some(&session),
        );
    }
    if !known {
        return full(404, json!({"error": "Session not found"}), None);
    }
    if message.get("id").is_none() {
        return full(202, Value::Null, None);
    }
    let answer = |result: Value| {
        full(
            200,
            json!({"jsonrpc": "2.0", "id": id, "result": result}),
            None,
        )
    };
    match (name, message["params"]["name"].as_str()) {
        ("tools/list", _) => answer(json!({"tools": [
            {"name": "ask", "inputSchema": {"type": "object"}},
            {"name": "touch", "inputSchema": {"type": "object"}},
            {"name": "forget", "inputSchema": {"type": "object"}},
        ]})),
        ("tools/call", Some("touch")) => {
            let streams = state.lock().unwrap().streams.clone();
            for stream in streams {
                let _ = stream
                    .send(event(
                        &json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
                    ))
                    .await;
            }
            answer(json!({"content": [{"type": "text", "text": "touched"}]}))
        }
        ("tools/call", Some("forget")) => {
            state.lock().unwrap().sessions.clear();
            answer(json!({"content": [{"type": "text", "text": "forgotten"}]}))
        }
        ("tools/call", Some("ask")) => {
            let (sender, receiver) = mpsc::channel(16);
            let (answered, answer) = oneshot::channel();
            state
                .lock()
                .unwrap()
                .waiting
                .insert(json!("e1").to_string(), answered);
            tokio::spawn(async move {
                let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                    "params": {"progressToken": "p", "progress": 1}});
                let _ = sender.send(event(&progress)).await;
                let ask = json!({"jsonrpc": "2.0", "id": "e1", "method": "elicitation/create",
                    "params": {"message": "Your name?", "requestedSchema": {"type": "object",
                        "properties": {"name": {"type": "string"}}}}});
                let _ = sender.send(event(&ask)).await;
                let Ok(reply) = answer.await else {
                    return;
                };
                let name = reply["result"]["content"]["name"]
                    .as_str()
                    .unwrap_or("nobody")
                    .to_owned();
                let done = json!({"jsonrpc": "2.0", "id": id,
                    "result": {"content": [{"type": "text", "text": format!("hello {name}")}]}});
                let _ = sender.send(event(&done)).await;
            });
            sse(receiver)
        }
        _ => full(
            200,
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "nope"}}),
            None,
        ),
    }
}
