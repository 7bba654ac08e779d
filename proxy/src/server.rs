//! Listeners: accept connections, serve HTTP/1.1 and HTTP/2 (cleartext,
//! prior knowledge) with hyper, and drain gracefully on shutdown: stop
//! accepting, let in-flight requests finish, close idle connections.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::ResponseBody;

/// Longest wait for a request's head on an HTTP/1 connection.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `listener` with `handler` until `shutdown`, then drains for at
/// most `drain_timeout`. Returns whether every connection finished in time.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    handler: H,
    shutdown: CancellationToken,
    drain_timeout: Duration,
) -> bool
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that never finishes its request head cannot hold a
    // connection forever (slowloris); HTTP/2 pings dead peers.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let handler = handler.clone();
                    let service = service_fn(move |request| {
                        let response = handler(request);
                        async move { Ok::<_, Infallible>(response.await) }
                    });
                    let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    // Owned by `graceful`: the drain below waits for it.
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                }
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => true,
        () = tokio::time::sleep(drain_timeout) => false,
    }
}
