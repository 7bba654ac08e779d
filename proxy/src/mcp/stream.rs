//! The session's own stream (`GET` on the route's path): each server's
//! stream for its upstream session, merged into one SSE stream for the
//! client. Server-to-client requests on it are relayed like those inside a
//! call's answer, so the client's answers find their way back. Events go
//! out as soon as any server sends them; the stream ends when every server
//! has ended its own, or the client leaves.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use hyper::body::Incoming;

use super::relay::{Relay, StreamKind};
use crate::body::BoxError;
use crate::telemetry::Exchange;
use crate::upstream::Conn;

/// One server's stream.
pub struct Source {
    body: Incoming,
    conn: Box<Conn>,
    relay: Relay,
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
            body,
            conn,
            relay: Relay::new(kind, position, prefix, serde_json::Value::Null),
        }
    }
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
                source.conn.drive(cx);
                match Pin::new(&mut source.body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            out.extend_from_slice(&source.relay.on_data(data));
                        }
                    }
                    Poll::Ready(Some(Err(_)) | None) => {
                        out.extend_from_slice(&source.relay.finish());
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
