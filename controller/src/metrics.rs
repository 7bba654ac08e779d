//! The controller's Prometheus metrics (`GET /metrics` on `--admin`).
//! Knows nothing of what is measured beyond the names.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    /// 1 while this controller is the leader.
    pub leader: Gauge,
    /// The version of the published config.
    pub config_version: Gauge,
    /// Proxy replicas with an open config stream.
    pub replicas_connected: Gauge,
    /// Connected replicas that run the current version.
    pub replicas_current: Gauge,
    /// Renders of the namespace, by outcome (`published`, `invalid`).
    pub renders: Family<Vec<(String, String)>, Counter>,
    /// NACKs received from replicas.
    pub nacks: Counter,
    /// Status writes, by outcome (`ok`, `error`).
    pub status_writes: Family<Vec<(String, String)>, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers the metrics under `sluice_controller_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sluice_controller");
        let metrics = Self {
            leader: Gauge::default(),
            config_version: Gauge::default(),
            replicas_connected: Gauge::default(),
            replicas_current: Gauge::default(),
            renders: Family::default(),
            nacks: Counter::default(),
            status_writes: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "leader",
            "1 while this controller holds the leader Lease",
            metrics.leader.clone(),
        );
        registry.register(
            "config_version",
            "Version of the published proxy config",
            metrics.config_version.clone(),
        );
        registry.register(
            "replicas_connected",
            "Proxy replicas with an open config stream",
            metrics.replicas_connected.clone(),
        );
        registry.register(
            "replicas_current",
            "Connected proxy replicas that run the current config version",
            metrics.replicas_current.clone(),
        );
        registry.register(
            "renders",
            "Renders of the namespace's objects, by outcome",
            metrics.renders.clone(),
        );
        registry.register(
            "nacks",
            "Config versions rejected by a proxy replica",
            metrics.nacks.clone(),
        );
        registry.register(
            "status_writes",
            "Status writes to the API server, by outcome",
            metrics.status_writes.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Counts a render.
    pub fn render(&self, outcome: &str) {
        self.renders
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
    }

    /// Counts a status write.
    pub fn status_write(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.status_writes
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
