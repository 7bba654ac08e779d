//! A message channel to one MCP server for one downstream session, for the
//! transports where the server's messages arrive on their own rather than
//! as the answer to an HTTP request: stdio (a local process) and the legacy
//! HTTP+SSE transport (one long-lived SSE stream per session). Both live in
//! this gateway process, under a random token the sealed session id
//! carries, so another replica cannot continue such a session.
//!
//! Messages from the server are routed here: a response to the request that
//! waits for it; a progress notification to the call whose progress token
//! it names; any other notification or server request to the oldest call in
//! flight (as a streamable-HTTP server would send it on that call's stream),
//! else to the session's GET stream, else dropped. Knows nothing of routes,
//! prefixes or HTTP bodies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::client::McpClientError;

/// Stops the server or drops its connection.
pub type Closer = Box<dyn FnOnce() + Send>;

enum Waiter {
    /// A request of the gateway's own (initialize, lists).
    Once(oneshot::Sender<Value>),
    /// A client's call: the response ends its stream.
    Stream(mpsc::UnboundedSender<Value>),
}

struct CallSink {
    key: u64,
    progress_token: Option<String>,
    sender: mpsc::UnboundedSender<Value>,
}

#[derive(Default)]
struct Routing {
    waiters: HashMap<String, Waiter>,
    calls: Vec<CallSink>,
    sessions: Vec<mpsc::UnboundedSender<Value>>,
    closed: bool,
}

/// One server's channel for one session.
pub struct Channel {
    name: String,
    /// Messages to the server, in order; the transport's writer takes them.
    outbound: mpsc::UnboundedSender<Value>,
    closer: Mutex<Option<Closer>>,
    routing: Mutex<Routing>,
    next_id: AtomicU64,
}

/// A client's call in flight: every message for it, its response last.
pub struct CallStream {
    channel: Arc<Channel>,
    key: u64,
    id: String,
    /// The messages, as they come.
    pub receiver: mpsc::UnboundedReceiver<Value>,
}

impl CallStream {
    /// The gateway's id for the call, which its response carries.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for CallStream {
    fn drop(&mut self) {
        if let Ok(mut routing) = self.channel.routing.lock() {
            routing.calls.retain(|c| c.key != self.key);
            routing
                .waiters
                .remove(&Value::String(self.id.clone()).to_string());
        }
    }
}

impl Channel {
    /// A channel and the receiving end of its outbound messages, for the
    /// transport's writer. The transport feeds what the server sends to
    /// [`dispatch`](Self::dispatch), reports a message it could not deliver
    /// with [`undeliverable`](Self::undeliverable), and calls
    /// [`closed`](Self::closed) when the server is gone.
    pub fn new(name: &str, closer: Closer) -> (Arc<Self>, mpsc::UnboundedReceiver<Value>) {
        let (outbound, receiver) = mpsc::unbounded_channel();
        let channel = Arc::new(Self {
            name: name.to_owned(),
            outbound,
            closer: Mutex::new(Some(closer)),
            routing: Mutex::default(),
            next_id: AtomicU64::new(1),
        });
        (channel, receiver)
    }

    /// A request could not be delivered: it is answered with an error.
    pub fn undeliverable(&self, message: &Value, why: &str) {
        if let (Some(id), Some(_)) = (message.get("id"), message.get("method")) {
            self.dispatch(json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {"code": -32603, "message": format!("MCP server {}: {why}", self.name)},
            }));
        }
    }

    fn post(&self, message: Value) -> Result<(), McpClientError> {
        self.outbound.send(message).map_err(|_| self.gone())
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn fresh_id(&self) -> String {
        format!("sluice-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn gone(&self) -> McpClientError {
        McpClientError::Unreachable(self.name.clone(), "the server's channel is closed".into())
    }

    /// Routes one message from the server.
    pub fn dispatch(&self, message: Value) {
        let Ok(mut routing) = self.routing.lock() else {
            return;
        };
        if message.get("method").is_none() {
            let key = message.get("id").map(Value::to_string).unwrap_or_default();
            match routing.waiters.remove(&key) {
                Some(Waiter::Once(waiter)) => {
                    let _ = waiter.send(message);
                }
                Some(Waiter::Stream(sender)) => {
                    let _ = sender.send(message);
                }
                None => tracing::debug!(server = self.name, "MCP response nobody waits for"),
            }
            return;
        }
        routing.calls.retain(|c| !c.sender.is_closed());
        let token = message
            .pointer("/params/progressToken")
            .map(|t| t.as_str().map_or_else(|| t.to_string(), str::to_owned));
        let call = token
            .as_ref()
            .and_then(|token| {
                routing
                    .calls
                    .iter()
                    .find(|c| c.progress_token.as_ref() == Some(token))
            })
            .or(routing.calls.first());
        if let Some(call) = call {
            let _ = call.sender.send(message);
            return;
        }
        routing.sessions.retain(|s| !s.is_closed());
        match routing.sessions.first() {
            Some(session) => {
                let _ = session.send(message);
            }
            None => tracing::debug!(
                server = self.name,
                "MCP server message dropped: no call in flight and no GET stream open"
            ),
        }
    }

    /// The server's side is gone: every waiter and stream ends.
    pub fn closed(&self) {
        if let Ok(mut routing) = self.routing.lock() {
            routing.closed = true;
            routing.waiters.clear();
            routing.calls.clear();
            routing.sessions.clear();
        }
    }

    /// Sends a request of the gateway's own and waits for its response.
    pub async fn request(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, McpClientError> {
        let id = self.fresh_id();
        let key = Value::String(id.clone()).to_string();
        let (sender, receiver) = oneshot::channel();
        {
            let mut routing = self.routing.lock().map_err(|_| self.gone())?;
            if routing.closed {
                return Err(self.gone());
            }
            routing.waiters.insert(key.clone(), Waiter::Once(sender));
        }
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        if let Err(error) = self.post(message) {
            self.forget(&key);
            return Err(error);
        }
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(message)) => Ok(message),
            Ok(Err(_)) => Err(self.gone()),
            Err(_) => {
                self.forget(&key);
                Err(McpClientError::Timeout(self.name.clone()))
            }
        }
    }

    fn forget(&self, key: &str) {
        if let Ok(mut routing) = self.routing.lock() {
            routing.waiters.remove(key);
        }
    }

    /// Like [`request`](Self::request), returning the `result` or the error.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, McpClientError> {
        let message = self.request(method, params, timeout).await?;
        match message.get("error") {
            Some(error) => Err(McpClientError::Rpc(self.name.clone(), error.clone())),
            None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    /// Starts a client's call: its progress, the server's requests and
    /// notifications meanwhile, and its response come on the stream.
    pub fn start_call(
        self: &Arc<Self>,
        method: &str,
        params: Value,
    ) -> Result<CallStream, McpClientError> {
        let id = self.fresh_id();
        let (sender, receiver) = mpsc::unbounded_channel();
        let key = self.next_id.fetch_add(1, Ordering::Relaxed);
        let progress_token = params
            .pointer("/_meta/progressToken")
            .map(|t| t.as_str().map_or_else(|| t.to_string(), str::to_owned));
        {
            let mut routing = self.routing.lock().map_err(|_| self.gone())?;
            if routing.closed {
                return Err(self.gone());
            }
            routing.waiters.insert(
                Value::String(id.clone()).to_string(),
                Waiter::Stream(sender.clone()),
            );
            routing.calls.push(CallSink {
                key,
                progress_token,
                sender,
            });
        }
        let stream = CallStream {
            channel: self.clone(),
            key,
            id: id.clone(),
            receiver,
        };
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.post(message)?;
        Ok(stream)
    }

    /// The session's stream: what the server sends outside any call.
    pub fn open_session_stream(&self) -> Option<mpsc::UnboundedReceiver<Value>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut routing = self.routing.lock().ok()?;
        if routing.closed {
            return None;
        }
        routing.sessions.push(sender);
        Some(receiver)
    }

    /// Sends a message that expects no answer (a notification, or the
    /// client's answer to a server request).
    pub fn send(&self, message: Value) -> Result<(), McpClientError> {
        self.post(message)
    }

    /// Sends a notification.
    pub fn notify(&self, method: &str) -> Result<(), McpClientError> {
        self.send(json!({"jsonrpc": "2.0", "method": method}))
    }

    /// Stops the server or drops its connection.
    pub fn close(&self) {
        if let Some(closer) = self.closer.lock().ok().and_then(|mut c| c.take()) {
            closer();
        }
        self.closed();
    }
}

/// A session's channel idle this long is closed (when the next one
/// opens): clients that never send DELETE do not leak processes.
const IDLE_LIMIT: Duration = Duration::from_secs(30 * 60);

/// This gateway process's channels, by session token, with when each was
/// last used.
#[derive(Default)]
pub struct Channels {
    open: Mutex<HashMap<String, (Arc<Channel>, Instant)>>,
}

impl Channels {
    /// Keeps an open channel; returns its token.
    pub fn keep(&self, channel: Arc<Channel>) -> String {
        let token = format!("chan-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        if let Ok(mut open) = self.open.lock() {
            open.retain(|_, (idle, since)| {
                let keep = since.elapsed() < IDLE_LIMIT;
                if !keep {
                    idle.close();
                }
                keep
            });
            open.insert(token.clone(), (channel, Instant::now()));
        }
        token
    }

    /// The channel behind a token.
    pub fn get(&self, token: &str) -> Option<Arc<Channel>> {
        let mut open = self.open.lock().ok()?;
        let (channel, used) = open.get_mut(token)?;
        *used = Instant::now();
        Some(channel.clone())
    }

    /// Closes and forgets a channel.
    pub fn end(&self, token: &str) {
        let channel = self.open.lock().ok().and_then(|mut o| o.remove(token));
        if let Some((channel, _)) = channel {
            channel.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_find_their_call_or_the_session_stream() {
        let (channel, mut sent) = Channel::new("s", Box::new(|| ()));
        let mut session = channel.open_session_stream().unwrap();
        let mut first = channel
            .start_call(
                "tools/call",
                json!({"name": "a", "_meta": {"progressToken": 7}}),
            )
            .unwrap();
        let mut second = channel
            .start_call(
                "tools/call",
                json!({"name": "b", "_meta": {"progressToken": "p"}}),
            )
            .unwrap();
        let progress = |token: Value| json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token}});
        channel.dispatch(progress(json!("p")));
        channel.dispatch(progress(json!(7)));
        channel.dispatch(json!({"jsonrpc": "2.0", "id": 1, "method": "sampling/createMessage"}));
        channel.dispatch(json!({"jsonrpc": "2.0", "id": second.id(), "result": {}}));
        assert_eq!(
            second.receiver.recv().await.unwrap()["params"]["progressToken"],
            "p"
        );
        assert_eq!(second.receiver.recv().await.unwrap()["result"], json!({}));
        assert_eq!(
            first.receiver.recv().await.unwrap()["params"]["progressToken"],
            7
        );
        assert_eq!(
            first.receiver.recv().await.unwrap()["method"],
            "sampling/createMessage",
            "server requests go to the oldest call"
        );
        drop(first);
        drop(second);
        channel.dispatch(json!({"jsonrpc": "2.0", "method": "notifications/message"}));
        assert_eq!(
            session.recv().await.unwrap()["method"],
            "notifications/message"
        );
        assert_eq!(sent.recv().await.unwrap()["params"]["name"], "a");
        assert_eq!(sent.recv().await.unwrap()["params"]["name"], "b");
        let third = channel.start_call("tools/call", json!({})).unwrap();
        channel.undeliverable(&sent.recv().await.unwrap(), "connection refused");
        let mut third = third;
        assert_eq!(
            third.receiver.recv().await.unwrap()["error"]["code"],
            -32603
        );
        channel.closed();
        assert!(session.recv().await.is_none());
        assert!(channel.start_call("x", json!({})).is_err());
    }
}
