//! The response body type of every data-plane response: either bytes the
//! gateway made itself, or an upstream body flowing through an observer.
//! An enum rather than a boxed trait object, so no allocation per response.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::llm::observe::ObservedBody;

/// Errors a body can end with (the client then sees the connection close).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A data-plane response body.
pub enum ResponseBody {
    /// Complete bytes (errors, admin pages, the demo model).
    Full(Option<Bytes>),
    /// An upstream body, observed for usage and telemetry as it streams.
    Upstream(Box<ObservedBody>),
    /// Several MCP servers' streams merged into one.
    Merged(Box<crate::mcp::stream::MergedStream>),
    /// A streamed answer to a stateless (MCP 2026-07-28) client.
    Stateless(Box<crate::mcp::stateless::StatelessBody>),
}

impl ResponseBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            Self::Full(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Self::Upstream(observed) => Pin::new(observed.as_mut()).poll_frame(cx),
            Self::Merged(merged) => Pin::new(merged.as_mut()).poll_frame(cx),
            Self::Stateless(body) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Self::Upstream(observed) => observed.is_end_stream(),
            Self::Merged(merged) => merged.is_end_stream(),
            Self::Stateless(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Upstream(observed) => observed.size_hint(),
            Self::Merged(_) | Self::Stateless(_) => SizeHint::default(),
        }
    }
}
