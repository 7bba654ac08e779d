//! The MCP gateway: many MCP servers behind one streamable-HTTP endpoint per
//! MCPRoute (session-based protocol revisions 2025-03-26 to 2025-11-25).
//! One downstream session fans out to one upstream session per server;
//! tools and prompts are listed from all of them under each server's
//! prefix, and calls go to the server that owns the name. Knows nothing of
//! the LLM endpoints. The stateless revision 2026-07-28 is served on the
//! same endpoints by `stateless` (with `mrtr` and `listen`), over upstream
//! sessions kept by `upstream_cache`.

mod call_stream;
mod calls;
mod catalog;
pub mod channel;
pub mod client;
mod demo;
pub mod legacy_sse;
mod limit;
mod listen;
mod mrtr;
mod names;
pub mod oauth;
pub mod relay;
pub mod renew;
mod servers;
pub mod session;
pub mod stateless;
pub mod stdio;
pub mod stream;
mod upstream_cache;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sluice_crds::snapshot::McpRoute;

use crate::auth::authenticate;
use crate::body::ResponseBody;
use crate::gateway::Gateway;
use crate::llm::observe::{BodyKind, ObservedBody};
use crate::runtime::{BackendKind, Runtime};
use crate::telemetry::Exchange;
use calls::{
    call, end_session, forward_notification, open_stream, relay_answer, set_level, Target,
};
use catalog::{list, Kind};
use client::{McpClientError, McpServer};
use servers::initialize;
use session::{SessionState, UpstreamSession};

/// Protocol revisions served, newest first.
const VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];
/// Pages followed per upstream list.
const MAX_PAGES: usize = 50;

/// A failure answered as a JSON-RPC error.
struct McpError {
    status: StatusCode,
    code: i64,
    message: String,
    label: &'static str,
    /// `WWW-Authenticate` of a 401 or 403 (default for a 401: `Bearer`).
    challenge: Option<HeaderValue>,
}

impl McpError {
    fn new(status: StatusCode, code: i64, label: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            label,
            challenge: None,
        }
    }

    fn with_challenge(mut self, challenge: HeaderValue) -> Self {
        self.challenge = Some(challenge);
        self
    }

    fn response(&self, id: Option<&RawValue>) -> Response<ResponseBody> {
        let id: Value = id
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or(Value::Null);
        let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": self.code, "message": self.message}});
        let mut response = json_response(self.status, Bytes::from(body.to_string()));
        match &self.challenge {
            Some(challenge) => {
                response
                    .headers_mut()
                    .insert(http::header::WWW_AUTHENTICATE, challenge.clone());
            }
            None if self.status == StatusCode::UNAUTHORIZED => {
                response.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer"),
                );
            }
            None => {}
        }
        if matches!(
            self.status,
            StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::SERVICE_UNAVAILABLE
        ) {
            // Refused before the body was read: the connection cannot be reused.
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<McpClientError> for McpError {
    fn from(error: McpClientError) -> Self {
        let (status, label) = match &error {
            McpClientError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            _ => (StatusCode::BAD_GATEWAY, "upstream_failed"),
        };
        Self::new(status, -32603, label, error.to_string())
    }
}

/// A JSON-RPC message, read only as far as routing needs.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<Value>,
}

enum Served {
    /// The exchange travels inside the body.
    Upstream(Response<ResponseBody>),
    /// Answered by the gateway.
    Local(Response<ResponseBody>),
}

/// Serves one request to an MCPRoute's path.
pub async fn handle(
    gateway: &Gateway,
    runtime: Arc<Runtime>,
    route: usize,
    request: Request<Incoming>,
    mut exchange: Exchange,
) -> Response<ResponseBody> {
    let oauth = runtime.mcp_oauth.get(route).and_then(Option::as_ref);
    let route = &runtime.snapshot.mcp_routes[route];
    match serve(gateway, &runtime, route, oauth, request, &mut exchange).await {
        Ok(Served::Upstream(response)) => response,
        Ok(Served::Local(response)) => {
            exchange.record.status = response.status().as_u16();
            if exchange.record.session_id.is_none() {
                // A new session: name it as its later requests will be.
                exchange.record.session_id = response
                    .headers()
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok())
                    .map(session::log_name);
            }
            exchange.finish();
            response
        }
        Err((error, id)) => {
            exchange.record.status = error.status.as_u16();
            exchange.record.error = Some(error.label.into());
            exchange.finish();
            error.response(id.as_deref())
        }
    }
}

type Failure = (McpError, Option<Box<RawValue>>);

fn fail(error: McpError) -> Failure {
    (error, None)
}

async fn serve(
    gateway: &Gateway,
    runtime: &Arc<Runtime>,
    route: &McpRoute,
    oauth: Option<&crate::jwt::Validator>,
    request: Request<Incoming>,
    exchange: &mut Exchange,
) -> Result<Served, Failure> {
    if runtime.snapshot.listen.ip().is_loopback() && !host_is_loopback(request.headers()) {
        return Err(fail(McpError::new(
            StatusCode::FORBIDDEN,
            -32000,
            "host_not_allowed",
            "Host not allowed: a gateway listening on loopback answers only loopback host names",
        )));
    }
    if !origin_allowed(request.headers()) {
        return Err(fail(McpError::new(
            StatusCode::FORBIDDEN,
            -32000,
            "origin_not_allowed",
            "Origin not allowed: only loopback origins may call this MCP endpoint",
        )));
    }
    // A route with OAuth takes only its own access tokens (MCP
    // authorization: no other token is accepted); the others take the
    // gateway's credentials.
    let (tenant, key) = match oauth {
        Some(validator) => (
            oauth::authorize(gateway, runtime, route, validator, &request)
                .await
                .map_err(fail)?,
            None,
        ),
        None => {
            let principal = authenticate(runtime, &gateway.upstreams, request.headers())
                .await
                .map_err(|e| {
                    let code = if e.status() == StatusCode::UNAUTHORIZED {
                        -32001
                    } else {
                        -32603
                    };
                    let error = McpError::new(e.status(), code, e.code(), e.to_string());
                    fail(match e.challenge() {
                        Some(challenge) => error.with_challenge(challenge),
                        None => error,
                    })
                })?;
            (principal.tenant, principal.key)
        }
    };
    exchange.record.tenant = Some(tenant.clone());
    if exchange.record.session_id.is_none() {
        exchange.record.session_id = request
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(session::log_name);
    }

    if stateless::applies(request.headers()) {
        // The revision names the method in a header (checked against the
        // body by `stateless`): tool calls count against request limits.
        if request.headers().get("mcp-method").map(|m| m.as_bytes()) == Some(b"tools/call") {
            limit::admit_tool_call(gateway, runtime, &tenant, key.as_deref(), exchange)
                .await
                .map_err(fail)?;
        }
        return stateless::serve(gateway, runtime, route, request, &tenant, exchange).await;
    }

    match *request.method() {
        Method::POST => {}
        Method::DELETE => {
            return end_session(gateway, runtime, route, &request, &tenant)
                .await
                .map_err(fail)
        }
        Method::GET => {
            return open_stream(gateway, runtime, route, &request, &tenant, exchange)
                .await
                .map_err(fail)
        }
        _ => {
            let mut response = json_response(StatusCode::METHOD_NOT_ALLOWED, Bytes::new());
            response.headers_mut().insert(
                http::header::ALLOW,
                HeaderValue::from_static("POST, DELETE"),
            );
            return Ok(Served::Local(response));
        }
    }

    let (parts, body) = request.into_parts();
    let body = read_message(runtime, body, &parts.headers).await?;
    let message = parse_message(&body)?;
    let id = message.id.map(|raw| raw.to_owned());
    exchange.record.mcp_method = message.method.clone();
    let with_id = |error: McpError| (error, id.clone());

    if message.method.as_deref() == Some("initialize") {
        return initialize(
            gateway,
            runtime,
            route,
            &tenant,
            message.params.unwrap_or(Value::Null),
            message.id,
        )
        .await
        .map(Served::Local)
        .map_err(with_id);
    }

    let session =
        open_session(gateway, runtime, route, &parts.headers, &tenant).map_err(with_id)?;
    let (Some(method), Some(id_raw)) = (message.method.as_deref(), message.id) else {
        // A client's answer to a relayed server request, or a notification.
        let routed = match message.method.as_deref() {
            None => relay_answer(gateway, runtime, route, &session, &body).await,
            Some("notifications/initialized") => Ok(()),
            Some(_) => {
                forward_notification(gateway, runtime, route, &session, &body).await;
                Ok(())
            }
        };
        return routed
            .map(|()| Served::Local(json_response(StatusCode::ACCEPTED, Bytes::new())))
            .map_err(with_id);
    };
    let params = message.params.unwrap_or(Value::Null);
    match method {
        "ping" => Ok(Served::Local(result_response(id_raw, json!({})))),
        "tools/list" => list(gateway, runtime, route, &session, Kind::Tools, id_raw)
            .await
            .map_err(with_id),
        "prompts/list" => list(gateway, runtime, route, &session, Kind::Prompts, id_raw)
            .await
            .map_err(with_id),
        "resources/list" => list(gateway, runtime, route, &session, Kind::Resources, id_raw)
            .await
            .map_err(with_id),
        "resources/templates/list" => list(
            gateway,
            runtime,
            route,
            &session,
            Kind::ResourceTemplates,
            id_raw,
        )
        .await
        .map_err(with_id),
        "logging/setLevel" => {
            set_level(gateway, runtime, route, &session, params).await;
            Ok(Served::Local(result_response(id_raw, json!({}))))
        }
        "tools/call"
        | "prompts/get"
        | "resources/read"
        | "resources/subscribe"
        | "resources/unsubscribe"
        | "completion/complete" => {
            let target = match method {
                "tools/call" => Target::of(Kind::Tools),
                "prompts/get" => Target::of(Kind::Prompts),
                "completion/complete" => Target::completion(&params),
                _ => Target::of(Kind::Resources),
            };
            if method == "tools/call" {
                limit::admit_tool_call(gateway, runtime, &tenant, key.as_deref(), exchange)
                    .await
                    .map_err(with_id)?;
            }
            call(
                gateway, runtime, route, &session, target, method, params, id_raw, exchange,
            )
            .await
            .map_err(with_id)
        }
        other => Err(with_id(McpError::new(
            StatusCode::OK,
            -32601,
            "method_not_found",
            format!("Method not found: `{other}` is not supported by this gateway yet"),
        ))),
    }
}

/// Reads a POST body (bounded by `maxRequestBody`): one JSON-RPC message,
/// not a batch.
async fn read_message(
    runtime: &Runtime,
    body: Incoming,
    headers: &http::HeaderMap,
) -> Result<Bytes, Failure> {
    let body = crate::llm::read_body(body, headers, runtime.snapshot.max_request_body)
        .await
        .map_err(|e| fail(McpError::new(e.status(), -32600, e.code(), e.to_string())))?;
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(fail(McpError::new(
            StatusCode::BAD_REQUEST,
            -32600,
            "bad_request",
            "JSON-RPC batches are not supported (removed in MCP 2025-06-18)",
        )));
    }
    Ok(body)
}

/// The message, read as far as routing needs; -32700 when it is not JSON.
fn parse_message(body: &[u8]) -> Result<Message<'_>, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        fail(McpError::new(
            StatusCode::BAD_REQUEST,
            -32700,
            "bad_request",
            format!("Parse error: {e}"),
        ))
    })
}

/// Loopback origins only (DNS-rebinding protection); no Origin is fine
/// (non-browser clients send none).
fn origin_allowed(headers: &http::HeaderMap) -> bool {
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    is_loopback_name(rest.split('/').next().unwrap_or_default())
}

/// The second guard against DNS rebinding, for a gateway on loopback: the
/// `Host` the client addressed must be a loopback name (HTTP/2 sends no Host;
/// its authority was checked by the client's own resolver, so it passes).
fn host_is_loopback(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::HOST)
        .is_none_or(|host| host.to_str().is_ok_and(is_loopback_name))
}

/// `localhost`, `127.0.0.1` or `[::1]`, with or without a port.
fn is_loopback_name(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn open_session(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    headers: &http::HeaderMap,
    tenant: &str,
) -> Result<SessionState, McpError> {
    let Some(id) = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()) else {
        return Err(McpError::new(
            StatusCode::BAD_REQUEST,
            -32000,
            "bad_request",
            "Bad Request: the Mcp-Session-Id header is required after initialize",
        ));
    };
    if let Some(version) = headers.get("mcp-protocol-version") {
        if !VERSIONS.iter().any(|v| version.as_bytes() == v.as_bytes()) {
            return Err(McpError::new(
                StatusCode::BAD_REQUEST,
                -32000,
                "bad_request",
                format!(
                    "Bad Request: unsupported MCP-Protocol-Version; supported: {}",
                    VERSIONS.join(", ")
                ),
            ));
        }
    }
    runtime
        .session_codec
        .open(id)
        .filter(|s| s.route == *route.name && s.tenant == tenant)
        .filter(|_| !gateway.mcp_renewals.is_ended(id))
        .ok_or_else(|| {
            McpError::new(
                StatusCode::NOT_FOUND,
                -32001,
                "session_not_found",
                "Session not found: initialize again",
            )
        })
}

fn result_response(id: &RawValue, result: Value) -> Response<ResponseBody> {
    let id: Value = serde_json::from_str(id.get()).unwrap_or(Value::Null);
    let body = json!({"jsonrpc": "2.0", "id": id, "result": result});
    json_response(StatusCode::OK, Bytes::from(body.to_string()))
}

fn json_response(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let empty = body.is_empty();
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    if !empty {
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_origins_pass() {
        let check = |origin: Option<&str>| {
            let mut headers = http::HeaderMap::new();
            if let Some(origin) = origin {
                headers.insert(http::header::ORIGIN, origin.parse().unwrap());
            }
            origin_allowed(&headers)
        };
        assert!(check(None));
        assert!(check(Some("http://localhost:6274")));
        assert!(check(Some("http://127.0.0.1")));
        assert!(check(Some("http://[::1]:8080")));
        assert!(!check(Some("http://evil.example.com")));
        assert!(!check(Some("http://localhost.evil.com")));
        assert!(!check(Some("null")));
        assert!(check(Some("http://127.0.0.2:1975")));

        let host = |value: Option<&str>| {
            let mut headers = http::HeaderMap::new();
            if let Some(value) = value {
                headers.insert(http::header::HOST, value.parse().unwrap());
            }
            host_is_loopback(&headers)
        };
        assert!(
            host(None)
                && host(Some("127.0.0.1:1975"))
                && host(Some("localhost"))
                && host(Some("[::1]:80"))
        );
        assert!(
            !host(Some("evil.example.com"))
                && !host(Some("evil.example.com:1975"))
                && !host(Some("10.0.0.1"))
        );
    }
}
