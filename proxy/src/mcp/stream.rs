//! The session's own stream (`GET` on the route's path): each server's
//! stream for its upstream session, merged into one SSE stream for the
//! client. Server-to-client requests on it are relayed like those inside a
//! call's answer, so the client's answers find their way back. Events go
//! out as soon as any server sends them; the stream ends when every server
//! has ended its own, or the client leaves. Also the answer to a call on a
//! channel (stdio and legacy SSE servers), which ends with its response.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio::time::Sleep;

use super::channel::CallStream;
use super::relay::{Relay, StreamKind};
use crate::body::BoxError;
use crate::telemetry::Exchange;
use crate::upstream::Conn;

/// One server's stream: an HTTP response body, or the messages of a
/// channel (stdio and legacy SSE servers).
pub struct Source {
    from: From,
    relay: Relay,
    /// For a call over a channel: the gateway's id of the request, whose
    /// response ends the stream (it goes out under the client's id).
    call: Option<(String, serde_json::Value)>,
    /// Longest wait for the next message of a call over a channel.
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
}

enum From {
    Http { body: Incoming, conn: Box<Conn> },
    Channel(ChannelMessages),
}

enum ChannelMessages {
    Call(CallStream),
    Session(mpsc::UnboundedReceiver<serde_json::Value>),
}

impl Source {
    /// A server's stream, at its route position: the session's stream, or
    /// a call's answer resumed with `Last-Event-ID`.
    pub fn new(
        body: Incoming,
        conn: Box<Conn>,
        kind: StreamKind,
        position: usize,
        prefix: Option<String>,
    ) -> Self {
        Self {
            from: From::Http { body, conn },
            relay: Relay::new(kind, position, prefix, serde_json::Value::Null),
            call: None,
            idle: None,
        }
    }

    /// What a channel's server sends outside any call.
    pub fn session(
        messages: mpsc::UnboundedReceiver<serde_json::Value>,
        position: usize,
        prefix: Option<String>,
    ) -> Self {
        Self {
            from: From::Channel(ChannelMessages::Session(messages)),
            relay: Relay::new(
                StreamKind::Session,
                position,
                prefix,
                serde_json::Value::Null,
            ),
            call: None,
            idle: None,
        }
    }

    /// A call over a channel, answered to the client's `request_id`; ends
    /// with its response, or with an error after `timeout` without a message.
    pub fn call(
        stream: CallStream,
        position: usize,
        prefix: Option<String>,
        request_id: serde_json::Value,
        timeout: Duration,
    ) -> Self {
        let id = stream.id().to_owned();
        Self {
            from: From::Channel(ChannelMessages::Call(stream)),
            relay: Relay::new(StreamKind::Call, position, prefix, request_id.clone()),
            call: Some((id, request_id)),
            idle: Some((timeout, Box::pin(tokio::time::sleep(timeout)))),
        }
    }

    /// Polls for more bytes for the client: `Ready(None)` when the stream ended.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        match &mut self.from {
            From::Http { body, conn } => {
                conn.drive(cx);
                match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(
                        frame
                            .into_data()
                            .map(|data| self.relay.on_data(data))
                            .unwrap_or_default(),
                    )),
                    Poll::Ready(Some(Err(_)) | None) => {
                        let rest = self.relay.finish();
                        self.from = From::Channel(ChannelMessages::Session(closed_receiver()));
                        Poll::Ready((!rest.is_empty()).then_some(rest))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            From::Channel(messages) => {
                let receiver = match messages {
                    ChannelMessages::Call(stream) => &mut stream.receiver,
                    ChannelMessages::Session(receiver) => receiver,
                };
                match receiver.poll_recv(cx) {
                    Poll::Ready(Some(mut message)) => {
                        if let Some((timeout, sleep)) = &mut self.idle {
                            sleep.as_mut().reset(tokio::time::Instant::now() + *timeout);
                        }
                        let mut ended = false;
                        if let Some((id, client_id)) = &self.call {
                            if message.get("method").is_none()
                                && message.get("id").and_then(serde_json::Value::as_str)
                                    == Some(id.as_str())
                            {
                                message["id"] = client_id.clone();
                                ended = true;
                            }
                        }
                        let event = format!("event: message\ndata: {message}\n\n");
                        let out = self.relay.on_data(Bytes::from(event));
                        if ended {
                            self.from = From::Channel(ChannelMessages::Session(closed_receiver()));
                            self.idle = None;
                        }
                        Poll::Ready(Some(out))
                    }
                    Poll::Ready(None) if self.call.is_some() && self.idle.is_some() => {
                        self.idle = None;
                        Poll::Ready(Some(self.relay.fail("the server is gone")))
                    }
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Pending => {
                        let expired = self
                            .idle
                            .as_mut()
                            .is_some_and(|(_, sleep)| sleep.as_mut().poll(cx).is_ready());
                        if !expired {
                            return Poll::Pending;
                        }
                        self.idle = None;
                        self.from = From::Channel(ChannelMessages::Session(closed_receiver()));
                        Poll::Ready(Some(
                            self.relay
                                .fail("the server sent nothing within its timeout"),
                        ))
                    }
                }
            }
        }
    }
}

/// The tail of a gateway-made SSE body's poll: what is buffered goes out
/// (the first byte noted), else the body ends (its exchange logged) once
/// `ended`, else it waits.
pub(super) fn flush_or_end(
    out: &mut bytes::BytesMut,
    exchange: &mut Option<Exchange>,
    ended: bool,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    if !out.is_empty() {
        if let Some(exchange) = exchange {
            exchange.first_byte();
        }
        return Poll::Ready(Some(Ok(Frame::data(out.split().freeze()))));
    }
    if ended {
        if let Some(exchange) = exchange.take() {
            exchange.finish();
        }
        return Poll::Ready(None);
    }
    Poll::Pending
}

/// A receiver that is already at its end.
fn closed_receiver() -> mpsc::UnboundedReceiver<serde_json::Value> {
    mpsc::unbounded_channel().1
}

/// Several servers' streams as one body.
pub struct MergedStream {
    sources: Vec<Source>,
    exchange: Option<Exchange>,
    next: usize,
}

impl MergedStream {
    /// Merges `sources`; the exchange is logged when the stream ends.
    pub fn new(sources: Vec<Source>, exchange: Exchange) -> Self {
        Self {
            sources,
            exchange: Some(exchange),
            next: 0,
        }
    }
}

impl Body for MergedStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut out = Vec::new();
        let count = this.sources.len();
        // Round-robin start, so no server can starve the others.
        let start = this.next;
        this.next = this.next.wrapping_add(1);
        let mut finished = Vec::new();
        for k in 0..count {
            let index = (start + k) % count;
            let source = &mut this.sources[index];
            loop {
                match source.poll_next(cx) {
                    Poll::Ready(Some(bytes)) => out.extend_from_slice(&bytes),
                    Poll::Ready(None) => {
                        finished.push(index);
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        finished.sort_unstable_by(|a, b| b.cmp(a));
        for index in finished {
            this.sources.swap_remove(index);
        }
        if !out.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
        }
        if this.sources.is_empty() {
            if let Some(exchange) = this.exchange.take() {
                exchange.finish();
            }
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.sources.is_empty()
    }
}
