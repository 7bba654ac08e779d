//! The `sluice` command line: `run` the gateway, `validate` a config,
//! show `budgets`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sluice::config_source::ConfigSource;

/// Sluice: one gateway for an AI agent's LLM calls and MCP tool calls, with
/// routing, fallback, API keys, usage accounting, access logs and metrics.
#[derive(Parser)]
#[command(name = "sluice", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once at start: the size of the `Run` variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run the gateway (LLM API and MCP on 127.0.0.1:1975, admin on 127.0.0.1:1976).
    ///
    /// Without -f, a built-in config serves the demo model `sluice-demo`, a
    /// demo MCP server at /mcp (search-flight, a calendar) and, when
    /// OPENAI_API_KEY is set, every other model through OpenAI
    /// (OPENAI_BASE_URL overrides its endpoint). Config files are reloaded
    /// when they change or on SIGHUP; SIGTERM drains in-flight requests.
    ///
    /// With --controller, the config comes from the Kubernetes controller
    /// instead of files: each version it streams is compiled, swapped in and
    /// ACKed (or NACKed, keeping the running one), and saved in --state-dir,
    /// so a restarted replica serves the last good config while the
    /// controller is away.
    Run {
        /// Config file (multi-document YAML of AIGateway, Backend and MCPRoute objects;
        /// `${VAR}` is replaced from the environment). Repeatable.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Follow the config stream of the Sluice controller at URL (e.g.
        /// `http://sluice-controller:7070`) instead of reading files.
        #[arg(
            long,
            value_name = "URL",
            conflicts_with = "files",
            requires = "controller_token_file"
        )]
        controller: Option<String>,
        /// File holding the bearer token the controller expects (the same
        /// token as the controller's --token-file).
        #[arg(long, value_name = "PATH", requires = "controller")]
        controller_token_file: Option<PathBuf>,
        /// This replica's name in ACKs and in the controller's status
        /// (default: the host name, which is the pod name in Kubernetes).
        #[arg(long, value_name = "NAME", env = "SLUICE_REPLICA")]
        replica: Option<String>,
        /// Where the last good config from the controller is kept, as
        /// `controller-config.json` (mode 0600: it holds secret values).
        /// Default: $XDG_STATE_HOME/sluice, else ~/.local/state/sluice.
        #[arg(long, value_name = "DIR", requires = "controller")]
        state_dir: Option<PathBuf>,
        /// Counter store for budgets, over the config's spec.state:
        /// `memory`, `redis` (with --redis-url) or `raft` (with --raft-peers).
        #[arg(long, value_name = "TYPE", env = "SLUICE_STATE", value_parser = ["memory", "redis", "raft"])]
        state: Option<String>,
        /// This replica's Raft id (1 or more), over spec.state.raft.id; `auto`
        /// takes the ordinal at the end of the host name plus one (the pod
        /// `sluice-proxy-2` is 3), for a StatefulSet.
        #[arg(long, value_name = "ID", env = "SLUICE_RAFT_ID")]
        raft_id: Option<String>,
        /// With --state raft: every member as `ID=HOST:PORT`, comma-separated.
        #[arg(long, value_name = "PEERS", env = "SLUICE_RAFT_PEERS")]
        raft_peers: Option<String>,
        /// With --state raft: where the Raft log and snapshots are kept
        /// (default: $XDG_STATE_HOME/sluice/raft-ID).
        #[arg(long, value_name = "DIR", env = "SLUICE_RAFT_DIR")]
        raft_dir: Option<PathBuf>,
        /// With --state raft: address to listen on for Raft traffic (default:
        /// this replica's peer address).
        #[arg(long, value_name = "ADDR", env = "SLUICE_RAFT_LISTEN")]
        raft_listen: Option<SocketAddr>,
        /// Redis URL for --state redis (`redis://host:6379`).
        #[arg(
            long,
            value_name = "URL",
            env = "SLUICE_REDIS_URL",
            hide_env_values = true
        )]
        redis_url: Option<String>,
        /// With --state redis: the URL is a node of a Redis Cluster.
        #[arg(long, env = "SLUICE_REDIS_CLUSTER")]
        redis_cluster: bool,
        /// Data-plane address; overrides the config's spec.listen.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Admin address; overrides the config's spec.admin.
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
        /// Longest wait for in-flight requests at shutdown, e.g. `30s`.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
        drain_timeout: Duration,
    },
    /// Check config files and print every error with its object and field.
    /// Exits 1 when there are errors.
    Validate {
        /// Config file. Repeatable.
        #[arg(short = 'f', long = "file", value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
    /// Show each budget's spend, what is left and when it resets, from a
    /// running gateway's admin listener (`GET /budgets`).
    Budgets {
        /// The gateway's admin address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1976")]
        admin: SocketAddr,
        /// Print the JSON of `/budgets` instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The counter store's cluster (members, leader, term, commit index,
    /// lag, outstanding leases), from a running gateway's admin listener.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Print `GET /cluster` of the gateway at --admin.
    Status {
        /// The gateway's admin address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1976")]
        admin: SocketAddr,
        /// Print the JSON of `/cluster` instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Prints an admin endpoint's JSON, or `table` of it.
fn print_admin_report(
    admin: SocketAddr,
    path: &str,
    json: bool,
    table: fn(&serde_json::Value) -> String,
) -> ExitCode {
    match sluice::admin_client::fetch(admin, path) {
        Ok(report) => {
            let text = if json {
                format!("{report:#}\n")
            } else {
                table(&report)
            };
            let mut stdout = std::io::stdout();
            let _ = std::io::Write::write_all(&mut stdout, text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
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
    match cli.command {
        Command::Run {
            files,
            controller,
            controller_token_file,
            replica,
            state_dir,
            state,
            raft_id,
            raft_peers,
            raft_dir,
            raft_listen,
            redis_url,
            redis_cluster,
            listen,
            admin,
            drain_timeout,
        } => {
            let raft_id = match raft_id.as_deref().map(sluice::limits::raft::parse_id) {
                None => None,
                Some(Ok(id)) => Some(id),
                Some(Err(error)) => {
                    eprintln!("error: --raft-id: {error}");
                    return ExitCode::FAILURE;
                }
            };
            let state = match (state.as_deref(), redis_url) {
                (None, _) => None,
                (Some("redis"), Some(url)) => Some(sluice_crds::snapshot::StateStore::Redis {
                    url,
                    cluster: redis_cluster,
                }),
                (Some("redis"), None) => {
                    eprintln!("error: --state redis needs --redis-url (or SLUICE_REDIS_URL)");
                    return ExitCode::FAILURE;
                }
                (Some("raft"), _) => {
                    let Some(peers) = raft_peers else {
                        eprintln!("error: --state raft needs --raft-peers (or SLUICE_RAFT_PEERS)");
                        return ExitCode::FAILURE;
                    };
                    match sluice::limits::raft::parse_peers(&peers) {
                        Ok(peers) => Some(sluice_crds::snapshot::StateStore::Raft {
                            id: raft_id.unwrap_or(0),
                            peers,
                            data_dir: raft_dir,
                            listen: raft_listen,
                        }),
                        Err(error) => {
                            eprintln!("error: --raft-peers: {error}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
                (Some(_), _) => Some(sluice_crds::snapshot::StateStore::Memory { path: None }),
            };
            let controller = match (controller, controller_token_file) {
                (Some(url), Some(token_file)) => {
                    match sluice::controller_client::ControllerOptions::new(
                        &url,
                        &token_file,
                        replica,
                        state_dir,
                    ) {
                        Ok(options) => Some(options),
                        Err(error) => {
                            eprintln!("error: {error:#}");
                            return ExitCode::FAILURE;
                        }
                    }
                }
                _ => None,
            };
            let source = ConfigSource {
                files,
                listen,
                admin,
                controller,
                state,
                raft_id,
            };
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
            match runtime.block_on(sluice::run::run(source, drain_timeout)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Budgets { admin, json } => {
            print_admin_report(admin, "/budgets", json, sluice::budgets_cli::table)
        }
        Command::Cluster {
            command: ClusterCommand::Status { admin, json },
        } => print_admin_report(admin, "/cluster", json, sluice::cluster_cli::table),
        Command::Validate { files } => {
            let source = ConfigSource {
                files: files.clone(),
                listen: None,
                admin: None,
                controller: None,
                state: None,
                raft_id: None,
            };
            match source.load() {
                Ok(snapshot) => {
                    eprintln!(
                        "ok: {} LLM route(s), {} MCP route(s), {} backend(s), {} API key(s), {} budget(s)",
                        snapshot.routes.len(),
                        snapshot.mcp_routes.len(),
                        snapshot.backends.len(),
                        snapshot.auth.api_keys.len(),
                        snapshot.budgets.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprint!("{errors}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
