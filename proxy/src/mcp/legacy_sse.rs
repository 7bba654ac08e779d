//! MCP servers on the legacy HTTP+SSE transport (protocol 2024-11-05): the
//! gateway opens the server's SSE stream (`GET` on the backend's endpoint),
//! whose first event (`endpoint`) names the URL to POST messages to; every
//! answer and server message then arrives on that stream. One stream per
//! downstream session, held by this gateway process and reached through a
//! [`Channel`](super::channel::Channel); the session lasts as long as the
//! stream.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use http_body::Body as _;
use serde_json::Value;
use tokio::sync::oneshot;

use super::channel::Channel;
use super::client::{McpClientError, McpServer, Reply};
use crate::llm::sse::next_event_len;
use crate::upstream::Pool;

/// Longest SSE event kept while it is incomplete.
const MAX_EVENT: usize = 16 << 20;

/// Opens a session with the server at `url` (its SSE endpoint): waits for
/// the `endpoint` event, then returns the channel.
pub async fn connect(
    pool: &Arc<Pool>,
    name: &str,
    url: &str,
    credential: Option<&(HeaderName, HeaderValue)>,
    timeout: Duration,
) -> Result<Arc<Channel>, McpClientError> {
    let server = McpServer {
        name,
        url,
        credential,
        timeout,
    };
    let reply = server.open_stream(pool, None, None, None).await?;
    let status = reply.response.status();
    if !status.is_success() {
        let body = reply.read().await.unwrap_or_default();
        return Err(McpClientError::Status(name.to_owned(), status, body));
    }
    if !reply.is_sse() {
        return Err(McpClientError::Malformed(
            name.to_owned(),
            "its endpoint did not answer with an SSE stream (is it an HTTP+SSE server?)".into(),
        ));
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let (channel, mut outbound) = Channel::new(
        name,
        Box::new(move || {
            let _ = stop.send(());
        }),
    );
    let (found, endpoint) = oneshot::channel::<String>();
    tokio::spawn(read_stream(
        reply,
        Arc::downgrade(&channel),
        url.to_owned(),
        found,
        stopped,
    ));
    let endpoint = match tokio::time::timeout(timeout, endpoint).await {
        Ok(Ok(endpoint)) => endpoint,
        Ok(Err(_)) => {
            channel.close();
            return Err(McpClientError::Malformed(
                name.to_owned(),
                "its SSE stream ended before an `endpoint` event".into(),
            ));
        }
        Err(_) => {
            channel.close();
            return Err(McpClientError::Timeout(name.to_owned()));
        }
    };
    // Messages go out one at a time, in order; one that is refused is
    // answered with an error for whoever waits for it.
    let writer = Arc::downgrade(&channel);
    let pool = pool.clone();
    let name = name.to_owned();
    let credential = credential.cloned();
    tokio::spawn(async move {
        while let Some(message) = outbound.recv().await {
            let server = McpServer {
                name: &name,
                url: &endpoint,
                credential: credential.as_ref(),
                timeout,
            };
            let body = Bytes::from(message.to_string());
            if let Err(error) = server.deliver(&pool, None, None, body).await {
                if let Some(channel) = writer.upgrade() {
                    channel.undeliverable(&message, &error.to_string());
                }
            }
        }
    });
    Ok(channel)
}

/// Reads the server's stream until it ends or the channel is closed: the
/// `endpoint` event first, then messages.
async fn read_stream(
    reply: Reply,
    channel: std::sync::Weak<Channel>,
    base: String,
    found: oneshot::Sender<String>,
    mut stopped: oneshot::Receiver<()>,
) {
    let Reply { response, mut conn } = reply;
    let mut body = response.into_body();
    let mut found = Some(found);
    let mut pending = BytesMut::new();
    loop {
        let frame = std::future::poll_fn(|cx| {
            if std::pin::Pin::new(&mut stopped).poll(cx).is_ready() {
                return std::task::Poll::Ready(None);
            }
            conn.drive(cx);
            std::pin::Pin::new(&mut body).poll_frame(cx)
        })
        .await;
        let Some(Ok(frame)) = frame else {
            break;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(len) = next_event_len(&pending) {
            let event = pending.split_to(len);
            let (kind, data) = parse_event(&event);
            match kind.as_deref() {
                Some("endpoint") => {
                    if let Some(found) = found.take() {
                        let _ = found.send(resolve(&base, data.trim()));
                    }
                }
                None | Some("message") if !data.trim().is_empty() => {
                    let Some(channel) = channel.upgrade() else {
                        return;
                    };
                    match serde_json::from_str::<Value>(&data) {
                        Ok(message) => channel.dispatch(message),
                        Err(_) => tracing::debug!(
                            server = channel.name(),
                            "MCP server sent an SSE message that is not JSON"
                        ),
                    }
                }
                _ => {}
            }
        }
        if pending.len() > MAX_EVENT {
            tracing::warn!(%base, "MCP server sent an SSE event that is too large; dropped its stream");
            break;
        }
    }
    if let Some(channel) = channel.upgrade() {
        channel.closed();
    }
}

/// The `event` type and the joined `data` of one SSE event.
fn parse_event(event: &[u8]) -> (Option<String>, String) {
    let text = String::from_utf8_lossy(event);
    let mut kind = None;
    let mut data = Vec::new();
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            kind = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    (kind, data.join("\n"))
}

/// The message URL an `endpoint` event names, against the stream's URL.
fn resolve(base: &str, endpoint: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        return endpoint.to_owned();
    }
    let origin_end = base
        .find("://")
        .map(|at| at + 3 + base[at + 3..].find('/').unwrap_or(base.len() - at - 3))
        .unwrap_or(base.len());
    if endpoint.starts_with('/') {
        return format!("{}{endpoint}", &base[..origin_end]);
    }
    let path_end = base[origin_end..]
        .split(['?', '#'])
        .next()
        .and_then(|path| path.rfind('/'))
        .map_or(origin_end, |slash| origin_end + slash);
    format!("{}/{endpoint}", &base[..path_end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_resolve_against_the_stream_url() {
        let base = "http://127.0.0.1:3001/sse";
        assert_eq!(
            resolve(base, "/message?sessionId=a"),
            "http://127.0.0.1:3001/message?sessionId=a"
        );
        assert_eq!(
            resolve("http://h/mcp/sse?x=1", "messages?s=1"),
            "http://h/mcp/messages?s=1"
        );
        assert_eq!(resolve("http://h", "/m"), "http://h/m");
        assert_eq!(resolve(base, "https://other/m"), "https://other/m");
    }

    #[test]
    fn events_have_a_type_and_data() {
        let (kind, data) = parse_event(b"event: endpoint\r\ndata: /message?sessionId=1\r\n\r\n");
        assert_eq!(kind.as_deref(), Some("endpoint"));
        assert_eq!(data, "/message?sessionId=1");
        let (kind, data) = parse_event(b"data: {\"a\":\ndata: 1}\n\n");
        assert_eq!((kind, data.as_str()), (None, "{\"a\":\n1}"));
    }
}
