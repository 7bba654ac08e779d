//! The servers of a route: which ones there are and how each is reached
//! (streamable HTTP, a channel of this process for stdio and legacy
//! HTTP+SSE servers, or the built-in demo), the parallel `initialize` that
//! opens a session, and initialising an upstream again when its session
//! expired.

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sluice_crds::snapshot::McpRoute;

use super::*;

/// A server of a route: a real one over HTTP, or the built-in demo.
pub(super) enum Upstream<'a> {
    Http(McpServer<'a>),
    Demo(&'a str),
    /// A local process per session (standalone only).
    Stdio {
        name: &'a str,
        command: &'a [String],
        timeout: std::time::Duration,
    },
    /// A legacy HTTP+SSE server: one SSE stream per session, held here.
    LegacySse(McpServer<'a>),
}

impl Upstream<'_> {
    /// Stdio and legacy SSE servers: reached through a channel of this process.
    pub(super) fn channel_timeout(&self) -> Option<(&str, std::time::Duration)> {
        match self {
            Upstream::Stdio { name, timeout, .. } => Some((name, *timeout)),
            Upstream::LegacySse(server) => Some((server.name, server.timeout)),
            Upstream::Http(_) | Upstream::Demo(_) => None,
        }
    }
}

/// The channel of a session's stdio or legacy SSE server, if this process
/// holds it.
pub(super) fn channel_of(
    gateway: &Gateway,
    name: &str,
    upstream: &UpstreamSession,
) -> Result<std::sync::Arc<super::channel::Channel>, McpClientError> {
    upstream
        .session
        .as_deref()
        .and_then(|token| gateway.mcp_channels.get(token))
        .ok_or_else(|| {
            McpClientError::Unreachable(
                name.to_owned(),
                "its session is held by another gateway process, or has ended".into(),
            )
        })
}

/// The server at a route position.
pub(super) fn server<'a>(
    runtime: &'a Runtime,
    route: &McpRoute,
    position: usize,
) -> Option<Upstream<'a>> {
    let backend = &runtime.backends[route.backends.get(position)?.backend];
    match &backend.kind {
        BackendKind::Mcp { url, credential } => Some(Upstream::Http(McpServer {
            name: &backend.name,
            url,
            credential: credential.as_ref(),
            timeout: backend.timeout,
        })),
        BackendKind::Demo => Some(Upstream::Demo(&backend.name)),
        BackendKind::McpSse { url, credential } => Some(Upstream::LegacySse(McpServer {
            name: &backend.name,
            url,
            credential: credential.as_ref(),
            timeout: backend.timeout,
        })),
        BackendKind::McpStdio { command } => Some(Upstream::Stdio {
            name: &backend.name,
            command,
            timeout: backend.timeout,
        }),
        BackendKind::Http { .. } => None,
    }
}

/// Initialises a new session's stdio or legacy SSE server on its channel.
async fn start_channel(
    gateway: &Gateway,
    name: &str,
    channel: std::sync::Arc<super::channel::Channel>,
    timeout: std::time::Duration,
    params: Value,
    version: &str,
) -> Result<(UpstreamSession, Value), McpClientError> {
    let started = async {
        let result = channel.call("initialize", params, timeout).await?;
        channel.notify("notifications/initialized")?;
        Ok::<_, McpClientError>(result)
    };
    let result = match started.await {
        Ok(result) => result,
        Err(error) => {
            channel.close();
            return Err(error);
        }
    };
    let agreed = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or(version)
        .to_owned();
    let token = gateway.mcp_channels.keep(channel);
    let upstream = UpstreamSession {
        backend: name.to_owned(),
        session: Some(token),
        version: agreed,
    };
    Ok((
        upstream,
        result.get("capabilities").cloned().unwrap_or(Value::Null),
    ))
}

pub(super) async fn initialize(
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
                    Upstream::Stdio {
                        name,
                        command,
                        timeout,
                    } => {
                        let channel = super::stdio::spawn(name, command)?;
                        return start_channel(gateway, name, channel, timeout, params, version)
                            .await;
                    }
                    Upstream::LegacySse(server) => {
                        let channel = super::legacy_sse::connect(
                            pool,
                            server.name,
                            server.url,
                            server.credential,
                            server.timeout,
                        )
                        .await?;
                        return start_channel(
                            gateway,
                            server.name,
                            channel,
                            server.timeout,
                            params,
                            version,
                        )
                        .await;
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
    // Merged capabilities: a kind is offered when any server offers it, and
    // announces list changes when any of those servers does (their
    // notifications reach the client on the GET stream).
    let mut capabilities = serde_json::Map::new();
    for outcome in outcomes {
        match outcome {
            Ok((upstream, offered)) => {
                for kind in ["tools", "prompts", "resources"] {
                    if let Some(theirs) = offered.get(kind) {
                        let changes = theirs
                            .get("listChanged")
                            .and_then(Value::as_bool)
                            .unwrap_or(false);
                        let ours = capabilities
                            .entry(kind)
                            .or_insert_with(|| json!({"listChanged": false}));
                        if changes {
                            ours["listChanged"] = Value::Bool(true);
                        }
                    }
                }
                if offered.pointer("/resources/subscribe") == Some(&Value::Bool(true)) {
                    if let Some(ours) = capabilities.get_mut("resources") {
                        ours["subscribe"] = Value::Bool(true);
                    }
                }
                for kind in ["logging", "completions"] {
                    if offered.get(kind).is_some() {
                        capabilities.insert(kind.into(), json!({}));
                    }
                }
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

/// A server over HTTP that joined a session, with the upstream session to
/// use now (renewed if it expired).
pub(super) struct Joined<'a> {
    pub(super) position: usize,
    pub(super) server: McpServer<'a>,
    pub(super) upstream: &'a UpstreamSession,
    pub(super) current: Option<String>,
}

/// Every HTTP server of a route that joined `session`.
pub(super) fn joined<'a>(
    gateway: &Gateway,
    runtime: &'a Runtime,
    route: &McpRoute,
    session: &'a SessionState,
) -> Vec<Joined<'a>> {
    (0..route.backends.len())
        .filter_map(|position| {
            let Upstream::Http(server) = server(runtime, route, position)? else {
                return None;
            };
            let upstream = upstream_of(session, runtime, route, position)?;
            let current = gateway.mcp_renewals.current(upstream.session.as_deref());
            Some(Joined {
                position,
                server,
                upstream,
                current,
            })
        })
        .collect()
}

/// The upstream session of a route backend, if it joined this session.
pub(super) fn upstream_of<'s>(
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
pub(super) fn session_gone(status: StatusCode, upstream: &UpstreamSession, body: &[u8]) -> bool {
    upstream.session.is_some()
        && (status == StatusCode::NOT_FOUND
            || (status == StatusCode::BAD_REQUEST && mentions_session(body)))
}

/// Whether an error body is about the session (ASCII, case-insensitive).
fn mentions_session(body: &[u8]) -> bool {
    body.windows(7).any(|w| w.eq_ignore_ascii_case(b"session"))
}

/// Initialises an upstream again for a session whose upstream session
/// expired, as the client first did; remembers the fresh session.
pub(super) async fn reinitialize(
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
