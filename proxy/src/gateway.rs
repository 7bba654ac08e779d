//! The gateway's shared state (the running config behind `arc-swap`, the
//! upstream HTTP client, telemetry) and the data-plane dispatch from a
//! request to its handler. One `Arc<Gateway>` per process.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::body::ResponseBody;
use crate::error::GatewayError;
use crate::llm::{self, Endpoint};
use crate::runtime::Runtime;
use crate::telemetry::{Exchange, Telemetry};

/// Longest session id or request id taken from a client header.
const MAX_ID_LEN: usize = 256;

/// Process-wide state.
pub struct Gateway {
    runtime: ArcSwap<Runtime>,
    /// Connections to upstreams.
    pub upstreams: Arc<crate::upstream::Pool>,
    /// Access log and metrics.
    pub telemetry: Telemetry,
    /// Upstream MCP sessions re-initialised after they expired.
    pub mcp_renewals: crate::mcp::renew::Renewals,
    /// Stdio MCP servers running for sessions of this process.
    pub mcp_channels: crate::mcp::channel::Channels,
    /// Upstream sessions and waiting calls of stateless MCP clients.
    pub mcp_stateless: crate::mcp::stateless::Stateless,
    /// Budgets and rate limits: admission and settlement.
    pub limiter: Arc<crate::limits::Limiter>,
    draining: AtomicBool,
    request_prefix: u64,
    request_seq: AtomicU64,
}

impl Gateway {
    /// Builds the gateway around its first config.
    pub fn new(
        runtime: Runtime,
        telemetry: Telemetry,
        limiter: Arc<crate::limits::Limiter>,
    ) -> Self {
        Self {
            runtime: ArcSwap::from_pointee(runtime),
            upstreams: crate::upstream::Pool::new(),
            telemetry,
            mcp_renewals: crate::mcp::renew::Renewals::default(),
            mcp_channels: crate::mcp::channel::Channels::default(),
            mcp_stateless: crate::mcp::stateless::Stateless::default(),
            limiter,
            draining: AtomicBool::new(false),
            request_prefix: fastrand::u64(..) & 0xffff_ffff,
            request_seq: AtomicU64::new(0),
        }
    }

    /// The running config.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Swaps in a new config; requests in flight keep the one they started with.
    pub fn swap(&self, runtime: Runtime) {
        self.runtime.store(Arc::new(runtime));
    }

    /// Marks the gateway as draining (`/readyz` turns 503).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.mcp_stateless.start_draining();
    }

    /// Whether it is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    fn request_id(&self, request: &Request<Incoming>) -> Box<str> {
        if let Some(id) = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
        {
            if !id.is_empty() && id.len() <= MAX_ID_LEN {
                return id.into();
            }
        }
        let seq = self.request_seq.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}{seq:012x}", self.request_prefix).into_boxed_str()
    }

    /// Serves one data-plane request.
    pub async fn serve(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        let request_id = self.request_id(&request);
        let runtime = self.runtime();
        let mcp_route = runtime.mcp_paths.get(request.uri().path()).copied();
        let endpoint = Endpoint::from_path(request.uri().path()).filter(|_| mcp_route.is_none());
        let path: Cow<'static, str> = match endpoint {
            Some(endpoint) => Cow::Borrowed(endpoint.path()),
            None => Cow::Owned(request.uri().path().chars().take(MAX_ID_LEN).collect()),
        };
        let mut exchange = Exchange::new(
            self.telemetry.sink(),
            method_name(request.method()),
            path,
            request_id.clone(),
        );
        exchange.record.session_id = session_id(&runtime, &request);

        let mut response = match (mcp_route, endpoint) {
            (Some(route), _) => crate::mcp::handle(self, runtime, route, request, exchange).await,
            (None, Some(endpoint)) => llm::handle(self, runtime, request, endpoint, exchange).await,
            (None, None) if runtime.oauth_metadata.contains_key(request.uri().path()) => {
                let response = crate::mcp::oauth::metadata(&runtime, &request);
                exchange.record.status = response.status().as_u16();
                exchange.finish();
                response
            }
            (None, None) => {
                let error = GatewayError::UnknownPath(
                    request.uri().path().chars().take(MAX_ID_LEN).collect(),
                );
                exchange.record.status = error.status().as_u16();
                exchange.record.error = Some(error.code().into());
                exchange.finish();
                error.response()
            }
        };
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", value);
        }
        response
    }
}

/// The agent's session id: the first configured header present.
fn session_id(runtime: &Runtime, request: &Request<Incoming>) -> Option<String> {
    runtime.snapshot.session_headers.iter().find_map(|name| {
        request
            .headers()
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(|v| v.chars().take(MAX_ID_LEN).collect())
    })
}

fn method_name(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}
