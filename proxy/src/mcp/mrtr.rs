//! Calls from stateless (2026-07-28) clients, `tools/call`, `prompts/get`
//! and `resources/read`, and Multi Round-Trip Requests (MRTR). The call goes
//! to the server that owns the name, on the upstream session kept for the
//! client, under an id the gateway mints (the session is shared, so client
//! ids could collide). The server's answer streams back with the client's id
//! and `resultType`. When the server asks the client something during the
//! call (`elicitation/create`, `sampling/createMessage`, `roots/list`) and
//! the client declared that capability, the gateway answers the client with
//! an `input_required` result and keeps the server's stream open in this
//! process, under a random id sealed into `requestState`; the client's retry
//! brings `inputResponses`, which go to the server as its answers, and the
//! same stream goes on (`call_stream` reads it). Knows nothing of lists or
//! listen streams.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sluice_crds::snapshot::McpRoute;
use tokio::time::Instant;

use super::call_stream::{answer_bytes, answer_upstream, Asked, CallBody, Held, Origin};
use super::catalog::{owner, Kind};
use super::servers::{reinitialize, server, session_gone, upstream_of, Upstream};
use super::stateless::{complete_response, strip_meta, Envelope};
use super::upstream_cache::Ready;
use super::*;

/// Associated data of a sealed `requestState`.
const STATE_LABEL: &[u8] = b"sluice mcp request state v1";
/// How long a call waits for the client's input.
const INPUT_WAIT: Duration = Duration::from_secs(10 * 60);
/// Calls waiting for input, at most, per process.
const MAX_WAITING: usize = 10_000;

/// What the call is.
pub(super) struct Call<'a> {
    pub(super) route: &'a McpRoute,
    pub(super) tenant: &'a str,
    pub(super) kind: Kind,
    pub(super) method: &'a str,
    pub(super) envelope: &'a Envelope,
}

/// What a sealed `requestState` says.
#[derive(Serialize, Deserialize)]
struct Claims {
    /// The waiting call's id in this process.
    #[serde(rename = "p")]
    pending: String,
    #[serde(rename = "r")]
    route: String,
    #[serde(rename = "t")]
    tenant: String,
    #[serde(rename = "m")]
    method: String,
    /// The outward name or URI called.
    #[serde(rename = "n")]
    name: String,
    /// Unix seconds after which it is refused.
    #[serde(rename = "e")]
    expires: u64,
}

/// A call waiting for the client's input.
struct Parked {
    held: Held,
    asked: Vec<Asked>,
    origin: Arc<Origin>,
    until: Instant,
}

/// The calls of this process that wait for input, by random id.
#[derive(Default)]
pub struct Pending {
    calls: Mutex<HashMap<String, Parked>>,
}

impl Pending {
    /// Keeps a call; returns its sealed `requestState`, or `None` when full.
    pub(super) fn park(
        &self,
        held: Held,
        asked: Vec<Asked>,
        origin: Arc<Origin>,
    ) -> Option<(String, Vec<Asked>)> {
        let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let expires = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            + INPUT_WAIT.as_secs();
        let claims = Claims {
            pending: id.clone(),
            route: origin
                .runtime
                .snapshot
                .mcp_routes
                .get(origin.route)?
                .name
                .to_string(),
            tenant: origin.tenant.clone(),
            method: origin.method.clone(),
            name: origin.name.clone(),
            expires,
        };
        let state = origin.runtime.session_codec.seal_as(STATE_LABEL, &claims);
        // What the client is asked goes out; what the server needs back stays.
        let questions = asked
            .iter()
            .map(|a| Asked {
                key: a.key.clone(),
                upstream_id: Value::Null,
                method: a.method.clone(),
                params: a.params.clone(),
            })
            .collect();
        let mut calls = self.calls.lock().ok()?;
        let now = Instant::now();
        // Dropping a call closes its server stream.
        calls.retain(|_, parked| parked.until > now);
        if calls.len() >= MAX_WAITING {
            return None;
        }
        calls.insert(
            id,
            Parked {
                held,
                asked,
                origin,
                until: now + INPUT_WAIT,
            },
        );
        Some((state, questions))
    }

    fn take(&self, id: &str) -> Option<Parked> {
        self.calls
            .lock()
            .ok()?
            .remove(id)
            .filter(|parked| parked.until > Instant::now())
    }
}

/// The gateway's ids for calls, unique in the process.
fn next_upstream_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("\"sluice-{}\"", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn invalid(label: &'static str, message: impl Into<String>) -> McpError {
    McpError::new(StatusCode::BAD_REQUEST, -32602, label, message)
}

/// Serves a call.
pub(super) async fn call(
    gateway: &Gateway,
    runtime: &Arc<Runtime>,
    ready: &Ready,
    call: Call<'_>,
    mut params: Value,
    id: &RawValue,
    exchange: &mut Exchange,
) -> Result<Served, McpError> {
    let kind = call.kind;
    let state = params
        .as_object_mut()
        .and_then(|p| p.remove("requestState"));
    let responses = params
        .as_object_mut()
        .and_then(|p| p.remove("inputResponses"));
    strip_meta(&mut params);
    let name = params
        .get(kind.field())
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(state) = state {
        return resume(
            gateway, runtime, &call, &name, state, responses, id, exchange,
        )
        .await;
    }
    let unknown = |name: &str| invalid("unknown_name", format!("Unknown {}: {name}", kind.what()));
    let route = call.route;
    let session = &ready.session;
    let (position, upstream_name) = owner(gateway, runtime, route, session, kind, &name)
        .await
        .ok_or_else(|| unknown(&name))?;
    let backend = &route.backends[position];
    if kind == Kind::Tools
        && (!backend.exposes(&upstream_name) || !route.allows(call.tenant, &name))
    {
        return Err(unknown(&name));
    }
    let (Some(server), Some(upstream)) = (
        server(runtime, route, position),
        upstream_of(session, runtime, route, position),
    ) else {
        return Err(unknown(&name));
    };
    let backend_name = runtime.backends[backend.backend].name.clone();
    exchange.record.upstream = Some(backend_name.clone());
    let tool = (kind == Kind::Tools).then(|| upstream_name.clone());
    exchange.record.tool = tool.clone();
    params[kind.field()] = Value::String(upstream_name.clone());
    let server = match server {
        Upstream::Http(server) => server,
        Upstream::Demo(_) => {
            let arguments = params.get("arguments").cloned().unwrap_or(Value::Null);
            let result = (kind == Kind::Tools)
                .then(|| demo::call(&upstream_name, &arguments))
                .flatten()
                .and_then(|v| match v {
                    Value::Object(map) => Some(map),
                    _ => None,
                })
                .ok_or_else(|| unknown(&name))?;
            return Ok(Served::Local(complete_response(id, result)));
        }
        Upstream::Stdio { .. } | Upstream::LegacySse(_) => {
            let (server_name, timeout) = server.channel_timeout().unwrap_or_default();
            let process =
                super::servers::channel_of(gateway, server_name, upstream).map_err(|_| {
                    McpError::new(
                        StatusCode::BAD_GATEWAY,
                        -32603,
                        "upstream_failed",
                        format!("the session of {server_name} behind these sessions is gone"),
                    )
                })?;
            let answer = process.request(call.method, params, timeout).await?;
            let body = answer_bytes(id.get(), answer.to_string().as_bytes(), call.method)
                .unwrap_or_default();
            return Ok(Served::Local(json_response(StatusCode::OK, body)));
        }
    };
    let upstream_id = next_upstream_id();
    let message = format!(
        r#"{{"jsonrpc":"2.0","id":{upstream_id},"method":{},"params":{params}}}"#,
        Value::String(call.method.to_owned())
    );
    let message = Bytes::from(message);
    let mut current = gateway.mcp_renewals.current(upstream.session.as_deref());
    let mut reply = server
        .post(
            &gateway.upstreams,
            current.as_deref(),
            Some(&upstream.version),
            message.clone(),
        )
        .await?;
    let status = reply.response.status();
    if upstream.session.is_some()
        && (status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST)
    {
        let body = reply.read().await.unwrap_or_default();
        if !session_gone(status, upstream, &body) {
            return Ok(Served::Local(refused(status, id.get(), &body)));
        }
        let fresh = reinitialize(gateway, &server, upstream, &session.client).await?;
        reply = server
            .post(
                &gateway.upstreams,
                Some(&fresh),
                Some(&upstream.version),
                message,
            )
            .await?;
        current = Some(fresh);
    }
    let status = reply.response.status();
    if !status.is_success() {
        let body = reply.read().await.unwrap_or_default();
        exchange.record.error = Some("upstream_status".into());
        return Ok(Served::Local(refused(status, id.get(), &body)));
    }
    if !reply.is_sse() {
        let body = tokio::time::timeout(server.timeout, reply.read())
            .await
            .map_err(|_| McpClientError::Timeout(server.name.to_owned()))?
            .map_err(|e| McpClientError::Unreachable(server.name.to_owned(), e))?;
        let answer = answer_bytes(id.get(), &body, call.method).ok_or_else(|| {
            McpClientError::Malformed(server.name.to_owned(), "not a JSON-RPC response".into())
        })?;
        return Ok(Served::Local(json_response(StatusCode::OK, answer)));
    }
    let client::Reply { response, conn } = reply;
    let held = Held {
        body: response.into_body(),
        conn,
        buffer: BytesMut::new(),
        upstream_id,
        position,
        session: current,
        version: upstream.version.clone(),
        timeout: server.timeout,
    };
    let origin = Arc::new(Origin {
        runtime: runtime.clone(),
        pool: gateway.upstreams.clone(),
        pending: gateway.mcp_stateless.pending.clone(),
        route: route_index(runtime, route),
        tenant: call.tenant.to_owned(),
        method: call.method.to_owned(),
        name,
        capabilities: call.envelope.capabilities.clone(),
        log: call.envelope.log,
        backend: backend_name,
        tool,
    });
    Ok(streamed(CallBody::new(held, origin, id.get(), exchange)))
}

/// A call's retry with `inputResponses` and the `requestState` it was given.
#[allow(clippy::too_many_arguments)]
async fn resume(
    gateway: &Gateway,
    runtime: &Arc<Runtime>,
    call: &Call<'_>,
    name: &str,
    state: Value,
    responses: Option<Value>,
    id: &RawValue,
    exchange: &mut Exchange,
) -> Result<Served, McpError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims: Claims = state
        .as_str()
        .and_then(|s| runtime.session_codec.open_as(STATE_LABEL, s))
        .filter(|c: &Claims| {
            c.route == *call.route.name
                && c.tenant == call.tenant
                && c.method == call.method
                && c.name == name
        })
        .ok_or_else(|| {
            invalid(
                "invalid_request_state",
                "Invalid params: requestState was not issued by this gateway for this request",
            )
        })?;
    let parked = (claims.expires > now)
        .then(|| gateway.mcp_stateless.pending.take(&claims.pending))
        .flatten()
        .ok_or_else(|| {
            invalid(
                "request_state_gone",
                "Invalid params: the call this requestState continues is not waiting on this gateway \
                 process (it runs on another replica, waited too long, or was answered already); \
                 send the request again without requestState and inputResponses",
            )
        })?;
    let Parked {
        held,
        asked,
        origin,
        ..
    } = parked;
    exchange.record.upstream = Some(origin.backend.clone());
    exchange.record.tool = origin.tool.clone();
    let responses = responses.unwrap_or(Value::Null);
    let mut missing = Vec::new();
    let mut answers = Vec::new();
    for question in asked {
        match responses.get(&question.key) {
            Some(answer) => answers.push(answer_upstream(
                &origin,
                &held,
                json!({"jsonrpc": "2.0", "id": question.upstream_id, "result": answer}).to_string(),
            )),
            None => missing.push(question),
        }
    }
    futures_util::future::join_all(answers).await;
    let mut body = CallBody::new(held, origin, id.get(), exchange);
    if !missing.is_empty() {
        // Asked again for what the retry left out, as the revision wants.
        body.asked = missing;
        body.park();
    }
    Ok(streamed(body))
}

/// A call's answer as an SSE response.
fn streamed(body: CallBody) -> Served {
    let mut response = Response::new(ResponseBody::Stateless(Box::new(
        super::stateless::StatelessBody::Call(body),
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
    Served::Upstream(response)
}

/// The route's position in the running config.
fn route_index(runtime: &Runtime, route: &McpRoute) -> usize {
    runtime
        .snapshot
        .mcp_routes
        .iter()
        .position(|r| std::ptr::eq(r, route))
        .unwrap_or_default()
}

/// A server's refusal, its JSON-RPC id made the client's.
fn refused(status: StatusCode, client_id: &str, body: &[u8]) -> Response<ResponseBody> {
    match answer_bytes(client_id, body, "") {
        Some(answer) => json_response(status, answer),
        None => {
            let error = json!({"jsonrpc": "2.0", "id": serde_json::from_str::<Value>(client_id).unwrap_or(Value::Null),
                "error": {"code": -32603, "message": format!("the MCP server answered HTTP {}", status.as_u16())}});
            json_response(StatusCode::BAD_GATEWAY, Bytes::from(error.to_string()))
        }
    }
}
