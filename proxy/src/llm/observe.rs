//! The observer an upstream response body flows through on its way to the
//! client: it notes the first byte, reads usage (SSE events or the JSON
//! body's `usage`), turns an upstream failure mid-stream into a final error
//! event, cuts a stream that stalls longer than the backend timeout, and
//! sends the access record when the body ends or the client goes away.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::sse::SseState;
use super::usage::find_usage;
use crate::body::BoxError;
use crate::error::error_body;
use crate::telemetry::{Exchange, Usage};
use crate::upstream::Conn;

/// JSON bodies larger than this are forwarded without reading their usage.
const MAX_COLLECT: usize = 8 << 20;

enum Mode {
    /// A JSON body: keep the chunks (refcounted, not copied) to read usage at the end.
    Json { chunks: Vec<Bytes>, size: usize },
    /// An event stream.
    Sse(SseState),
    /// Anything else (error bodies, unknown types): forwarded untouched.
    Opaque,
    /// An MCP server's SSE answer, its server-to-client requests relayed.
    McpRelay(Box<crate::mcp::relay::Relay>),
    /// Translated between schemas (or an Anthropic answer, observed).
    Translated(Box<super::translate::Pipe>),
}

/// An upstream body being forwarded.
pub struct ObservedBody {
    inner: Incoming,
    /// The connection the body arrives on; polled with it, pooled after it.
    conn: Option<Box<Conn>>,
    mode: Mode,
    exchange: Option<Exchange>,
    /// Estimated input tokens, for when the provider never reports usage.
    estimated_input: u64,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    last_frame: Instant,
    ended: bool,
    /// Held back while a batch of data went out first.
    deferred: Option<Deferred>,
    /// A budget's hold on a stream's output.
    guard: Option<crate::limits::StreamGuard>,
}

enum Deferred {
    /// Trailers that followed data.
    Frame(Frame<Bytes>),
    /// The upstream failed right after data.
    Fail,
    /// A Strict budget ran out mid-stream (`budget/limit`).
    OverBudget(String),
}

/// Largest batch of ready frames sent as one.
const MAX_BATCH: usize = 64 << 10;

/// Data frames that were ready together. The first is kept as is (no copy);
/// only a second one makes a buffer.
#[derive(Default)]
struct Batch {
    first: Option<Bytes>,
    more: Option<BytesMut>,
}

impl Batch {
    fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        match (&self.first, &mut self.more) {
            (None, _) => self.first = Some(data),
            (Some(first), None) => {
                let mut joined = BytesMut::with_capacity((first.len() + data.len()) * 2);
                joined.extend_from_slice(first);
                joined.extend_from_slice(&data);
                self.more = Some(joined);
            }
            (Some(_), Some(joined)) => joined.extend_from_slice(&data),
        }
    }

    fn len(&self) -> usize {
        self.more
            .as_ref()
            .map_or_else(|| self.first.as_ref().map_or(0, Bytes::len), BytesMut::len)
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn take(&mut self) -> Option<Bytes> {
        match (self.first.take(), self.more.take()) {
            (_, Some(joined)) => Some(joined.freeze()),
            (first, None) => first,
        }
    }
}

/// What kind of body to expect.
pub enum BodyKind {
    /// `application/json` with a `usage` object.
    Json,
    /// `text/event-stream`; `strip_usage` when the gateway asked for usage itself.
    Sse {
        /// Remove the usage the client did not ask for.
        strip_usage: bool,
    },
    /// Forward only.
    Opaque,
    /// An MCP SSE answer, rewritten on its way by this relay.
    McpRelay(Box<crate::mcp::relay::Relay>),
    /// An answer in another schema than the client's, or one only the
    /// translation layer can read usage from.
    Translated(Box<super::translate::Pipe>),
}

impl ObservedBody {
    /// Wraps an upstream body.
    pub fn new(
        inner: Incoming,
        conn: Box<Conn>,
        kind: BodyKind,
        exchange: Exchange,
        estimated_input: u64,
        idle_timeout: Duration,
    ) -> Self {
        let mode = match kind {
            BodyKind::Json => Mode::Json {
                chunks: Vec::new(),
                size: 0,
            },
            BodyKind::Sse { strip_usage } => Mode::Sse(SseState::new(strip_usage)),
            BodyKind::Opaque => Mode::Opaque,
            BodyKind::McpRelay(relay) => Mode::McpRelay(relay),
            BodyKind::Translated(pipe) => Mode::Translated(pipe),
        };
        let now = Instant::now();
        Self {
            inner,
            conn: Some(conn),
            mode,
            exchange: Some(exchange),
            estimated_input,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
            last_frame: now,
            ended: false,
            deferred: None,
            guard: None,
        }
    }

    /// Holds a streamed answer to a budget.
    pub fn guard(&mut self, guard: crate::limits::StreamGuard) {
        self.guard = Some(guard);
    }

    /// Whether the body is translated whole (read to its end before the
    /// client gets any of it).
    pub fn translates_whole(&self) -> bool {
        matches!(&self.mode, Mode::Translated(pipe) if pipe.is_whole())
    }

    /// The status a whole translated body gives the client, once read.
    pub fn answer_status(&self) -> Option<http::StatusCode> {
        match &self.mode {
            Mode::Translated(pipe) => pipe.answer_status(),
            _ => None,
        }
    }

    fn on_data(&mut self, data: Bytes) -> Bytes {
        if let Some(exchange) = &mut self.exchange {
            exchange.first_byte();
        }
        match &mut self.mode {
            Mode::Json { chunks, size } => {
                if *size + data.len() <= MAX_COLLECT {
                    *size += data.len();
                    chunks.push(data.clone());
                } else {
                    chunks.clear();
                    *size = usize::MAX / 2;
                }
                data
            }
            Mode::Sse(state) => match &mut self.guard {
                None => state.on_data(data),
                Some(guard) => {
                    // Each content event must fit the budget before it goes out.
                    let mut refused = None;
                    let mut allow = |n: u64| match guard.on_output(n) {
                        Ok(()) => true,
                        Err(limit) => {
                            refused = Some(limit);
                            false
                        }
                    };
                    match state.on_data_gated(data, &mut allow) {
                        Ok(out) => out,
                        Err(out) => {
                            self.guard = None;
                            self.deferred = refused.map(Deferred::OverBudget);
                            out
                        }
                    }
                }
            },
            Mode::Opaque => data,
            Mode::McpRelay(relay) => relay.on_data(data),
            Mode::Translated(pipe) => match &mut self.guard {
                None => pipe.on_data(data, None).unwrap_or_else(|out| out),
                Some(guard) => {
                    let mut refused = None;
                    let mut allow = |n: u64| match guard.on_output(n) {
                        Ok(()) => true,
                        Err(limit) => {
                            refused = Some(limit);
                            false
                        }
                    };
                    match pipe.on_data(data, Some(&mut allow)) {
                        Ok(out) => out,
                        Err(out) => {
                            self.guard = None;
                            self.deferred = refused.map(Deferred::OverBudget);
                            out
                        }
                    }
                }
            },
        }
    }

    /// Usage as best known now, and whether it is an estimate.
    fn usage(&self) -> (Option<Usage>, bool) {
        match &self.mode {
            Mode::Json { chunks, .. } => {
                let usage = match chunks.as_slice() {
                    [] => None,
                    [one] => find_usage(one),
                    many => find_usage(&many.concat()),
                };
                (usage, false)
            }
            Mode::Sse(state) => match state.usage {
                Some(usage) => (Some(usage), false),
                None => (
                    Some(Usage {
                        input: self.estimated_input,
                        output: state.content_events,
                        cached_input: 0,
                    }),
                    true,
                ),
            },
            Mode::Translated(pipe) => pipe.usage(self.estimated_input),
            Mode::Opaque | Mode::McpRelay(_) => (None, false),
        }
    }

    /// Sends the record; `error` when the body did not complete.
    fn finish(&mut self, error: Option<&'static str>) {
        let (usage, estimated) = self.usage();
        if let Some(mut exchange) = self.exchange.take() {
            exchange.record.usage = usage;
            exchange.record.usage_estimated = estimated;
            if let Mode::Translated(pipe) = &self.mode {
                if let Some(status) = pipe.answer_status() {
                    exchange.record.status = status.as_u16();
                    if status == http::StatusCode::BAD_GATEWAY {
                        exchange.record.error = Some("upstream_bad_response".into());
                    }
                }
            }
            if let Some(error) = error {
                exchange.record.error = Some(error.into());
            }
            exchange.finish();
        }
    }

    /// The upstream body is complete: flush what is held back, account.
    fn end(&mut self, out: Bytes) -> Bytes {
        self.ended = true;
        let rest = match &mut self.mode {
            Mode::Sse(state) => state.finish(),
            Mode::McpRelay(relay) => relay.finish(),
            Mode::Translated(pipe) => pipe.finish(),
            _ => Bytes::new(),
        };
        self.finish(None);
        if rest.is_empty() {
            out
        } else if out.is_empty() {
            rest
        } else {
            Bytes::from([out.as_ref(), rest.as_ref()].concat())
        }
    }

    /// The body is complete: the connection can serve another request.
    fn release(&mut self, cx: &mut Context<'_>) {
        // Failures dropped the connection already; what is left ended cleanly.
        if let Some(conn) = self.conn.take() {
            conn.release(cx);
        }
    }

    fn fail_midway(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.fail(
            "upstream_stream_error",
            "the upstream connection failed mid-response",
        )
    }

    /// The upstream failed or stalled mid-body: streams get a final error
    /// event in OpenAI's shape; other bodies are cut (the client sees the
    /// connection close).
    fn fail(
        &mut self,
        code: &'static str,
        message: &str,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.ended = true;
        self.conn = None;
        if let Mode::Translated(pipe) = &mut self.mode {
            if pipe.reports_failures() {
                // The error in the client's schema; the record follows it.
                let out = pipe.fail(code, message);
                self.finish(Some(code));
                return Poll::Ready(Some(Ok(Frame::data(out))));
            }
        }
        self.finish(Some(code));
        match &mut self.mode {
            Mode::Sse(_) => {
                let kind = if code == "budget_exceeded" {
                    "insufficient_quota"
                } else {
                    "upstream_error"
                };
                let event = [
                    b"data: ".as_slice(),
                    &error_body(message, kind, code),
                    b"\n\n",
                ]
                .concat();
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
            }
            // The MCP client gets a JSON-RPC error for its request, not a hang.
            Mode::McpRelay(relay) => Poll::Ready(Some(Ok(Frame::data(relay.fail(message))))),
            _ => Poll::Ready(Some(Err(message.to_owned().into()))),
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match this.deferred.take() {
            Some(Deferred::Frame(frame)) => return Poll::Ready(Some(Ok(frame))),
            Some(Deferred::Fail) => return this.fail_midway(),
            Some(Deferred::OverBudget(limit)) => {
                return this.fail(
                    "budget_exceeded",
                    &format!("budget limit {limit} reached mid-stream: the response was cut (enforcement: Strict)"),
                )
            }
            None => {}
        }
        if this.ended {
            return Poll::Ready(None);
        }
        // Everything the upstream has already delivered goes out as one
        // frame: one write to the client instead of one per SSE event.
        let mut batch = Batch::default();
        loop {
            if let Some(conn) = &mut this.conn {
                conn.drive(cx);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.last_frame = Instant::now();
                    match frame.into_data() {
                        Ok(data) => {
                            let mut out = this.on_data(data);
                            if this.inner.is_end_stream() {
                                // A body of known length is complete: hyper may
                                // not poll again, so account for it now.
                                out = this.end(out);
                            }
                            batch.push(out);
                            if this.ended || batch.len() >= MAX_BATCH || this.deferred.is_some() {
                                break;
                            }
                        }
                        Err(trailers) if batch.is_empty() => {
                            return Poll::Ready(Some(Ok(trailers)))
                        }
                        Err(trailers) => {
                            this.deferred = Some(Deferred::Frame(trailers));
                            break;
                        }
                    }
                }
                Poll::Ready(Some(Err(_))) if batch.is_empty() => return this.fail_midway(),
                Poll::Ready(Some(Err(_))) => {
                    this.deferred = Some(Deferred::Fail);
                    break;
                }
                Poll::Ready(None) => {
                    let rest = this.end(Bytes::new());
                    batch.push(rest);
                    break;
                }
                Poll::Pending if !batch.is_empty() => break,
                Poll::Pending => {
                    // The timer is re-armed lazily: only when it fires early.
                    while this.idle.as_mut().poll(cx).is_ready() {
                        let deadline = this.last_frame + this.idle_timeout;
                        if Instant::now() >= deadline {
                            return this.fail(
                                "upstream_stream_timeout",
                                "the upstream stopped sending mid-response",
                            );
                        }
                        this.idle.as_mut().reset(deadline);
                    }
                    return Poll::Pending;
                }
            }
        }
        if this.ended {
            this.release(cx);
        }
        match batch.take() {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            None if this.ended => Poll::Ready(None),
            None => {
                // Only a deferred frame or failure is left: come back for it.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        match self.mode {
            Mode::Sse(_) | Mode::McpRelay(_) | Mode::Translated(_) => SizeHint::default(),
            _ => self.inner.size_hint(),
        }
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if self.exchange.is_some() {
            // The client went away before the end: account what was sent.
            self.finish(Some("client_disconnected"));
        }
    }
}
