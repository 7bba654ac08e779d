//! Sending a request upstream with fallback: backends in the route's
//! attempt order, each attempt bounded by the backend's timeout and the
//! route's deadline, moving on after connect errors, timeouts, 429 and 5xx
//! (as the route's retry policy allows) before any response byte.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use sluice_crds::snapshot::{Provider, Route};
use std::time::Instant;

use super::request::{rewrite_with, Quirks, RequestFields};
use super::translate::{self, Plan, Schema};
use super::Endpoint;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::routing::attempt_order;
use crate::runtime::{BackendKind, Runtime, UpstreamPaths};
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
    /// connection (which the response body must keep polling), under this
    /// plan (what the answer is translated from).
    Upstream(Response<Incoming>, Box<Conn>, usize, Plan),
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

/// A body ready for a backend: for the model override, backend schema
/// (and whether it is Vertex AI's embeddings, and Claude on Vertex AI), and
/// quirks it was made for.
type Prepared<'a> = (Option<&'a str>, (Schema, bool, bool), Quirks, Bytes);

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
    // override, backend schema (Vertex AI's embeddings and Claude apart)
    // and provider quirks.
    let mut prepared: Option<Prepared<'_>> = None;

    for attempt in 0..retry.attempts as usize {
        let route_backend = &route.backends[order[attempt % order.len()]];
        let index = route_backend.backend;
        let backend = &runtime.backends[index];
        let more = attempt + 1 < retry.attempts as usize;
        let BackendKind::Http {
            base_url,
            credential,
            paths,
            preset,
            headers,
            gcp,
            signer,
        } = &backend.kind
        else {
            return Outcome::Demo(index);
        };

        let override_model = route_backend.model.as_deref();
        let upstream_model = override_model.or(outgoing.fields.model.as_deref());
        let provider = runtime.snapshot.backends[index].provider;
        let claude = is_vertex_claude(provider, upstream_model);
        let schema = backend_schema(provider, claude);
        let plan = translate::plan(outgoing.endpoint, schema);
        if claude && gcp.is_none() {
            exchange
                .record
                .failed_attempts
                .push((backend.name.clone(), "unsupported"));
            last_failure = GatewayError::BadRequest(format!(
                "backend {} (VertexAI in express mode, with an API key) serves Gemini models only; Claude models on Vertex AI need `auth.gcp`",
                backend.name
            ));
            continue;
        }
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
        let quirks = quirks(outgoing.endpoint, preset);
        // Vertex AI embeds through `:predict`, not `batchEmbedContents`.
        let vertex_embed = outgoing.endpoint == Endpoint::Embeddings && gcp.is_some();
        let schema_key = (schema, vertex_embed, claude);
        let body = match &prepared {
            Some((model, prepared_schema, q, body))
                if *model == override_model && *prepared_schema == schema_key && *q == quirks =>
            {
                body.clone()
            }
            _ => {
                let body = match plan {
                    Plan::Translate { .. } if vertex_embed => {
                        match translate::gemini::embed::to_vertex(outgoing.body) {
                            Ok(body) => Bytes::from(body),
                            Err(e) => {
                                return Outcome::Failed(GatewayError::BadRequest(e.to_string()))
                            }
                        }
                    }
                    Plan::Translate { .. } => {
                        let model = override_model
                            .or(outgoing.fields.model.as_deref())
                            .unwrap_or_default();
                        match translate::request(plan, outgoing.endpoint, outgoing.body, model) {
                            // An OpenAI-schema backend's quirks apply to
                            // the chat request a translation wrote.
                            Ok(body) if schema == Schema::OpenAI => preset_quirks(body, preset),
                            Ok(body) => body,
                            Err(e) => {
                                return Outcome::Failed(GatewayError::BadRequest(e.to_string()))
                            }
                        }
                    }
                    _ => rewrite_with(
                        outgoing.body,
                        outgoing.fields,
                        override_model,
                        outgoing.ask_usage,
                        quirks,
                    ),
                };
                // Vertex AI names the model in the URL, the version in the body.
                let body = if claude {
                    let keep_model = outgoing.endpoint == Endpoint::CountTokens;
                    match super::vertex::claude_body(&body, keep_model) {
                        Ok(body) => body,
                        Err(e) => return Outcome::Failed(GatewayError::BadRequest(e.to_string())),
                    }
                } else {
                    body
                };
                prepared = Some((override_model, schema_key, quirks, body.clone()));
                body
            }
        };

        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let wait = backend.timeout.min(deadline - now);
        // Vertex AI: an OAuth token; Bedrock: the current AWS credentials
        // (each cached, fetched only when none is valid).
        let credentials = async {
            let bearer = match gcp {
                None => None,
                Some(tokens) => Some(
                    tokens
                        .get(&gateway.upstreams)
                        .await
                        .map_err(|e| e.to_string())?,
                ),
            };
            let signer = match signer {
                None => None,
                Some(signing) => Some(
                    signing
                        .signer(&gateway.upstreams)
                        .await
                        .map_err(|e| e.to_string())?,
                ),
            };
            Ok::<_, String>((bearer, signer))
        };
        let (bearer, signer) = match credentials.await {
            Ok(credentials) => credentials,
            Err(detail) => {
                exchange
                    .record
                    .failed_attempts
                    .push((backend.name.clone(), "auth"));
                last_failure = GatewayError::UpstreamFailed {
                    backend: backend.name.to_string(),
                    detail,
                };
                continue;
            }
        };
        let target = Upstream {
            base_url,
            paths,
            model: upstream_model.unwrap_or_default(),
            credential: credential.as_ref(),
            headers,
            bearer,
            stream: outgoing.fields.stream,
            claude,
        };
        let bedrock_path;
        let suffix = if *paths == UpstreamPaths::Bedrock {
            bedrock_path = if outgoing.endpoint == Endpoint::Embeddings {
                translate::bedrock::embed::path(target.model)
            } else {
                translate::bedrock::path(target.model, outgoing.fields.stream)
            };
            bedrock_path.as_str()
        } else if vertex_embed {
            translate::gemini::embed::VERTEX_METHOD
        } else {
            translate::upstream_suffix(outgoing.endpoint, schema)
        };
        let signed = signer.as_deref().map(|signer| (signer, body.clone()));
        let request = match build_request(&target, suffix, outgoing, body)
            .and_then(|request| sign(request, signed, schema))
        {
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
                return Outcome::Upstream(response, conn, index, plan);
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

/// A translated chat request for an OpenAI-schema backend, without the
/// fields its provider refuses (`stream_options` for Mistral, ...).
fn preset_quirks(body: Bytes, preset: &sluice_crds::snapshot::Preset) -> Bytes {
    let quirks = Quirks {
        drop_stream_options: !preset.stream_options,
        rename_max_completion_tokens: !preset.max_completion_tokens,
    };
    if quirks == Quirks::default() {
        return body;
    }
    match super::request::scan(&body) {
        Ok(fields) => rewrite_with(&body, &fields, None, false, quirks),
        Err(_) => body,
    }
}

/// The fields a backend's provider refuses on this endpoint.
fn quirks(endpoint: super::Endpoint, preset: &sluice_crds::snapshot::Preset) -> Quirks {
    if !endpoint.asks_usage() {
        // Only chat and text completions carry these fields.
        return Quirks::default();
    }
    Quirks {
        drop_stream_options: !preset.stream_options,
        rename_max_completion_tokens: !preset.max_completion_tokens,
    }
}

/// Where and how one attempt is sent.
struct Upstream<'a> {
    base_url: &'a str,
    paths: &'a UpstreamPaths,
    /// The model as sent upstream (Azure's deployment name).
    model: &'a str,
    credential: Option<&'a (http::HeaderName, http::HeaderValue)>,
    headers: &'a [(http::HeaderName, http::HeaderValue)],
    /// A fetched `Bearer` token (Vertex AI), sent as `authorization`.
    bearer: Option<http::HeaderValue>,
    /// The client asked for a stream (Gemini's URL says so).
    stream: bool,
    /// A Claude model on Vertex AI (the `anthropic` publisher's URL).
    claude: bool,
}

/// The request URL: `{base}{suffix}`, or for Azure deployments
/// `{endpoint}/openai/deployments/{model}{suffix}?api-version=X` (the
/// Responses API is not per deployment: `{endpoint}/openai/responses?...`).
fn upstream_url(target: &Upstream<'_>, endpoint: Endpoint, suffix: &str) -> String {
    match target.paths {
        UpstreamPaths::OpenAI | UpstreamPaths::Bedrock => [target.base_url, suffix].concat(),
        UpstreamPaths::AzureDeployments { query } if endpoint == Endpoint::Responses => {
            format!("{}{suffix}?{query}", target.base_url)
        }
        UpstreamPaths::AzureDeployments { query } => format!(
            "{}/deployments/{}{suffix}?{query}",
            target.base_url,
            path_segment(target.model)
        ),
        UpstreamPaths::Gemini if target.claude => {
            super::vertex::claude_url(target.base_url, target.model, endpoint, target.stream)
        }
        UpstreamPaths::Gemini => format!(
            "{}/models/{}{}",
            target.base_url,
            path_segment(target.model.strip_prefix("models/").unwrap_or(target.model)),
            if target.stream
                && matches!(
                    endpoint,
                    Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Messages
                )
            {
                translate::gemini::STREAM_METHOD
            } else {
                suffix
            }
        ),
    }
}

/// Percent-encodes a path segment (deployment names are usually plain;
/// `@`, allowed in a segment, is kept for Vertex AI's `claude-x@DATE`).
pub(super) fn path_segment(text: &str) -> std::borrow::Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-._~@".contains(&b);
    if text.bytes().all(plain) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.into()
}

fn build_request(
    target: &Upstream<'_>,
    suffix: &str,
    outgoing: &Outgoing<'_>,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let uri: Uri = upstream_url(target, outgoing.endpoint, suffix)
        .parse()
        .map_err(|e| format!("invalid upstream URL: {e}"))?;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.reserve(outgoing.headers.len() + 2 + target.headers.len());
    for (name, value) in outgoing.headers {
        if forwardable(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    for (name, value) in target.headers {
        headers.insert(name.clone(), value.clone());
    }
    if let Some((name, value)) = target.credential {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(bearer) = &target.bearer {
        headers.insert(http::header::AUTHORIZATION, bearer.clone());
    }
    if target.claude {
        // Vertex AI takes the version in the body (as Anthropic's Vertex SDK sends it).
        headers.remove("anthropic-version");
    } else if suffix.starts_with("/messages") && !headers.contains_key("anthropic-version") {
        headers.insert(
            "anthropic-version",
            http::HeaderValue::from_static(translate::anthropic::VERSION),
        );
    }
    Ok(request)
}

/// Signs a request with AWS keys over its final URL, headers and body.
/// Bedrock gets `content-type: application/json` (its requests are JSON
/// whatever the client sent) before the signature covers it.
fn sign(
    mut request: Request<Full<Bytes>>,
    signer: Option<(&crate::llm::sigv4::Signer, Bytes)>,
    schema: Schema,
) -> Result<Request<Full<Bytes>>, String> {
    if schema == Schema::Bedrock {
        request.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
    }
    let Some((signer, body)) = signer else {
        return Ok(request);
    };
    let now = crate::llm::sigv4::amz_date(chrono::Utc::now().timestamp());
    let (mut parts, full) = request.into_parts();
    signer
        .sign(&parts.method, &parts.uri, &mut parts.headers, &body, &now)
        .map_err(|e| e.to_string())?;
    Ok(Request::from_parts(parts, full))
}

/// A Claude model on a `VertexAI` backend (Anthropic's schema there).
fn is_vertex_claude(provider: Provider, model: Option<&str>) -> bool {
    provider == Provider::VertexAI && model.is_some_and(super::vertex::is_claude)
}

/// What the backend speaks for this request.
fn backend_schema(provider: Provider, vertex_claude: bool) -> Schema {
    if vertex_claude {
        Schema::Anthropic
    } else {
        Schema::of_provider(provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(paths: &UpstreamPaths, base: &str, model: &str, endpoint: Endpoint) -> String {
        let target = Upstream {
            base_url: base,
            paths,
            model,
            credential: None,
            headers: &[],
            bearer: None,
            stream: false,
            claude: false,
        };
        upstream_url(&target, endpoint, endpoint.upstream_suffix())
    }

    #[test]
    fn builds_openai_and_azure_urls() {
        let openai = UpstreamPaths::OpenAI;
        assert_eq!(
            url(
                &openai,
                "https://api.mistral.ai/v1",
                "m",
                Endpoint::ChatCompletions
            ),
            "https://api.mistral.ai/v1/chat/completions"
        );
        assert_eq!(
            url(&openai, "https://h/openai/v1", "m", Endpoint::Responses),
            "https://h/openai/v1/responses"
        );
        let azure = UpstreamPaths::AzureDeployments {
            query: "api-version=2024-10-21".into(),
        };
        let base = "https://r.openai.azure.com/openai";
        assert_eq!(
            url(&azure, base, "gpt-4o-prod", Endpoint::ChatCompletions),
            "https://r.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            url(&azure, base, "emb", Endpoint::Embeddings),
            "https://r.openai.azure.com/openai/deployments/emb/embeddings?api-version=2024-10-21"
        );
        assert_eq!(
            url(&azure, base, "x", Endpoint::Responses),
            "https://r.openai.azure.com/openai/responses?api-version=2024-10-21"
        );
        assert_eq!(
            url(&azure, base, "a b/c", Endpoint::Completions),
            "https://r.openai.azure.com/openai/deployments/a%20b%2Fc/completions?api-version=2024-10-21"
        );
    }

    #[test]
    fn quirks_apply_to_completions_only() {
        let mistral = sluice_crds::snapshot::Provider::Mistral.preset();
        let q = quirks(Endpoint::ChatCompletions, &mistral);
        assert!(q.drop_stream_options && q.rename_max_completion_tokens);
        assert_eq!(quirks(Endpoint::Responses, &mistral), Quirks::default());
        assert_eq!(quirks(Endpoint::Embeddings, &mistral), Quirks::default());
        let openai = sluice_crds::snapshot::Provider::OpenAI.preset();
        assert_eq!(
            quirks(Endpoint::ChatCompletions, &openai),
            Quirks::default()
        );
    }
}
