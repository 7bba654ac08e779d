//! The `sluice-test-upstream` binary: parses flags, binds, prints the listen
//! line and serves until SIGTERM or SIGINT. Everything else is the library's.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use sluice_test_upstream::{Options, Upstream, CONTROL_HEADERS_HELP};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A fake OpenAI-compatible LLM provider for Sluice's tests and benchmarks.
///
/// Endpoints (matched by path suffix, so a base path prefix works too):
/// POST /v1/chat/completions, POST /v1/completions, POST /v1/embeddings,
/// GET /v1/models, GET|DELETE /_mock/requests (recorded requests).
/// Every response carries `x-upstream-name: NAME`.
#[derive(Debug, Parser)]
#[command(name = "sluice-test-upstream", version, after_help = CONTROL_HEADERS_HELP)]
struct Args {
    /// Address to listen on; port 0 picks a free port. The bound address is
    /// printed as `listening on ADDR` on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// Name returned in the `x-upstream-name` header and as the model's `owned_by`.
    #[arg(long, default_value = "upstream")]
    name: String,

    /// Fail every POST with this status (400-599) and an OpenAI error body,
    /// like a broken backend.
    #[arg(long, value_name = "CODE", value_parser = clap::value_parser!(u16).range(400..=599))]
    always_status: Option<u16>,

    /// Runtime worker threads; 1 runs everything on the main thread.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,

    /// Do not record requests (for benchmarks); `/_mock/requests` stays empty.
    #[arg(long)]
    no_record: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.threads))
            .enable_all()
            .build()
    }
    .context("building the tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let opts = Options {
        name: args.name,
        always_status: args.always_status,
        record: !args.no_record,
    };
    let shutdown = CancellationToken::new();
    let serve = Upstream::serve(listener, opts, shutdown.clone());
    tokio::pin!(serve);

    // Tell whoever started us where we listen, only once we do.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()?;
    drop(stdout);

    tokio::select! {
        served = &mut serve => served?,
        signal = stop_signal() => {
            signal?;
            shutdown.cancel();
            serve.await?;
        }
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
