//! The response body: a whole buffer, a paced stream of events, or a body that
//! aborts the connection. Knows how to pace and break a stream, not what the
//! events say.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The error a body ends with to make hyper drop the connection mid-response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Aborted;

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("response aborted by x-mock-error-after")
    }
}

impl std::error::Error for Aborted {}

/// Where an event stands in a stream, for pacing and aborting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// Before the first content chunk (e.g. the role chunk).
    Lead,
    /// A content chunk: delayed by `x-mock-chunk-delay-ms`, counted by `x-mock-error-after`.
    Content,
    /// After the content (finish chunk, usage chunk, `[DONE]`).
    Tail,
}

/// One already-framed event (e.g. `data: {...}\n\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub kind: EventKind,
    pub bytes: Bytes,
}

/// Produces a stream's events one at a time, so that long streams cost no memory.
pub(crate) trait EventSource: Send + 'static {
    fn next_event(&mut self) -> Option<Event>;
}

/// How a stream is paced and whether it breaks.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pacing {
    pub chunk_delay: Option<Duration>,
    pub error_after: Option<u32>,
}

/// A response body.
pub(crate) enum MockBody {
    /// A whole body, sent as one frame with a `content-length`.
    Full(Option<Bytes>),
    /// Server-sent events, one frame each.
    Events(EventStream),
    /// Lets the headers out, then fails.
    AbortAfterHeaders { flushed: bool },
}

impl MockBody {
    pub fn full(bytes: impl Into<Bytes>) -> MockBody {
        MockBody::Full(Some(bytes.into()))
    }

    pub fn empty() -> MockBody {
        MockBody::Full(None)
    }

    pub fn events(source: Box<dyn EventSource>, pacing: Pacing) -> MockBody {
        MockBody::Events(EventStream::new(source, pacing))
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        match self.get_mut() {
            MockBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Events(stream) => stream.poll_event(cx),
            MockBody::AbortAfterHeaders { flushed } => {
                if *flushed {
                    Poll::Ready(Some(Err(Aborted)))
                } else {
                    *flushed = true;
                    yield_now(cx)
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(bytes) => bytes.is_none(),
            MockBody::Events(stream) => stream.next.is_none(),
            MockBody::AbortAfterHeaders { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            MockBody::Full(None) => SizeHint::with_exact(0),
            MockBody::Events(_) | MockBody::AbortAfterHeaders { .. } => SizeHint::default(),
        }
    }
}

/// Streams events from a source, one frame each, flushing between them.
pub(crate) struct EventStream {
    source: Box<dyn EventSource>,
    /// The event to send next; `None` once the stream is over.
    next: Option<Event>,
    pacing: Pacing,
    content_sent: u32,
    /// Whether hyper has had a chance to write out the previous frame.
    flushed: bool,
    /// Whether `next` has waited out its chunk delay.
    delayed: bool,
    /// Whether hyper has written out everything before an abort.
    abort_flushed: bool,
    sleep: Option<Pin<Box<Sleep>>>,
    sleeping: bool,
}

impl EventStream {
    fn new(mut source: Box<dyn EventSource>, pacing: Pacing) -> EventStream {
        EventStream {
            next: source.next_event(),
            source,
            pacing,
            content_sent: 0,
            flushed: true,
            delayed: false,
            abort_flushed: false,
            sleep: None,
            sleeping: false,
        }
    }

    fn aborts_before(&self, kind: EventKind) -> bool {
        match (self.pacing.error_after, kind) {
            (None, _) | (Some(_), EventKind::Lead) => false,
            (Some(n), EventKind::Content) => self.content_sent >= n,
            (Some(_), EventKind::Tail) => true,
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let Some(kind) = self.next.as_ref().map(|e| e.kind) else {
            return Poll::Ready(None);
        };
        if self.aborts_before(kind) {
            // Let the headers and frames sent so far reach the client
            // before breaking.
            if !self.abort_flushed {
                self.abort_flushed = true;
                return yield_now(cx);
            }
            self.next = None;
            return Poll::Ready(Some(Err(Aborted)));
        }
        if kind == EventKind::Content && !self.delayed {
            if let Some(delay) = self.pacing.chunk_delay {
                ready!(self.poll_delay(cx, delay));
                // Hyper flushed while we slept.
                self.flushed = true;
            }
            self.delayed = true;
        }
        if !self.flushed {
            // Returning Pending makes hyper write out the previous frame, so
            // every event leaves in its own write, as from a real provider.
            self.flushed = true;
            return yield_now(cx);
        }
        let Some(event) = self.next.take() else {
            return Poll::Ready(None);
        };
        if event.kind == EventKind::Content {
            self.content_sent = self.content_sent.saturating_add(1);
        }
        self.next = self.source.next_event();
        self.flushed = false;
        self.delayed = false;
        Poll::Ready(Some(Ok(Frame::data(event.bytes))))
    }

    fn poll_delay(&mut self, cx: &mut Context<'_>, delay: Duration) -> Poll<()> {
        let deadline = Instant::now() + delay;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.sleeping {
            sleep.as_mut().reset(deadline);
            self.sleeping = true;
        }
        ready!(sleep.as_mut().poll(cx));
        self.sleeping = false;
        Poll::Ready(())
    }
}

fn yield_now<T>(cx: &mut Context<'_>) -> Poll<T> {
    cx.waker().wake_by_ref();
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    struct Numbers {
        kinds: Vec<EventKind>,
        at: usize,
    }

    impl EventSource for Numbers {
        fn next_event(&mut self) -> Option<Event> {
            let kind = *self.kinds.get(self.at)?;
            self.at += 1;
            Some(Event {
                kind,
                bytes: Bytes::from(self.at.to_string()),
            })
        }
    }

    fn stream(error_after: Option<u32>) -> MockBody {
        use EventKind::*;
        let source = Numbers {
            kinds: vec![Lead, Content, Content, Content, Tail, Tail],
            at: 0,
        };
        MockBody::events(
            Box::new(source),
            Pacing {
                chunk_delay: None,
                error_after,
            },
        )
    }

    async fn frames(mut body: MockBody) -> (Vec<String>, bool) {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    out.push(String::from_utf8_lossy(&frame.into_data().unwrap()).into_owned())
                }
                Err(Aborted) => return (out, true),
            }
        }
        assert!(body.is_end_stream());
        (out, false)
    }

    #[tokio::test]
    async fn sends_every_event_as_a_frame() {
        assert_eq!(
            frames(stream(None)).await,
            (
                vec!["1", "2", "3", "4", "5", "6"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
                false
            )
        );
    }

    #[tokio::test]
    async fn aborts_after_n_content_events() {
        let (sent, aborted) = frames(stream(Some(2))).await;
        assert_eq!(sent, ["1", "2", "3"]);
        assert!(aborted);
        let (sent, aborted) = frames(stream(Some(0))).await;
        assert_eq!(sent, ["1"]);
        assert!(aborted);
        // Fewer content chunks than asked for: still never completes.
        let (sent, aborted) = frames(stream(Some(9))).await;
        assert_eq!(sent, ["1", "2", "3", "4"]);
        assert!(aborted);
    }
}
