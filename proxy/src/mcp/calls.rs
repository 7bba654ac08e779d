//! Requests that go to one server: `tools/call`, `prompts/get`,
//! `resources/read` (answers streamed back, server-to-client requests
//! relayed), the client's answers to relayed requests, notifications, the
//! session's own stream, and ending a session.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sluice_crds::snapshot::McpRoute;

use super::catalog::{owner, Kind};
use super::servers::{
    channel_of, joined, reinitialize, server, session_gone, upstream_of, Upstream,
};
use super::*;

/// Where a request names what it is about: the JSON pointer into `params`
/// of the name or URI, and the kind of item it names.
#[derive(Clone, Copy)]
pub(super) struct Target {
    pub(super) kind: Kind,
    pub(super) pointer: &'static str,
}

impl Target {
    /// `params.name` or `params.uri`, as the kind has it.
    pub(super) fn of(kind: Kind) -> Self {
        let pointer = match kind {
            Kind::Resources | Kind::ResourceTemplates => "/uri",
            Kind::Tools | Kind::Prompts => "/name",
        };
        Self { kind, pointer }
    }

    /// `completion/complete`: `params.ref` names a prompt or a resource template.
    pub(super) fn completion(params: &Value) -> Self {
        match params.pointer("/ref/type").and_then(Value::as_str) {
            Some("ref/resource") => Self {
                kind: Kind::ResourceTemplates,
                pointer: "/ref/uri",
            },
            _ => Self {
                kind: Kind::Prompts,
                pointer: "/ref/name",
            },
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn call(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    session: &SessionState,
    target: Target,
    method: &str,
    mut params: Value,
    id: &RawValue,
    exchange: &mut Exchange,
) -> Result<Served, McpError> {
    let kind = target.kind;
    let unknown = |name: &str| {
        McpError::new(
            StatusCode::OK,
            -32602,
            "unknown_name",
            format!("Unknown {}: {name}", kind.what()),
        )
    };
    let name = params
        .pointer(target.pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let (position, upstream_name) = owner(gateway, runtime, route, session, kind, &name)
        .await
        .ok_or_else(|| unknown(&name))?;
    let backend = &route.backends[position];
    // Hidden and forbidden tools look the same: unknown.
    if kind == Kind::Tools
        && (!backend.exposes(&upstream_name) || !route.allows(&session.tenant, &name))
    {
        return Err(unknown(&name));
    }
    let (Some(server), Some(upstream)) = (
        server(runtime, route, position),
        upstream_of(session, runtime, route, position),
    ) else {
        return Err(unknown(&name));
    };
    exchange.record.upstream = Some(runtime.backends[backend.backend].name.clone());
    if kind == Kind::Tools && method == "tools/call" {
        exchange.record.tool = Some(upstream_name.clone());
    }
    let server = match server {
        Upstream::Http(server) => server,
        Upstream::Demo(_) => {
            let arguments = params.get("arguments").cloned().unwrap_or(Value::Null);
            let result = (method == "tools/call")
                .then(|| demo::call(&upstream_name, &arguments))
                .flatten()
                .ok_or_else(|| unknown(&name))?;
            return Ok(Served::Local(result_response(id, result)));
        }
        Upstream::Stdio { .. } | Upstream::LegacySse(_) => {
            let (server_name, timeout) = server.channel_timeout().unwrap_or_default();
            let channel = channel_of(gateway, server_name, upstream).map_err(|_| {
                McpError::new(
                    StatusCode::NOT_FOUND,
                    -32001,
                    "session_not_found",
                    format!("Session not found: the session of {server_name} is held by another gateway process, or has ended"),
                )
            })?;
            if let Some(slot) = params.pointer_mut(target.pointer) {
                *slot = Value::String(upstream_name);
            }
            let stream = channel.start_call(method, params)?;
            let request_id: Value = serde_json::from_str(id.get()).unwrap_or(Value::Null);
            let source = super::stream::Source::call(
                stream,
                position,
                backend.prefix.clone(),
                request_id,
                timeout,
            );
            return Ok(sse_response(vec![source], exchange));
        }
    };
    if let Some(slot) = params.pointer_mut(target.pointer) {
        *slot = Value::String(upstream_name);
    }
    let request_id: Value = serde_json::from_str(id.get()).unwrap_or(Value::Null);
    let message = json!({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params});
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
    let status = reply.response.status();
    if upstream.session.is_some()
        && (status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST)
    {
        let content_type = reply
            .response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .cloned();
        let body = reply.read().await.unwrap_or_default();
        if !session_gone(status, upstream, &body) {
            // An ordinary refusal: the client gets it as the server sent it.
            let mut response = Response::new(ResponseBody::full(body));
            *response.status_mut() = status;
            if let Some(content_type) = content_type {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_TYPE, content_type);
            }
            return Ok(Served::Local(response));
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
    }
    // A JSON answer that may link resources is read whole, to prefix them.
    let links = matches!(method, "tools/call" | "resources/read" | "prompts/get");
    if let (true, false, true, Some(prefix)) = (
        links,
        reply.is_sse(),
        reply.response.status().is_success(),
        backend.prefix.as_deref(),
    ) {
        let body = tokio::time::timeout(server.timeout, reply.read())
            .await
            .map_err(|_| McpClientError::Timeout(server.name.to_owned()))?
            .map_err(|e| McpClientError::Unreachable(server.name.to_owned(), e))?;
        return Ok(Served::Local(json_response(
            StatusCode::OK,
            with_prefixed_uris(body, prefix),
        )));
    }
    // The upstream's answer (JSON, or SSE with progress and other related
    // messages first) goes to the client as it comes.
    let kind = if reply.is_sse() {
        BodyKind::McpRelay(Box::new(relay::Relay::new(
            relay::StreamKind::Call,
            position,
            backend.prefix.clone(),
            request_id.clone(),
        )))
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

/// A JSON-RPC response with the resource URIs in its result prefixed; as
/// it is when it names none.
fn with_prefixed_uris(body: Bytes, prefix: &str) -> Bytes {
    if memchr::memmem::find(&body, b"\"uri\"").is_none() {
        return body;
    }
    let Ok(mut message) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    let changed = message
        .get_mut("result")
        .is_some_and(|result| names::prefix_uris(result, prefix));
    if changed {
        Bytes::from(message.to_string())
    } else {
        body
    }
}

/// Sends a client's answer to a relayed server request back to the upstream
/// that asked, with the upstream's own id.
pub(super) async fn relay_answer(
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
    let (Some(server), Some(upstream)) = (
        server(runtime, route, position),
        upstream_of(session, runtime, route, position),
    ) else {
        return Err(bad("The server that asked is not part of this session"));
    };
    answer["id"] = original;
    let server = match server {
        Upstream::Http(server) => server,
        Upstream::Demo(_) => return Err(bad("The server that asked is not part of this session")),
        Upstream::Stdio { .. } | Upstream::LegacySse(_) => {
            let (name, _) = server.channel_timeout().unwrap_or_default();
            return Ok(channel_of(gateway, name, upstream)?.send(answer)?);
        }
    };
    let current = gateway.mcp_renewals.current(upstream.session.as_deref());
    let message = Bytes::from(answer.to_string());
    server
        .deliver(
            &gateway.upstreams,
            current.as_deref(),
            Some(&upstream.version),
            message,
        )
        .await?;
    Ok(())
}

/// Client notifications (e.g. `notifications/cancelled`) go to every
/// upstream of the session; a request id only means something to its owner,
/// and the others ignore it.
pub(super) async fn forward_notification(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    session: &SessionState,
    body: &Bytes,
) {
    let sends = joined(gateway, runtime, route, session)
        .into_iter()
        .map(|j| async move {
            let version = Some(j.upstream.version.as_str());
            if let Err(error) = j
                .server
                .deliver(
                    &gateway.upstreams,
                    j.current.as_deref(),
                    version,
                    body.clone(),
                )
                .await
            {
                tracing::debug!(%error, "notification not taken by an MCP server");
            }
        });
    futures_util::future::join_all(sends).await;
    if let Ok(message) = serde_json::from_slice::<Value>(body) {
        for (_, channel) in channels(gateway, runtime, route, session) {
            if let Err(error) = channel.send(message.clone()) {
                tracing::debug!(%error, "notification not taken by an MCP server");
            }
        }
    }
}

/// The channels (stdio and legacy SSE servers) of a session held here,
/// with their route positions.
fn channels(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    session: &SessionState,
) -> Vec<(usize, std::sync::Arc<super::channel::Channel>)> {
    (0..route.backends.len())
        .filter_map(|position| {
            let server = server(runtime, route, position)?;
            let (name, _) = server.channel_timeout()?;
            let upstream = upstream_of(session, runtime, route, position)?;
            channel_of(gateway, name, upstream)
                .ok()
                .map(|channel| (position, channel))
        })
        .collect()
}

pub(super) async fn end_session(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    request: &Request<Incoming>,
    tenant: &str,
) -> Result<Served, McpError> {
    let session = open_session(gateway, runtime, route, request.headers(), tenant)?;
    for position in 0..route.backends.len() {
        if let (Some(Upstream::Stdio { .. } | Upstream::LegacySse(_)), Some(upstream)) = (
            server(runtime, route, position),
            upstream_of(&session, runtime, route, position),
        ) {
            if let Some(token) = &upstream.session {
                gateway.mcp_channels.end(token);
            }
        }
    }
    let deletes = joined(gateway, runtime, route, &session)
        .into_iter()
        .filter_map(|j| {
            let id = j.current?;
            Some(async move {
                if let Err(error) = j
                    .server
                    .delete(&gateway.upstreams, &id, &j.upstream.version)
                    .await
                {
                    tracing::debug!(%error, "upstream MCP session not deleted");
                }
            })
        });
    futures_util::future::join_all(deletes).await;
    if let Some(id) = request
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
    {
        gateway.mcp_renewals.end(id);
    }
    Ok(Served::Local(json_response(StatusCode::OK, Bytes::new())))
}

/// `GET`: the servers' own streams for this session, merged; 405 when no
/// server offers one. With `Last-Event-ID`, the server that issued that
/// event replays what followed it: only that stream for a call's answer;
/// for the session's stream, that server resumes and the others start anew.
pub(super) async fn open_stream(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    request: &Request<Incoming>,
    tenant: &str,
    exchange: &mut Exchange,
) -> Result<Served, McpError> {
    let session = open_session(gateway, runtime, route, request.headers(), tenant)?;
    let resume = match request.headers().get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(relay::parse_event_id)
                .ok_or_else(|| {
                    McpError::new(
                        StatusCode::BAD_REQUEST,
                        -32000,
                        "bad_request",
                        "Bad Request: Last-Event-ID is not an event id of this gateway",
                    )
                })?,
        ),
    };
    let opens = joined(gateway, runtime, route, &session)
        .into_iter()
        .filter_map(|j| {
            let id = j.current?;
            let (kind, last) = match resume {
                Some((kind, position, last)) if position == j.position => (kind, Some(last)),
                // Resuming a call's answer: that stream only.
                Some((relay::StreamKind::Call, ..)) => return None,
                _ => (relay::StreamKind::Session, None),
            };
            Some(async move {
                match j
                    .server
                    .open_stream(
                        &gateway.upstreams,
                        Some(&id),
                        Some(&j.upstream.version),
                        last,
                    )
                    .await
                {
                    Ok(reply) if reply.response.status().is_success() && reply.is_sse() => {
                        let client::Reply { response, conn } = reply;
                        Some(super::stream::Source::new(
                            response.into_body(),
                            conn,
                            kind,
                            j.position,
                            route.backends[j.position].prefix.clone(),
                        ))
                    }
                    Ok(_) => None,
                    Err(error) => {
                        tracing::debug!(%error, "no stream from this MCP server");
                        None
                    }
                }
            })
        });
    let mut sources: Vec<_> = futures_util::future::join_all(opens)
        .await
        .into_iter()
        .flatten()
        .collect();
    if resume.is_none() {
        for (position, channel) in channels(gateway, runtime, route, &session) {
            if let Some(messages) = channel.open_session_stream() {
                let prefix = route.backends[position].prefix.clone();
                sources.push(super::stream::Source::session(messages, position, prefix));
            }
        }
    }
    if sources.is_empty() {
        let mut response = json_response(StatusCode::METHOD_NOT_ALLOWED, Bytes::new());
        response.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("POST, DELETE"),
        );
        return Ok(Served::Local(response));
    }
    Ok(sse_response(sources, exchange))
}

/// An SSE answer merged from `sources`, logged when it ends.
fn sse_response(sources: Vec<super::stream::Source>, exchange: &mut Exchange) -> Served {
    let mut streamed = exchange.hand_off();
    streamed.record.status = 200;
    let merged = super::stream::MergedStream::new(sources, streamed);
    let mut response = Response::new(ResponseBody::Merged(Box::new(merged)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    Served::Upstream(response)
}

/// `logging/setLevel` goes to every server of the session.
pub(super) async fn set_level(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    session: &SessionState,
    params: Value,
) {
    let sends = joined(gateway, runtime, route, session)
        .into_iter()
        .map(|j| {
            let params = params.clone();
            async move {
                let version = Some(j.upstream.version.as_str());
                let pool = &gateway.upstreams;
                if let Err(error) = j
                    .server
                    .request(
                        pool,
                        j.current.as_deref(),
                        version,
                        "logging/setLevel",
                        params,
                    )
                    .await
                {
                    tracing::debug!(%error, "logging/setLevel not taken by an MCP server");
                }
            }
        });
    let channel_sends =
        channels(gateway, runtime, route, session)
            .into_iter()
            .map(|(position, channel)| {
                let params = params.clone();
                let timeout = server(runtime, route, position)
                    .and_then(|s| s.channel_timeout().map(|(_, t)| t))
                    .unwrap_or_default();
                async move {
                    if let Err(error) = channel.call("logging/setLevel", params, timeout).await {
                        tracing::debug!(%error, "logging/setLevel not taken by an MCP server");
                    }
                }
            });
    futures_util::future::join(
        futures_util::future::join_all(sends),
        futures_util::future::join_all(channel_sends),
    )
    .await;
}
