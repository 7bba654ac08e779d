//! HTTP/1.1 connections to upstreams, pooled, and driven by the request
//! that uses them rather than by a task of their own. The response body's
//! poll also polls its connection, so every SSE event the upstream has
//! already sent is decoded and forwarded in one go: one write to the client
//! instead of one per event, and no task hand-off per chunk. Knows nothing
//! of routing, retries or telemetry.

use std::collections::HashMap;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::Context;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

/// Connect timeout for new upstream connections.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections older than this are not reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream host.
const MAX_IDLE_PER_HOST: usize = 256;

type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;
/// Idle connections by `scheme://authority`, with when they went idle.
type IdleConns = HashMap<Arc<str>, Vec<(Box<Conn>, Instant)>>;

/// Why an upstream exchange failed before a response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The connection could not be made.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection failed while sending or before the response head.
    #[error("{0}")]
    Exchange(String),
}

/// One upstream connection: the handle to send on, and the connection
/// state machine that whoever waits on it must poll.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Connection<Stream, Full<Bytes>>,
    key: Arc<str>,
    pool: Arc<Pool>,
    /// The driver finished: the connection is closed.
    closed: bool,
}

impl Conn {
    /// Polls the connection so it reads and writes; call before polling a
    /// body that comes from it.
    pub fn drive(&mut self, cx: &mut Context<'_>) {
        if !self.closed && Pin::new(&mut self.driver).poll(cx).is_ready() {
            self.closed = true;
        }
    }

    /// The response is fully read: keep the connection for the next request
    /// if it can take one.
    pub fn release(mut self: Box<Self>, cx: &mut Context<'_>) {
        self.drive(cx);
        if !self.closed && self.sender.is_ready() {
            let pool = self.pool.clone();
            pool.check_in(self);
        }
    }
}

/// Reads a whole (small) upstream body, at most `max` bytes, polling its
/// connection meanwhile, then returns the connection to the pool. For the
/// gateway's own calls (token endpoints, JWKS, credentials, MCP answers),
/// not for proxied bodies, which stream.
pub async fn read_body(
    response: Response<Incoming>,
    mut conn: Box<Conn>,
    max: usize,
) -> Result<Vec<u8>, String> {
    use http_body::Body as _;
    let mut body = response.into_body();
    let mut out = Vec::new();
    loop {
        let frame = std::future::poll_fn(|cx| {
            conn.drive(cx);
            Pin::new(&mut body).poll_frame(cx)
        })
        .await;
        match frame {
            None => break,
            Some(Err(e)) => return Err(format!("reading the answer: {e}")),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if out.len() + data.len() > max {
                        return Err(format!("the answer is larger than {max} bytes"));
                    }
                    out.extend_from_slice(&data);
                }
            }
        }
    }
    let mut conn = Some(conn);
    std::future::poll_fn(|cx| {
        if let Some(conn) = conn.take() {
            conn.release(cx);
        }
        std::task::Poll::Ready(())
    })
    .await;
    Ok(out)
}

/// The pool of idle connections, per `scheme://authority`.
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    idle: Mutex<IdleConns>,
}

impl Pool {
    /// A pool that dials HTTP and HTTPS (HTTP/1.1 by ALPN).
    pub fn new() -> Arc<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Arc::new(Self {
            connector,
            idle: Mutex::new(HashMap::new()),
        })
    }

    fn check_in(&self, conn: Box<Conn>) {
        // The lock is held for a push; the hot path takes it once per request.
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(conn.key.clone()).or_default();
            if list.len() < MAX_IDLE_PER_HOST {
                list.push((conn, Instant::now()));
            }
        }
    }

    fn check_out(&self, key: &str) -> Option<Box<Conn>> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key)?;
        while let Some((mut conn, since)) = list.pop() {
            if since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            // Let the connection notice a close that already happened.
            conn.drive(&mut Context::from_waker(std::task::Waker::noop()));
            if !conn.closed && conn.sender.is_ready() {
                return Some(conn);
            }
        }
        None
    }

    async fn dial(self: &Arc<Self>, uri: &Uri, key: Arc<str>) -> Result<Box<Conn>, UpstreamError> {
        let mut connector = self.connector.clone();
        let stream = connector
            .call(uri.clone())
            .await
            .map_err(|e| UpstreamError::Connect(describe(&*e)))?;
        let (sender, driver) = http1::Builder::new()
            .handshake(stream)
            .await
            .map_err(|e| UpstreamError::Connect(describe(&e)))?;
        Ok(Box::new(Conn {
            sender,
            driver,
            key,
            pool: self.clone(),
            closed: false,
        }))
    }

    /// Sends a request and waits for the response head. The connection comes
    /// back with the response: poll it with the body, then `release` it.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Box<Conn>), UpstreamError> {
        let uri = request.uri().clone();
        let key: Arc<str> = match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(authority)) => format!("{scheme}://{authority}").into(),
            _ => {
                return Err(UpstreamError::Connect(format!(
                    "`{uri}` is not an absolute URL"
                )))
            }
        };
        // HTTP/1 sends origin-form targets with a Host header.
        if let Some(authority) = uri.authority() {
            if let Ok(host) = http::HeaderValue::from_str(authority.as_str()) {
                request.headers_mut().insert(http::header::HOST, host);
            }
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = path.parse().unwrap_or_else(|_| Uri::from_static("/"));

        // A pooled connection the upstream closed meanwhile gives the request
        // back unsent: then dial a fresh one.
        let mut reused = self.check_out(&key);
        loop {
            let fresh = reused.is_none();
            let mut conn = match reused.take() {
                Some(conn) => conn,
                None => self.dial(&uri, key.clone()).await?,
            };
            let sent = conn.sender.try_send_request(request);
            match drive_until(&mut conn, sent).await {
                Ok(response) => return Ok((response, conn)),
                Err(mut error) => match error.take_message() {
                    Some(unsent) if !fresh => request = unsent,
                    _ => return Err(UpstreamError::Exchange(describe(&error.into_error()))),
                },
            }
        }
    }
}

/// Polls the connection and `future` together until `future` is done.
async fn drive_until<F: Future>(conn: &mut Conn, future: F) -> F::Output {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| {
        conn.drive(cx);
        future.as_mut().poll(cx)
    })
    .await
}

/// The error and its causes, one line (no secrets: URLs carry none).
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
