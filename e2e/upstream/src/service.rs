//! One request in, one response out: records the request, applies the
//! control headers, routes by path to an endpoint and frames its reply.
//! Owns the HTTP side (status, headers); the bodies come from `openai`.

use std::fmt;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::anthropic;
use crate::bedrock;
use crate::body::{MockBody, Pacing};
use crate::cohere;
use crate::control::Control;
use crate::gemini;
use crate::openai::{
    self, chat, completions, embeddings, error, responses, BadRequest, Ids, Reply,
};
use crate::record::{RecordedRequest, Recorder};
use crate::rerank;

/// The path of the recorded-requests endpoint.
pub const REQUESTS_PATH: &str = "/_mock/requests";
/// The header every response carries, naming this upstream.
pub const NAME_HEADER: &str = "x-upstream-name";

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");

/// What every request of one server shares.
pub(crate) struct State {
    name: HeaderValue,
    always_status: Option<StatusCode>,
    /// `None` when recording is off.
    recorder: Option<std::sync::Arc<Recorder>>,
    ids: Ids,
    models: Bytes,
    /// The AWS credential faces' settings.
    aws: std::sync::Arc<crate::aws_creds::AwsSettings>,
}

impl State {
    pub fn new(
        name: &str,
        always_status: Option<StatusCode>,
        recorder: Option<std::sync::Arc<Recorder>>,
        aws: std::sync::Arc<crate::aws_creds::AwsSettings>,
    ) -> std::io::Result<State> {
        let header = HeaderValue::from_str(name).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("upstream name {name:?} is not a valid header value"),
            )
        })?;
        Ok(State {
            name: header,
            always_status,
            recorder,
            ids: Ids::default(),
            models: openai::models::list(name),
            aws,
        })
    }
}

/// Makes hyper drop the connection without answering (`x-mock-close`, or a
/// request body that could not be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DropConnection(&'static str);

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for DropConnection {}

/// The endpoints, recognised by path suffix so that base paths like
/// `/openai/v1/chat/completions` work too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Responses,
    Models,
    /// Anthropic's `/v1/messages`.
    Messages,
    /// Anthropic's `/v1/messages/count_tokens`.
    CountTokens,
}

impl Endpoint {
    fn of(path: &str) -> Option<Endpoint> {
        let path = path.strip_suffix('/').unwrap_or(path);
        if path.ends_with("/messages/count_tokens") {
            Some(Endpoint::CountTokens)
        } else if path.ends_with("/messages") {
            Some(Endpoint::Messages)
        } else if path.ends_with("/chat/completions") {
            Some(Endpoint::Chat)
        } else if path.ends_with("/completions") {
            Some(Endpoint::Completions)
        } else if path.ends_with("/embeddings") {
            Some(Endpoint::Embeddings)
        } else if path.ends_with("/responses") {
            Some(Endpoint::Responses)
        } else if path.ends_with("/models") {
            Some(Endpoint::Models)
        } else {
            None
        }
    }

    fn method(self) -> Method {
        match self {
            Endpoint::Models => Method::GET,
            _ => Method::POST,
        }
    }

    fn allow(self) -> HeaderValue {
        match self {
            Endpoint::Models => HeaderValue::from_static("GET"),
            _ => HeaderValue::from_static("POST"),
        }
    }
}

/// Answers one request.
pub(crate) async fn handle(
    state: &State,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, DropConnection> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|_| DropConnection("could not read the request body"))?
        .to_bytes();
    let mut response = if parts.uri.path() == REQUESTS_PATH {
        recorded_requests(state, &parts.method)
    } else {
        if let Some(recorder) = &state.recorder {
            recorder.push(record(&parts, &body));
        }
        answer(state, &parts, &body).await?
    };
    response
        .headers_mut()
        .insert(NAME_HEADER, state.name.clone());
    Ok(response)
}

async fn answer(
    state: &State,
    parts: &Parts,
    body: &[u8],
) -> Result<Response<MockBody>, DropConnection> {
    if crate::aws_creds::is_credentials_request(parts, body) {
        let answer = crate::aws_creds::handle(&state.aws, parts, body);
        let mut response = Response::new(MockBody::full(answer.body.clone()));
        *response.status_mut() = answer.status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, crate::aws_creds::content_type(&answer));
        return Ok(response);
    }
    let control = match Control::from_headers(&parts.headers) {
        Ok(control) => control,
        Err(err) => {
            return Ok(error_response(
                StatusCode::BAD_REQUEST,
                &err.to_string(),
                Some(err.header),
            ))
        }
    };
    if control.close {
        return Err(DropConnection("closed by x-mock-close"));
    }
    if let Some(delay) = control.delay {
        tokio::time::sleep(delay).await;
    }
    let forced_status = control.status.or(if parts.method == Method::POST {
        state.always_status
    } else {
        None
    });
    let path = parts.uri.path();
    if let Some((_, stream)) = bedrock::route(path) {
        return Ok(bedrock_answer(
            state,
            parts,
            body,
            &control,
            forced_status,
            stream,
        ));
    }
    if let Some(model) = bedrock::invoke_route(path) {
        return Ok(bedrock_invoke_answer(
            parts,
            body,
            &control,
            forced_status,
            model,
        ));
    }
    if path == cohere::EMBED_PATH || path == cohere::RERANK_PATH {
        let answer = |a: cohere::Answer| json_response(a.status, a.body);
        return Ok(native_embed(
            cohere::check_auth(&parts.headers).map_err(answer),
            |status, message| answer(cohere::error(status, message)),
            parts,
            &control,
            forced_status,
            || {
                answer(if path == cohere::EMBED_PATH {
                    cohere::embed(body, &control, state.ids.next())
                } else {
                    cohere::rerank(body, state.ids.next())
                })
            },
        ));
    }
    if path == cohere::CHAT_PATH {
        return Ok(cohere_answer(state, parts, body, &control, forced_status));
    }
    if let Some(route) = gemini::route(path) {
        return Ok(answer_gemini(
            state,
            parts,
            body,
            &control,
            forced_status,
            route,
        ));
    }
    let anthropic_endpoint = matches!(
        Endpoint::of(path),
        Some(Endpoint::Messages | Endpoint::CountTokens)
    );
    if anthropic_endpoint {
        if let Err(refusal) = anthropic::check_headers(&parts.headers) {
            return Ok(json_response(refusal.status, refusal.body));
        }
    }
    if let Some(status) = forced_status {
        if anthropic_endpoint {
            let message = format!(
                "Mock upstream error: status {} was requested.",
                status.as_u16()
            );
            let mut response = json_response(status, anthropic::error_body(status, &message));
            if let Some(secs) = control.retry_after {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(secs));
            }
            return Ok(response);
        }
        return Ok(forced_error(status, control.retry_after));
    }
    if parts.headers.contains_key("x-mock-malformed") {
        return Ok(malformed(body));
    }

    if path.ends_with("/rerank") {
        return Ok(match rerank::reply(body, &state.ids) {
            Ok(bytes) => success(Reply::Json(bytes), &control),
            Err(BadRequest { message, param }) => {
                error_response(StatusCode::BAD_REQUEST, &message, param)
            }
        });
    }
    let Some(endpoint) = Endpoint::of(path) else {
        let message = format!("Unknown request URL: {} {path}.", parts.method);
        let (kind, _) = error::kind_for(StatusCode::NOT_FOUND);
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            error::body(&message, kind, None, Some("unknown_url")),
        ));
    };
    if parts.method != endpoint.method() {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("Method {} is not allowed for {path}.", parts.method),
            None,
        );
        response.headers_mut().insert(ALLOW, endpoint.allow());
        return Ok(response);
    }
    let stream_error = parts.headers.contains_key("x-mock-stream-error");
    let reply = match endpoint {
        Endpoint::Messages | Endpoint::CountTokens => {
            let reply = if endpoint == Endpoint::Messages {
                anthropic::messages(body, &control, &state.ids, stream_error)
            } else {
                anthropic::count_tokens(body, &control)
            };
            return Ok(match reply {
                Ok(reply) => success(reply, &control),
                Err(refusal) => json_response(refusal.status, refusal.body),
            });
        }
        Endpoint::Chat => chat::reply(body, &control, &state.ids),
        Endpoint::Completions => completions::reply(body, &control, &state.ids),
        Endpoint::Embeddings => embeddings::reply(body, &control),
        Endpoint::Responses => responses::reply(body, &control, &state.ids),
        Endpoint::Models => Ok(Reply::Json(state.models.clone())),
    };
    Ok(match reply {
        Ok(reply) => success(reply, &control),
        Err(BadRequest { message, param }) => {
            error_response(StatusCode::BAD_REQUEST, &message, param)
        }
    })
}

/// Gemini's endpoints and the OAuth token endpoint, in Google's shapes.
fn answer_gemini(
    state: &State,
    parts: &Parts,
    body: &[u8],
    control: &Control,
    forced_status: Option<StatusCode>,
    route: gemini::Route,
) -> Response<MockBody> {
    let answer = |a: gemini::Answer| json_response(a.status, a.body);
    let (vertex, stream) = match route {
        gemini::Route::Generate { vertex, stream } => (vertex, stream),
        gemini::Route::Token => return answer(gemini::token(parts, body)),
        gemini::Route::Claude(method) => {
            return claude_on_vertex(state, parts, body, control, forced_status, method)
        }
        gemini::Route::Embed => {
            return native_embed(
                gemini::check_auth(&parts.headers, false).map_err(answer),
                |status, message| answer(gemini::error(status, message)),
                parts,
                control,
                forced_status,
                || answer(gemini::batch_embed(parts.uri.path(), body)),
            )
        }
        gemini::Route::Predict => {
            return native_embed(
                gemini::check_auth(&parts.headers, true).map_err(answer),
                |status, message| answer(gemini::error(status, message)),
                parts,
                control,
                forced_status,
                || answer(gemini::predict(parts.uri.path(), body, control)),
            )
        }
    };
    if let Err(refusal) = gemini::check_auth(&parts.headers, vertex) {
        return answer(refusal);
    }
    if let Some(status) = forced_status {
        let message = format!(
            "Mock upstream error: status {} was requested.",
            status.as_u16()
        );
        let mut response = answer(gemini::error(status, &message));
        if let Some(secs) = control.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        return response;
    }
    let stream_error = parts.headers.contains_key("x-mock-stream-error");
    match gemini::generate(parts, body, control, state.ids.next(), stream, stream_error) {
        Ok(reply) => success(reply, control),
        Err(refusal) => answer(refusal),
    }
}

/// Claude on Vertex AI: the token first, then forced errors (Anthropic's
/// shape), then the answer.
fn claude_on_vertex(
    state: &State,
    parts: &Parts,
    body: &[u8],
    control: &Control,
    forced_status: Option<StatusCode>,
    method: gemini::claude::Method,
) -> Response<MockBody> {
    if let Err(refusal) = gemini::check_auth(&parts.headers, true) {
        return json_response(refusal.status, refusal.body);
    }
    if let Some(status) = forced_status {
        let mut response = json_response(status, gemini::claude::forced(status));
        if let Some(secs) = control.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        return response;
    }
    if parts.headers.contains_key("x-mock-malformed") {
        return malformed(body);
    }
    let stream_error = parts.headers.contains_key("x-mock-stream-error");
    let path = parts.uri.path();
    match gemini::claude::answer(path, method, body, control, &state.ids, stream_error) {
        Ok(reply) => success(reply, control),
        Err(refusal) => json_response(refusal.status, refusal.body),
    }
}

/// A native embedding or rerank endpoint (Gemini's, Cohere's, `/rerank`):
/// the credential first, then forced errors (`refuse` writes them in the
/// provider's shape), then a malformed body if asked, then the answer.
fn native_embed(
    auth: Result<(), Response<MockBody>>,
    refuse: impl Fn(StatusCode, &str) -> Response<MockBody>,
    parts: &Parts,
    control: &Control,
    forced_status: Option<StatusCode>,
    reply: impl FnOnce() -> Response<MockBody>,
) -> Response<MockBody> {
    if let Err(refusal) = auth {
        return refusal;
    }
    if let Some(status) = forced_status {
        let message = format!(
            "Mock upstream error: status {} was requested.",
            status.as_u16()
        );
        let mut response = refuse(status, &message);
        if let Some(secs) = control.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        return response;
    }
    if parts.method != Method::POST {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "Only POST is allowed.");
    }
    if parts.headers.contains_key("x-mock-malformed") {
        return json_response(
            StatusCode::OK,
            Bytes::from_static(b"{\"embeddings\": [{\"val"),
        );
    }
    reply()
}

/// Cohere's v2 chat: the key first, then forced errors, then the answer.
fn cohere_answer(
    state: &State,
    parts: &Parts,
    body: &[u8],
    control: &Control,
    forced_status: Option<StatusCode>,
) -> Response<MockBody> {
    let answer = |a: cohere::Answer| json_response(a.status, a.body);
    if let Err(refusal) = cohere::check_auth(&parts.headers) {
        return answer(refusal);
    }
    if let Some(status) = forced_status {
        let message = format!(
            "Mock upstream error: status {} was requested.",
            status.as_u16()
        );
        let mut response = answer(cohere::error(status, &message));
        if let Some(secs) = control.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        return response;
    }
    if parts.headers.contains_key("x-mock-malformed") {
        return malformed(body);
    }
    let stream_error = parts.headers.contains_key("x-mock-stream-error");
    match cohere::chat(body, control, state.ids.next(), stream_error) {
        Ok(reply) => success(reply, control),
        Err(refusal) => answer(refusal),
    }
}

/// Bedrock's Converse: credentials first, then forced errors, then the answer.
fn bedrock_answer(
    state: &State,
    parts: &Parts,
    body: &[u8],
    control: &Control,
    forced_status: Option<StatusCode>,
    stream: bool,
) -> Response<MockBody> {
    let refused = |refusal: bedrock::Refusal, retry_after: Option<u64>| {
        let mut response = json_response(refusal.status, refusal.body);
        response.headers_mut().insert(
            "x-amzn-errortype",
            bedrock::error_type_header(refusal.error_type),
        );
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    };
    if let Err(refusal) = bedrock::check_auth(
        parts.method.as_str(),
        parts.uri.path(),
        &parts.headers,
        body,
    ) {
        return refused(refusal, None);
    }
    if let Some(status) = forced_status {
        let message = format!(
            "Mock upstream error: status {} was requested.",
            status.as_u16()
        );
        return refused(bedrock::refuse(status, &message), control.retry_after);
    }
    if parts.method != Method::POST {
        let mut response = refused(
            bedrock::refuse(StatusCode::METHOD_NOT_ALLOWED, "Only POST is allowed."),
            None,
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    if parts.headers.contains_key("x-mock-malformed") {
        if stream {
            let mut response = Response::new(MockBody::full(bedrock::malformed_stream()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(bedrock::EVENT_STREAM),
            );
            return response;
        }
        return json_response(
            StatusCode::OK,
            Bytes::from_static(b"{\"output\": {\"message\": {\"con"),
        );
    }
    let stream_error = parts.headers.contains_key("x-mock-stream-error");
    match bedrock::converse(body, stream, control, &state.ids, stream_error) {
        Ok(bedrock::Answer::Json(bytes)) => success(Reply::Json(bytes), control),
        Ok(bedrock::Answer::Stream(source)) => {
            let mut response = success(Reply::Stream(source), control);
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(bedrock::EVENT_STREAM),
            );
            response
        }
        Err(refusal) => refused(refusal, None),
    }
}

/// Bedrock's InvokeModel (embedding models): credentials, forced errors,
/// then the answer with its input token count header.
fn bedrock_invoke_answer(
    parts: &Parts,
    body: &[u8],
    control: &Control,
    forced_status: Option<StatusCode>,
    model: &str,
) -> Response<MockBody> {
    let refused = |refusal: bedrock::Refusal| {
        let mut response = json_response(refusal.status, refusal.body);
        response.headers_mut().insert(
            "x-amzn-errortype",
            bedrock::error_type_header(refusal.error_type),
        );
        response
    };
    let auth = bedrock::check_auth(
        parts.method.as_str(),
        parts.uri.path(),
        &parts.headers,
        body,
    )
    .map_err(refused);
    native_embed(
        auth,
        |status, message| refused(bedrock::refuse(status, message)),
        parts,
        control,
        forced_status,
        || match bedrock::invoke(model, body, control) {
            Ok((bytes, tokens)) => {
                let mut response = success(Reply::Json(bytes), control);
                response.headers_mut().insert(
                    "x-amzn-bedrock-input-token-count",
                    HeaderValue::from(tokens),
                );
                response
            }
            Err(refusal) => refused(refusal),
        },
    )
}

/// Frames an endpoint's reply, breaking it if `x-mock-error-after` asks.
fn success(reply: Reply, control: &Control) -> Response<MockBody> {
    let pacing = Pacing {
        chunk_delay: control.chunk_delay,
        error_after: control.error_after,
    };
    match reply {
        Reply::Json(bytes) if control.error_after.is_some() => {
            // Promise the whole body, then break it.
            let mut response = Response::new(MockBody::AbortAfterHeaders { flushed: false });
            response.headers_mut().insert(CONTENT_TYPE, JSON);
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            response
        }
        Reply::Json(bytes) => json_response(StatusCode::OK, bytes),
        Reply::Stream(source) => {
            let mut response = Response::new(MockBody::events(source, pacing));
            response.headers_mut().insert(CONTENT_TYPE, EVENT_STREAM);
            response
        }
    }
}

/// `x-mock-malformed`: a 200 whose body is not what it claims to be, as a
/// broken provider or proxy would send: cut-off JSON, or for a streaming
/// request an event whose data is not JSON.
fn malformed(request: &[u8]) -> Response<MockBody> {
    let streaming = serde_json::from_slice::<serde_json::Value>(request)
        .ok()
        .and_then(|v| v.get("stream").and_then(serde_json::Value::as_bool))
        .unwrap_or(false);
    if streaming {
        let mut response = Response::new(MockBody::full(Bytes::from_static(
            b"event: message_start\ndata: {\"type\": \"message_start\", \"message\": {\"id\n\ndata: {\"choices\": [{\"delta\"\n\n",
        )));
        response.headers_mut().insert(CONTENT_TYPE, EVENT_STREAM);
        return response;
    }
    json_response(
        StatusCode::OK,
        Bytes::from_static(b"{\"id\": \"cut-off\", \"choices\": [{\"mess"),
    )
}

/// The answer `x-mock-status` / `--always-status` ask for.
fn forced_error(status: StatusCode, retry_after: Option<u64>) -> Response<MockBody> {
    let message = format!(
        "Mock upstream error: status {} was requested.",
        status.as_u16()
    );
    let (kind, code) = error::kind_for(status);
    let mut response = json_response(status, error::body(&message, kind, None, code));
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn error_response(status: StatusCode, message: &str, param: Option<&str>) -> Response<MockBody> {
    let (kind, code) = error::kind_for(status);
    json_response(status, error::body(message, kind, param, code))
}

fn json_response(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    response
}

/// `GET /_mock/requests` lists, `DELETE` clears.
fn recorded_requests(state: &State, method: &Method) -> Response<MockBody> {
    match *method {
        Method::GET => {
            let requests = state
                .recorder
                .as_ref()
                .map(|r| r.snapshot())
                .unwrap_or_default();
            json_response(StatusCode::OK, openai::to_json(&requests))
        }
        Method::DELETE => {
            if let Some(recorder) = &state.recorder {
                recorder.clear();
            }
            let mut response = Response::new(MockBody::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        _ => {
            let mut response = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("Method {method} is not allowed for {REQUESTS_PATH}."),
                None,
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, DELETE"));
            response
        }
    }
}

fn record(parts: &Parts, body: &[u8]) -> RecordedRequest {
    RecordedRequest {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(body).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_match_by_suffix() {
        assert_eq!(Endpoint::of("/v1/chat/completions"), Some(Endpoint::Chat));
        assert_eq!(
            Endpoint::of("/openai/v1/chat/completions"),
            Some(Endpoint::Chat)
        );
        assert_eq!(Endpoint::of("/v1/chat/completions/"), Some(Endpoint::Chat));
        assert_eq!(Endpoint::of("/v1/completions"), Some(Endpoint::Completions));
        assert_eq!(Endpoint::of("/v1/embeddings"), Some(Endpoint::Embeddings));
        assert_eq!(Endpoint::of("/v1/models"), Some(Endpoint::Models));
        assert_eq!(Endpoint::of("/v1/responses"), Some(Endpoint::Responses));
        assert_eq!(
            Endpoint::of("/openai/deployments/d/chat/completions"),
            Some(Endpoint::Chat)
        );
        assert_eq!(Endpoint::of("/v1/nope"), None);
        assert_eq!(Endpoint::of("/"), None);
    }
}
