//! The controller's two listeners: the config stream for proxies
//! (`--listen`: `GET /v1/config/stream`, `POST /v1/config/ack`, bearer
//! token) and the admin endpoints (`--admin`: `/healthz`, `/readyz`,
//! `/metrics`). Reads and writes the [`Hub`]; knows nothing of Kubernetes.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use sha2::{Digest, Sha256};
use sluice_crds::ConfigAck;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, Published};
use crate::metrics::Metrics;

/// A stream with nothing new gets a comment this often, so both ends see a
/// dead connection (proxies give up after three missed ones).
pub const KEEPALIVE: Duration = Duration::from_secs(10);
/// Largest ACK body (it carries a budget report).
const MAX_ACK_BODY: usize = 8 << 20;

/// A response body.
pub type Body = BoxBody<Bytes, Infallible>;

/// What the stream listener needs.
pub struct StreamState {
    /// The published config and the replicas.
    pub hub: Arc<Hub>,
    /// SHA-256 of the bearer token proxies must present.
    pub token_digest: [u8; 32],
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Ends every stream at shutdown.
    pub shutdown: CancellationToken,
}

impl StreamState {
    /// Whether `request` carries the token. Compares digests in constant
    /// time, so neither the token nor its length leaks through timing.
    fn authorized<B>(&self, request: &Request<B>) -> bool {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let difference = digest
            .iter()
            .zip(self.token_digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        !presented.is_empty() && difference == 0
    }
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Serves the config stream listener.
pub async fn stream_service(state: Arc<StreamState>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    if path != "/v1/config/stream" && path != "/v1/config/ack" {
        return text(
            StatusCode::NOT_FOUND,
            "not found; proxies use /v1/config/stream and /v1/config/ack\n",
        );
    }
    if !state.authorized(&request) {
        let mut response = text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token (the proxy's --controller-token-file must hold the controller's --token-file token)\n");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    if !state.hub.is_leader() {
        let mut response = text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not the leader; the Service routes to the leader once its /readyz passes\n",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    match (request.method(), path) {
        (&Method::GET, "/v1/config/stream") => {
            let replica = request
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|pair| pair.strip_prefix("replica="))
                .unwrap_or("")
                .to_owned();
            let valid = !replica.is_empty()
                && replica.len() <= 253
                && replica
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            if !valid {
                return text(
                    StatusCode::BAD_REQUEST,
                    "`?replica=NAME` is required (letters, digits, `-`, `.`, `_`)\n",
                );
            }
            config_stream(&state, &replica)
        }
        (&Method::POST, "/v1/config/ack") => {
            let body = match Limited::new(request.into_body(), MAX_ACK_BODY)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes(),
                Err(error) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        &format!("cannot read the body: {error}\n"),
                    )
                }
            };
            let ack: ConfigAck = match serde_json::from_slice(&body) {
                Ok(ack) => ack,
                Err(error) => {
                    return text(StatusCode::BAD_REQUEST, &format!("not an ACK: {error}\n"))
                }
            };
            if !ack.ok {
                state.metrics.nacks.inc();
                tracing::warn!(replica = %ack.replica, version = ack.version, error = ack.error.as_deref().unwrap_or(""), "a replica rejected the config");
            }
            state.hub.record(ack);
            let mut response = Response::new(Full::new(Bytes::new()).boxed());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /v1/config/stream or POST /v1/config/ack\n",
        ),
    }
}

fn event(published: &Published) -> Bytes {
    Bytes::from(format!(
        "event: config\nid: {}\ndata: {}\n\n",
        published.bundle.version, published.json
    ))
}

/// A server-sent event stream: the current config at once, then every new
/// version, with keepalive comments between. Ends when this controller
/// stops leading or shuts down, so the proxy reconnects to the new leader.
fn config_stream(state: &Arc<StreamState>, replica: &str) -> Response<Body> {
    tracing::info!(%replica, "replica connected");
    let guard = state.hub.connect(replica);
    let mut versions = state.hub.subscribe();
    versions.mark_changed();
    let keepalive = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    let hub = state.hub.clone();
    let shutdown = state.shutdown.clone();
    let frames = futures_util::stream::unfold(
        (versions, keepalive, guard),
        move |(mut versions, mut keepalive, guard)| {
            let hub = hub.clone();
            let shutdown = shutdown.clone();
            async move {
                loop {
                    tokio::select! {
                        changed = versions.changed() => {
                            changed.ok()?;
                            let current = versions.borrow_and_update().clone();
                            if let Some(published) = current {
                                return Some((event(&published), (versions, keepalive, guard)));
                            }
                        }
                        _ = keepalive.tick() => {
                            if !hub.is_leader() {
                                return None;
                            }
                            return Some((Bytes::from_static(b": keepalive\n\n"), (versions, keepalive, guard)));
                        }
                        () = shutdown.cancelled() => return None,
                    }
                }
            }
        },
    );
    let body = StreamBody::new(frames.map(|bytes| Ok::<_, Infallible>(Frame::data(bytes))));
    let mut response = Response::new(BodyExt::boxed(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Serves the admin listener.
pub fn admin_service(
    hub: &Hub,
    metrics: &Metrics,
    synced: bool,
    request: &Request<Incoming>,
) -> Response<Body> {
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if !synced => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not synced: still reading the namespace\n",
        ),
        "/readyz" if !hub.is_leader() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "standby: another replica holds the Lease\n",
        ),
        "/readyz" => text(StatusCode::OK, "ready: leader\n"),
        "/metrics" => {
            let rollout = hub.rollout();
            metrics.leader.set(i64::from(hub.is_leader()));
            metrics
                .config_version
                .set(i64::try_from(rollout.version).unwrap_or(i64::MAX));
            metrics
                .replicas_connected
                .set(i64::try_from(rollout.connected).unwrap_or(i64::MAX));
            metrics
                .replicas_current
                .set(i64::try_from(rollout.running).unwrap_or(i64::MAX));
            let mut response = text(StatusCode::OK, &metrics.encode());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz /readyz /metrics\n",
        ),
    }
}

/// Accepts connections on `listener` and serves them with `handler` until
/// `shutdown`, then lets open requests finish for at most five seconds.
pub async fn serve<H, Fut>(listener: TcpListener, handler: H, shutdown: CancellationToken)
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handler = handler.clone();
                    let service = service_fn(move |request| {
                        let response = handler(request);
                        async move { Ok::<_, Infallible>(response.await) }
                    });
                    let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned());
                    // Owned by `graceful`, which the shutdown below waits for.
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
}
