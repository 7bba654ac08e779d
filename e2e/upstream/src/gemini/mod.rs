//! The Google Gemini wire format: `POST .../models/{model}:generateContent`
//! and `:streamGenerateContent?alt=sse` on AI Studio's
//! (`/v1beta/models/...`, key in `x-goog-api-key`) and Vertex AI's paths
//! (`/v1/projects/{p}/locations/{l}/publishers/google/models/...`, a
//! Bearer token this upstream issued), and an OAuth token endpoint
//! (`POST .../token`) that checks the JWT assertion's RS256 signature
//! against the test service account ([`TEST_SERVICE_ACCOUNT`]). It checks
//! what Google checks before answering (known top-level fields only, roles
//! `user`/`model`, parts present, no `additionalProperties` in function
//! schemas) and answers in Google's error shape. Streams are framed as
//! Google frames them: `data: {json}\r\n\r\n`, usage in every event.
//! Vertex AI express mode's paths (`/v1/publishers/google/models/...`,
//! an API key) are AI Studio's rules on Vertex's path; Claude on Vertex AI
//! (`publishers/anthropic`) is in [`claude`].
//! Knows nothing of HTTP plumbing or control headers' parsing.

pub(crate) mod claude;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, StatusCode};
use ring::signature::{KeyPair, RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::body::{Event, EventKind, EventSource};
use crate::control::Control;
use crate::openai::{content, json_str, ChunkText, Reply};

mod embed;
pub(crate) use embed::{batch_embed, predict};

/// The test service account's JSON key (its `token_uri` is a placeholder:
/// tests point it at this upstream's `/token`).
pub const TEST_SERVICE_ACCOUNT: &str = include_str!("test-service-account.json");

/// The arguments of the one function call the mock makes.
pub const CALL_ARGS: &str = "{\"q\":\"mock\"}";

/// Tokens issued so far; each token is `ya29.mock-N`.
static ISSUED: AtomicU64 = AtomicU64::new(0);

/// What this module answers.
pub(crate) enum Route {
    /// `...:generateContent` / `...:streamGenerateContent`.
    Generate { vertex: bool, stream: bool },
    /// Claude on Vertex AI (`publishers/anthropic`, a Bearer token).
    Claude(claude::Method),
    /// The OAuth token endpoint.
    Token,
    /// `...:batchEmbedContents` (AI Studio only; Vertex AI embeds through
    /// `:predict`).
    Embed,
    /// Vertex AI's `...:predict` (embedding models).
    Predict,
}

/// Whether `path` is Gemini's (or the token endpoint).
pub(crate) fn route(path: &str) -> Option<Route> {
    if path.ends_with("/token") {
        return Some(Route::Token);
    }
    if let Some(method) = claude::method(path) {
        return Some(Route::Claude(method));
    }
    let vertex = path.starts_with("/v1/projects/") && path.contains("/publishers/google/models/");
    let studio = path.contains("/models/") && !vertex;
    if !(vertex || studio) {
        return None;
    }
    if path.ends_with(":generateContent") {
        Some(Route::Generate {
            vertex,
            stream: false,
        })
    } else if path.ends_with(":batchEmbedContents") && studio {
        Some(Route::Embed)
    } else if path.ends_with(":predict") && vertex {
        Some(Route::Predict)
    } else if path.ends_with(":streamGenerateContent") {
        Some(Route::Generate {
            vertex,
            stream: true,
        })
    } else {
        None
    }
}

/// A status and body to answer with.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Google's status name for an HTTP status.
fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// `{"error":{"code":N,"message":...,"status":...}}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Answer {
    Answer {
        status,
        body: Bytes::from(format!(
            "{{\"error\":{{\"code\":{},\"message\":{},\"status\":\"{}\"}}}}",
            status.as_u16(),
            json_str(message),
            status_name(status)
        )),
    }
}

/// Checks the credential Google would: an API key (AI Studio) or a token
/// this upstream issued (Vertex AI).
pub(crate) fn check_auth(headers: &HeaderMap, vertex: bool) -> Result<(), Answer> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if vertex {
        match header("authorization").and_then(|v| v.strip_prefix("Bearer ya29.mock-")) {
            Some(n)
                if n.parse::<u64>()
                    .is_ok_and(|n| n >= 1 && n <= ISSUED.load(Ordering::Relaxed)) =>
            {
                Ok(())
            }
            _ => Err(error(
                StatusCode::UNAUTHORIZED,
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            )),
        }
    } else {
        match header("x-goog-api-key") {
            Some(key) if !key.is_empty() => Ok(()),
            _ => Err(error(
                StatusCode::FORBIDDEN,
                "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GenerateRequest<'a> {
    #[serde(borrow)]
    contents: Vec<Content<'a>>,
    #[serde(borrow, default)]
    system_instruction: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_config: Option<ToolConfig<'a>>,
    #[serde(borrow, default)]
    generation_config: Option<&'a RawValue>,
    #[serde(borrow, default)]
    safety_settings: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cached_content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    labels: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    parts: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    #[serde(borrow, default)]
    function_calling_config: Option<CallingConfig<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallingConfig<'a> {
    #[serde(borrow, default)]
    mode: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    allowed_function_names: Vec<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Tools<'a> {
    #[serde(borrow, default)]
    function_declarations: Vec<Declaration<'a>>,
}

#[derive(Deserialize)]
struct Declaration<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// Checks a body as Google does.
fn parse(body: &[u8]) -> Result<GenerateRequest<'_>, Answer> {
    let bad = |message: String| error(StatusCode::BAD_REQUEST, &message);
    let request: GenerateRequest<'_> = serde_json::from_slice(body)
        .map_err(|e| bad(format!("Invalid JSON payload received. {e}")))?;
    if request.contents.is_empty() {
        return Err(bad(
            "* GenerateContentRequest.contents: contents is not specified".into(),
        ));
    }
    for (i, content) in request.contents.iter().enumerate() {
        match content.role.as_deref() {
            None | Some("user" | "model") => {}
            Some(other) => {
                return Err(bad(format!(
                    "Please use a valid role: user, model. (contents[{i}].role is {other:?})"
                )))
            }
        }
        if content.parts.is_empty() {
            return Err(bad(format!(
                "* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
            )));
        }
        for (j, part) in content.parts.iter().enumerate() {
            media_part(part.get()).map_err(|message| {
                bad(format!(
                    "Invalid value at 'contents[{i}].parts[{j}].{message}"
                ))
            })?;
        }
    }
    if let Some(tools) = request.tools {
        for bad_key in ["additionalProperties", "$schema"] {
            if tools.get().contains(&format!("\"{bad_key}\"")) {
                return Err(bad(format!(
                    "Invalid JSON payload received. Unknown name \"{bad_key}\" at 'tools[0].function_declarations[0].parameters': Cannot find field."
                )));
            }
        }
    }
    let _ = (
        &request.system_instruction,
        &request.generation_config,
        &request.safety_settings,
        &request.cached_content,
        &request.labels,
    );
    Ok(request)
}

/// The media types Gemini reads (images, audio, documents; video by prefix).
const MEDIA_TYPES: [&str; 13] = [
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/heic",
    "image/heif",
    "audio/wav",
    "audio/mp3",
    "audio/aiff",
    "audio/aac",
    "audio/ogg",
    "audio/flac",
    "application/pdf",
    "text/plain",
];

/// Checks a part's `inlineData` (a type Gemini reads, base64 that decodes
/// to it) and `fileData` (a URI Gemini can fetch) as Google does. `Err` is
/// the rest of the message after `Invalid value at 'contents[i].parts[j].`.
fn media_part(part: &str) -> Result<(), String> {
    if !part.contains("inlineData") && !part.contains("fileData") {
        return Ok(());
    }
    let part: serde_json::Value = serde_json::from_str(part).map_err(|e| format!("': {e}"))?;
    let known = |mime: &str| MEDIA_TYPES.contains(&mime) || mime.starts_with("video/");
    if let Some(blob) = part.get("inlineData") {
        let mime = blob["mimeType"].as_str().unwrap_or_default();
        if mime.is_empty() {
            return Err("inline_data.mime_type' (TYPE_STRING): a mime type is required".into());
        }
        if !known(mime) {
            return Err(format!(
                "inline_data.mime_type': Unsupported MIME type: {mime}"
            ));
        }
        crate::media::check(mime, blob["data"].as_str().unwrap_or_default())
            .map_err(|e| format!("inline_data.data' (TYPE_BYTES): {e}"))?;
    }
    if let Some(file) = part.get("fileData") {
        let uri = file["fileUri"].as_str().unwrap_or_default();
        if !["https://", "http://", "gs://"]
            .iter()
            .any(|scheme| uri.starts_with(scheme))
        {
            return Err(format!(
                "file_data.file_uri': Unsupported file uri: {uri:?}"
            ));
        }
        if let Some(mime) = file["mimeType"].as_str() {
            if !known(mime) {
                return Err(format!(
                    "file_data.mime_type': Unsupported MIME type: {mime}"
                ));
            }
        }
    }
    Ok(())
}

impl GenerateRequest<'_> {
    /// The function the answer calls, if any: the control header wins,
    /// then mode `ANY` (the first allowed or declared function).
    fn forced_call(&self, control: &Control) -> Option<String> {
        if let Some(name) = &control.tool_call {
            return Some(name.clone());
        }
        let config = self
            .tool_config
            .as_ref()?
            .function_calling_config
            .as_ref()?;
        if config.mode.as_deref() != Some("ANY") {
            return None;
        }
        if let Some(name) = config.allowed_function_names.first() {
            return Some(name.clone().into_owned());
        }
        let tools: Vec<Tools<'_>> = serde_json::from_str(self.tools?.get()).ok()?;
        tools
            .into_iter()
            .flat_map(|t| t.function_declarations)
            .next()
            .map(|d| d.name.into_owned())
    }
}

fn usage(control: &Control, candidates: u64) -> String {
    let prompt = control.prompt_tokens;
    let cached = if control.cached_tokens > 0 {
        format!(",\"cachedContentTokenCount\":{}", control.cached_tokens)
    } else {
        String::new()
    };
    format!(
        "{{\"promptTokenCount\":{prompt},\"candidatesTokenCount\":{candidates},\"totalTokenCount\":{}{cached}}}",
        prompt + candidates
    )
}

/// `...:generateContent` and `...:streamGenerateContent?alt=sse`.
/// `stream_error`: end the stream with an error event after the content.
pub(crate) fn generate(
    parts: &Parts,
    body: &[u8],
    control: &Control,
    id: u64,
    stream: bool,
    stream_error: bool,
) -> Result<Reply, Answer> {
    if stream && parts.uri.query() != Some("alt=sse") {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "this mock streams only with ?alt=sse (without it Google sends one JSON array)",
        ));
    }
    let request = parse(body)?;
    let model = parts
        .uri
        .path()
        .rsplit_once("/models/")
        .and_then(|(_, rest)| rest.split_once(':'))
        .map_or("unknown", |(model, _)| model)
        .to_owned();
    let call = request.forced_call(control);
    let response_id = format!("mock-resp-{id}");
    if stream {
        return Ok(Reply::Stream(Box::new(GenerateStream {
            head: format!(
                "\"modelVersion\":{},\"responseId\":\"{response_id}\"",
                json_str(&model)
            ),
            call: call.map(|name| json_str(&name)),
            control: control.clone(),
            stream_error,
            step: 0,
        })));
    }
    let part = match &call {
        Some(name) => format!(
            "{{\"functionCall\":{{\"name\":{},\"args\":{CALL_ARGS}}}}}",
            json_str(name)
        ),
        None => format!("{{\"text\":{}}}", json_str(&content(control.chunks))),
    };
    Ok(Reply::Json(Bytes::from(format!(
        "{{\"candidates\":[{{\"content\":{{\"parts\":[{part}],\"role\":\"model\"}},\"finishReason\":\"STOP\",\"index\":0}}],\"usageMetadata\":{},\"modelVersion\":{},\"responseId\":\"{response_id}\"}}",
        usage(control, u64::from(control.chunks)),
        json_str(&model)
    ))))
}

/// A streamed answer, one event per content chunk.
struct GenerateStream {
    /// `"modelVersion":...,"responseId":...`.
    head: String,
    /// A JSON string literal.
    call: Option<String>,
    control: Control,
    stream_error: bool,
    step: u32,
}

fn sse(kind: EventKind, data: &str) -> Event {
    Event {
        kind,
        bytes: Bytes::from(format!("data: {data}\r\n\r\n")),
    }
}

impl EventSource for GenerateStream {
    fn next_event(&mut self) -> Option<Event> {
        let i = self.step;
        self.step = self.step.saturating_add(1);
        let chunks = if self.call.is_some() {
            1
        } else {
            self.control.chunks
        };
        if i < chunks {
            let part = match &self.call {
                Some(name) => {
                    format!("{{\"functionCall\":{{\"name\":{name},\"args\":{CALL_ARGS}}}}}")
                }
                None => format!("{{\"text\":\"{}\"}}", ChunkText(i)),
            };
            let last = i + 1 == chunks && !self.stream_error;
            let finish = if last {
                ",\"finishReason\":\"STOP\""
            } else {
                ""
            };
            return Some(sse(
                EventKind::Content,
                &format!(
                    "{{\"candidates\":[{{\"content\":{{\"parts\":[{part}],\"role\":\"model\"}}{finish},\"index\":0}}],\"usageMetadata\":{},{}}}",
                    usage(&self.control, u64::from(i + 1)),
                    self.head
                ),
            ));
        }
        (i == chunks && self.stream_error).then(|| {
            sse(
                EventKind::Tail,
                "{\"error\":{\"code\":503,\"message\":\"The model is overloaded. Please try again later.\",\"status\":\"UNAVAILABLE\"}}",
            )
        })
    }
}

/// The test account's public key (PKCS#1 DER), derived from its private key.
fn public_key() -> Option<Vec<u8>> {
    #[derive(Deserialize)]
    struct KeyFile {
        private_key: String,
    }
    let file: KeyFile = serde_json::from_str(TEST_SERVICE_ACCOUNT).ok()?;
    let body: String = file
        .private_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = STANDARD.decode(body).ok()?;
    let pair = RsaKeyPair::from_pkcs8(&der).ok()?;
    Some(pair.public_key().as_ref().to_vec())
}

/// `POST .../token` (form `grant_type=...jwt-bearer&assertion=JWT`): checks
/// the assertion's signature and claims, issues `ya29.mock-N`. The query
/// steers it: `expires_in=N` (default 3599), `status=N` to fail.
pub(crate) fn token(parts: &Parts, body: &[u8]) -> Answer {
    let query: HashMap<&str, &str> = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let oauth_error = |status: StatusCode, error: &str, description: &str| Answer {
        status,
        body: Bytes::from(format!(
            "{{\"error\":{},\"error_description\":{}}}",
            json_str(error),
            json_str(description)
        )),
    };
    if let Some(status) = query
        .get("status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
    {
        return oauth_error(
            status,
            "temporarily_unavailable",
            "mock token endpoint failure",
        );
    }
    let form: HashMap<&str, &str> = std::str::from_utf8(body)
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    if form.get("grant_type") != Some(&"urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type",
        );
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing assertion",
        );
    };
    let invalid = |why: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why);
    let Some((signed, signature)) = assertion.rsplit_once('.') else {
        return invalid("Invalid JWT");
    };
    let (Some(key), Ok(signature)) = (public_key(), URL_SAFE_NO_PAD.decode(signature)) else {
        return invalid("Invalid JWT Signature.");
    };
    if UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key)
        .verify(signed.as_bytes(), &signature)
        .is_err()
    {
        return invalid("Invalid JWT Signature.");
    }
    #[derive(Deserialize)]
    struct Claims {
        iss: String,
        scope: String,
        aud: String,
        iat: u64,
        exp: u64,
    }
    let claims: Option<Claims> = signed
        .split_once('.')
        .and_then(|(_, payload)| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|json| serde_json::from_slice(&json).ok());
    let Some(claims) = claims else {
        return invalid("Invalid JWT claims");
    };
    let expected_aud = format!("/{}", parts.uri.path().trim_start_matches('/'));
    if !claims.iss.ends_with(".iam.gserviceaccount.com")
        || claims.scope != "https://www.googleapis.com/auth/cloud-platform"
        || !claims
            .aud
            .split('?')
            .next()
            .is_some_and(|aud| aud.ends_with(&expected_aud))
        || claims.exp <= claims.iat
        || claims.exp - claims.iat > 3600
    {
        return invalid("Invalid JWT claims (iss, scope, aud, iat/exp)");
    }
    let n = ISSUED.fetch_add(1, Ordering::Relaxed) + 1;
    let expires_in = query
        .get("expires_in")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(3599);
    Answer {
        status: StatusCode::OK,
        body: Bytes::from(format!(
            "{{\"access_token\":\"ya29.mock-{n}\",\"expires_in\":{expires_in},\"token_type\":\"Bearer\"}}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_studio_and_vertex_paths() {
        assert!(matches!(
            route("/v1beta/models/gemini-2.0-flash:generateContent"),
            Some(Route::Generate {
                vertex: false,
                stream: false
            })
        ));
        assert!(matches!(
            route("/v1/projects/p/locations/us-central1/publishers/google/models/g:streamGenerateContent"),
            Some(Route::Generate { vertex: true, stream: true })
        ));
        assert!(matches!(route("/token"), Some(Route::Token)));
        // Express mode: Vertex's path without project or location, a key.
        assert!(matches!(
            route("/v1/publishers/google/models/gemini-2.5-flash:generateContent"),
            Some(Route::Generate {
                vertex: false,
                stream: false
            })
        ));
        assert!(matches!(
            route("/v1/projects/p/locations/l/publishers/anthropic/models/claude-x:rawPredict"),
            Some(Route::Claude(claude::Method::Predict))
        ));
        assert!(route("/v1/chat/completions").is_none());
        assert!(route("/v1/models").is_none());
    }

    #[test]
    fn refuses_what_google_refuses() {
        for (body, needle) in [
            (r#"{"messages":[]}"#, "unknown field `messages`"),
            (r#"{"contents":[]}"#, "contents is not specified"),
            (
                r#"{"contents":[{"role":"assistant","parts":[{"text":"x"}]}]}"#,
                "valid role",
            ),
            (
                r#"{"contents":[{"role":"user","parts":[]}]}"#,
                "must not be empty",
            ),
            (
                r#"{"contents":[{"role":"user","parts":[{"text":"x"}]}],"tools":[{"functionDeclarations":[{"name":"f","parameters":{"type":"object","additionalProperties":false}}]}]}"#,
                "additionalProperties",
            ),
        ] {
            let refusal = parse(body.as_bytes()).err().unwrap();
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
            let text = String::from_utf8_lossy(&refusal.body);
            assert!(text.contains(needle), "{body}: {text}");
        }
        assert!(public_key().is_some());
    }

    #[test]
    fn refuses_media_as_google_does() {
        const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";
        let with = |part: &str| {
            format!(r#"{{"contents":[{{"role":"user","parts":[{{"text":"x"}},{part}]}}]}}"#)
        };
        for (part, needle) in [
            (
                format!(r#"{{"inlineData":{{"mimeType":"image/gif","data":"{PNG}"}}}}"#),
                "Unsupported MIME type: image/gif",
            ),
            (
                format!(r#"{{"inlineData":{{"data":"{PNG}"}}}}"#),
                "parts[1].inline_data.mime_type",
            ),
            (
                r#"{"inlineData":{"mimeType":"audio/wav","data":"UklGR"}}"#.into(),
                "not valid base64",
            ),
            (
                format!(r#"{{"inlineData":{{"mimeType":"audio/wav","data":"{PNG}"}}}}"#),
                "does not match the declared media type audio/wav",
            ),
            (
                r#"{"fileData":{"fileUri":"ftp://x/a.png"}}"#.into(),
                "Unsupported file uri",
            ),
        ] {
            let body = with(&part);
            let refusal = parse(body.as_bytes()).err().unwrap();
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
            let text = String::from_utf8_lossy(&refusal.body);
            assert!(text.contains(needle), "{body}: {text}");
        }
        for part in [
            format!(r#"{{"inlineData":{{"mimeType":"image/png","data":"{PNG}"}}}}"#),
            r#"{"inlineData":{"mimeType":"audio/wav","data":"UklGRgAAAABXQVZF"}}"#.into(),
            r#"{"inlineData":{"mimeType":"application/pdf","data":"JVBERi0="}}"#.into(),
            r#"{"fileData":{"mimeType":"image/png","fileUri":"https://x.test/a.png"}}"#.into(),
            r#"{"fileData":{"fileUri":"https://x.test/render"}}"#.into(),
        ] {
            assert!(parse(with(&part).as_bytes()).is_ok(), "{part}");
        }
    }
}
