//! `subscriptions/listen` for stateless (2026-07-28) clients: a long-lived
//! POST answered with an SSE stream that first acknowledges the filter it
//! honours, then carries the list changes (and updates of subscribed
//! resources) of the servers behind the route, each tagged with the listen
//! request's id. The changes come from the servers' own streams (`GET`) on
//! the upstream sessions the gateway keeps for such clients: one feed per
//! set of sessions, read by one task while any listener needs it (a server
//! allows one stream per session), fanned out to every listener. Knows
//! nothing of calls or lists.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode};
use http_body::{Body, Frame};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sluice_crds::snapshot::McpRoute;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};

use super::catalog::{owner, Kind};
use super::servers::{joined, server, upstream_of, Upstream};
use super::upstream_cache::{Entry, Ready};
use super::*;
use crate::body::BoxError;
use crate::llm::sse::next_event_len;
use crate::upstream::Pool;

/// A comment line this often keeps idle streams open through proxies.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Changes queued per listener before it misses some.
const QUEUE: usize = 256;
/// Longest wait before a server's stream is opened again.
const MAX_RETRY: Duration = Duration::from_secs(30);

const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// One change a server announced.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Change {
    position: usize,
    method: String,
    /// The server's own URI, for `notifications/resources/updated`.
    uri: Option<String>,
}

type Listeners = Arc<Mutex<Vec<mpsc::Sender<Change>>>>;

/// The changes of one set of upstream sessions, while someone listens.
/// Dropping the last handle stops the task that reads them.
pub struct Feed {
    listeners: Listeners,
    _stop: DropGuard,
}

impl Feed {
    fn start(
        gateway: &Gateway,
        runtime: &Arc<Runtime>,
        route: &McpRoute,
        ready: &Ready,
    ) -> Arc<Self> {
        let listeners: Listeners = Arc::default();
        let index = runtime
            .snapshot
            .mcp_routes
            .iter()
            .position(|r| std::ptr::eq(r, route))
            .unwrap_or_default();
        let sources: Vec<_> = joined(gateway, runtime, route, &ready.session)
            .into_iter()
            .filter_map(|j| {
                let session = j.current?;
                Some(follow(
                    runtime.clone(),
                    gateway.upstreams.clone(),
                    index,
                    j.position,
                    session,
                    j.upstream.version.clone(),
                    listeners.clone(),
                ))
            })
            .collect();
        let stop = CancellationToken::new();
        if !sources.is_empty() {
            let cancelled = stop.clone();
            // Owned by the feed: dropping it cancels the token.
            tokio::spawn(async move {
                tokio::select! {
                    () = cancelled.cancelled() => {}
                    _ = futures_util::future::join_all(sources) => {}
                }
            });
        }
        Arc::new(Self {
            listeners,
            _stop: stop.drop_guard(),
        })
    }
}

/// Reads one server's stream for a session, opening it again after it
/// ends, until the server says it has none.
async fn follow(
    runtime: Arc<Runtime>,
    pool: Arc<Pool>,
    route: usize,
    position: usize,
    session: String,
    version: String,
    listeners: Listeners,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        let Some(route) = runtime.snapshot.mcp_routes.get(route) else {
            return;
        };
        let Some(Upstream::Http(server)) = server(&runtime, route, position) else {
            return;
        };
        match server
            .open_stream(&pool, Some(&session), Some(&version), None)
            .await
        {
            Ok(reply) if reply.response.status().is_success() && reply.is_sse() => {
                delay = Duration::from_secs(1);
                let client::Reply { response, conn } = reply;
                read_changes(response.into_body(), conn, position, &listeners).await;
            }
            Ok(reply) => {
                let status = reply.response.status();
                if matches!(status.as_u16(), 400 | 404 | 405) {
                    tracing::debug!(backend = server.name, %status, "no change stream from this MCP server");
                    return;
                }
            }
            Err(error) => tracing::debug!(%error, "change stream of an MCP server failed"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RETRY);
    }
}

async fn read_changes(
    mut body: hyper::body::Incoming,
    mut conn: Box<crate::upstream::Conn>,
    position: usize,
    listeners: &Listeners,
) {
    let mut buffer = BytesMut::new();
    loop {
        let frame = std::future::poll_fn(|cx| {
            conn.drive(cx);
            Pin::new(&mut body).poll_frame(cx)
        })
        .await;
        let Some(Ok(frame)) = frame else {
            return;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        while let Some(len) = next_event_len(&buffer) {
            let event = buffer.split_to(len);
            if let Some(change) = change_of(&event, position) {
                if let Ok(mut senders) = listeners.lock() {
                    senders.retain(|tx| !tx.is_closed());
                    for tx in senders.iter() {
                        // A listener that does not keep up misses changes.
                        let _ = tx.try_send(change.clone());
                    }
                }
            }
        }
    }
}

/// The change an upstream SSE event announces, if it is one.
fn change_of(event: &[u8], position: usize) -> Option<Change> {
    let text = std::str::from_utf8(event).ok()?;
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    let message: Value = serde_json::from_str(&data.join("\n")).ok()?;
    let method = message.get("method")?.as_str()?;
    if message.get("id").is_some() {
        return None;
    }
    match method {
        "notifications/tools/list_changed"
        | "notifications/prompts/list_changed"
        | "notifications/resources/list_changed" => Some(Change {
            position,
            method: method.to_owned(),
            uri: None,
        }),
        "notifications/resources/updated" => Some(Change {
            position,
            method: method.to_owned(),
            uri: Some(message.pointer("/params/uri")?.as_str()?.to_owned()),
        }),
        _ => None,
    }
}

/// What one listener asked for and was granted.
struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
    /// Subscribed resources: route position and the server's own URI.
    subscribed: Vec<(usize, String)>,
}

/// Opens a listen stream.
#[allow(clippy::too_many_arguments)]
pub(super) async fn listen(
    gateway: &Gateway,
    runtime: &Arc<Runtime>,
    route: &McpRoute,
    entry: &Arc<Entry>,
    ready: &Ready,
    params: Value,
    id: &RawValue,
    exchange: &mut Exchange,
) -> Result<Served, McpError> {
    let Some(wanted) = params.get("notifications").filter(|n| n.is_object()) else {
        return Err(McpError::new(
            StatusCode::BAD_REQUEST,
            -32602,
            "bad_request",
            "Invalid params: params.notifications (the subscription filter) is required",
        ));
    };
    let wants = |field: &str| wanted.get(field).and_then(Value::as_bool) == Some(true);
    // Honoured only where a server of the route announces such changes.
    let offers = |kind: &str| {
        ready.capabilities.pointer(&format!("/{kind}/listChanged")) == Some(&Value::Bool(true))
    };
    let mut filter = Filter {
        tools: wants("toolsListChanged") && offers("tools"),
        prompts: wants("promptsListChanged") && offers("prompts"),
        resources: wants("resourcesListChanged") && offers("resources"),
        subscribed: Vec::new(),
    };
    let mut honoured_uris = Vec::new();
    let uris = wanted
        .get("resourceSubscriptions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for uri in uris.iter().filter_map(Value::as_str) {
        if let Some(inward) = subscribe(gateway, runtime, route, ready, uri).await {
            filter.subscribed.push(inward);
            honoured_uris.push(uri.to_owned());
        }
    }
    let feed = {
        let mut slot = entry.feed.lock().map_err(|_| {
            McpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                -32603,
                "internal",
                "feed lock",
            )
        })?;
        match slot.upgrade() {
            Some(feed) => feed,
            None => {
                let feed = Feed::start(gateway, runtime, route, ready);
                *slot = Arc::downgrade(&feed);
                feed
            }
        }
    };
    let (sender, changes) = mpsc::channel(QUEUE);
    if let Ok(mut listeners) = feed.listeners.lock() {
        listeners.push(sender);
    }
    let mut honoured = serde_json::Map::new();
    for (field, granted) in [
        ("toolsListChanged", filter.tools),
        ("promptsListChanged", filter.prompts),
        ("resourcesListChanged", filter.resources),
    ] {
        if granted {
            honoured.insert(field.into(), Value::Bool(true));
        }
    }
    if !honoured_uris.is_empty() {
        honoured.insert("resourceSubscriptions".into(), json!(honoured_uris));
    }
    let subscription: Value = serde_json::from_str(id.get()).unwrap_or(Value::Null);
    let acknowledged = json!({
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": {"notifications": honoured, "_meta": {SUBSCRIPTION_ID: subscription}},
    });
    let mut out = BytesMut::new();
    event(&mut out, &acknowledged);
    let mut streamed = exchange.hand_off();
    streamed.record.status = 200;
    let body = ListenBody {
        out,
        changes,
        filter,
        prefixes: route.backends.iter().map(|b| b.prefix.clone()).collect(),
        subscription,
        _feed: feed,
        draining: Box::pin(gateway.mcp_stateless.draining.clone().cancelled_owned()),
        keepalive: Box::pin(tokio::time::sleep(KEEPALIVE)),
        exchange: Some(streamed),
        ended: false,
    };
    let mut response = Response::new(ResponseBody::Stateless(Box::new(
        super::stateless::StatelessBody::Listen(body),
    )));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(Served::Upstream(response))
}

/// Subscribes the server that owns `uri` to its updates (on the shared
/// session: kept until the session goes); the position and the server's
/// URI when it agreed.
async fn subscribe(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    ready: &Ready,
    uri: &str,
) -> Option<(usize, String)> {
    let (position, inward) = owner(
        gateway,
        runtime,
        route,
        &ready.session,
        Kind::Resources,
        uri,
    )
    .await?;
    let Upstream::Http(server) = server(runtime, route, position)? else {
        return None;
    };
    let upstream = upstream_of(&ready.session, runtime, route, position)?;
    let current = gateway.mcp_renewals.current(upstream.session.as_deref());
    match server
        .request(
            &gateway.upstreams,
            current.as_deref(),
            Some(&upstream.version),
            "resources/subscribe",
            json!({"uri": inward}),
        )
        .await
    {
        Ok(_) => Some((position, inward)),
        Err(error) => {
            tracing::debug!(%error, "resource subscription refused");
            None
        }
    }
}

fn event(out: &mut BytesMut, message: &Value) {
    out.extend_from_slice(b"event: message\ndata: ");
    out.extend_from_slice(message.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// A listen stream on its way to the client.
pub struct ListenBody {
    out: BytesMut,
    changes: mpsc::Receiver<Change>,
    filter: Filter,
    /// Each route position's prefix, for the URIs of resource updates.
    prefixes: Vec<Option<String>>,
    subscription: Value,
    _feed: Arc<Feed>,
    draining: Pin<Box<WaitForCancellationFutureOwned>>,
    keepalive: Pin<Box<Sleep>>,
    exchange: Option<Exchange>,
    ended: bool,
}

impl ListenBody {
    /// The notification a change becomes for this listener, if it wants it.
    fn notification(&self, change: &Change) -> Option<Value> {
        let mut params = serde_json::Map::new();
        let wanted = match change.method.as_str() {
            "notifications/tools/list_changed" => self.filter.tools,
            "notifications/prompts/list_changed" => self.filter.prompts,
            "notifications/resources/list_changed" => self.filter.resources,
            "notifications/resources/updated" => {
                let uri = change.uri.as_deref()?;
                // An update may name a sub-resource of the one subscribed.
                let subscribed = self
                    .filter
                    .subscribed
                    .iter()
                    .any(|(p, s)| *p == change.position && uri.starts_with(s.as_str()));
                let prefix = self.prefixes.get(change.position)?.as_deref();
                params.insert(
                    "uri".into(),
                    Value::String(names::outward(prefix, names::URI_SEPARATOR, uri)),
                );
                subscribed
            }
            _ => false,
        };
        if !wanted {
            return None;
        }
        params.insert("_meta".into(), json!({SUBSCRIPTION_ID: self.subscription}));
        Some(json!({"jsonrpc": "2.0", "method": change.method, "params": params}))
    }
}

impl Body for ListenBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if !this.ended {
            if this.draining.as_mut().poll(cx).is_ready() {
                // The gateway stops: the graceful end of a subscription.
                let end = json!({"jsonrpc": "2.0", "id": this.subscription, "result": {
                    "resultType": "complete", "_meta": {SUBSCRIPTION_ID: this.subscription}}});
                event(&mut this.out, &end);
                this.ended = true;
            }
            while let Poll::Ready(Some(change)) = this.changes.poll_recv(cx) {
                if let Some(message) = this.notification(&change) {
                    event(&mut this.out, &message);
                }
            }
            while this.keepalive.as_mut().poll(cx).is_ready() {
                this.out.extend_from_slice(b": keepalive\n\n");
                let next = Instant::now() + KEEPALIVE;
                this.keepalive.as_mut().reset(next);
            }
        }
        super::stream::flush_or_end(&mut this.out, &mut this.exchange, this.ended)
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.out.is_empty() && self.exchange.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_changes_from_server_events() {
        let event = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\n";
        assert_eq!(
            change_of(event, 2),
            Some(Change {
                position: 2,
                method: "notifications/tools/list_changed".into(),
                uri: None
            })
        );
        let updated = b"data: {\"method\":\"notifications/resources/updated\",\"params\":{\"uri\":\"demo://r/1\"}}\n\n";
        assert_eq!(
            change_of(updated, 0).unwrap().uri.as_deref(),
            Some("demo://r/1")
        );
        assert_eq!(
            change_of(
                b"data: {\"method\":\"notifications/message\",\"params\":{}}\n\n",
                0
            ),
            None
        );
        assert_eq!(
            change_of(b"data: {\"id\":1,\"method\":\"roots/list\"}\n\n", 0),
            None
        );
    }
}
