//! A plain HTTP/1.1 client for the upstream's tests: one connection per
//! request, every body frame kept with its arrival time, body errors kept
//! rather than raised.

#![allow(dead_code, reason = "each test crate uses a different part")]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed assumption is a failed test"
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What came back for one request.
#[derive(Debug)]
pub struct Exchange {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// Body frames with the time each arrived.
    pub frames: Vec<(Instant, Bytes)>,
    /// Set when the body ended in an error (connection dropped mid-body).
    pub body_error: Option<String>,
    /// When the request was sent.
    pub sent: Instant,
    /// When the response headers arrived.
    pub headers_at: Instant,
}

impl Exchange {
    pub fn body(&self) -> String {
        let bytes: Vec<u8> = self.frames.iter().flat_map(|(_, b)| b.to_vec()).collect();
        String::from_utf8(bytes).unwrap()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body()).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The SSE events, each with its `\n\n` terminator.
    pub fn events(&self) -> Vec<String> {
        self.body()
            .split_inclusive("\n\n")
            .map(str::to_owned)
            .collect()
    }

    /// The JSON payloads of the `data:` events, `[DONE]` excluded.
    pub fn chunks(&self) -> Vec<serde_json::Value> {
        self.events()
            .iter()
            .map(|e| e.strip_prefix("data: ").unwrap().trim_end())
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }
}

/// Sends one request on a fresh connection.
pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Exchange, hyper::Error> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if !body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let sent = Instant::now();
    let response = sender.send_request(request).await;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            driver.abort();
            return Err(e);
        }
    };
    let headers_at = Instant::now();
    let (parts, mut incoming) = response.into_parts();
    let mut frames = Vec::new();
    let mut body_error = None;
    while let Some(frame) = incoming.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    frames.push((Instant::now(), data));
                }
            }
            Err(e) => {
                body_error = Some(e.to_string());
                break;
            }
        }
    }
    driver.abort();
    Ok(Exchange {
        status: parts.status,
        headers: parts.headers,
        frames,
        body_error,
        sent,
        headers_at,
    })
}

pub async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Exchange {
    send(addr, Method::POST, path, headers, body).await.unwrap()
}

pub async fn get(addr: SocketAddr, path: &str) -> Exchange {
    send(addr, Method::GET, path, &[], "").await.unwrap()
}

/// Sends a raw HTTP/1.1 request and reads until the server closes.
pub async fn raw(addr: SocketAddr, request: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

/// Splits a chunked HTTP/1.1 body into its chunks; the last is the empty
/// terminating chunk if the body was complete.
pub fn dechunk(mut body: &[u8]) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..line_end]).unwrap(), 16).unwrap();
        let start = line_end + 2;
        chunks.push(body[start..start + size].to_vec());
        body = &body[start + size + 2..];
        if size == 0 {
            break;
        }
    }
    chunks
}

/// Contents of `tests/fixtures/NAME`.
pub fn fixture(name: &str) -> String {
    // Read at run time: cargo may reuse a test binary built from another
    // checkout (the shared target dir), whose compile-time path is gone.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let path = PathBuf::from(manifest_dir)
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A JSON fixture: the file minus its final newline.
pub fn json_fixture(name: &str) -> String {
    let text = fixture(name);
    text.strip_suffix('\n').unwrap_or(&text).to_owned()
}

/// Decodes standard base64.
pub fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    out
}
