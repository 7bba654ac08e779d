//! The `sluice-controller` binary: flags, the Kubernetes client, leader
//! election, then the controller until SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sluice_controller::hub::Hub;
use sluice_controller::kube_source::KubeSource;
use sluice_controller::kube_status::KubeStatus;
use sluice_controller::leader::{self, LeaseSettings};
use sluice_controller::reconcile::Settings;
use sluice_controller::Options;

/// Sluice's Kubernetes controller: compiles the AIGateway, Backend,
/// MCPRoute and Budget objects of a namespace (and the Secrets they
/// reference) into the proxies' config, streams it to every `sluice run
/// --controller` replica, and writes Accepted, ResolvedRefs and Programmed
/// conditions, Budget spend and Events back. Run two or more replicas: one
/// leads (a Lease), the others stand by with /readyz failing, so the
/// Service routes proxies to the leader.
#[derive(Parser)]
#[command(name = "sluice-controller", version, about, long_about = None)]
struct Cli {
    /// Namespace to watch (default: the pod's namespace, else the
    /// kubeconfig context's, else `default`).
    #[arg(long, env = "POD_NAMESPACE", value_name = "NS")]
    namespace: Option<String>,
    /// The config stream for proxies (`GET /v1/config/stream`, `POST /v1/config/ack`).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7070")]
    listen: SocketAddr,
    /// Health and metrics (`/healthz`, `/readyz`, `/metrics`).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7071")]
    admin: SocketAddr,
    /// File holding the bearer token proxies must present (mount it from a
    /// Secret; proxies read the same one with --controller-token-file).
    #[arg(long, value_name = "PATH")]
    token_file: PathBuf,
    /// This replica's identity in the Lease and in Events (default: the
    /// host name, which is the pod name).
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    identity: Option<String>,
    /// The Lease that elects the leader.
    #[arg(long, value_name = "NAME", default_value = "sluice-controller")]
    lease_name: String,
    /// How long the leader holds the Lease without renewing it; a standby
    /// takes over after this when the leader dies.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// Lead without a Lease (a single replica, or a test).
    #[arg(long)]
    no_leader_election: bool,
    /// Wait after a change for more changes before compiling.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = parse_duration)]
    debounce: Duration,
    /// How often status is refreshed without a change (Budget spend,
    /// replica counts).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    status_interval: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    sluice_crds::values::parse_duration(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // kube's rustls needs a process-wide crypto provider; ring, as the proxy.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token = std::fs::read_to_string(&cli.token_file)
        .with_context(|| format!("cannot read --token-file {}", cli.token_file.display()))?
        .trim()
        .to_owned();
    anyhow::ensure!(
        !token.is_empty(),
        "--token-file {} is empty",
        cli.token_file.display()
    );
    let client = kube::Client::try_default().await.context(
        "cannot reach the Kubernetes API (in a pod: its ServiceAccount; elsewhere: KUBECONFIG)",
    )?;
    let namespace = cli
        .namespace
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let identity = cli
        .identity
        .filter(|i| !i.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| format!("sluice-controller-{}", std::process::id()));

    let hub = Arc::new(Hub::new());
    let options = Options {
        listen: cli.listen,
        admin: cli.admin,
        token,
        settings: Settings {
            debounce: cli.debounce,
            status_interval: cli.status_interval,
        },
    };
    let source = KubeSource {
        client: client.clone(),
        namespace: namespace.clone(),
    };
    let writer = KubeStatus::new(client.clone(), &identity);
    let running = sluice_controller::start(options, source, writer, hub.clone()).await?;
    tracing::info!(
        %namespace,
        %identity,
        stream = %running.listen,
        admin = %running.admin,
        "sluice-controller started"
    );
    let shutdown = running.shutdown_token();
    let election = if cli.no_leader_election {
        hub.set_leader(true);
        None
    } else {
        let settings = LeaseSettings {
            name: cli.lease_name,
            namespace: namespace.clone(),
            identity,
            lease_duration: cli.lease_duration,
            renew_deadline: cli.lease_duration.mul_f64(2.0 / 3.0),
            retry: (cli.lease_duration / 7).max(Duration::from_millis(500)),
        };
        Some(tokio::spawn(leader::run(
            client,
            settings,
            hub.clone(),
            shutdown.child_token(),
        )))
    };
    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_termination().await;
        tracing::info!("shutting down");
        stop.cancel();
    });
    let result = running.wait().await;
    if let Some(election) = election {
        let _ = election.await;
    }
    result
}

async fn wait_for_termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
