//! Sending a request upstream with fallback: backends in the route's
//! attempt order, each attempt bounded by the backend's timeout and the
//! route's deadline, moving on after connect errors, timeouts, 429 and 5xx
//! (as the route's retry policy allows) before any response byte.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use sluice_crds::snapshot::Route;
use std::time::Instant;

use super::request::{rewrite, RequestFields};
use super::translate::{self, Plan, Schema};
use super::Endpoint;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::routing::attempt_order;
use crate::runtime::{BackendKind, Runtime};
use crate::telemetry::Exchange;
use crate::upstream::{Conn, UpstreamError};

/// What goes upstream.
pub struct Outgoing<'a> {
    pub endpoint: Endpoint,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
    pub fields: &'a RequestFields,
    /// Ask the upstream for stream usage the client did not ask for.
    pub ask_usage: bool,
}

/// How forwarding ended.
pub enum Outcome {
    /// An upstream answered (any status), from this backend index, on this
    /// connection (which the response body must keep polling).
    Upstream(Response<Incoming>, Box<Conn>, usize),
    /// The demo backend at this index is next: answer in process. Also a
    /// request the backend at this index has no endpoint for but the
    /// gateway can answer itself (count_tokens; see [`Plan::Local`]).
    Demo(usize),
    /// Every allowed attempt failed without a response.
    Failed(GatewayError),
}

/// Request headers that must not be forwarded: hop-by-hop ones, the
/// client's credentials (never passed upstream), and ones the gateway sets.
fn forwardable(name: &http::HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host"
            | "authorization"
            | "x-api-key"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "accept-encoding"
    )
}

/// Tries the route's backends in order.
pub async fn forward(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &Route,
    outgoing: &Outgoing<'_>,
    exchange: &mut Exchange,
) -> Outcome {
    let order = attempt_order(&route.backends);
    let deadline = exchange.started() + route.timeout;
    let retry = route.retry;
    let mut last_failure = GatewayError::UpstreamTimeout(String::new());
    // The rewritten body is reused across attempts with the same model
    // override and backend schema.
    let mut prepared: Option<(Option<&str>, Schema, Bytes)> = None;

    for attempt in 0..retry.attempts as usize {
        let route_backend = &route.backends[order[attempt % order.len()]];
        let index = route_backend.backend;
        let backend = &runtime.backends[index];
        let more = attempt + 1 < retry.attempts as usize;
        let BackendKind::Http {
            base_url,
            credential,
        } = &backend.kind
        else {
            return Outcome::Demo(index);
        };

        let schema = Schema::of_provider(runtime.snapshot.backends[index].provider);
        let plan = translate::plan(outgoing.endpoint, schema);
        match plan {
            Plan::Local => return Outcome::Demo(index),
            Plan::Unsupported => {
                exchange
                    .record
                    .failed_attempts
                    .push((backend.name.clone(), "unsupported"));
                last_failure = GatewayError::BadRequest(format!(
                    "backend {} ({}) does not serve {}",
                    backend.name,
                    backend.provider,
                    outgoing.endpoint.path()
                ));
                continue;
            }
            Plan::Passthrough | Plan::Translate { .. } => {}
        }
        let override_model = route_backend.model.as_deref();
        let body = match &prepared {
            Some((model, prepared_schema, body))
                if *model == override_model && *prepared_schema == schema =>
            {
                body.clone()
            }
            _ => {
                let body = match plan {
                    Plan::Translate { .. } => {
                        let model = override_model
                            .or(outgoing.fields.model.as_deref())
                            .unwrap_or_default();
                        match translate::request(plan, outgoing.body, model) {
                            Ok(body) => body,
                            Err(e) => {
                                return Outcome::Failed(GatewayError::BadRequest(e.to_string()))
                            }
                        }
                    }
                    _ => rewrite(
                        outgoing.body,
                        outgoing.fields,
                        override_model,
                        outgoing.ask_usage,
                    ),
                };
                prepared = Some((override_model, schema, body.clone()));
                body
            }
        };

        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let wait = backend.timeout.min(deadline - now);
        let suffix = translate::upstream_suffix(outgoing.endpoint, schema);
        let request = match build_request(
            base_url.as_str(),
            suffix,
            outgoing,
            credential.as_ref(),
            body,
        ) {
            Ok(request) => request,
            Err(detail) => {
                last_failure = GatewayError::UpstreamFailed {
                    backend: backend.name.to_string(),
                    detail,
                };
                exchange
                    .record
                    .failed_attempts
                    .push((backend.name.clone(), "connect"));
                continue;
            }
        };
        match tokio::time::timeout(wait, gateway.upstreams.send(request)).await {
            Ok(Ok((response, conn))) => {
                let status = response.status();
                let retryable = (status.as_u16() == 429 && retry.on_429)
                    || (status.is_server_error() && retry.on_5xx);
                if retryable && more {
                    let kind = if status.as_u16() == 429 {
                        "status_429"
                    } else {
                        "status_5xx"
                    };
                    exchange
                        .record
                        .failed_attempts
                        .push((backend.name.clone(), kind));
                    continue;
                }
                return Outcome::Upstream(response, conn, index);
            }
            Ok(Err(error)) => {
                exchange
                    .record
                    .failed_attempts
                    .push((backend.name.clone(), "connect"));
                let detail = match error {
                    UpstreamError::Connect(detail) | UpstreamError::Exchange(detail) => detail,
                };
                last_failure = GatewayError::UpstreamFailed {
                    backend: backend.name.to_string(),
                    detail,
                };
                if !(retry.on_connect && more) {
                    break;
                }
            }
            Err(_elapsed) => {
                exchange
                    .record
                    .failed_attempts
                    .push((backend.name.clone(), "timeout"));
                last_failure = GatewayError::UpstreamTimeout(backend.name.to_string());
                if !(retry.on_timeout && more) {
                    break;
                }
            }
        }
    }
    if let GatewayError::UpstreamTimeout(name) = &mut last_failure {
        if name.is_empty() {
            *name = "any backend".into();
        }
    }
    Outcome::Failed(last_failure)
}

fn build_request(
    base_url: &str,
    suffix: &str,
    outgoing: &Outgoing<'_>,
    credential: Option<&(http::HeaderName, http::HeaderValue)>,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let uri: Uri = [base_url, suffix]
        .concat()
        .parse()
        .map_err(|e| format!("invalid upstream URL: {e}"))?;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.reserve(outgoing.headers.len() + 2);
    for (name, value) in outgoing.headers {
        if forwardable(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some((name, value)) = credential {
        headers.insert(name.clone(), value.clone());
    }
    if suffix.starts_with("/messages") && !headers.contains_key("anthropic-version") {
        headers.insert(
            "anthropic-version",
            http::HeaderValue::from_static(translate::anthropic::VERSION),
        );
    }
    Ok(request)
}

/// The plan for `endpoint` at backend `index` (of the snapshot's backends).
pub fn plan_at(runtime: &Runtime, endpoint: Endpoint, index: usize) -> Plan {
    translate::plan(
        endpoint,
        Schema::of_provider(runtime.snapshot.backends[index].provider),
    )
}
