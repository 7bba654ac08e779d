//! `sluice-test-upstream`: a fake LLM provider for Sluice's tests and
//! benchmarks. It speaks the OpenAI wire format, Anthropic's Messages
//! (`/v1/messages`, `anthropic`), Google's `generateContent` (AI Studio
//! and Vertex AI paths, with an OAuth token endpoint; `gemini`) and
//! Bedrock's Converse (`/model/{id}/converse[-stream]`, `bedrock`) and
//! Cohere's v2 Chat (`/v2/chat`, `cohere`) exactly, is steered
//! per request by `x-mock-*` headers (see [`CONTROL_HEADERS_HELP`]) and records
//! what it receives.
//!
//! This module owns the server's lifecycle: binding, accepting, shutting
//! down. What a request gets back is decided in `service` and `openai`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use sluice_test_upstream::{Options, Upstream};
//! let upstream = Upstream::start(Options::default()).await?;
//! let base_url = format!("{}/v1", upstream.url());
//! // ... point the gateway at base_url, send traffic ...
//! let seen = upstream.requests();
//! # Ok(()) }
//! ```

mod anthropic;
pub mod aws_creds;
mod base64;
mod bedrock;
mod body;
mod cohere;
mod control;
mod embed;
pub mod gemini;
mod media;
mod openai;
mod record;
mod rerank;
mod service;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

pub use bedrock::{TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY};
pub use control::CONTROL_HEADERS_HELP;
pub use record::{RecordedRequest, CAPACITY as RECORDED_REQUESTS_KEPT};
pub use service::{NAME_HEADER, REQUESTS_PATH};

use record::Recorder;
use service::State;

/// How an upstream behaves as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Sent back in the `x-upstream-name` header and as the model's `owned_by`,
    /// so tests can tell upstreams apart.
    pub name: String,
    /// Fail every POST with this status (400..=599) and an OpenAI error body,
    /// as a broken backend would.
    pub always_status: Option<u16>,
    /// Keep the last requests for [`Upstream::requests`] and
    /// `GET /_mock/requests`. Benchmarks turn this off.
    pub record: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: "upstream".to_owned(),
            always_status: None,
            record: true,
        }
    }
}

/// A running upstream, serving on a task of the current runtime until dropped.
#[derive(Debug)]
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    recorder: Arc<Recorder>,
    aws: Arc<aws_creds::AwsSettings>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Upstream {
    /// Binds `127.0.0.1:0` and serves on a spawned task.
    pub async fn start(opts: Options) -> std::io::Result<Upstream> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        Upstream::start_on(listener, opts).await
    }

    /// Serves on `listener` on a spawned task.
    pub async fn start_on(listener: TcpListener, opts: Options) -> std::io::Result<Upstream> {
        let addr = listener.local_addr()?;
        let recorder = Arc::new(Recorder::default());
        let aws = Arc::new(aws_creds::AwsSettings::default());
        let state = state(&opts, opts.record.then(|| recorder.clone()), aws.clone())?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(listener, state, shutdown.clone()));
        Ok(Upstream {
            addr,
            recorder,
            aws,
            shutdown,
            task: Some(task),
        })
    }

    /// Serves on `listener` until `shutdown` is cancelled; then drops every
    /// open connection. The binary runs this.
    pub async fn serve(
        listener: TcpListener,
        opts: Options,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let recorder = opts.record.then(|| Arc::new(Recorder::default()));
        let aws = Arc::new(aws_creds::AwsSettings::default());
        run(listener, state(&opts, recorder, aws)?, shutdown).await
    }

    /// The base URL, `http://127.0.0.1:PORT` (without `/v1`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The recorded requests, oldest first (at most
    /// [`RECORDED_REQUESTS_KEPT`]). `/_mock/requests` calls are not recorded.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.recorder.snapshot()
    }

    /// How its AWS credential faces (STS, container, instance metadata)
    /// behave; see [`aws_creds`].
    pub fn aws(&self) -> &aws_creds::AwsSettings {
        &self.aws
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.recorder.clear();
    }

    /// Stops serving and waits until the server has let go of the port and
    /// of every connection.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn state(
    opts: &Options,
    recorder: Option<Arc<Recorder>>,
    aws: Arc<aws_creds::AwsSettings>,
) -> std::io::Result<Arc<State>> {
    let always_status = match opts.always_status {
        None => None,
        Some(code) => Some(control::error_status(code).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("always_status {code} is not an error status (400..=599)"),
            )
        })?),
    };
    Ok(Arc::new(State::new(
        &opts.name,
        always_status,
        recorder,
        aws,
    )?))
}

/// Accepts connections until `shutdown`; each connection is a task owned by
/// a `JoinSet`, so none outlives the server.
async fn run(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Events are flushed one by one; don't let Nagle merge them.
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, state.clone()));
                }
                // Out of file descriptors and the like: back off, keep serving.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
    connections.shutdown().await;
    Ok(())
}

async fn serve_connection(stream: tokio::net::TcpStream, state: Arc<State>) {
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { service::handle(&state, request).await }
    });
    // Errors here are the client going away or an abort we asked for.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}
