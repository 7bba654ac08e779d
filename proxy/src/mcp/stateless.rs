//! The stateless protocol revision 2026-07-28 on a route's endpoint: no
//! `initialize` and no `Mcp-Session-Id`; every request is a POST carrying
//! its protocol version, client capabilities and client info in
//! `params._meta`, mirrored in the `MCP-Protocol-Version`, `Mcp-Method` and
//! `Mcp-Name` headers. This module checks that envelope, answers
//! `server/discover` and the lists, and hands calls to `mrtr` and
//! `subscriptions/listen` to `listen`. The servers behind the route keep
//! speaking the session-based revisions, through sessions the gateway keeps
//! for such clients (`upstream_cache`). Knows nothing of the session path
//! beyond the aggregation it shares.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use sluice_crds::snapshot::McpRoute;

use super::catalog::{merged, owner, Kind};
use super::servers::{initialize, server, upstream_of, Upstream};
use super::upstream_cache::{Ready, UpstreamCache};
use super::*;

/// The stateless revision served.
pub(super) const VERSION: &str = "2026-07-28";
/// Every revision the endpoint serves, newest first.
const SUPPORTED: [&str; 4] = [VERSION, VERSIONS[0], VERSIONS[1], VERSIONS[2]];

/// `_meta` keys of a 2026-07-28 request.
pub(super) const META_PREFIX: &str = "io.modelcontextprotocol/";
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// JSON-RPC error codes of the revision.
const HEADER_MISMATCH: i64 = -32020;
const UNSUPPORTED_VERSION: i64 = -32022;

/// What this process keeps for stateless clients.
#[derive(Default)]
pub struct Stateless {
    /// Upstream sessions shared by stateless clients.
    pub(super) upstreams: UpstreamCache,
    /// Calls waiting for a client's input (MRTR).
    pub(super) pending: Arc<super::mrtr::Pending>,
    /// Cancelled when the gateway drains: open listen streams end cleanly.
    pub(super) draining: tokio_util::sync::CancellationToken,
}

impl Stateless {
    /// The gateway stops: long-lived streams say goodbye.
    pub fn start_draining(&self) {
        self.draining.cancel();
    }
}

/// A streamed answer to a stateless client.
pub enum StatelessBody {
    /// A call's answer (progress, then the result or `input_required`).
    Call(super::call_stream::CallBody),
    /// A `subscriptions/listen` stream.
    Listen(super::listen::ListenBody),
}

impl http_body::Body for StatelessBody {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Call(body) => std::pin::Pin::new(body).poll_frame(cx),
            Self::Listen(body) => std::pin::Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Call(body) => body.is_end_stream(),
            Self::Listen(body) => body.is_end_stream(),
        }
    }
}

/// Whether a request is for the stateless revision: its
/// `MCP-Protocol-Version` is 2026-07-28, or a version the session path does
/// not know on a request that carries no session (so an unknown version gets
/// the revision's `UnsupportedProtocolVersion` error, which names every
/// version served). Requests with a session keep the session path's answer.
pub(super) fn applies(headers: &HeaderMap) -> bool {
    match headers.get("mcp-protocol-version") {
        Some(v) if v.as_bytes() == VERSION.as_bytes() => true,
        Some(v) => {
            !VERSIONS.iter().any(|k| v.as_bytes() == k.as_bytes())
                && !headers.contains_key("mcp-session-id")
        }
        None => false,
    }
}

/// The per-request envelope, checked.
pub(super) struct Envelope {
    /// The client's capabilities for this request.
    pub(super) capabilities: Value,
    /// Whether the client opted in to log messages (`logLevel`).
    pub(super) log: bool,
}

/// Why an envelope was refused.
enum Refusal {
    Error(McpError),
    Unsupported(String),
}

fn mismatch(message: impl Into<String>) -> Refusal {
    Refusal::Error(McpError::new(
        StatusCode::BAD_REQUEST,
        HEADER_MISMATCH,
        "header_mismatch",
        message,
    ))
}

/// The params key mirrored in `Mcp-Name`, for methods that have one.
fn name_key(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// A header value, decoded from the `=?base64?...?=` form when it is in it.
fn decoded(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    match text
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        Some(encoded) => String::from_utf8(STANDARD.decode(encoded).ok()?).ok(),
        None => Some(text.to_owned()),
    }
}

/// The validation ladder of the revision, in the order its SDKs apply it:
/// the `_meta` envelope, then the mirrored headers, then the version.
fn check(headers: &HeaderMap, method: &str, params: &Value) -> Result<Envelope, Refusal> {
    let meta = params
        .get("_meta")
        .and_then(Value::as_object)
        .filter(|m| m.contains_key(META_VERSION) && m.contains_key(META_CAPABILITIES))
        .ok_or_else(|| {
            Refusal::Error(McpError::new(
                StatusCode::BAD_REQUEST,
                -32602,
                "bad_request",
                format!("params._meta must carry `{META_VERSION}` and `{META_CAPABILITIES}`"),
            ))
        })?;
    for name in ["mcp-protocol-version", "mcp-method", "mcp-name"] {
        if headers.get_all(name).iter().nth(1).is_some() {
            return Err(mismatch(format!(
                "Header mismatch: {name} is sent more than once"
            )));
        }
    }
    let version = meta.get(META_VERSION).and_then(Value::as_str);
    let header = headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok());
    if header.is_none() || header != version {
        return Err(mismatch(
            "Header mismatch: MCP-Protocol-Version does not match params._meta protocolVersion",
        ));
    }
    if headers.get("mcp-method").map(HeaderValue::as_bytes) != Some(method.as_bytes()) {
        return Err(mismatch(format!(
            "Header mismatch: Mcp-Method does not match the method `{method}`"
        )));
    }
    if let Some(key) = name_key(method) {
        if let Some(body) = params.get(key).and_then(Value::as_str) {
            if headers.get("mcp-name").and_then(decoded).as_deref() != Some(body) {
                return Err(mismatch(format!(
                    "Header mismatch: Mcp-Name does not match params.{key}"
                )));
            }
        }
    }
    let version = version.unwrap_or_default();
    if version != VERSION {
        return Err(Refusal::Unsupported(version.to_owned()));
    }
    Ok(Envelope {
        capabilities: meta.get(META_CAPABILITIES).cloned().unwrap_or(json!({})),
        log: meta.contains_key(META_LOG_LEVEL),
    })
}

/// Serves a request of the stateless revision.
pub(super) async fn serve(
    gateway: &Gateway,
    runtime: &Arc<Runtime>,
    route: &McpRoute,
    request: Request<Incoming>,
    tenant: &str,
    exchange: &mut Exchange,
) -> Result<Served, Failure> {
    if request.method() != Method::POST {
        // No GET stream and no session to DELETE in this revision.
        let mut response = json_response(StatusCode::METHOD_NOT_ALLOWED, Bytes::new());
        response
            .headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
        return Ok(Served::Local(response));
    }
    let (parts, body) = request.into_parts();
    let body = read_message(runtime, body, &parts.headers).await?;
    let message = parse_message(&body)?;
    let id = message.id.map(|raw| raw.to_owned());
    exchange.record.mcp_method = message.method.clone();
    let with_id = |error: McpError| (error, id.clone());
    let Some(method) = message.method else {
        return Err(fail(McpError::new(
            StatusCode::BAD_REQUEST,
            -32600,
            "bad_request",
            "Invalid Request: clients must not send JSON-RPC responses in MCP 2026-07-28",
        )));
    };
    let Some(id_raw) = message.id else {
        // No client notification means anything in this revision
        // (cancelling is closing the response stream): accepted, dropped.
        return Ok(Served::Local(json_response(
            StatusCode::ACCEPTED,
            Bytes::new(),
        )));
    };
    let params = message.params.unwrap_or(Value::Null);
    if method == "initialize"
        && parts
            .headers
            .get("mcp-protocol-version")
            .map(HeaderValue::as_bytes)
            != Some(VERSION.as_bytes())
    {
        // A session-based client that sent a version header the session path
        // does not know (2024-11-05, say): initialise it as that path would.
        return initialize(gateway, runtime, route, tenant, params, Some(id_raw))
            .await
            .map(Served::Local)
            .map_err(with_id);
    }
    let envelope = match check(&parts.headers, &method, &params) {
        Ok(envelope) => envelope,
        Err(Refusal::Error(error)) => return Err(with_id(error)),
        Err(Refusal::Unsupported(requested)) => {
            exchange.record.error = Some("unsupported_protocol_version".into());
            return Ok(Served::Local(unsupported(id_raw, &requested)));
        }
    };
    let kind = match method.as_str() {
        "tools/list" | "tools/call" => Some(Kind::Tools),
        "prompts/list" | "prompts/get" => Some(Kind::Prompts),
        "resources/list" | "resources/read" => Some(Kind::Resources),
        "resources/templates/list" => Some(Kind::ResourceTemplates),
        "server/discover" | "subscriptions/listen" | "completion/complete" => None,
        other => {
            return Err(with_id(McpError::new(
                StatusCode::NOT_FOUND,
                -32601,
                "method_not_found",
                format!(
                    "Method not found: `{other}` is not served in MCP 2026-07-28 by this gateway"
                ),
            )))
        }
    };
    let entry = gateway
        .mcp_stateless
        .upstreams
        .get(gateway, runtime, route, tenant, &envelope.capabilities)
        .await
        .map_err(with_id)?;
    let Some(ready) = entry.ready() else {
        return Err(with_id(McpError::new(
            StatusCode::BAD_GATEWAY,
            -32603,
            "upstream_failed",
            "the upstream sessions are not open",
        )));
    };
    match (method.as_str(), kind) {
        ("server/discover", _) => Ok(Served::Local(discover(ready, id_raw))),
        ("subscriptions/listen", _) => super::listen::listen(
            gateway, runtime, route, &entry, ready, params, id_raw, exchange,
        )
        .await
        .map_err(with_id),
        ("completion/complete", _) => {
            complete(gateway, runtime, route, ready, params, id_raw, exchange)
                .await
                .map_err(with_id)
        }
        ("tools/call" | "prompts/get" | "resources/read", Some(kind)) => {
            let call = super::mrtr::Call {
                route,
                tenant,
                kind,
                method: &method,
                envelope: &envelope,
            };
            super::mrtr::call(gateway, runtime, ready, call, params, id_raw, exchange)
                .await
                .map_err(with_id)
        }
        (_, Some(kind)) => {
            let items = merged(gateway, runtime, route, &ready.session, kind).await;
            let mut result = Map::new();
            result.insert(kind.key().into(), Value::Array(items));
            // Lists change when a server's do, and differ per tenant.
            result.insert("ttlMs".into(), json!(0));
            result.insert("cacheScope".into(), json!("private"));
            Ok(Served::Local(complete_response(id_raw, result)))
        }
        (_, None) => Err(with_id(McpError::new(
            StatusCode::NOT_FOUND,
            -32601,
            "method_not_found",
            "Method not found",
        ))),
    }
}

/// `server/discover`: the gateway's merged capabilities and every revision
/// it serves.
fn discover(ready: &Ready, id: &RawValue) -> Response<ResponseBody> {
    let mut result = Map::new();
    result.insert("supportedVersions".into(), json!(SUPPORTED));
    result.insert("capabilities".into(), ready.capabilities.clone());
    result.insert("ttlMs".into(), json!(0));
    result.insert("cacheScope".into(), json!("private"));
    complete_response(id, result)
}

/// The gateway's identity, in a result's `_meta`.
fn server_info() -> Value {
    json!({"name": "sluice", "title": "Sluice MCP gateway", "version": env!("CARGO_PKG_VERSION")})
}

/// A result the gateway made, with `resultType` and the server info.
pub(super) fn complete_response(
    id: &RawValue,
    mut result: Map<String, Value>,
) -> Response<ResponseBody> {
    result.insert("resultType".into(), json!("complete"));
    let meta = result.entry("_meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        meta.insert(META_SERVER_INFO.into(), server_info());
    }
    result_response(id, Value::Object(result))
}

/// 400 `UnsupportedProtocolVersion`, naming every revision served.
fn unsupported(id: &RawValue, requested: &str) -> Response<ResponseBody> {
    let id: Value = serde_json::from_str(id.get()).unwrap_or(Value::Null);
    let body = json!({"jsonrpc": "2.0", "id": id, "error": {
        "code": UNSUPPORTED_VERSION,
        "message": "Unsupported protocol version",
        "data": {"supported": SUPPORTED, "requested": requested},
    }});
    json_response(StatusCode::BAD_REQUEST, Bytes::from(body.to_string()))
}

/// Drops the revision's own `_meta` keys before a request goes to a
/// session-based server (progress tokens and other keys stay).
pub(super) fn strip_meta(params: &mut Value) {
    let Some(object) = params.as_object_mut() else {
        return;
    };
    let empty = match object.get_mut("_meta").and_then(Value::as_object_mut) {
        Some(meta) => {
            meta.retain(|key, _| !key.starts_with(META_PREFIX));
            meta.is_empty()
        }
        None => false,
    };
    if empty {
        object.remove("_meta");
    }
}

/// `completion/complete`: to the server that owns the prompt or resource
/// template named in `ref`.
async fn complete(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    ready: &Ready,
    mut params: Value,
    id: &RawValue,
    exchange: &mut Exchange,
) -> Result<Served, McpError> {
    strip_meta(&mut params);
    let (kind, field) = match params.pointer("/ref/type").and_then(Value::as_str) {
        Some("ref/prompt") => (Kind::Prompts, "name"),
        Some("ref/resource") => (Kind::ResourceTemplates, "uri"),
        _ => {
            return Err(McpError::new(
                StatusCode::BAD_REQUEST,
                -32602,
                "bad_request",
                "Invalid params: ref.type must be ref/prompt or ref/resource",
            ))
        }
    };
    let name = params
        .pointer(&format!("/ref/{field}"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let unknown = || {
        McpError::new(
            StatusCode::BAD_REQUEST,
            -32602,
            "unknown_name",
            format!("Unknown {}: {name}", kind.what()),
        )
    };
    let (position, inward) = owner(gateway, runtime, route, &ready.session, kind, &name)
        .await
        .ok_or_else(unknown)?;
    let (Some(Upstream::Http(server)), Some(upstream)) = (
        server(runtime, route, position),
        upstream_of(&ready.session, runtime, route, position),
    ) else {
        return Err(unknown());
    };
    exchange.record.upstream = Some(
        runtime.backends[route.backends[position].backend]
            .name
            .clone(),
    );
    params["ref"][field] = Value::String(inward);
    let current = gateway.mcp_renewals.current(upstream.session.as_deref());
    let (result, _) = server
        .request(
            &gateway.upstreams,
            current.as_deref(),
            Some(&upstream.version),
            "completion/complete",
            params,
        )
        .await?;
    let Value::Object(result) = result else {
        return Err(McpError::new(
            StatusCode::BAD_GATEWAY,
            -32603,
            "upstream_failed",
            "the server's completion is not an object",
        ));
    };
    Ok(Served::Local(complete_response(id, result)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        headers
    }

    fn params(version: &str, name: &str) -> Value {
        json!({"name": name, "_meta": {META_VERSION: version, META_CAPABILITIES: {}}})
    }

    #[test]
    fn routes_by_version_header() {
        assert!(applies(&headers(&[("mcp-protocol-version", "2026-07-28")])));
        assert!(applies(&headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-session-id", "ignored")
        ])));
        assert!(applies(&headers(&[("mcp-protocol-version", "2099-01-01")])));
        assert!(!applies(&headers(&[
            ("mcp-protocol-version", "2099-01-01"),
            ("mcp-session-id", "s1.x")
        ])));
        assert!(!applies(&headers(&[(
            "mcp-protocol-version",
            "2025-11-25"
        )])));
        assert!(!applies(&headers(&[])));
    }

    #[test]
    fn checks_the_envelope_and_the_mirrored_headers() {
        let ok = headers(&[
            ("mcp-protocol-version", VERSION),
            ("mcp-method", "tools/call"),
            ("mcp-name", "kiwi__search"),
        ]);
        assert!(check(&ok, "tools/call", &params(VERSION, "kiwi__search")).is_ok());
        let code = |result: Result<Envelope, Refusal>| match result {
            Ok(_) => 0,
            Err(Refusal::Error(e)) => e.code,
            Err(Refusal::Unsupported(_)) => UNSUPPORTED_VERSION,
        };
        assert_eq!(
            code(check(&ok, "tools/call", &json!({"name": "x"}))),
            -32602
        );
        assert_eq!(
            code(check(&ok, "tools/call", &params(VERSION, "kiwi__other"))),
            HEADER_MISMATCH
        );
        assert_eq!(
            code(check(&ok, "tools/list", &params(VERSION, "kiwi__search"))),
            HEADER_MISMATCH,
            "Mcp-Method differs"
        );
        assert_eq!(
            code(check(
                &ok,
                "tools/call",
                &params("2099-01-01", "kiwi__search")
            )),
            HEADER_MISMATCH,
            "header and _meta differ"
        );
        let future = headers(&[
            ("mcp-protocol-version", "2099-01-01"),
            ("mcp-method", "tools/list"),
        ]);
        assert_eq!(
            code(check(&future, "tools/list", &params("2099-01-01", "x"))),
            UNSUPPORTED_VERSION
        );
        let encoded = headers(&[
            ("mcp-protocol-version", VERSION),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?SGVsbG8sIOS4lueVjA==?="),
        ]);
        assert!(check(&encoded, "tools/call", &params(VERSION, "Hello, 世界")).is_ok());
        let twice = headers(&[
            ("mcp-protocol-version", VERSION),
            ("mcp-method", "tools/list"),
            ("mcp-method", "tools/list"),
        ]);
        assert_eq!(
            code(check(&twice, "tools/list", &params(VERSION, "x"))),
            HEADER_MISMATCH
        );
    }

    #[test]
    fn strips_only_the_revision_meta() {
        let mut params = json!({"name": "x", "_meta": {META_VERSION: VERSION, "progressToken": 7}});
        strip_meta(&mut params);
        assert_eq!(params, json!({"name": "x", "_meta": {"progressToken": 7}}));
        let mut params = json!({"_meta": {META_VERSION: VERSION}});
        strip_meta(&mut params);
        assert_eq!(params, json!({}));
    }
}
