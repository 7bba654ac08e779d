//! Sluice's Kubernetes controller: reads the AIGateway, Backend, MCPRoute
//! and Budget objects of a namespace (and the Secrets they reference),
//! compiles them with the proxy's own compile, streams the result to every
//! proxy replica (`GET /v1/config/stream`), collects their ACKs, NACKs and
//! budget reports (`POST /v1/config/ack`) and writes it all back as status
//! conditions, Budget spend and Events. One replica leads (a Lease); the
//! others stand by.
//!
//! Flow: [`objects::ObjectSource`] -> [`render`] -> [`hub::Hub`] ->
//! [`http`] stream -> proxies -> ACKs -> [`hub::Hub`] -> [`reconcile`] ->
//! [`reconcile::StatusWriter`].

pub mod http;
pub mod hub;
pub mod kube_source;
pub mod kube_status;
pub mod leader;
pub mod metrics;
pub mod objects;
pub mod reconcile;
pub mod render;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::http::StreamState;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::objects::ObjectSource;
use crate::reconcile::{Settings, StatusWriter};

/// Where to listen and how to behave.
#[derive(Debug, Clone)]
pub struct Options {
    /// The config stream listener (`--listen`).
    pub listen: SocketAddr,
    /// The admin listener (`--admin`).
    pub admin: SocketAddr,
    /// The bearer token proxies present.
    pub token: String,
    /// The control loop's timing.
    pub settings: Settings,
}

/// A started controller.
pub struct Running {
    /// The config stream's bound address.
    pub listen: SocketAddr,
    /// The admin listener's bound address.
    pub admin: SocketAddr,
    /// The published config and the replicas.
    pub hub: Arc<Hub>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    source: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// The token that stops every task.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the object source fails or `shutdown` is cancelled,
    /// then stops everything.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let result = tokio::select! {
            result = &mut self.source => match result {
                Ok(result) => result,
                Err(error) => Err(anyhow::anyhow!("the object source panicked: {error}")),
            },
            () = self.shutdown.cancelled() => Ok(()),
        };
        self.stop().await;
        result
    }

    /// Stops every task and closes the listeners (open streams end).
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        let _ = self.source.await;
    }
}

/// Binds the listeners and starts the object source, the control loop and
/// the servers. Leadership is the caller's: [`leader`] sets it on the hub
/// from a Lease; a test sets it directly.
pub async fn start<S: ObjectSource, W: StatusWriter>(
    options: Options,
    source: S,
    writer: W,
    hub: Arc<Hub>,
) -> anyhow::Result<Running> {
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let stream_listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", options.listen))?;
    let admin_listener = TcpListener::bind(options.admin)
        .await
        .with_context(|| format!("cannot listen on {} (--admin)", options.admin))?;
    let listen = stream_listener.local_addr()?;
    let admin = admin_listener.local_addr()?;

    let (objects_tx, objects_rx) = watch::channel(None);
    let source = tokio::spawn(source.run(objects_tx, shutdown.clone()));

    let state = Arc::new(StreamState {
        hub: hub.clone(),
        token_digest: Sha256::digest(options.token.as_bytes()).into(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    });
    let stream_server = tokio::spawn(http::serve(
        stream_listener,
        move |request| http::stream_service(state.clone(), request),
        shutdown.clone(),
    ));
    let admin_hub = hub.clone();
    let admin_metrics = metrics.clone();
    let synced = objects_rx.clone();
    let admin_server = tokio::spawn(http::serve(
        admin_listener,
        move |request| {
            let response = http::admin_service(
                &admin_hub,
                &admin_metrics,
                synced.borrow().is_some(),
                &request,
            );
            async move { response }
        },
        shutdown.clone(),
    ));
    let control = tokio::spawn(reconcile::run(
        hub.clone(),
        metrics.clone(),
        writer,
        options.settings,
        objects_rx,
        shutdown.clone(),
    ));
    Ok(Running {
        listen,
        admin,
        hub,
        metrics,
        shutdown,
        tasks: vec![stream_server, admin_server, control],
        source,
    })
}
