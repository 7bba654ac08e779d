//! `sluice run`: load the config, bind the listeners, print the banner,
//! serve until SIGTERM/SIGINT, then drain.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sluice_crds::defaults::default_config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config_source::{self, ConfigSource};
use crate::gateway::Gateway;
use crate::runtime::Runtime;
use crate::telemetry::Telemetry;
use crate::{admin, server};

/// Runs the gateway until a termination signal, then drains for at most
/// `drain_timeout`.
pub async fn run(source: ConfigSource, drain_timeout: Duration) -> anyhow::Result<()> {
    let follower = source
        .controller
        .clone()
        .map(crate::controller_client::Follower::new);
    let (snapshot, version) = match &follower {
        Some(follower) => follower.first_config(&source).await?,
        None => (
            source
                .load()
                .map_err(|errors| anyhow::anyhow!("{errors}"))?,
            1,
        ),
    };
    let telemetry = Telemetry::start(&snapshot.access_log).context("cannot open the access log")?;
    let listen = snapshot.listen;
    let admin_addr = snapshot.admin;
    let runtime = Runtime::new(snapshot, version)?;
    let data = TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen} (use --listen to pick another address)")
    })?;
    let admin_listener = TcpListener::bind(admin_addr).await.with_context(|| {
        format!("cannot listen on {admin_addr} (use --admin to pick another address)")
    })?;
    let listen = data.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    print_banner(&source, &runtime, listen, admin_addr);

    let limiter = crate::limits::Limiter::open(&source.state_for(&runtime.snapshot)).await?;
    let gateway = Arc::new(Gateway::new(runtime, telemetry, limiter));
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::limits::report::watch(gateway.clone()));

    let data_gateway = gateway.clone();
    let data_server = tokio::spawn(server::serve(
        data,
        move |request| {
            let gateway = data_gateway.clone();
            async move { gateway.serve(request).await }
        },
        shutdown.clone(),
        drain_timeout,
    ));
    // The admin listener outlives the drain, so `/readyz` can say 503 meanwhile.
    let admin_shutdown = CancellationToken::new();
    let admin_gateway = gateway.clone();
    let admin_server = tokio::spawn(server::serve(
        admin_listener,
        move |request| admin::serve(admin_gateway.clone(), request),
        admin_shutdown.clone(),
        Duration::from_secs(1),
    ));
    let watcher = match follower {
        Some(follower) => tokio::spawn(follower.follow(gateway.clone(), source, shutdown.clone())),
        None => tokio::spawn(config_source::watch(
            gateway.clone(),
            source,
            shutdown.clone(),
        )),
    };

    wait_for_termination().await;
    tracing::info!("shutting down: draining in-flight requests (at most {drain_timeout:?})");
    gateway.start_draining();
    shutdown.cancel();
    let drained = data_server.await.unwrap_or(false);
    admin_shutdown.cancel();
    let _ = admin_server.await;
    let _ = watcher.await;
    if !drained {
        tracing::warn!("drain timed out; remaining connections were closed");
    }
    // Settle what was spent and hand back unused leases.
    gateway.limiter.settle_now(true).await;
    gateway.telemetry.shutdown();
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, ctrl-c is all we can wait for.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn print_banner(
    source: &ConfigSource,
    runtime: &Runtime,
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
) {
    let mut lines = vec![
        format!("Sluice {} - gateway for AI agent traffic", env!("CARGO_PKG_VERSION")),
        format!("  LLM API  http://{listen}/v1   (OpenAI-compatible: chat/completions, completions, embeddings, models)"),
        format!("  admin    http://{admin}   (/metrics /healthz /readyz /config /budgets /cluster)"),
    ];
    if source.is_default() {
        lines.push("  config   built-in default (no -f): anonymous access on loopback".into());
        lines.push("  models".into());
        for line in default_config(&|n| std::env::var(n).ok()).summary {
            lines.push(format!("    {line}"));
        }
    } else if let Some(controller) = &source.controller {
        lines.push(format!(
            "  config   from the controller at {} as replica {} (version {}; last good kept in {})",
            controller.url,
            controller.replica,
            runtime.version,
            controller.state_file.display()
        ));
    }
    if !source.is_default() {
        let files: Vec<String> = source
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        if source.controller.is_none() {
            lines.push(format!(
                "  config   {} (reloaded on change or SIGHUP)",
                files.join(", ")
            ));
        }
        lines.push("  routes".into());
        for route in &runtime.snapshot.routes {
            let models: Vec<&str> = route.models.iter().map(|m| m.as_str()).collect();
            let backends: Vec<&str> = route
                .backends
                .iter()
                .map(|b| &*runtime.backends[b.backend].name)
                .collect();
            lines.push(format!(
                "    {} -> {}",
                models.join(", "),
                backends.join(" | ")
            ));
        }
        for route in &runtime.snapshot.mcp_routes {
            let backends: Vec<&str> = route
                .backends
                .iter()
                .map(|b| &*runtime.backends[b.backend].name)
                .collect();
            let oauth = route
                .oauth
                .as_ref()
                .map(|o| format!("   (OAuth: tokens of {})", o.jwt.issuer))
                .unwrap_or_default();
            lines.push(format!(
                "    MCP http://{listen}{} -> {}{oauth}",
                route.path,
                backends.join(", ")
            ));
        }
        if runtime.snapshot.routes.is_empty() && runtime.snapshot.mcp_routes.is_empty() {
            lines.push("    (none: add spec.llm.routes to the AIGateway)".into());
        }
    }
    let example_model = runtime
        .snapshot
        .routes
        .iter()
        .flat_map(|r| &r.models)
        .find_map(|m| match m {
            sluice_crds::pattern::ModelPattern::Exact(name) => Some(name.as_str()),
            sluice_crds::pattern::ModelPattern::Glob(_) => None,
        });
    if let Some(model) = example_model {
        let auth = if runtime.snapshot.auth.anonymous_tenant.is_some() {
            ""
        } else {
            "-H 'authorization: Bearer $KEY' "
        };
        lines.push(format!(
            "  try      curl -s http://{listen}/v1/chat/completions {auth}-H 'content-type: application/json' -d '{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'"
        ));
    }
    if source.is_default() {
        lines.push("  more     export OPENAI_API_KEY=... and restart, or write a config: docs/configuration.md".into());
    }
    eprintln!("{}", lines.join("\n"));
}
