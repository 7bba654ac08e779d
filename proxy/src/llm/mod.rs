//! The LLM endpoints: OpenAI's (`/v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings`, `/v1/responses`, `/v1/models`), `/v1/rerank` (Cohere's
//! and Jina's shape) and Anthropic's (`/v1/messages`,
//! `/v1/messages/count_tokens`): authenticate, read the body once, pick the
//! route, forward with fallback (translating between schemas where client
//! and backend differ), and hand the response back through the usage
//! observer. Knows nothing of listeners or config loading.

mod admit;
pub mod aws_creds;
pub mod demo;
mod forward;
pub mod gcp_auth;
pub mod observe;
pub mod refreshing;
pub mod request;
pub mod sigv4;
pub mod sse;
pub mod translate;
pub mod usage;
pub mod vertex;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::auth::authenticate;
use crate::body::ResponseBody;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::runtime::Runtime;
use crate::telemetry::Exchange;
use forward::Outcome;
use observe::{BodyKind, ObservedBody};

/// The LLM endpoints served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/completions`.
    Completions,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/responses` (OpenAI Responses API).
    Responses,
    /// `POST /v1/rerank` (Cohere's and Jina's shape).
    Rerank,
    /// `GET /v1/models`.
    Models,
    /// `POST /v1/messages` (Anthropic's schema).
    Messages,
    /// `POST /v1/messages/count_tokens` (Anthropic's schema).
    CountTokens,
}

impl Endpoint {
    /// The endpoint for a request path.
    pub fn from_path(path: &str) -> Option<Self> {
        Some(match path.trim_end_matches('/') {
            "/v1/chat/completions" | "/chat/completions" => Self::ChatCompletions,
            "/v1/completions" | "/completions" => Self::Completions,
            "/v1/embeddings" | "/embeddings" => Self::Embeddings,
            "/v1/responses" | "/responses" => Self::Responses,
            "/v1/rerank" | "/rerank" => Self::Rerank,
            "/v1/models" | "/models" => Self::Models,
            "/v1/messages" => Self::Messages,
            "/v1/messages/count_tokens" => Self::CountTokens,
            _ => return None,
        })
    }

    /// The canonical path, as logged.
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::Responses => "/v1/responses",
            Self::Rerank => "/v1/rerank",
            Self::Models => "/v1/models",
            Self::Messages => "/v1/messages",
            Self::CountTokens => "/v1/messages/count_tokens",
        }
    }

    /// Appended to a backend's base URL.
    fn upstream_suffix(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
            Self::Responses => "/responses",
            Self::Rerank => "/rerank",
            Self::Models => "/models",
            Self::Messages => "/messages",
            Self::CountTokens => "/messages/count_tokens",
        }
    }

    /// Whether streamed answers report usage only when asked
    /// (`stream_options.include_usage`); Responses streams always do.
    fn asks_usage(self) -> bool {
        matches!(self, Self::ChatCompletions | Self::Completions)
    }
}

/// Serves one LLM request. The exchange carries the request's telemetry.
pub async fn handle(
    gateway: &Gateway,
    runtime: Arc<Runtime>,
    request: Request<Incoming>,
    endpoint: Endpoint,
    mut exchange: Exchange,
) -> Response<ResponseBody> {
    match serve(gateway, &runtime, request, endpoint, &mut exchange).await {
        Ok(Served::Upstream(response)) => response,
        Ok(Served::Local(response)) => {
            exchange.record.status = response.status().as_u16();
            exchange.finish();
            response
        }
        Err(error) => {
            exchange.record.status = error.status().as_u16();
            exchange.record.error = Some(error.code().into());
            exchange.finish();
            translate::error_response(endpoint, &error)
        }
    }
}

enum Served {
    /// The exchange travels inside the body and finishes with it.
    Upstream(Response<ResponseBody>),
    /// Answered by the gateway; the caller finishes the exchange.
    Local(Response<ResponseBody>),
}

async fn serve(
    gateway: &Gateway,
    runtime: &Arc<Runtime>,
    request: Request<Incoming>,
    endpoint: Endpoint,
    exchange: &mut Exchange,
) -> Result<Served, GatewayError> {
    let expected = if endpoint == Endpoint::Models {
        Method::GET
    } else {
        Method::POST
    };
    if request.method() != expected {
        return Err(GatewayError::MethodNotAllowed(request.method().to_string()));
    }
    let principal = authenticate(runtime, &gateway.upstreams, request.headers()).await?;
    exchange.record.tenant = Some(principal.tenant.clone());
    if endpoint == Endpoint::Models {
        return Ok(Served::Local(json_response(
            StatusCode::OK,
            runtime.models_body.clone(),
        )));
    }

    let (parts, body) = request.into_parts();
    let body = read_body(body, &parts.headers, runtime.snapshot.max_request_body).await?;
    let fields = request::scan(&body).map_err(|e| GatewayError::BadRequest(e.0))?;
    let Some(model) = fields.model.clone() else {
        return Err(GatewayError::BadRequest("`model` is required".into()));
    };
    exchange.record.stream = fields.stream;
    let route_index = runtime.route_for(&model);
    exchange.record.model = Some(model.clone());
    let route_index = route_index.ok_or(GatewayError::UnknownModel(model))?;
    let route = &runtime.snapshot.routes[route_index];

    if endpoint == Endpoint::CountTokens {
        // Counting is not generation: no budget is drawn.
        return forward_and_respond(
            gateway, runtime, route, endpoint, &parts, &body, &fields, exchange, None,
        )
        .await;
    }
    let admitted = admit::admit(
        gateway,
        runtime,
        &principal.tenant,
        principal.key.as_deref(),
        route,
        endpoint,
        &body,
        &fields,
        exchange,
    )
    .await?;
    let served = forward_and_respond(
        gateway,
        runtime,
        route,
        endpoint,
        &parts,
        &body,
        &fields,
        exchange,
        admitted.guard,
    )
    .await?;
    Ok(with_headroom(served, &admitted.headroom))
}

/// Adds the `x-ratelimit-*` headers of a limited request.
fn with_headroom(served: Served, headroom: &[crate::limits::Headroom]) -> Served {
    if headroom.is_empty() {
        return served;
    }
    match served {
        Served::Upstream(mut r) => {
            crate::limits::insert_headroom(r.headers_mut(), headroom);
            Served::Upstream(r)
        }
        Served::Local(mut r) => {
            crate::limits::insert_headroom(r.headers_mut(), headroom);
            Served::Local(r)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn forward_and_respond(
    gateway: &Gateway,
    runtime: &Arc<Runtime>,
    route: &sluice_crds::snapshot::Route,
    endpoint: Endpoint,
    parts: &http::request::Parts,
    body: &Bytes,
    fields: &request::RequestFields,
    exchange: &mut Exchange,
    guard: Option<crate::limits::StreamGuard>,
) -> Result<Served, GatewayError> {
    let ask_usage = endpoint.asks_usage() && fields.stream && !fields.include_usage;
    let outgoing = forward::Outgoing {
        endpoint,
        headers: &parts.headers,
        body,
        fields,
        ask_usage,
    };
    match forward::forward(gateway, runtime, route, &outgoing, exchange).await {
        Outcome::Demo(_) if endpoint == Endpoint::Responses => Err(GatewayError::BadRequest(
            "the Demo backend does not serve /v1/responses; use /v1/chat/completions".into(),
        )),
        Outcome::Demo(_) if endpoint == Endpoint::Rerank => Err(GatewayError::BadRequest(
            "the Demo backend does not serve /v1/rerank".into(),
        )),
        Outcome::Demo(index) if endpoint == Endpoint::CountTokens => {
            // No backend here counts tokens: the gateway's estimate answers.
            let model = exchange.record.model.as_deref().unwrap_or_default();
            let tokens = crate::limits::estimate::prompt_tokens(model, body);
            exchange.record.upstream = Some(runtime.backends[index].name.clone());
            exchange.record.provider = runtime.backends[index].provider;
            Ok(Served::Local(json_response(
                StatusCode::OK,
                Bytes::from(format!("{{\"input_tokens\":{tokens}}}")),
            )))
        }
        Outcome::Demo(index) => {
            let model = exchange.record.model.as_deref().unwrap_or_default();
            exchange.record.price = runtime.price_at(route, index, model);
            let backend = &runtime.backends[index];
            exchange.record.upstream = Some(backend.name.clone());
            exchange.record.provider = backend.provider;
            let plan = translate::plan(endpoint, translate::Schema::OpenAI);
            let openai_body = match plan {
                translate::Plan::Passthrough => body.clone(),
                _ => translate::request(plan, endpoint, body, model)
                    .map_err(|e| GatewayError::BadRequest(e.to_string()))?,
            };
            let json: serde_json::Value = serde_json::from_slice(&openai_body)
                .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
            let model = exchange.record.model.as_deref().unwrap_or_default();
            let include_usage = fields.include_usage || plan != translate::Plan::Passthrough;
            let reply = demo::reply(endpoint, &json, model, fields.stream, include_usage);
            exchange.first_byte();
            exchange.record.usage = Some(reply.usage);
            let reply_body = match translate::Pipe::for_answer(
                plan,
                endpoint,
                StatusCode::OK,
                reply.content_type == "text/event-stream",
                fields.include_usage,
                reply.usage.input,
            ) {
                None => reply.body,
                Some(mut pipe) => {
                    let mut out = pipe
                        .on_data(reply.body, None)
                        .unwrap_or_else(|b| b)
                        .to_vec();
                    out.extend_from_slice(&pipe.finish());
                    Bytes::from(out)
                }
            };
            let mut response = Response::new(ResponseBody::full(reply_body));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(reply.content_type),
            );
            Ok(Served::Local(response))
        }
        Outcome::Upstream(upstream, conn, index, plan) => {
            let model = exchange.record.model.as_deref().unwrap_or_default();
            exchange.record.price = runtime.price_at(route, index, model);
            let backend = &runtime.backends[index];
            let response = respond(
                upstream,
                conn,
                backend,
                exchange,
                fields,
                ask_usage,
                body,
                guard,
                (plan, endpoint),
            );
            Ok(Served::Upstream(finish_whole(response).await))
        }
        Outcome::Failed(error) => Err(error),
    }
}

/// Builds the client's response around the upstream's.
#[allow(clippy::too_many_arguments)]
fn respond(
    upstream: Response<Incoming>,
    conn: Box<crate::upstream::Conn>,
    backend: &crate::runtime::BackendRuntime,
    exchange: &mut Exchange,
    fields: &request::RequestFields,
    ask_usage: bool,
    request_body: &Bytes,
    guard: Option<crate::limits::StreamGuard>,
    (plan, endpoint): (translate::Plan, Endpoint),
) -> Response<ResponseBody> {
    // A provider that refuses `stream_options` was not asked: nothing to strip.
    let ask_usage = ask_usage
        && match &backend.kind {
            crate::runtime::BackendKind::Http { preset, .. } => preset.stream_options,
            _ => true,
        };
    let (mut parts, body) = upstream.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let status = parts.status;
    let is_event_stream = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.starts_with("text/event-stream")
                // Bedrock's ConverseStream (translated to SSE by the pipe).
                || (matches!(plan, translate::Plan::Translate { backend: translate::Schema::Bedrock, .. })
                    && v.starts_with("application/vnd.amazon.eventstream"))
        });
    let estimated_input = demo::approx_tokens_len(request_body.len());
    let pipe = translate::Pipe::for_answer(
        plan,
        endpoint,
        status,
        is_event_stream,
        fields.include_usage,
        estimated_input,
    );
    let kind = if let Some(mut pipe) = pipe {
        pipe.note_request(request_body);
        pipe.note_upstream(
            exchange.record.model.as_deref().unwrap_or_default(),
            &parts.headers,
        );
        if let Some(content_type) = pipe.content_type() {
            parts.headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            );
        }
        BodyKind::Translated(Box::new(pipe))
    } else if !status.is_success() {
        BodyKind::Opaque
    } else if is_event_stream {
        BodyKind::Sse {
            strip_usage: ask_usage,
        }
    } else if fields.stream {
        BodyKind::Opaque
    } else {
        BodyKind::Json
    };
    let mut exchange_out = exchange.hand_off();
    exchange_out.record.status = status.as_u16();
    exchange_out.record.upstream = Some(backend.name.clone());
    exchange_out.record.provider = backend.provider;
    if status.as_u16() == 429 {
        exchange_out.record.error = Some("upstream_429".into());
    } else if status.is_server_error() {
        exchange_out.record.error = Some("upstream_5xx".into());
    } else if status.is_client_error() {
        exchange_out.record.error = Some("upstream_4xx".into());
    }
    let mut observed = ObservedBody::new(
        body,
        conn,
        kind,
        exchange_out,
        estimated_input,
        backend.timeout,
    );
    if let Some(guard) = guard {
        observed.guard(guard);
    }
    Response::from_parts(parts, ResponseBody::Upstream(Box::new(observed)))
}

/// A translated whole body (JSON, or an error) is read to its end before
/// the client gets anything, so that its status can follow the translation
/// (a 502 when the upstream's answer cannot be read, 529 as 503 for OpenAI
/// clients). Streams and untranslated bodies go out as they arrive.
async fn finish_whole(response: Response<ResponseBody>) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    let ResponseBody::Upstream(mut observed) = body else {
        return Response::from_parts(parts, body);
    };
    if !observed.translates_whole() {
        return Response::from_parts(parts, ResponseBody::Upstream(observed));
    }
    let bytes = match BodyExt::collect(observed.as_mut()).await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if let Some(status) = observed.answer_status() {
        parts.status = status;
    }
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, ResponseBody::full(bytes))
}

/// Reads the whole request body, refusing more than `limit` bytes.
pub(crate) async fn read_body(
    body: Incoming,
    headers: &HeaderMap,
    limit: u64,
) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(GatewayError::PayloadTooLarge(limit));
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(GatewayError::PayloadTooLarge(limit as u64))
        }
        Err(e) => Err(GatewayError::BadRequest(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// Headers that describe one connection, not the message (RFC 9110 7.6.1).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in [
        http::header::CONNECTION,
        http::header::TRANSFER_ENCODING,
        http::header::TE,
        http::header::TRAILER,
        http::header::UPGRADE,
        http::header::PROXY_AUTHENTICATE,
        http::header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn json_response(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
