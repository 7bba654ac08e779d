//! Translation between the schema a client speaks and the one a backend
//! speaks. OpenAI chat is the pivot: each backend schema has one module
//! (`anthropic`, `gemini`, `bedrock`, `cohere`) that
//! translates requests out and responses and event streams back, plus the
//! client side of the same schema. When client and backend speak the same
//! schema nothing here runs: bytes pass through untouched.
//!
//! This module decides the [`Plan`] for a request and backend, and owns the
//! [`Pipe`] a translated (or observed) response body flows through on its
//! way to the client. Knows nothing of routing, limits or connections.

pub mod anthropic;
pub mod bedrock;
pub mod cohere;
pub mod completions;
pub mod embed;
pub mod gemini;
pub mod media;
pub mod openai;
pub mod rerank;

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use sluice_crds::snapshot::Provider;

use super::sse::{last_boundary, next_event_len, SseState};
use super::Endpoint;
use crate::telemetry::Usage;

/// A wire schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// OpenAI Chat Completions (and the other OpenAI endpoints).
    OpenAI,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini `generateContent` (AI Studio and Vertex AI).
    Gemini,
    /// AWS Bedrock Converse (backends only).
    Bedrock,
    /// Cohere's v2 Chat API (backends only).
    Cohere,
}

impl Schema {
    /// What a backend of this provider speaks.
    pub fn of_provider(provider: Provider) -> Self {
        match provider {
            Provider::Anthropic => Self::Anthropic,
            Provider::Gemini | Provider::VertexAI => Self::Gemini,
            Provider::Bedrock => Self::Bedrock,
            Provider::Cohere => Self::Cohere,
            _ => Self::OpenAI,
        }
    }

    /// What a client of this endpoint speaks.
    pub fn of_client(endpoint: Endpoint) -> Self {
        match endpoint {
            Endpoint::Messages | Endpoint::CountTokens => Self::Anthropic,
            _ => Self::OpenAI,
        }
    }
}

/// How one request reaches one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Same schema: the body goes as it is (model override aside).
    Passthrough,
    /// The body is translated from the client's schema to the backend's,
    /// and the answer back.
    Translate {
        /// What the client speaks.
        client: Schema,
        /// What the backend speaks.
        backend: Schema,
    },
    /// The gateway answers itself (count_tokens for a backend without it).
    Local,
    /// This backend cannot serve this endpoint.
    Unsupported,
}

/// The plan for `endpoint` on a backend speaking `backend`.
pub fn plan(endpoint: Endpoint, backend: Schema) -> Plan {
    let client = Schema::of_client(endpoint);
    match (endpoint, backend) {
        (
            Endpoint::CountTokens,
            Schema::OpenAI | Schema::Gemini | Schema::Bedrock | Schema::Cohere,
        ) => Plan::Local,
        (Endpoint::ChatCompletions | Endpoint::Messages, _) if client != backend => {
            Plan::Translate { client, backend }
        }
        // Text completions reach chat-only backends as chat (`completions`).
        (Endpoint::Completions, _) if backend != Schema::OpenAI => {
            Plan::Translate { client, backend }
        }
        // Native embedding APIs (see `embed`), Cohere's rerank.
        (Endpoint::Embeddings, Schema::Gemini | Schema::Bedrock | Schema::Cohere)
        | (Endpoint::Rerank, Schema::Cohere) => Plan::Translate { client, backend },
        _ if client == backend => Plan::Passthrough,
        _ => Plan::Unsupported,
    }
}

/// The path appended to the backend's base URL (`.../v1`).
pub fn upstream_suffix(endpoint: Endpoint, backend: Schema) -> &'static str {
    match (endpoint, backend) {
        (
            Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Messages,
            Schema::Anthropic,
        ) => "/messages",
        (Endpoint::CountTokens, Schema::Anthropic) => "/messages/count_tokens",
        (Endpoint::Messages, Schema::OpenAI) => "/chat/completions",
        // `{base}/models/{model}` + this (`:streamGenerateContent?alt=sse`
        // for streams: see `gemini::STREAM_METHOD`).
        (
            Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Messages,
            Schema::Gemini,
        ) => ":generateContent",
        (
            Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Messages,
            Schema::Cohere,
        ) => "/chat",
        // Vertex AI's `:predict` instead: see `forward`.
        (Endpoint::Embeddings, Schema::Gemini) => gemini::embed::METHOD,
        (Endpoint::Embeddings, Schema::Cohere) => cohere::embed::PATH,
        (Endpoint::Rerank, Schema::Cohere) => cohere::rerank::PATH,
        // The model and stream pick the path: see `bedrock::path`.
        (_, Schema::Bedrock) => "",
        _ => endpoint.upstream_suffix(),
    }
}

/// The body for the backend under a translating plan on `endpoint`, for
/// `model`: embeddings and rerank have their own translators, a text
/// completion goes as the chat request it stands for, and chat and
/// messages through [`chat_request`].
pub fn request(
    plan: Plan,
    endpoint: Endpoint,
    body: &[u8],
    model: &str,
) -> Result<Bytes, TranslateError> {
    let Plan::Translate { backend, .. } = plan else {
        return chat_request(plan, body, model);
    };
    match (endpoint, backend) {
        (Endpoint::Embeddings, Schema::Gemini) => gemini::embed::to_gemini(body, model),
        (Endpoint::Embeddings, Schema::Bedrock) => bedrock::embed::to_bedrock(body, model),
        (Endpoint::Embeddings, Schema::Cohere) => cohere::embed::to_cohere(body, model),
        (Endpoint::Rerank, Schema::Cohere) => cohere::rerank::to_cohere(body, model),
        (Endpoint::Completions, _) => {
            let chat = completions::to_chat(body, model)?;
            return chat_request(plan, &chat, model);
        }
        _ => return chat_request(plan, body, model),
    }
    .map(Bytes::from)
}

/// The body of a chat (or messages) request for the backend under a
/// translating plan, for `model`.
fn chat_request(plan: Plan, body: &[u8], model: &str) -> Result<Bytes, TranslateError> {
    match plan {
        Plan::Translate {
            client: Schema::OpenAI,
            backend: Schema::Anthropic,
        } => anthropic::request::to_anthropic(body, model).map(Bytes::from),
        Plan::Translate {
            client: Schema::Anthropic,
            backend: Schema::OpenAI,
        } => anthropic::request::to_openai(body, model).map(Bytes::from),
        Plan::Translate {
            client: Schema::OpenAI,
            backend: Schema::Gemini,
        } => gemini::request::to_gemini(body).map(Bytes::from),
        // Anthropic clients reach Gemini through the OpenAI pivot.
        Plan::Translate {
            client: Schema::Anthropic,
            backend: Schema::Gemini,
        } => {
            let openai = anthropic::request::to_openai(body, model)?;
            gemini::request::to_gemini(&openai).map(Bytes::from)
        }
        Plan::Translate {
            client: Schema::OpenAI,
            backend: Schema::Bedrock,
        } => bedrock::request::to_bedrock(body).map(Bytes::from),
        // Through the pivot: Anthropic → OpenAI → Converse.
        Plan::Translate {
            client: Schema::Anthropic,
            backend: Schema::Bedrock,
        } => {
            let openai = anthropic::request::to_openai(body, model)?;
            bedrock::request::to_bedrock(&openai).map(Bytes::from)
        }
        Plan::Translate {
            client: Schema::OpenAI,
            backend: Schema::Cohere,
        } => cohere::request::to_cohere(body, model).map(Bytes::from),
        // Through the pivot: Anthropic → OpenAI → Cohere.
        Plan::Translate {
            client: Schema::Anthropic,
            backend: Schema::Cohere,
        } => {
            let openai = anthropic::request::to_openai(body, model)?;
            cohere::request::to_cohere(&openai, model).map(Bytes::from)
        }
        _ => Ok(Bytes::copy_from_slice(body)),
    }
}

/// Why a translation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The client's request cannot be expressed in the backend's schema (a 400).
    #[error("{0}")]
    Request(String),
    /// The backend's answer cannot be read (a 502).
    #[error("{0}")]
    Response(String),
}

impl TranslateError {
    fn request(error: serde_json::Error) -> Self {
        Self::Request(if error.is_syntax() || error.is_eof() {
            format!("the request body is not valid JSON: {error}")
        } else {
            format!("invalid request body: {error}")
        })
    }

    fn response(error: serde_json::Error) -> Self {
        Self::Response(format!("the upstream answer could not be read: {error}"))
    }
}

/// Token counts in full, whichever schema reported them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TokenUsage {
    /// Every input token, cache reads and writes included.
    pub input: u64,
    /// Output tokens, reasoning included.
    pub output: u64,
    /// Input tokens read from the provider's cache.
    pub cached_input: u64,
    /// Input tokens written to the provider's cache.
    pub cache_creation: u64,
    /// Output tokens spent reasoning.
    pub reasoning: u64,
}

impl TokenUsage {
    /// What the access record and budgets account.
    pub fn record(&self) -> Usage {
        Usage {
            input: self.input,
            output: self.output,
            cached_input: self.cached_input,
        }
    }
}

/// Splits a byte stream into whole server-sent events, keeping the tail.
#[derive(Default)]
pub struct Splitter {
    pending: BytesMut,
}

impl Splitter {
    /// Takes more bytes; returns the whole events now complete, if any.
    pub fn push(&mut self, data: &[u8]) -> Option<Bytes> {
        self.pending.extend_from_slice(data);
        let end = last_boundary(&self.pending)?;
        Some(self.pending.split_to(end).freeze())
    }
}

/// The whole events of `bytes`, each with its blank line.
pub fn events(mut bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let len = next_event_len(bytes)?;
        let (event, rest) = bytes.split_at(len);
        bytes = rest;
        Some(event)
    })
}

/// Whether `data` ends at an event boundary.
pub fn ends_event(data: &[u8]) -> bool {
    data.ends_with(b"\n\n") || data.ends_with(b"\n\r\n")
}

/// The data of an event: its `data:` lines, joined by newlines.
pub fn event_data(event: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut found: Option<Cow<'_, [u8]>> = None;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            continue;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        found = Some(match found {
            None => Cow::Borrowed(data),
            Some(before) => {
                let mut joined = before.into_owned();
                joined.push(b'\n');
                joined.extend_from_slice(data);
                Cow::Owned(joined)
            }
        });
    }
    found
}

/// Whole JSON bodies larger than this are not translated (a 502 instead).
const MAX_WHOLE: usize = 8 << 20;

/// What a whole body becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Whole {
    /// A backend's chat answer (of this schema), in OpenAI's shape, and on
    /// to Anthropic's for an Anthropic client.
    Answer(Schema),
    /// A backend's error (of this schema), likewise.
    Error(Schema),
    /// Gemini's `batchEmbedContents` (or Vertex AI's `:predict`) answer as
    /// OpenAI's embeddings list.
    GeminiEmbedToOpenAI,
    /// A Bedrock InvokeModel embedding answer (Titan or Cohere Embed).
    BedrockEmbedToOpenAI,
    /// Cohere's `/v2/embed` answer.
    CohereEmbedToOpenAI,
    /// A rerank answer, passed on; its usage read.
    Rerank,
}

/// A response body on its way from a backend to a client whose schema
/// differs (or, for Anthropic passthrough, whose usage the OpenAI readers
/// cannot see). Driven by the LLM response observer.
pub struct Pipe {
    client: Schema,
    kind: PipeKind,
    upstream: UpstreamHead,
    /// A text completions client: chat answers become `text_completion`s.
    text: Option<completions::ToText>,
}

/// What a translation needs from the request and the upstream's head.
#[derive(Default)]
struct UpstreamHead {
    /// The model the client asked for (Bedrock answers do not name one).
    model: String,
    /// Bedrock's `x-amzn-errortype`.
    error_type: Option<String>,
    /// Bedrock's `x-amzn-bedrock-input-token-count` (InvokeModel answers).
    input_tokens: Option<u64>,
    /// Embeddings: the encoding asked for and the input estimate.
    embed: embed::Ask,
    /// Rerank: the input estimate (query and documents).
    rerank_estimate: u64,
}

enum PipeKind {
    /// Collected whole, translated at the end.
    Whole {
        what: Whole,
        status: StatusCode,
        created: u64,
        buffer: BytesMut,
        too_large: bool,
        usage: Option<TokenUsage>,
        /// The status the client gets, once known.
        answer_status: Option<StatusCode>,
        /// The usage is the gateway's estimate (the backend reported none).
        estimated: bool,
    },
    /// Anthropic events → OpenAI chunks, then the OpenAI stream filter.
    StreamToOpenAI {
        translator: anthropic::stream::ToOpenAI,
        sse: SseState,
    },
    /// OpenAI chunks, through the OpenAI stream filter, → Anthropic events.
    StreamToAnthropic {
        sse: SseState,
        translator: anthropic::stream::ToAnthropic,
    },
    /// Gemini events → OpenAI chunks, then the OpenAI stream filter.
    GeminiToOpenAI {
        translator: gemini::stream::ToOpenAI,
        sse: SseState,
    },
    /// Gemini events → OpenAI chunks → the filter → Anthropic events.
    GeminiToAnthropic {
        translator: gemini::stream::ToOpenAI,
        sse: SseState,
        to_anthropic: anthropic::stream::ToAnthropic,
    },
    /// An Anthropic stream passed through, its usage read.
    ObserveStream(anthropic::stream::Observer),
    /// An Anthropic JSON body passed through, its usage read at the end.
    ObserveJson { chunks: Vec<Bytes>, size: usize },
    /// A Bedrock event stream → OpenAI chunks, then the OpenAI stream
    /// filter, then (for an Anthropic client) Anthropic events.
    BedrockStream {
        translator: bedrock::stream::ToOpenAI,
        sse: SseState,
        to_anthropic: Option<Box<anthropic::stream::ToAnthropic>>,
    },
    /// Cohere events → OpenAI chunks, then the OpenAI stream filter, then
    /// (for an Anthropic client) Anthropic events.
    CohereStream {
        translator: cohere::stream::ToOpenAI,
        sse: SseState,
        to_anthropic: Option<Box<anthropic::stream::ToAnthropic>>,
    },
}

impl PipeKind {
    /// A body collected whole, to become `what`.
    fn whole(what: Whole, status: StatusCode) -> Self {
        Self::Whole {
            what,
            status,
            created: now_s(),
            buffer: BytesMut::new(),
            too_large: false,
            usage: None,
            answer_status: None,
            estimated: false,
        }
    }
}

/// The seconds since the epoch, for `created`.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Pipe {
    /// The pipe for an upstream answer under `plan`, or `None` when the
    /// body goes through the OpenAI readers as before. `include_usage`:
    /// the OpenAI client asked for stream usage. `estimated_input`: the
    /// prompt estimate, shown until the upstream reports usage.
    pub fn for_answer(
        plan: Plan,
        endpoint: Endpoint,
        status: StatusCode,
        event_stream: bool,
        include_usage: bool,
        estimated_input: u64,
    ) -> Option<Self> {
        let client = Schema::of_client(endpoint);
        if let Some(what) = Self::embed_or_rerank(plan, endpoint, status) {
            return what.map(|what| Self {
                client,
                kind: PipeKind::whole(what, status),
                upstream: UpstreamHead::default(),
                text: None,
            });
        }
        let backend = match plan {
            Plan::Translate { backend, .. } => backend,
            Plan::Passthrough if client == Schema::Anthropic && endpoint == Endpoint::Messages => {
                Schema::Anthropic
            }
            _ => return None,
        };
        let whole = |what| PipeKind::whole(what, status);
        let bedrock_stream = |sse, to_anthropic| PipeKind::BedrockStream {
            translator: bedrock::stream::ToOpenAI::new(completion_id(), String::new(), now_s()),
            sse,
            to_anthropic,
        };
        // After a backend's translator: the OpenAI stream filter (usage
        // chunk kept only if asked), then Anthropic's events for its clients.
        let to_client = || match client {
            Schema::OpenAI => (SseState::new(!include_usage), None),
            _ => (
                SseState::new(false),
                Some(Box::new(anthropic::stream::ToAnthropic::new(
                    estimated_input,
                ))),
            ),
        };
        let cohere_stream = |sse, to_anthropic| PipeKind::CohereStream {
            translator: cohere::stream::ToOpenAI::new(now_s()),
            sse,
            to_anthropic,
        };
        let kind = match (client, backend, status.is_success(), event_stream) {
            (_, Schema::Cohere, false, _) => whole(Whole::Error(Schema::Cohere)),
            (_, Schema::Cohere, true, true) => {
                let (sse, to_anthropic) = to_client();
                cohere_stream(sse, to_anthropic)
            }
            (_, Schema::Cohere, true, false) => whole(Whole::Answer(Schema::Cohere)),
            (_, Schema::Bedrock, false, _) => whole(Whole::Error(Schema::Bedrock)),
            (_, Schema::Bedrock, true, true) => {
                let (sse, to_anthropic) = to_client();
                bedrock_stream(sse, to_anthropic)
            }
            (_, Schema::Bedrock, true, false) => whole(Whole::Answer(Schema::Bedrock)),
            // Anthropic passthrough: errors as they are, successes observed.
            (Schema::Anthropic, Schema::Anthropic, false, _) => return None,
            (Schema::Anthropic, Schema::Anthropic, true, true) => {
                PipeKind::ObserveStream(anthropic::stream::Observer::default())
            }
            (Schema::Anthropic, Schema::Anthropic, true, false) => PipeKind::ObserveJson {
                chunks: Vec::new(),
                size: 0,
            },
            (_, Schema::Gemini, false, _) => whole(Whole::Error(Schema::Gemini)),
            (Schema::OpenAI, Schema::Gemini, true, true) => PipeKind::GeminiToOpenAI {
                translator: gemini::stream::ToOpenAI::new(now_s()),
                sse: SseState::new(!include_usage),
            },
            (Schema::OpenAI, Schema::Gemini, true, false) => whole(Whole::Answer(Schema::Gemini)),
            (Schema::Anthropic, Schema::Gemini, true, true) => PipeKind::GeminiToAnthropic {
                translator: gemini::stream::ToOpenAI::new(now_s()),
                sse: SseState::new(false),
                to_anthropic: anthropic::stream::ToAnthropic::new(estimated_input),
            },
            (Schema::Anthropic, Schema::Gemini, true, false) => {
                whole(Whole::Answer(Schema::Gemini))
            }
            (_, _, false, _) => whole(Whole::Error(backend)),
            (Schema::OpenAI, _, true, true) => PipeKind::StreamToOpenAI {
                translator: anthropic::stream::ToOpenAI::new(now_s()),
                sse: SseState::new(!include_usage),
            },
            (Schema::OpenAI, _, true, false) => whole(Whole::Answer(backend)),
            (Schema::Anthropic, _, true, true) => PipeKind::StreamToAnthropic {
                sse: SseState::new(false),
                translator: anthropic::stream::ToAnthropic::new(estimated_input),
            },
            (Schema::Anthropic, _, true, false) => whole(Whole::Answer(backend)),
            // No client speaks a backend-only schema.
            (Schema::Gemini, _, _, _) => return None,
            // No client speaks Converse or Cohere's schema.
            (Schema::Bedrock | Schema::Cohere, _, _, _) => return None,
        };
        Some(Self {
            client,
            kind,
            upstream: UpstreamHead::default(),
            text: (endpoint == Endpoint::Completions).then(completions::ToText::default),
        })
    }

    /// For embeddings and rerank: `Some(None)` when the answer passes
    /// untouched, `Some(Some(what))` when it is read whole, `None` for the
    /// other endpoints.
    fn embed_or_rerank(
        plan: Plan,
        endpoint: Endpoint,
        status: StatusCode,
    ) -> Option<Option<Whole>> {
        if !matches!(endpoint, Endpoint::Embeddings | Endpoint::Rerank) {
            return None;
        }
        let backend = match plan {
            Plan::Translate { backend, .. } => backend,
            // OpenAI-schema rerank: the answer as it is, its usage read.
            Plan::Passthrough if endpoint == Endpoint::Rerank && status.is_success() => {
                return Some(Some(Whole::Rerank))
            }
            _ => return Some(None),
        };
        Some(Some(match (endpoint, backend, status.is_success()) {
            (_, Schema::Gemini | Schema::Bedrock | Schema::Cohere, false) => Whole::Error(backend),
            (Endpoint::Rerank, _, true) => Whole::Rerank,
            (_, Schema::Gemini, true) => Whole::GeminiEmbedToOpenAI,
            (_, Schema::Bedrock, true) => Whole::BedrockEmbedToOpenAI,
            (_, Schema::Cohere, true) => Whole::CohereEmbedToOpenAI,
            _ => return Some(None),
        }))
    }

    /// Notes what an embeddings or rerank answer's translation needs from
    /// the client's request: the encoding asked for, the input estimate.
    pub fn note_request(&mut self, body: &[u8]) {
        let PipeKind::Whole { what, .. } = &self.kind else {
            return;
        };
        match what {
            Whole::GeminiEmbedToOpenAI
            | Whole::BedrockEmbedToOpenAI
            | Whole::CohereEmbedToOpenAI => {
                self.upstream.embed = embed::ask(body);
            }
            Whole::Rerank => self.upstream.rerank_estimate = rerank::estimate(body),
            _ => {}
        }
    }

    /// Notes what a translation needs from the request and the upstream's
    /// head: the model asked for, Bedrock's `x-amzn-errortype` and input
    /// token count.
    pub fn note_upstream(&mut self, model: &str, headers: &http::HeaderMap) {
        self.upstream.model = model.to_owned();
        self.upstream.error_type = headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.upstream.input_tokens = headers
            .get("x-amzn-bedrock-input-token-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        match &mut self.kind {
            PipeKind::BedrockStream { translator, .. } => translator.set_model(model),
            PipeKind::CohereStream { translator, .. } => translator.set_model(model),
            _ => {}
        }
    }

    /// The `content-type` the client gets when it differs from the
    /// upstream's (a Bedrock event stream becomes server-sent events).
    pub fn content_type(&self) -> Option<&'static str> {
        matches!(self.kind, PipeKind::BedrockStream { .. }).then_some("text/event-stream")
    }

    /// Whether the whole body is translated before any of it goes out (the
    /// handler then reads it all first, so that its status can change).
    pub fn is_whole(&self) -> bool {
        matches!(self.kind, PipeKind::Whole { .. })
    }

    /// The status the client gets, once a whole body is translated.
    pub fn answer_status(&self) -> Option<StatusCode> {
        match &self.kind {
            PipeKind::Whole { answer_status, .. } => *answer_status,
            _ => None,
        }
    }

    /// Takes upstream bytes, returns what goes to the client now. With
    /// `allow`, it is asked before the n-th content event goes out; at the
    /// first refusal `Err` carries what may still go out.
    pub fn on_data(
        &mut self,
        data: Bytes,
        allow: Option<&mut dyn FnMut(u64) -> bool>,
    ) -> Result<Bytes, Bytes> {
        let out = self.on_data_chat(data, allow);
        match &mut self.text {
            None => out,
            Some(text) => match out {
                Ok(bytes) => Ok(Bytes::from(text.on_data(&bytes))),
                Err(bytes) => Err(Bytes::from(text.on_data(&bytes))),
            },
        }
    }

    /// [`Self::on_data`] up to the client's chat schema.
    fn on_data_chat(
        &mut self,
        data: Bytes,
        allow: Option<&mut dyn FnMut(u64) -> bool>,
    ) -> Result<Bytes, Bytes> {
        match &mut self.kind {
            PipeKind::Whole {
                buffer, too_large, ..
            } => {
                if buffer.len() + data.len() > MAX_WHOLE {
                    *too_large = true;
                    buffer.clear();
                } else if !*too_large {
                    buffer.extend_from_slice(&data);
                }
                Ok(Bytes::new())
            }
            PipeKind::StreamToOpenAI { translator, sse } => {
                let mut out = Vec::new();
                translator.on_data(&data, &mut out);
                filter(sse, Bytes::from(out), allow)
            }
            PipeKind::StreamToAnthropic { sse, translator } => {
                let (filtered, refused) = match filter(sse, data, allow) {
                    Ok(bytes) => (bytes, false),
                    Err(bytes) => (bytes, true),
                };
                let mut out = Vec::new();
                translator.on_data(&filtered, &mut out);
                if refused {
                    Err(Bytes::from(out))
                } else {
                    Ok(Bytes::from(out))
                }
            }
            PipeKind::GeminiToOpenAI { translator, sse } => {
                let mut out = Vec::new();
                translator.on_data(&data, &mut out);
                filter(sse, Bytes::from(out), allow)
            }
            PipeKind::GeminiToAnthropic {
                translator,
                sse,
                to_anthropic,
            } => {
                let mut chunks = Vec::new();
                translator.on_data(&data, &mut chunks);
                let (filtered, refused) = match filter(sse, Bytes::from(chunks), allow) {
                    Ok(bytes) => (bytes, false),
                    Err(bytes) => (bytes, true),
                };
                let mut out = Vec::new();
                to_anthropic.on_data(&filtered, &mut out);
                if refused {
                    Err(Bytes::from(out))
                } else {
                    Ok(Bytes::from(out))
                }
            }
            PipeKind::ObserveStream(observer) => observer.on_data(data, allow),
            PipeKind::ObserveJson { chunks, size } => {
                if *size + data.len() <= MAX_WHOLE {
                    *size += data.len();
                    chunks.push(data.clone());
                }
                Ok(data)
            }
            PipeKind::BedrockStream {
                translator,
                sse,
                to_anthropic,
            } => {
                let mut out = Vec::new();
                translator.on_data(&data, &mut out);
                let filtered = filter(sse, Bytes::from(out), allow);
                chain_anthropic(filtered, to_anthropic.as_deref_mut())
            }
            PipeKind::CohereStream {
                translator,
                sse,
                to_anthropic,
            } => {
                let mut out = Vec::new();
                translator.on_data(&data, &mut out);
                let filtered = filter(sse, Bytes::from(out), allow);
                chain_anthropic(filtered, to_anthropic.as_deref_mut())
            }
        }
    }

    /// The upstream body ended: what is left to send.
    pub fn finish(&mut self) -> Bytes {
        let out = self.finish_chat();
        let whole = self.is_whole();
        match &mut self.text {
            None => out,
            Some(_) if whole => completions::whole_to_text(&out).map_or(out, Bytes::from),
            Some(text) => Bytes::from(text.on_data(&out)),
        }
    }

    /// [`Self::finish`] up to the client's chat schema.
    fn finish_chat(&mut self) -> Bytes {
        match &mut self.kind {
            PipeKind::Whole {
                what,
                status,
                created,
                buffer,
                too_large,
                usage,
                answer_status,
                estimated,
            } => {
                let result = if *too_large {
                    Err(TranslateError::Response(format!(
                        "the upstream answer is larger than {MAX_WHOLE} bytes and cannot be translated"
                    )))
                } else {
                    translate_whole(
                        *what,
                        self.client,
                        *status,
                        *created,
                        buffer,
                        &self.upstream,
                        estimated,
                    )
                };
                match result {
                    Ok((status, bytes, tokens)) => {
                        *usage = tokens;
                        *answer_status = Some(status);
                        Bytes::from(bytes)
                    }
                    Err(error) => {
                        *answer_status = Some(StatusCode::BAD_GATEWAY);
                        whole_error(self.client, &error.to_string(), "upstream_bad_response")
                    }
                }
            }
            PipeKind::StreamToOpenAI { translator, sse } => {
                let mut out = Vec::new();
                translator.finish(&mut out);
                let mut bytes = sse.on_data(Bytes::from(out)).to_vec();
                bytes.extend_from_slice(&sse.finish());
                Bytes::from(bytes)
            }
            PipeKind::StreamToAnthropic { sse, translator } => {
                let mut out = Vec::new();
                translator.on_data(&sse.finish(), &mut out);
                translator.finish(&mut out);
                Bytes::from(out)
            }
            PipeKind::GeminiToOpenAI { translator, sse } => {
                let mut out = Vec::new();
                translator.finish(&mut out);
                let mut bytes = sse.on_data(Bytes::from(out)).to_vec();
                bytes.extend_from_slice(&sse.finish());
                Bytes::from(bytes)
            }
            PipeKind::GeminiToAnthropic {
                translator,
                sse,
                to_anthropic,
            } => {
                let mut chunks = Vec::new();
                translator.finish(&mut chunks);
                let mut filtered = sse.on_data(Bytes::from(chunks)).to_vec();
                filtered.extend_from_slice(&sse.finish());
                let mut out = Vec::new();
                to_anthropic.on_data(&filtered, &mut out);
                to_anthropic.finish(&mut out);
                Bytes::from(out)
            }
            PipeKind::ObserveStream(observer) => observer.finish(),
            PipeKind::ObserveJson { .. } => Bytes::new(),
            PipeKind::BedrockStream {
                translator,
                sse,
                to_anthropic,
            } => {
                let mut out = Vec::new();
                translator.finish(&mut out);
                finish_chain(out, sse, to_anthropic.as_deref_mut())
            }
            PipeKind::CohereStream {
                translator,
                sse,
                to_anthropic,
            } => {
                let mut out = Vec::new();
                translator.finish(&mut out);
                finish_chain(out, sse, to_anthropic.as_deref_mut())
            }
        }
    }

    /// The upstream failed or stalled, or a budget ran out: the error the
    /// client gets instead of the rest, in its schema. `code` is the
    /// gateway's label (`upstream_stream_error`, `budget_exceeded`, ...).
    pub fn fail(&mut self, code: &str, message: &str) -> Bytes {
        let budget = code == "budget_exceeded";
        match &mut self.kind {
            PipeKind::Whole { answer_status, .. } => {
                *answer_status = Some(StatusCode::BAD_GATEWAY);
                whole_error(self.client, message, code)
            }
            PipeKind::ObserveJson { .. } => Bytes::new(),
            _ => {
                let mut out = Vec::new();
                match self.client {
                    Schema::OpenAI | Schema::Gemini | Schema::Bedrock | Schema::Cohere => {
                        let kind = if budget {
                            "insufficient_quota"
                        } else {
                            "upstream_error"
                        };
                        anthropic::stream::openai_error(&mut out, message, kind, code);
                    }
                    Schema::Anthropic => {
                        let kind = if budget {
                            "rate_limit_error"
                        } else {
                            "api_error"
                        };
                        anthropic::stream::anthropic_error(&mut out, kind, message);
                    }
                }
                Bytes::from(out)
            }
        }
    }

    /// Whether a failure mid-body can be reported in the body (else the
    /// connection is cut).
    pub fn reports_failures(&self) -> bool {
        !matches!(self.kind, PipeKind::ObserveJson { .. })
    }

    /// Usage as best known now, and whether it is an estimate.
    pub fn usage(&self, estimated_input: u64) -> (Option<Usage>, bool) {
        let from_stream = |sse: &SseState| match sse.usage {
            Some(usage) => (Some(usage), false),
            None => (
                Some(Usage {
                    input: estimated_input,
                    output: sse.content_events,
                    cached_input: 0,
                }),
                true,
            ),
        };
        match &self.kind {
            PipeKind::Whole {
                usage, estimated, ..
            } => (usage.map(|u| u.record()), *estimated),
            PipeKind::StreamToOpenAI { sse, .. }
            | PipeKind::StreamToAnthropic { sse, .. }
            | PipeKind::GeminiToOpenAI { sse, .. }
            | PipeKind::GeminiToAnthropic { sse, .. }
            | PipeKind::BedrockStream { sse, .. }
            | PipeKind::CohereStream { sse, .. } => from_stream(sse),
            PipeKind::ObserveStream(observer) => match observer.usage() {
                Some(usage) if usage.output > 0 || observer.content_events == 0 => {
                    (Some(usage.record()), false)
                }
                // Cut before message_delta: the input is known, the output estimated.
                Some(usage) => (
                    Some(Usage {
                        input: usage.input,
                        output: observer.content_events,
                        cached_input: usage.cached_input,
                    }),
                    true,
                ),
                None => (
                    Some(Usage {
                        input: estimated_input,
                        output: observer.content_events,
                        cached_input: 0,
                    }),
                    true,
                ),
            },
            PipeKind::ObserveJson { chunks, .. } => {
                let usage = match chunks.as_slice() {
                    [] => None,
                    [one] => anthropic::stream::json_usage(one),
                    many => anthropic::stream::json_usage(&many.concat()),
                };
                (usage.map(|u| u.record()), false)
            }
        }
    }
}

/// The last OpenAI chunks of a backend's translator, through the OpenAI
/// stream filter and (for an Anthropic client) on to Anthropic's events.
fn finish_chain(
    out: Vec<u8>,
    sse: &mut SseState,
    to_anthropic: Option<&mut anthropic::stream::ToAnthropic>,
) -> Bytes {
    let mut bytes = sse.on_data(Bytes::from(out)).to_vec();
    bytes.extend_from_slice(&sse.finish());
    let Some(to_anthropic) = to_anthropic else {
        return Bytes::from(bytes);
    };
    let mut out = Vec::new();
    to_anthropic.on_data(&bytes, &mut out);
    to_anthropic.finish(&mut out);
    Bytes::from(out)
}

/// Feeds filtered OpenAI chunks to an Anthropic translator, if the client
/// speaks Anthropic; a refusal stays a refusal.
fn chain_anthropic(
    filtered: Result<Bytes, Bytes>,
    to_anthropic: Option<&mut anthropic::stream::ToAnthropic>,
) -> Result<Bytes, Bytes> {
    let Some(to_anthropic) = to_anthropic else {
        return filtered;
    };
    let (filtered, refused) = match filtered {
        Ok(bytes) => (bytes, false),
        Err(bytes) => (bytes, true),
    };
    let mut out = Vec::new();
    to_anthropic.on_data(&filtered, &mut out);
    if refused {
        Err(Bytes::from(out))
    } else {
        Ok(Bytes::from(out))
    }
}

/// Runs the OpenAI stream filter, gated when a budget guards the stream.
fn filter(
    sse: &mut SseState,
    data: Bytes,
    allow: Option<&mut dyn FnMut(u64) -> bool>,
) -> Result<Bytes, Bytes> {
    match allow {
        None => Ok(sse.on_data(data)),
        Some(allow) => sse.on_data_gated(data, allow),
    }
}

type Translated = (StatusCode, Vec<u8>, Option<TokenUsage>);

fn translate_whole(
    what: Whole,
    client: Schema,
    status: StatusCode,
    created: u64,
    body: &[u8],
    upstream: &UpstreamHead,
    estimated: &mut bool,
) -> Result<Translated, TranslateError> {
    let model = upstream.model.as_str();
    Ok(match what {
        Whole::GeminiEmbedToOpenAI => {
            let (bytes, usage, guessed) = gemini::embed::to_openai(body, model, upstream.embed)?;
            *estimated = guessed;
            (status, bytes, Some(usage))
        }
        Whole::BedrockEmbedToOpenAI => {
            let (bytes, usage, guessed) =
                bedrock::embed::to_openai(body, model, upstream.input_tokens, upstream.embed)?;
            *estimated = guessed;
            (status, bytes, Some(usage))
        }
        Whole::CohereEmbedToOpenAI => {
            let (bytes, usage, guessed) = cohere::embed::to_openai(body, model, upstream.embed)?;
            *estimated = guessed;
            (status, bytes, Some(usage))
        }
        Whole::Rerank => {
            let (bytes, usage, guessed) = rerank::read_answer(body, upstream.rerank_estimate)?;
            *estimated = guessed;
            (status, bytes, Some(usage))
        }
        // An OpenAI backend's answer for an Anthropic client.
        Whole::Answer(Schema::OpenAI) => {
            let (bytes, usage) = anthropic::response::to_anthropic(body)?;
            (status, bytes, Some(usage))
        }
        Whole::Error(Schema::OpenAI) => (
            status,
            anthropic::response::error_to_anthropic(status, body),
            None,
        ),
        Whole::Answer(backend) => {
            let (openai, usage) = answer_to_openai(backend, body, created, upstream)?;
            match client {
                Schema::Anthropic => {
                    let (bytes, _) = anthropic::response::to_anthropic(&openai)?;
                    (status, bytes, Some(usage))
                }
                _ => (status, openai, Some(usage)),
            }
        }
        Whole::Error(backend) => {
            let (status, openai) = error_to_openai(backend, status, body, upstream);
            match client {
                Schema::Anthropic => (
                    status,
                    anthropic::response::error_to_anthropic(status, &openai),
                    None,
                ),
                _ => (status, openai, None),
            }
        }
    })
}

/// A backend's whole chat answer in OpenAI's shape, with its usage.
fn answer_to_openai(
    backend: Schema,
    body: &[u8],
    created: u64,
    upstream: &UpstreamHead,
) -> Result<(Vec<u8>, TokenUsage), TranslateError> {
    match backend {
        Schema::Gemini => gemini::response::to_openai(body, created),
        Schema::Bedrock => {
            bedrock::response::to_openai(body, &completion_id(), &upstream.model, created)
        }
        Schema::Cohere => cohere::response::to_openai(body, &upstream.model, created),
        Schema::Anthropic | Schema::OpenAI => anthropic::response::to_openai(body, created),
    }
}

/// A backend's error in OpenAI's shape, with the status the client gets.
fn error_to_openai(
    backend: Schema,
    status: StatusCode,
    body: &[u8],
    upstream: &UpstreamHead,
) -> (StatusCode, Vec<u8>) {
    match backend {
        Schema::Gemini => gemini::response::error_to_openai(status, body),
        Schema::Bedrock => {
            bedrock::response::error_to_openai(status, upstream.error_type.as_deref(), body)
        }
        Schema::Cohere => cohere::response::error_to_openai(status, body),
        Schema::Anthropic | Schema::OpenAI => anthropic::response::error_to_openai(status, body),
    }
}

/// A fresh `chatcmpl-...` id, for backends whose answers carry none.
fn completion_id() -> String {
    format!("chatcmpl-{:024x}", fastrand::u128(..) >> 32)
}

/// A whole error body in the client's schema.
fn whole_error(client: Schema, message: &str, code: &str) -> Bytes {
    match client {
        Schema::OpenAI | Schema::Gemini | Schema::Bedrock | Schema::Cohere => {
            crate::error::error_body(message, "upstream_error", code)
        }
        Schema::Anthropic => Bytes::from(anthropic::response::error_body("api_error", message)),
    }
}

/// A gateway error in the client's schema: OpenAI's shape as the error
/// module writes it, or Anthropic's (`{"type":"error","error":{...}}`)
/// with the same status and headers.
pub fn error_response(
    endpoint: Endpoint,
    error: &crate::error::GatewayError,
) -> http::Response<crate::body::ResponseBody> {
    let mut response = error.response();
    if Schema::of_client(endpoint) == Schema::Anthropic {
        let kind = match error {
            crate::error::GatewayError::LimitReached(_) => "rate_limit_error",
            _ => anthropic::response::error_type(error.status()),
        };
        *response.body_mut() = crate::body::ResponseBody::full(anthropic::response::error_body(
            kind,
            &error.to_string(),
        ));
    }
    response
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
