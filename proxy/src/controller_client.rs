//! `sluice run --controller URL`: the config comes from the Kubernetes
//! controller's stream (`GET /v1/config/stream`, server-sent events, one
//! full [`ConfigBundle`] per version). Each version is compiled with the
//! same code the controller used, swapped in through the reload path of
//! `config_source`, kept on disk as the last good one, and answered with an
//! ACK or a NACK (`POST /v1/config/ack`). The same ACK goes out again every
//! [`REPORT_EVERY`] with this replica's budget report, which the controller
//! writes into the Budgets' status. The stream reconnects with backoff; a
//! replica that restarts while the controller is away serves the config
//! saved on disk. Knows nothing of routing or limits beyond reading the
//! budget report.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sluice_crds::{ConfigAck, ConfigBundle, Snapshot};
use tokio_util::sync::CancellationToken;

use crate::config_source::{swap_in, ConfigSource};
use crate::gateway::Gateway;

/// How often the last ACK is sent again, with a fresh budget report.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);
/// A stream silent this long is dead (the controller sends a keepalive
/// every 10 s).
const SILENCE: Duration = Duration::from_secs(35);
/// First and longest wait between reconnects.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Largest event accepted (a config with every secret value).
const MAX_EVENT: usize = 64 << 20;
/// The file in `--state-dir` that keeps the last good config.
pub const STATE_FILE: &str = "controller-config.json";

/// `--controller` and its companions.
#[derive(Clone)]
pub struct ControllerOptions {
    /// The controller's base URL, e.g. `http://sluice-controller:7070`.
    pub url: String,
    /// The bearer token (from `--controller-token-file`).
    pub token: String,
    /// This replica's name in ACKs and status (`--replica`).
    pub replica: String,
    /// Where the last good config is kept.
    pub state_file: PathBuf,
}

impl std::fmt::Debug for ControllerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerOptions")
            .field("url", &self.url)
            .field("replica", &self.replica)
            .field("state_file", &self.state_file)
            .finish_non_exhaustive()
    }
}

impl ControllerOptions {
    /// Reads the token file and settles the defaults.
    pub fn new(
        url: &str,
        token_file: &Path,
        replica: Option<String>,
        state_dir: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let token = std::fs::read_to_string(token_file)
            .with_context(|| {
                format!(
                    "cannot read --controller-token-file {}",
                    token_file.display()
                )
            })?
            .trim()
            .to_owned();
        anyhow::ensure!(
            !token.is_empty(),
            "--controller-token-file {} is empty",
            token_file.display()
        );
        let url = url.trim_end_matches('/').to_owned();
        anyhow::ensure!(
            url.starts_with("http://") || url.starts_with("https://"),
            "--controller must be an http:// or https:// URL, not `{url}`"
        );
        let replica = replica
            .filter(|r| !r.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| format!("sluice-{}", std::process::id()));
        let state_dir = state_dir
            .or_else(default_state_dir)
            .context("no --state-dir, and neither XDG_STATE_HOME nor HOME is set")?;
        Ok(Self {
            url,
            token,
            replica,
            state_file: state_dir.join(STATE_FILE),
        })
    }
}

/// `$XDG_STATE_HOME/sluice`, else `~/.local/state/sluice` (where the
/// counter journal lives too).
pub fn default_state_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local").join("state"))
        })?;
    Some(base.join("sluice"))
}

/// The last good config saved on disk, compiled, if there is one.
fn load_saved(path: &Path) -> Option<(ConfigBundle, Snapshot)> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the saved config");
            return None;
        }
    };
    let bundle: ConfigBundle = match serde_json::from_slice(&text) {
        Ok(bundle) => bundle,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "the saved config is not readable; ignoring it");
            return None;
        }
    };
    match bundle.compile() {
        Ok(snapshot) => Some((bundle, snapshot)),
        Err(errors) => {
            tracing::warn!(path = %path.display(), "the saved config no longer compiles; ignoring it\n{errors}");
            None
        }
    }
}

/// Saves a good config: written to a temporary file readable by this user
/// alone (it holds secret values), then renamed over the old one.
fn save(path: &Path, bundle: &ConfigBundle) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("json.tmp");
    let json = serde_json::to_vec(bundle).map_err(std::io::Error::other)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(&json)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Follows the controller.
pub struct Follower {
    options: ControllerOptions,
    client: HttpClient,
    /// The answer to the last version received, sent again with reports.
    last_ack: Mutex<Option<ConfigAck>>,
}

/// Why the stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("{0}")]
    Connect(String),
    #[error("the controller answered {0}: {1}")]
    Status(StatusCode, String),
    #[error("{0}")]
    Broken(String),
}

impl Follower {
    /// A follower with its own HTTP client (http or https with public roots).
    pub fn new(options: ControllerOptions) -> Arc<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Arc::new(Self {
            options,
            client,
            last_ack: Mutex::new(None),
        })
    }

    /// Where the last good config is kept.
    pub fn state_file(&self) -> &Path {
        &self.options.state_file
    }

    /// The first config to serve: the one saved on disk if it compiles
    /// (so a restart does not wait for the controller), else the first
    /// version from the stream that compiles (invalid ones are NACKed).
    pub async fn first_config(&self, source: &ConfigSource) -> anyhow::Result<(Snapshot, u64)> {
        if let Some((bundle, mut snapshot)) = load_saved(&self.options.state_file) {
            tracing::info!(
                version = bundle.version,
                path = %self.options.state_file.display(),
                "serving the config saved from the controller; following the controller for newer ones"
            );
            source.apply_overrides(&mut snapshot);
            self.set_ack(ConfigAck {
                replica: self.options.replica.clone(),
                version: bundle.version,
                ok: true,
                ..ConfigAck::default()
            });
            return Ok((snapshot, bundle.version));
        }
        tracing::info!(controller = %self.options.url, "waiting for the first config from the controller");
        let mut backoff = BACKOFF_MIN;
        loop {
            let mut found = None;
            let result = self
                .read_stream(|bundle| {
                    let ack = match bundle.compile() {
                        Ok(mut snapshot) => {
                            source.apply_overrides(&mut snapshot);
                            if let Err(error) = save(&self.options.state_file, &bundle) {
                                tracing::warn!(%error, "cannot save the config to disk");
                            }
                            let ack = self.answer(&bundle, None);
                            found = Some((snapshot, bundle.version));
                            ack
                        }
                        Err(errors) => {
                            tracing::error!(
                                version = bundle.version,
                                "config from the controller rejected\n{errors}"
                            );
                            self.answer(&bundle, Some(errors.to_string()))
                        }
                    };
                    (ack, found.is_none())
                })
                .await;
            if let Some(found) = found {
                return Ok(found);
            }
            if let Err(error) = result {
                tracing::warn!(%error, controller = %self.options.url, "no config yet; retrying in {backoff:?}");
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Follows the stream until `shutdown`: each new version is compiled,
    /// swapped in, saved and ACKed (or NACKed, keeping the running one).
    /// Reports every [`REPORT_EVERY`] meanwhile.
    pub async fn follow(
        self: Arc<Self>,
        gateway: Arc<Gateway>,
        source: ConfigSource,
        shutdown: CancellationToken,
    ) {
        let reports = tokio::spawn(self.clone().report(gateway.clone(), shutdown.clone()));
        let mut backoff = BACKOFF_MIN;
        loop {
            let started = tokio::time::Instant::now();
            let stream = self.read_stream(|bundle| (self.apply(&gateway, &source, &bundle), true));
            let result = tokio::select! {
                result = stream => result,
                () = shutdown.cancelled() => break,
            };
            if started.elapsed() > Duration::from_secs(30) {
                backoff = BACKOFF_MIN;
            }
            match result {
                Ok(()) => tracing::info!("the controller closed the config stream; reconnecting"),
                Err(error) => {
                    tracing::warn!(%error, controller = %self.options.url, "config stream lost; still serving version {}; reconnecting in {backoff:?}", gateway.runtime().version)
                }
            }
            tokio::select! {
                () = tokio::time::sleep(jitter(backoff)) => {}
                () = shutdown.cancelled() => break,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        let _ = reports.await;
    }

    /// Compiles, swaps in and saves one version; returns the answer.
    fn apply(&self, gateway: &Gateway, source: &ConfigSource, bundle: &ConfigBundle) -> ConfigAck {
        match bundle.compile() {
            Ok(mut snapshot) => {
                source.apply_overrides(&mut snapshot);
                match swap_in(gateway, snapshot, bundle.version) {
                    Ok(swapped) => {
                        if swapped {
                            if let Err(error) = save(&self.options.state_file, bundle) {
                                tracing::warn!(%error, path = %self.options.state_file.display(), "cannot save the config to disk");
                            }
                        }
                        self.answer(bundle, None)
                    }
                    Err(error) => self.answer(bundle, Some(error)),
                }
            }
            Err(errors) => {
                tracing::error!(
                    version = bundle.version,
                    running = gateway.runtime().version,
                    "config from the controller rejected; still serving the previous one\n{errors}"
                );
                gateway.telemetry.metrics().config_reload(false);
                self.answer(bundle, Some(errors.to_string()))
            }
        }
    }

    fn answer(&self, bundle: &ConfigBundle, error: Option<String>) -> ConfigAck {
        let previous = self.last_ack.lock().ok().and_then(|a| a.clone());
        let running = match &error {
            None => Some(bundle.version),
            // A NACK: this replica still runs what it ran before.
            Some(_) => previous.and_then(|a| a.running.or(a.ok.then_some(a.version))),
        };
        let ack = ConfigAck {
            replica: self.options.replica.clone(),
            version: bundle.version,
            ok: error.is_none(),
            error,
            running,
            budgets: None,
        };
        self.set_ack(ack.clone());
        ack
    }

    fn set_ack(&self, ack: ConfigAck) {
        if let Ok(mut last) = self.last_ack.lock() {
            *last = Some(ack);
        }
    }

    /// Sends the last answer again, with the budget report, every
    /// [`REPORT_EVERY`], so a lost ACK heals and Budget status stays fresh.
    async fn report(self: Arc<Self>, gateway: Arc<Gateway>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(REPORT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let Some(ack) = self.last_ack.lock().ok().and_then(|a| a.clone()) else {
                continue;
            };
            self.send_ack(&gateway, ack).await;
        }
    }

    /// Posts an ACK with this replica's budget report. Failures are logged:
    /// the next report carries the same answer.
    async fn send_ack(&self, gateway: &Gateway, mut ack: ConfigAck) {
        let runtime = gateway.runtime();
        if !runtime.budgets.is_empty() {
            let reports = crate::limits::report::report(&gateway.limiter, &runtime.budgets).await;
            ack.budgets = serde_json::to_value(reports).ok();
        }
        if let Err(error) = self.post_ack(&ack).await {
            tracing::debug!(%error, "cannot send the report");
        }
    }

    /// Posts one ACK.
    async fn post_ack(&self, ack: &ConfigAck) -> Result<(), String> {
        let body = serde_json::to_vec(ack).map_err(|e| e.to_string())?;
        let request = Request::post(format!("{}/v1/config/ack", self.options.url))
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.options.token),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(10), self.client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => Ok(()),
            Ok(Ok(response)) => Err(format!("the controller answered {}", response.status())),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("no answer within 10s".into()),
        }
    }

    /// Opens the stream and hands each version to `on_config`, which
    /// returns the answer to send and whether to keep reading. Returns
    /// when the stream ends, breaks or goes silent.
    async fn read_stream(
        &self,
        mut on_config: impl FnMut(ConfigBundle) -> (ConfigAck, bool),
    ) -> Result<(), StreamError> {
        let url = format!(
            "{}/v1/config/stream?replica={}",
            self.options.url, self.options.replica
        );
        let request = Request::get(&url)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.options.token),
            )
            .header(header::ACCEPT, "text/event-stream")
            .body(Full::new(Bytes::new()))
            .map_err(|e| StreamError::Connect(e.to_string()))?;
        let response = tokio::time::timeout(Duration::from_secs(10), self.client.request(request))
            .await
            .map_err(|_| StreamError::Connect("no answer within 10s".into()))?
            .map_err(|e| StreamError::Connect(format!("cannot connect: {e}")))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = tokio::time::timeout(Duration::from_secs(2), response.into_body().collect())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
                .unwrap_or_default();
            return Err(StreamError::Status(status, body));
        }
        let mut body = response.into_body();
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let frame = tokio::time::timeout(SILENCE, body.frame())
                .await
                .map_err(|_| {
                    StreamError::Broken(format!("nothing from the controller for {SILENCE:?}"))
                })?;
            let Some(frame) = frame else {
                return Ok(());
            };
            let frame = frame.map_err(|e| StreamError::Broken(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buffer.extend_from_slice(&data);
            while let Some(end) = find_event_end(&buffer) {
                let event: Vec<u8> = buffer.drain(..end).collect();
                let Some(data) = event_data(&event) else {
                    continue;
                };
                let bundle: ConfigBundle = match serde_json::from_str(&data) {
                    Ok(bundle) => bundle,
                    Err(error) => {
                        return Err(StreamError::Broken(format!("not a config: {error}")));
                    }
                };
                tracing::info!(
                    version = bundle.version,
                    "config received from the controller"
                );
                let (ack, more) = on_config(bundle);
                if let Err(error) = self.post_ack(&ack).await {
                    tracing::warn!(%error, "cannot send the ACK; it goes again with the next report");
                }
                if !more {
                    return Ok(());
                }
            }
            if buffer.len() > MAX_EVENT {
                return Err(StreamError::Broken("an event larger than 64 MiB".into()));
            }
        }
    }
}

/// The end (past the blank line) of the first complete event in `buffer`.
fn find_event_end(buffer: &[u8]) -> Option<usize> {
    let lf = memchr::memmem::find(buffer, b"\n\n").map(|i| i + 2);
    let crlf = memchr::memmem::find(buffer, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The `data` of a `config` event (lines joined), or `None` for comments
/// and other events.
fn event_data(event: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(event).ok()?;
    let mut name = "message";
    let mut data: Vec<&str> = Vec::new();
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            name = value.trim();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    (name == "config" && !data.is_empty()).then(|| data.join("\n"))
}

/// `base` plus up to a quarter more, so replicas do not reconnect in step.
fn jitter(base: Duration) -> Duration {
    base + base.mul_f64(fastrand::f64() / 4.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn parses_config_events_and_skips_comments() {
        let stream = b": keepalive\n\nevent: config\nid: 3\ndata: {\"version\":3}\n\nevent: con";
        let end = find_event_end(stream).unwrap();
        assert_eq!(event_data(&stream[..end]), None);
        let rest = &stream[end..];
        let end = find_event_end(rest).unwrap();
        assert_eq!(event_data(&rest[..end]).as_deref(), Some("{\"version\":3}"));
        assert_eq!(find_event_end(&rest[end..]), None);
    }

    #[test]
    fn saves_privately_and_loads_only_what_compiles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join(STATE_FILE);
        assert!(load_saved(&path).is_none());
        let bundle = ConfigBundle {
            version: 4,
            documents: vec![
                serde_json::json!({"kind": "Backend", "metadata": {"name": "demo"}, "spec": {"provider": "Demo"}}),
            ],
            secrets: Default::default(),
        };
        save(&path, &bundle).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (loaded, _) = load_saved(&path).unwrap();
        assert_eq!(loaded.version, 4);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(load_saved(&path).is_none());
    }
}
