//! The MCP gateway: many MCP servers behind one streamable-HTTP endpoint per
//! MCPRoute (session-based protocol revisions 2025-03-26 to 2025-11-25).
//! One downstream session fans out to one upstream session per server;
//! tools and prompts are listed from all of them under each server's
//! prefix, and calls go to the server that owns the name. Knows nothing of
//! the LLM endpoints.

pub mod client;
mod demo;
mod names;
pub mod relay;
pub mod renew;
pub mod session;

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
use client::{McpClientError, McpServer};
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
}

impl McpError {
    fn new(status: StatusCode, code: i64, label: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            label,
        }
    }

    fn response(&self, id: Option<&RawValue>) -> Response<ResponseBody> {
        let id: Value = id
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or(Value::Null);
        let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": self.code, "message": self.message}});
        let mut response = json_response(self.status, Bytes::from(body.to_string()));
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
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
    let route = &runtime.snapshot.mcp_routes[route];
    match serve(gateway, &runtime, route, request, &mut exchange).await {
        Ok(Served::Upstream(response)) => response,
        Ok(Served::Local(response)) => {
            exchange.record.status = response.status().as_u16();
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
    request: Request<Incoming>,
    exchange: &mut Exchange,
) -> Result<Served, Failure> {
    if !origin_allowed(request.headers()) {
        return Err(fail(McpError::new(
            StatusCode::FORBIDDEN,
            -32000,
            "origin_not_allowed",
            "Origin not allowed: only loopback origins may call this MCP endpoint",
        )));
    }
    let principal = authenticate(runtime, request.headers()).map_err(|e| {
        fail(McpError::new(
            StatusCode::UNAUTHORIZED,
            -32001,
            "invalid_api_key",
            e.to_string(),
        ))
    })?;
    exchange.record.tenant = Some(principal.tenant.clone());
    let tenant = principal.tenant;

    match *request.method() {
        Method::POST => {}
        Method::DELETE => {
            return end_session(gateway, runtime, route, &request, &tenant)
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
    let body = crate::llm::read_body(body, &parts.headers, runtime.snapshot.max_request_body)
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
    let message: Message<'_> = serde_json::from_slice(&body).map_err(|e| {
        fail(McpError::new(
            StatusCode::BAD_REQUEST,
            -32700,
            "bad_request",
            format!("Parse error: {e}"),
        ))
    })?;
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

    let session = open_session(runtime, route, &parts.headers, &tenant).map_err(with_id)?;
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
        "resources/read" => call(
            gateway,
            runtime,
            route,
            &session,
            Kind::Resources,
            method,
            params,
            id_raw,
            exchange,
        )
        .await
        .map_err(with_id),
        "tools/call" | "prompts/get" => {
            let kind = if method == "tools/call" {
                Kind::Tools
            } else {
                Kind::Prompts
            };
            call(
                gateway, runtime, route, &session, kind, method, params, id_raw, exchange,
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
    let host = rest.split('/').next().unwrap_or_default();
    let host = if host.starts_with('[') {
        host.split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default().to_owned()
    };
    matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
}

fn open_session(
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
    runtime
        .session_codec
        .open(id)
        .filter(|s| s.route == *route.name && s.tenant == tenant)
        .ok_or_else(|| {
            McpError::new(
                StatusCode::NOT_FOUND,
                -32001,
                "session_not_found",
                "Session not found: initialize again",
            )
        })
}

/// A server of a route: a real one over HTTP, or the built-in demo.
enum Upstream<'a> {
    Http(McpServer<'a>),
    Demo(&'a str),
}

/// The server at a route position.
fn server<'a>(runtime: &'a Runtime, route: &McpRoute, position: usize) -> Option<Upstream<'a>> {
    let backend = &runtime.backends[route.backends.get(position)?.backend];
    match &backend.kind {
        BackendKind::Mcp { url, credential } => Some(Upstream::Http(McpServer {
            name: &backend.name,
            url,
            credential: credential.as_ref(),
            timeout: backend.timeout,
        })),
        BackendKind::Demo => Some(Upstream::Demo(&backend.name)),
        BackendKind::Http { .. } => None,
    }
}

async fn initialize(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    tenant: &str,
    params: Value,
    id: Option<&RawValue>,
) -> Result<Response<ResponseBody>, McpError> {
    let requested = params
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or(VERSIONS[0]);
    let version = VERSIONS
        .iter()
        .find(|v| **v == requested)
        .copied()
        .unwrap_or(VERSIONS[0]);
    let pool = &gateway.upstreams;
    let attempts = (0..route.backends.len())
        .filter_map(|position| server(runtime, route, position))
        .map(|server| {
            let params = params.clone();
            async move {
                let server = match server {
                    Upstream::Http(server) => server,
                    Upstream::Demo(name) => {
                        let upstream = UpstreamSession {
                            backend: name.to_owned(),
                            session: None,
                            version: version.to_owned(),
                        };
                        return Ok((upstream, json!({"tools": {}})));
                    }
                };
                let (result, session) = server
                    .request(pool, None, None, "initialize", params)
                    .await?;
                let agreed = result
                    .get("protocolVersion")
                    .and_then(Value::as_str)
                    .unwrap_or(version)
                    .to_owned();
                server
                    .notify(
                        pool,
                        session.as_deref(),
                        Some(&agreed),
                        "notifications/initialized",
                    )
                    .await?;
                let upstream = UpstreamSession {
                    backend: server.name.to_owned(),
                    session,
                    version: agreed,
                };
                Ok::<_, McpClientError>((
                    upstream,
                    result.get("capabilities").cloned().unwrap_or(Value::Null),
                ))
            }
        });
    let outcomes = futures_util::future::join_all(attempts).await;

    let mut upstreams = Vec::new();
    let (mut tools, mut prompts, mut resources) = (false, false, false);
    for outcome in outcomes {
        match outcome {
            Ok((upstream, capabilities)) => {
                tools |= capabilities.get("tools").is_some();
                prompts |= capabilities.get("prompts").is_some();
                resources |= capabilities.get("resources").is_some();
                upstreams.push(upstream);
            }
            Err(error) => {
                tracing::warn!(route = %route.name, %error, "MCP server skipped: it failed to initialise")
            }
        }
    }
    if upstreams.is_empty() {
        return Err(McpError::new(
            StatusCode::BAD_GATEWAY,
            -32603,
            "upstream_failed",
            format!("no MCP server of route {} could be initialised", route.name),
        ));
    }
    let mut capabilities = serde_json::Map::new();
    if tools {
        capabilities.insert("tools".into(), json!({"listChanged": false}));
    }
    if prompts {
        capabilities.insert("prompts".into(), json!({"listChanged": false}));
    }
    if resources {
        // No subscribe: resource updates arrive on a GET stream, not served yet.
        capabilities.insert("resources".into(), json!({"listChanged": false}));
    }
    let result = json!({
        "protocolVersion": version,
        "capabilities": capabilities,
        "serverInfo": {"name": "sluice", "title": "Sluice MCP gateway", "version": env!("CARGO_PKG_VERSION")},
    });
    let client = json!({
        "capabilities": params.get("capabilities").cloned().unwrap_or(json!({})),
        "clientInfo": params.get("clientInfo").cloned().unwrap_or(Value::Null),
    });
    let state = SessionState {
        client,
        route: route.name.to_string(),
        tenant: tenant.to_owned(),
        version: version.to_owned(),
        upstreams,
    };
    let mut response = match id {
        Some(id) => result_response(id, result),
        None => json_response(StatusCode::ACCEPTED, Bytes::new()),
    };
    if let Ok(value) = HeaderValue::from_str(&runtime.session_codec.seal(&state)) {
        response.headers_mut().insert("mcp-session-id", value);
    }
    Ok(response)
}

/// The things a route aggregates from its servers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl Kind {
    /// The list's key in a `*/list` result.
    fn key(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
            Self::ResourceTemplates => "resourceTemplates",
        }
    }

    fn list_method(self) -> &'static str {
        match self {
            Self::Tools => "tools/list",
            Self::Prompts => "prompts/list",
            Self::Resources => "resources/list",
            Self::ResourceTemplates => "resources/templates/list",
        }
    }

    /// The field that names an item (and the request param that picks one).
    fn field(self) -> &'static str {
        match self {
            Self::Tools | Self::Prompts => "name",
            Self::Resources => "uri",
            Self::ResourceTemplates => "uriTemplate",
        }
    }

    /// Between a prefix and the upstream's own name: names get `__`, URIs `+`.
    fn separator(self) -> &'static str {
        match self {
            Self::Tools | Self::Prompts => names::SEPARATOR,
            Self::Resources | Self::ResourceTemplates => names::URI_SEPARATOR,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Tools => "tool",
            Self::Prompts => "prompt",
            Self::Resources | Self::ResourceTemplates => "resource",
        }
    }
}

/// The upstream session of a route backend, if it joined this session.
fn upstream_of<'s>(
    session: &'s SessionState,
    runtime: &Runtime,
    route: &McpRoute,
    position: usize,
) -> Option<&'s UpstreamSession> {
    let name = &runtime.backends[route.backends.get(position)?.backend].name;
    session.upstreams.iter().find(|u| *u.backend == **name)
}

/// Whether an upstream's HTTP status says the session it was sent is gone
/// (404 per the spec; some servers answer 400 for an unknown session).
fn session_gone(status: StatusCode, upstream: &UpstreamSession) -> bool {
    upstream.session.is_some()
        && (status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST)
}

/// Initialises an upstream again for a session whose upstream session
/// expired, as the client first did; remembers the fresh session.
async fn reinitialize(
    gateway: &Gateway,
    server: &McpServer<'_>,
    upstream: &UpstreamSession,
    client: &Value,
) -> Result<String, McpClientError> {
    let mut params = json!({"protocolVersion": upstream.version, "capabilities": {}, "clientInfo": {"name": "sluice", "version": env!("CARGO_PKG_VERSION")}});
    for key in ["capabilities", "clientInfo"] {
        if let Some(value) = client.get(key) {
            params[key] = value.clone();
        }
    }
    let (_, fresh) = server
        .request(&gateway.upstreams, None, None, "initialize", params)
        .await?;
    let fresh = fresh.ok_or_else(|| {
        McpClientError::Malformed(
            server.name.to_owned(),
            "no Mcp-Session-Id on re-initialise".into(),
        )
    })?;
    server
        .notify(
            &gateway.upstreams,
            Some(&fresh),
            Some(&upstream.version),
            "notifications/initialized",
        )
        .await?;
    if let Some(sealed) = &upstream.session {
        gateway.mcp_renewals.record(sealed, fresh.clone());
    }
    tracing::info!(
        backend = server.name,
        "upstream MCP session expired; initialised a new one"
    );
    Ok(fresh)
}

/// One list (tools or prompts) of one upstream, every page.
async fn list_one(
    gateway: &Gateway,
    server: &Upstream<'_>,
    upstream: &UpstreamSession,
    client: &Value,
    kind: Kind,
) -> Result<Vec<Value>, McpClientError> {
    let server = match server {
        Upstream::Http(server) => server,
        Upstream::Demo(_) if kind == Kind::Tools => return Ok(demo::tools()),
        Upstream::Demo(_) if kind != Kind::Prompts => return Ok(Vec::new()),
        Upstream::Demo(_) => return Ok(Vec::new()),
    };
    let method = kind.list_method();
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut renewed = false;
    for _ in 0..MAX_PAGES {
        let params = cursor.as_ref().map_or(json!({}), |c| json!({"cursor": c}));
        let session = gateway.mcp_renewals.current(upstream.session.as_deref());
        let outcome = server
            .request(
                &gateway.upstreams,
                session.as_deref(),
                Some(&upstream.version),
                method,
                params.clone(),
            )
            .await;
        let (result, _) = match outcome {
            Err(McpClientError::Status(_, status))
                if session_gone(status, upstream) && !renewed =>
            {
                renewed = true;
                let fresh = reinitialize(gateway, server, upstream, client).await?;
                server
                    .request(
                        &gateway.upstreams,
                        Some(&fresh),
                        Some(&upstream.version),
                        method,
                        params,
                    )
                    .await?
            }
            other => other?,
        };
        if let Some(Value::Array(page)) = result.get(kind.key()) {
            items.extend(page.iter().cloned());
        }
        cursor = result
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    Ok(items)
}

async fn list(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    session: &SessionState,
    kind: Kind,
    id: &RawValue,
) -> Result<Served, McpError> {
    let lists = (0..route.backends.len()).filter_map(|position| {
        let server = server(runtime, route, position)?;
        let upstream = upstream_of(session, runtime, route, position)?;
        Some(async move {
            (
                position,
                list_one(gateway, &server, upstream, &session.client, kind).await,
            )
        })
    });
    let mut merged = Vec::new();
    for (position, outcome) in futures_util::future::join_all(lists).await {
        let backend = &route.backends[position];
        match outcome {
            Ok(items) => {
                for mut item in items {
                    let Some(name) = item
                        .get(kind.field())
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                    else {
                        continue;
                    };
                    if kind == Kind::Tools && !backend.exposes(&name) {
                        continue;
                    }
                    item[kind.field()] = Value::String(names::outward(
                        backend.prefix.as_deref(),
                        kind.separator(),
                        &name,
                    ));
                    merged.push(item);
                }
            }
            Err(error) => {
                tracing::warn!(route = %route.name, %error, "MCP server left out of the list")
            }
        }
    }
    let mut result = serde_json::Map::new();
    result.insert(kind.key().into(), Value::Array(merged));
    Ok(Served::Local(result_response(id, Value::Object(result))))
}

/// Finds which route backend owns an outward name, and the upstream's name.
async fn owner(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    session: &SessionState,
    kind: Kind,
    name: &str,
) -> Option<(usize, String)> {
    if let Some((position, upstream_name)) = names::inward(route, kind.separator(), name) {
        return Some((position, upstream_name.to_owned()));
    }
    let unprefixed: Vec<usize> = (0..route.backends.len())
        .filter(|&p| {
            route.backends[p].prefix.is_none() && upstream_of(session, runtime, route, p).is_some()
        })
        .collect();
    if let [only] = unprefixed.as_slice() {
        return Some((*only, name.to_owned()));
    }
    // Several unprefixed servers: ask each which has it.
    for position in unprefixed {
        let (Some(server), Some(upstream)) = (
            server(runtime, route, position),
            upstream_of(session, runtime, route, position),
        ) else {
            continue;
        };
        let items = list_one(gateway, &server, upstream, &session.client, kind)
            .await
            .ok()?;
        if items
            .iter()
            .any(|item| item.get(kind.field()).and_then(Value::as_str) == Some(name))
        {
            return Some((position, name.to_owned()));
        }
    }
    None
}

#[allow(clippy::too_many_arguments)]
async fn call(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    session: &SessionState,
    kind: Kind,
    method: &str,
    mut params: Value,
    id: &RawValue,
    exchange: &mut Exchange,
) -> Result<Served, McpError> {
    let unknown = |name: &str| {
        McpError::new(
            StatusCode::OK,
            -32602,
            "unknown_name",
            format!("Unknown {}: {name}", kind.what()),
        )
    };
    let name = params
        .get(kind.field())
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let (position, upstream_name) = owner(gateway, runtime, route, session, kind, &name)
        .await
        .ok_or_else(|| unknown(&name))?;
    let backend = &route.backends[position];
    if kind == Kind::Tools && !backend.exposes(&upstream_name) {
        return Err(unknown(&name));
    }
    let (Some(server), Some(upstream)) = (
        server(runtime, route, position),
        upstream_of(session, runtime, route, position),
    ) else {
        return Err(unknown(&name));
    };
    exchange.record.upstream = Some(runtime.backends[backend.backend].name.clone());
    if kind == Kind::Tools {
        exchange.record.tool = Some(upstream_name.clone());
    }
    let server = match server {
        Upstream::Http(server) => server,
        Upstream::Demo(_) => {
            let arguments = params.get("arguments").cloned().unwrap_or(Value::Null);
            let result = (kind == Kind::Tools)
                .then(|| demo::call(&upstream_name, &arguments))
                .flatten()
                .ok_or_else(|| unknown(&name))?;
            return Ok(Served::Local(result_response(id, result)));
        }
    };
    params[kind.field()] = Value::String(upstream_name);
    let id: Value = serde_json::from_str(id.get()).unwrap_or(Value::Null);
    let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let message = Bytes::from(message.to_string());
    let current = gateway.mcp_renewals.current(upstream.session.as_deref());
    let mut reply = server
        .post(
            &gateway.upstreams,
            current.as_deref(),
            Some(&upstream.version),
            message.clone(),
        )
        .await?;
    if session_gone(reply.response.status(), upstream) {
        // Unread, the answer's connection closes with it.
        drop(reply);
        let fresh = reinitialize(gateway, &server, upstream, &session.client).await?;
        reply = server
            .post(
                &gateway.upstreams,
                Some(&fresh),
                Some(&upstream.version),
                message,
            )
            .await?;
    }
    // The upstream's answer (JSON, or SSE with progress and other related
    // messages first) goes to the client as it comes.
    let kind = if reply.is_sse() {
        BodyKind::McpRelay { position }
    } else {
        BodyKind::Opaque
    };
    let client::Reply { response, conn } = reply;
    let (mut parts, body) = response.into_parts();
    crate::llm::strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.remove("mcp-session-id");
    let mut observed_exchange = exchange.hand_off();
    observed_exchange.record.status = parts.status.as_u16();
    if !parts.status.is_success() {
        observed_exchange.record.error = Some("upstream_status".into());
    }
    let observed = ObservedBody::new(body, conn, kind, observed_exchange, 0, server.timeout);
    Ok(Served::Upstream(Response::from_parts(
        parts,
        ResponseBody::Upstream(Box::new(observed)),
    )))
}

/// Sends a client's answer to a relayed server request back to the upstream
/// that asked, with the upstream's own id.
async fn relay_answer(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    session: &SessionState,
    body: &[u8],
) -> Result<(), McpError> {
    let bad =
        |message: &str| McpError::new(StatusCode::BAD_REQUEST, -32600, "bad_request", message);
    let mut answer: Value =
        serde_json::from_slice(body).map_err(|_| bad("Invalid JSON-RPC message"))?;
    let Some((position, original)) = relay::unwrap(&answer["id"]) else {
        return Err(bad(
            "This answer does not match any request relayed by this gateway",
        ));
    };
    let (Some(Upstream::Http(server)), Some(upstream)) = (
        server(runtime, route, position),
        upstream_of(session, runtime, route, position),
    ) else {
        return Err(bad("The server that asked is not part of this session"));
    };
    answer["id"] = original;
    let current = gateway.mcp_renewals.current(upstream.session.as_deref());
    let reply = server
        .post(
            &gateway.upstreams,
            current.as_deref(),
            Some(&upstream.version),
            Bytes::from(answer.to_string()),
        )
        .await?;
    let status = reply.response.status();
    let _ = reply.read().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(McpClientError::Status(server.name.to_owned(), status).into())
    }
}

/// Client notifications (e.g. `notifications/cancelled`) go to every
/// upstream of the session; a request id only means something to its owner,
/// and the others ignore it.
async fn forward_notification(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    session: &SessionState,
    body: &Bytes,
) {
    let sends = (0..route.backends.len()).filter_map(|position| {
        let Upstream::Http(server) = server(runtime, route, position)? else {
            return None;
        };
        let upstream = upstream_of(session, runtime, route, position)?;
        Some(async move {
            let current = gateway.mcp_renewals.current(upstream.session.as_deref());
            if let Ok(reply) = server
                .post(
                    &gateway.upstreams,
                    current.as_deref(),
                    Some(&upstream.version),
                    body.clone(),
                )
                .await
            {
                let _ = reply.read().await;
            }
        })
    });
    futures_util::future::join_all(sends).await;
}

async fn end_session(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    request: &Request<Incoming>,
    tenant: &str,
) -> Result<Served, McpError> {
    let session = open_session(runtime, route, request.headers(), tenant)?;
    let deletes = (0..route.backends.len()).filter_map(|position| {
        let Upstream::Http(server) = server(runtime, route, position)? else {
            return None;
        };
        let upstream = upstream_of(&session, runtime, route, position)?;
        let id = gateway.mcp_renewals.current(upstream.session.as_deref())?;
        Some(async move {
            if let Err(error) = server
                .delete(&gateway.upstreams, &id, &upstream.version)
                .await
            {
                tracing::debug!(%error, "upstream MCP session not deleted");
            }
        })
    });
    futures_util::future::join_all(deletes).await;
    Ok(Served::Local(json_response(StatusCode::OK, Bytes::new())))
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
    }
}
