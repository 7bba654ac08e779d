//! Where the running config comes from (files given with `-f`, the
//! built-in default, or the Kubernetes controller's stream, which
//! `controller_client` follows) and how it is reloaded: file changes are
//! polled, SIGHUP reloads at once. A config that fails to compile is logged
//! and counted; the previous one keeps serving.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sluice_crds::defaults::default_config;
use sluice_crds::{
    compile, load_documents, substitute_env, ConfigError, ConfigErrors, Snapshot, StandaloneSecrets,
};
use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;
use crate::runtime::Runtime;

/// How often config files are checked for changes.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The config's origin and the command-line overrides.
#[derive(Clone, Debug)]
pub struct ConfigSource {
    /// Files given with `-f`; empty means the built-in default.
    pub files: Vec<PathBuf>,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--admin`.
    pub admin: Option<SocketAddr>,
    /// `--controller`: the config comes from the controller's stream.
    pub controller: Option<crate::controller_client::ControllerOptions>,
    /// `--state` (and `--redis-url`, `--redis-cluster`): the counter store,
    /// over the config's `spec.state` (a Helm release sets it per replica).
    pub state: Option<sluice_crds::snapshot::StateStore>,
    /// `--raft-id`: this replica's Raft id, over the config's (the rest of
    /// the config is the same for every replica).
    pub raft_id: Option<u64>,
}

impl ConfigSource {
    /// The counter store to open: `--state` if given, else the config's.
    pub fn state_for(
        &self,
        snapshot: &sluice_crds::snapshot::Snapshot,
    ) -> sluice_crds::snapshot::StateStore {
        use sluice_crds::snapshot::StateStore;
        let mut state = self.chosen_state(snapshot);
        if let (StateStore::Raft { id, .. }, Some(raft_id)) = (&mut state, self.raft_id) {
            *id = raft_id;
        }
        state
    }

    fn chosen_state(
        &self,
        snapshot: &sluice_crds::snapshot::Snapshot,
    ) -> sluice_crds::snapshot::StateStore {
        use sluice_crds::snapshot::StateStore;
        match (&self.state, &snapshot.state) {
            (None, configured) => configured.clone(),
            // Memory over memory: keep the configured journal.
            (Some(StateStore::Memory { path: None }), StateStore::Memory { path }) => {
                StateStore::Memory { path: path.clone() }
            }
            // Memory over a shared store: the default journal.
            (
                Some(StateStore::Memory { path: None }),
                StateStore::Redis { .. } | StateStore::Raft { .. },
            ) => {
                let base = std::env::var_os("XDG_STATE_HOME")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME")
                            .map(|home| PathBuf::from(home).join(".local").join("state"))
                    });
                StateStore::Memory {
                    path: base.map(|b| b.join("sluice").join("counters.log")),
                }
            }
            (Some(chosen), _) => chosen.clone(),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl ConfigSource {
    /// Whether the built-in default is used.
    pub fn is_default(&self) -> bool {
        self.files.is_empty() && self.controller.is_none()
    }

    /// Applies `--listen` and `--admin`.
    pub fn apply_overrides(&self, snapshot: &mut Snapshot) {
        if let Some(listen) = self.listen {
            snapshot.listen = listen;
        }
        if let Some(admin) = self.admin {
            snapshot.admin = admin;
        }
    }

    /// Reads, substitutes, decodes and compiles the config.
    pub fn load(&self) -> Result<Snapshot, ConfigErrors> {
        let mut errors = Vec::new();
        let mut sources = Vec::new();
        if self.is_default() {
            sources.push(("built-in default".to_owned(), default_config(&env).text));
        }
        for path in &self.files {
            let name = path.display().to_string();
            match std::fs::read_to_string(path) {
                Ok(text) => match substitute_env(&name, &text, &env) {
                    Ok(text) => sources.push((name, text)),
                    Err(mut e) => errors.append(&mut e),
                },
                Err(e) => errors.push(ConfigError::new(
                    name,
                    "",
                    format!("cannot read the file: {e}"),
                )),
            }
        }
        let loaded = load_documents(&sources);
        let compiled = compile(&loaded, &StandaloneSecrets { env });
        let mut snapshot = match compiled {
            Ok(snapshot) if errors.is_empty() => snapshot,
            Ok(_) => return Err(ConfigErrors(errors)),
            Err(ConfigErrors(mut more)) => {
                errors.append(&mut more);
                return Err(ConfigErrors(errors));
            }
        };
        self.apply_overrides(&mut snapshot);
        if self.is_default() && !snapshot.listen.ip().is_loopback() {
            return Err(ConfigErrors(vec![ConfigError::new(
                "built-in default",
                "",
                format!(
                    "the built-in default config allows anonymous access, so it only listens on loopback, not {}; write a config with spec.auth.apiKeys (docs/configuration.md)",
                    snapshot.listen
                ),
            )]));
        }
        Ok(snapshot)
    }

    fn fingerprint(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.files
            .iter()
            .map(|path| {
                std::fs::metadata(path)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }
}

/// Reloads on file change or SIGHUP until `shutdown`.
pub async fn watch(gateway: Arc<Gateway>, source: ConfigSource, shutdown: CancellationToken) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; file changes still reload");
            None
        }
    };
    let mut seen = source.fingerprint();
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    loop {
        let hup = async {
            match &mut hangup {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = hup => {
                tracing::info!("SIGHUP: reloading config");
                seen = source.fingerprint();
                reload(&gateway, &source);
            }
            _ = ticker.tick() => {
                let now = source.fingerprint();
                if now != seen {
                    seen = now;
                    tracing::info!("config file changed: reloading");
                    reload(&gateway, &source);
                }
            }
        }
    }
}

/// Loads and swaps in a new config, or keeps the old one.
pub fn reload(gateway: &Gateway, source: &ConfigSource) {
    let current = gateway.runtime();
    match source.load() {
        Ok(snapshot) if snapshot.hash == current.snapshot.hash => {
            tracing::info!(
                version = current.version,
                "config unchanged; still serving it"
            );
        }
        Ok(snapshot) => {
            let _ = swap_in(gateway, snapshot, current.version + 1);
        }
        Err(errors) => {
            tracing::error!("config rejected; still serving the previous one\n{errors}");
            gateway.telemetry.metrics().config_reload(false);
        }
    }
}

/// Swaps in a compiled config as `version`, unless it is the one running
/// (same hash and version). Returns whether it was swapped, or why it was
/// rejected (the previous one keeps serving).
pub fn swap_in(gateway: &Gateway, snapshot: Snapshot, version: u64) -> Result<bool, String> {
    let current = gateway.runtime();
    if snapshot.hash == current.snapshot.hash && version == current.version {
        return Ok(false);
    }
    match Runtime::new(snapshot, version) {
        Ok(runtime) => {
            if runtime.snapshot.listen != current.snapshot.listen
                || runtime.snapshot.admin != current.snapshot.admin
            {
                tracing::warn!("listen or admin address changed: restart to apply it");
            }
            if runtime.snapshot.access_log != current.snapshot.access_log {
                tracing::warn!("telemetry.accessLog changed: restart to apply it");
            }
            tracing::info!(version = runtime.version, hash = %runtime.snapshot.hash, "config reloaded");
            gateway.telemetry.metrics().config_reload(true);
            gateway.swap(runtime);
            Ok(true)
        }
        Err(error) => {
            tracing::error!(%error, "config rejected; still serving the previous one");
            gateway.telemetry.metrics().config_reload(false);
            Err(error.to_string())
        }
    }
}
