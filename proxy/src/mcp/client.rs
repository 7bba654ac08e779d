//! Talking to one upstream MCP server over streamable HTTP: POST a message
//! with the right headers (session, protocol version, the gateway's
//! credential for that server), and read its answer as JSON or as an SSE
//! stream. Knows nothing of routes, prefixes or the downstream session.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;

use crate::upstream::{Conn, Pool, UpstreamError};

/// Largest upstream answer read whole (lists, initialize).
const MAX_READ: usize = 16 << 20;

/// One upstream MCP server.
pub struct McpServer<'a> {
    /// Backend name, for errors and logs.
    pub name: &'a str,
    /// Its MCP endpoint.
    pub url: &'a str,
    /// The credential the gateway injects.
    pub credential: Option<&'a (HeaderName, HeaderValue)>,
    /// Longest wait for its answer.
    pub timeout: Duration,
}

/// What went wrong talking to an upstream.
#[derive(Debug, thiserror::Error)]
pub enum McpClientError {
    /// Could not reach it, or it broke the exchange.
    #[error("MCP server {0}: {1}")]
    Unreachable(String, String),
    /// It did not answer in time.
    #[error("MCP server {0} did not answer in time")]
    Timeout(String),
    /// It answered with an HTTP error (the body, bounded, for diagnosis).
    #[error("MCP server {0} answered HTTP {1}")]
    Status(String, StatusCode, Bytes),
    /// Its answer was not the JSON-RPC response expected.
    #[error("MCP server {0} sent an answer that is not a JSON-RPC response: {1}")]
    Malformed(String, String),
    /// It answered with a JSON-RPC error.
    #[error("MCP server {0}: {1}")]
    Rpc(String, Value),
}

/// An upstream's answer, head read, body still coming.
pub struct Reply {
    /// The HTTP response (status, headers, body).
    pub response: Response<Incoming>,
    /// Its connection; poll it with the body.
    pub conn: Box<Conn>,
}

impl Reply {
    /// `Mcp-Session-Id` of the answer.
    pub fn session_id(&self) -> Option<String> {
        self.response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Whether the body is an SSE stream.
    pub fn is_sse(&self) -> bool {
        self.response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
    }

    /// Reads the whole body (bounded), polling the connection meanwhile,
    /// then returns the connection to the pool.
    pub async fn read(self) -> Result<Bytes, String> {
        let Reply { response, conn } = self;
        crate::upstream::read_body(response, conn, MAX_READ)
            .await
            .map(Bytes::from)
    }
}

impl McpServer<'_> {
    /// POSTs one JSON-RPC message; returns once the answer's head is in.
    pub async fn post(
        &self,
        pool: &Arc<Pool>,
        session: Option<&str>,
        version: Option<&str>,
        body: Bytes,
    ) -> Result<Reply, McpClientError> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        self.common_headers(headers, session, version);
        self.send(pool, request).await
    }

    /// Opens the server's own stream of messages for a session (`GET`).
    pub async fn open_stream(
        &self,
        pool: &Arc<Pool>,
        session: Option<&str>,
        version: Option<&str>,
        last_event_id: Option<&str>,
    ) -> Result<Reply, McpClientError> {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.method_mut() = Method::GET;
        request.headers_mut().insert(
            http::header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        if let Some(value) = last_event_id.and_then(|id| HeaderValue::from_str(id).ok()) {
            request.headers_mut().insert("last-event-id", value);
        }
        self.common_headers(request.headers_mut(), session, version);
        self.send(pool, request).await
    }

    /// Ends an upstream session (`DELETE`); failures are only logged by the caller.
    pub async fn delete(
        &self,
        pool: &Arc<Pool>,
        session: &str,
        version: &str,
    ) -> Result<StatusCode, McpClientError> {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.method_mut() = Method::DELETE;
        self.common_headers(request.headers_mut(), Some(session), Some(version));
        let reply = self.send(pool, request).await?;
        let status = reply.response.status();
        let _ = reply.read().await;
        Ok(status)
    }

    fn common_headers(
        &self,
        headers: &mut http::HeaderMap,
        session: Option<&str>,
        version: Option<&str>,
    ) {
        if let Some(value) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
            headers.insert("mcp-session-id", value);
        }
        if let Some(value) = version.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert("mcp-protocol-version", value);
        }
        if let Some((name, value)) = self.credential {
            headers.insert(name.clone(), value.clone());
        }
    }

    async fn send(
        &self,
        pool: &Arc<Pool>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Reply, McpClientError> {
        *request.uri_mut() = self.url.parse().map_err(|e| {
            McpClientError::Unreachable(self.name.to_owned(), format!("bad URL: {e}"))
        })?;
        match tokio::time::timeout(self.timeout, pool.send(request)).await {
            Ok(Ok((response, conn))) => Ok(Reply { response, conn }),
            Ok(Err(UpstreamError::Connect(e) | UpstreamError::Exchange(e))) => {
                Err(McpClientError::Unreachable(self.name.to_owned(), e))
            }
            Err(_) => Err(McpClientError::Timeout(self.name.to_owned())),
        }
    }

    /// Sends a request and returns its result (and the upstream's session id,
    /// if it set one), reading a JSON or SSE answer whole.
    pub async fn request(
        &self,
        pool: &Arc<Pool>,
        session: Option<&str>,
        version: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<(Value, Option<String>), McpClientError> {
        let id = "sluice";
        let message =
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let reply = self
            .post(pool, session, version, Bytes::from(message.to_string()))
            .await?;
        let status = reply.response.status();
        if !status.is_success() {
            let body = reply.read().await.unwrap_or_default();
            return Err(McpClientError::Status(self.name.to_owned(), status, body));
        }
        let session_id = reply.session_id();
        let sse = reply.is_sse();
        let body = tokio::time::timeout(self.timeout, reply.read())
            .await
            .map_err(|_| McpClientError::Timeout(self.name.to_owned()))?
            .map_err(|e| McpClientError::Unreachable(self.name.to_owned(), e))?;
        let response = find_response(&body, sse, id).ok_or_else(|| {
            McpClientError::Malformed(self.name.to_owned(), format!("no response to `{method}`"))
        })?;
        if let Some(error) = response.get("error") {
            return Err(McpClientError::Rpc(self.name.to_owned(), error.clone()));
        }
        Ok((
            response.get("result").cloned().unwrap_or(Value::Null),
            session_id,
        ))
    }

    /// Sends one message that expects no answer beyond a 2xx (a
    /// notification, or the client's answer to a server request).
    pub async fn deliver(
        &self,
        pool: &Arc<Pool>,
        session: Option<&str>,
        version: Option<&str>,
        message: Bytes,
    ) -> Result<(), McpClientError> {
        let reply = self.post(pool, session, version, message).await?;
        let status = reply.response.status();
        let _ = reply.read().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(McpClientError::Status(
                self.name.to_owned(),
                status,
                Bytes::new(),
            ))
        }
    }

    /// Sends a notification.
    pub async fn notify(
        &self,
        pool: &Arc<Pool>,
        session: Option<&str>,
        version: Option<&str>,
        method: &str,
    ) -> Result<(), McpClientError> {
        let message = serde_json::json!({"jsonrpc": "2.0", "method": method});
        self.deliver(pool, session, version, Bytes::from(message.to_string()))
            .await
    }
}

/// The JSON-RPC response with `id` in a JSON body or an SSE stream.
pub fn find_response(body: &[u8], sse: bool, id: &str) -> Option<Value> {
    let matches = |value: &Value| {
        value.get("id").and_then(Value::as_str) == Some(id) && value.get("method").is_none()
    };
    if !sse {
        let value: Value = serde_json::from_slice(body).ok()?;
        return match value {
            Value::Array(items) => items.into_iter().find(matches),
            value => matches(&value).then_some(value),
        };
    }
    let text = std::str::from_utf8(body).ok()?;
    // Events are separated by blank lines; a message may span several `data:` lines.
    text.replace("\r\n", "\n").split("\n\n").find_map(|event| {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() {
            return None;
        }
        let value: Value = serde_json::from_str(&data.join("\n")).ok()?;
        matches(&value).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_response_in_json_and_sse() {
        let json = br#"{"jsonrpc":"2.0","id":"sluice","result":{"tools":[]}}"#;
        assert_eq!(
            find_response(json, false, "sluice").unwrap()["result"]["tools"],
            serde_json::json!([])
        );
        assert!(find_response(json, false, "other").is_none());
        let sse = b"id: 1\ndata: \n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"sluice\",\r\ndata: \"result\":{}}\r\n\r\n";
        assert_eq!(
            find_response(sse, true, "sluice").unwrap()["result"],
            serde_json::json!({})
        );
        assert!(find_response(b"not json", false, "sluice").is_none());
    }
}
