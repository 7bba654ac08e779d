//! Prometheus metrics, with OpenTelemetry GenAI names where one exists
//! (`gen_ai_client_token_usage`, `gen_ai_server_request_duration`,
//! `gen_ai_server_time_to_first_token`, `gen_ai_server_time_per_output_token`)
//! and `sluice_*` gateway counters. Updated only from the telemetry thread,
//! read by the admin `/metrics` endpoint.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::AccessRecord;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    path: String,
    status: u16,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    backend: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    gen_ai_token_type: &'static str,
    gen_ai_request_model: String,
    gen_ai_provider_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    gen_ai_request_model: String,
    gen_ai_provider_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct McpLabels {
    mcp_method: String,
    backend: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    backend: String,
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    budget: String,
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    budget: String,
    limit: String,
    threshold: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

// Bucket boundaries advised by the OpenTelemetry GenAI semantic conventions.
fn token_buckets() -> Histogram {
    Histogram::new([
        1.,
        4.,
        16.,
        64.,
        256.,
        1024.,
        4096.,
        16384.,
        65536.,
        262_144.,
        1_048_576.,
        4_194_304.,
        16_777_216.,
        67_108_864.,
    ])
}
fn duration_buckets() -> Histogram {
    Histogram::new([
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    ])
}
fn ttft_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    ])
}
fn tpot_buckets() -> Histogram {
    Histogram::new([
        0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
    ])
}

fn mcp_buckets() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// Registers `metric` and hands back the handle the gateway updates.
fn register<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    fallbacks: Family<BackendLabels, Counter>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    token_usage: HistogramFamily<TokenLabels>,
    request_duration: HistogramFamily<ModelLabels>,
    time_to_first_token: HistogramFamily<ModelLabels>,
    time_per_output_token: HistogramFamily<ModelLabels>,
    /// Access-log records dropped because the writer fell behind.
    pub access_log_dropped: Counter,
    config_reloads: Family<ResultLabels, Counter>,
    mcp_request_duration: HistogramFamily<McpLabels>,
    mcp_tool_calls: Family<ToolLabels, Counter>,
    ratelimit_rejections: Family<LimitLabels, Counter>,
    budget_spent: Family<LimitLabels, Gauge<f64, AtomicU64>>,
    budget_remaining: Family<LimitLabels, Gauge<f64, AtomicU64>>,
    budget_alerts: Family<AlertLabels, Counter>,
    cost: Family<ModelLabels, Counter<f64, AtomicU64>>,
    raft: RaftGauges,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: u64,
}

/// The Raft counter store, as this replica sees it.
#[derive(Default)]
struct RaftGauges {
    term: Gauge,
    leader: Gauge,
    is_leader: Gauge,
    commit_index: Gauge,
    voters: Gauge,
    peer_lag: Family<PeerLabels, Gauge>,
    leases: Gauge,
    leased: Gauge,
}

impl RaftGauges {
    fn register(registry: &mut Registry) -> Self {
        let gauges = Self::default();
        for (name, help, gauge) in [
            ("sluice_raft_term", "Current Raft term", &gauges.term),
            (
                "sluice_raft_leader",
                "Id of the Raft leader this replica knows (0: none)",
                &gauges.leader,
            ),
            (
                "sluice_raft_is_leader",
                "1 when this replica leads the Raft group",
                &gauges.is_leader,
            ),
            (
                "sluice_raft_commit_index",
                "Highest Raft log index applied here",
                &gauges.commit_index,
            ),
            (
                "sluice_raft_voters",
                "Voting members of the Raft group",
                &gauges.voters,
            ),
            (
                "sluice_raft_leases",
                "Counter leases outstanding in the Raft ledger",
                &gauges.leases,
            ),
            (
                "sluice_raft_leased",
                "Allowance held in outstanding leases (counter units)",
                &gauges.leased,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        registry.register(
            "sluice_raft_peer_lag",
            "Log entries a member is behind the leader (reported by the leader)",
            gauges.peer_lag.clone(),
        );
        gauges
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = register(
            &mut registry,
            "sluice_requests",
            "Requests served, by path, status and backend",
            Family::<RequestLabels, Counter>::default(),
        );
        let fallbacks = register(&mut registry, "sluice_fallbacks", "Requests answered after at least one failed upstream attempt, by the backend that answered", Family::<BackendLabels, Counter>::default());
        let upstream_errors = register(&mut registry, "sluice_upstream_errors", "Failed upstream attempts, by backend and kind (connect, timeout, status_429, status_5xx, stream)", Family::<UpstreamErrorLabels, Counter>::default());
        let token_usage: HistogramFamily<TokenLabels> = register(
            &mut registry,
            "gen_ai_client_token_usage",
            "Tokens used per request, by token type (input, output)",
            Family::new_with_constructor(token_buckets),
        );
        let request_duration: HistogramFamily<ModelLabels> = register(
            &mut registry,
            "gen_ai_server_request_duration",
            "Seconds from request to the last response byte",
            Family::new_with_constructor(duration_buckets),
        );
        let time_to_first_token: HistogramFamily<ModelLabels> = register(
            &mut registry,
            "gen_ai_server_time_to_first_token",
            "Seconds from request to the first response byte of a streamed response",
            Family::new_with_constructor(ttft_buckets),
        );
        let time_per_output_token: HistogramFamily<ModelLabels> = register(
            &mut registry,
            "gen_ai_server_time_per_output_token",
            "Seconds per output token after the first, of streamed responses",
            Family::new_with_constructor(tpot_buckets),
        );
        let access_log_dropped = register(
            &mut registry,
            "sluice_access_log_dropped",
            "Access-log records dropped because the writer fell behind",
            Counter::default(),
        );
        let config_reloads = register(
            &mut registry,
            "sluice_config_reloads",
            "Config reloads, by result",
            Family::<ResultLabels, Counter>::default(),
        );
        let mcp_request_duration: HistogramFamily<McpLabels> = register(
            &mut registry,
            "mcp_request_duration",
            "Seconds per MCP request, by JSON-RPC method, backend and HTTP status",
            Family::new_with_constructor(mcp_buckets),
        );
        let mcp_tool_calls = register(
            &mut registry,
            "sluice_mcp_tool_calls",
            "MCP tools/call requests, by backend and upstream tool",
            Family::<ToolLabels, Counter>::default(),
        );
        let ratelimit_rejections = register(
            &mut registry,
            "sluice_ratelimit_rejections",
            "Requests refused by a budget or rate limit (429, or 503 when its store is away), by budget and limit",
            Family::<LimitLabels, Counter>::default(),
        );
        let budget_spent = register(
            &mut registry,
            "sluice_budget_spent",
            "Spent in the current window of each limit (USD for cost limits, else tokens or requests)",
            Family::<LimitLabels, Gauge<f64, AtomicU64>>::default(),
        );
        let budget_remaining = register(
            &mut registry,
            "sluice_budget_remaining",
            "Left in the current window of each limit (USD for cost limits, else tokens or requests)",
            Family::<LimitLabels, Gauge<f64, AtomicU64>>::default(),
        );
        let budget_alerts = register(
            &mut registry,
            "sluice_budget_alerts",
            "alertsAt thresholds crossed, by budget, limit and threshold (percent)",
            Family::<AlertLabels, Counter>::default(),
        );
        let cost = register(
            &mut registry,
            "gen_ai_client_cost",
            "USD spent, by model and provider, at the backends' prices (requests with a known price)",
            Family::<ModelLabels, Counter<f64, AtomicU64>>::default(),
        );
        let raft = RaftGauges::register(&mut registry);
        Self {
            registry,
            raft,
            cost,
            ratelimit_rejections,
            budget_spent,
            budget_remaining,
            budget_alerts,
            mcp_request_duration,
            mcp_tool_calls,
            requests,
            fallbacks,
            upstream_errors,
            token_usage,
            request_duration,
            time_to_first_token,
            time_per_output_token,
            access_log_dropped,
            config_reloads,
        }
    }

    /// Counts a config reload.
    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Sets a limit's spent and remaining gauges.
    pub fn budget(&self, budget: &str, limit: &str, spent: f64, remaining: f64) {
        let labels = LimitLabels {
            budget: budget.to_owned(),
            limit: limit.to_owned(),
        };
        self.budget_spent.get_or_create(&labels).set(spent);
        self.budget_remaining.get_or_create(&labels).set(remaining);
    }

    /// Sets the Raft gauges from the store's `/cluster` report (nothing for
    /// other stores).
    pub fn cluster(&self, report: &serde_json::Value) {
        if report["state"] != "raft" {
            return;
        }
        let number = |v: &serde_json::Value| v.as_i64().unwrap_or(0);
        let raft = &self.raft;
        raft.term.set(number(&report["term"]));
        raft.leader.set(number(&report["leader"]));
        raft.is_leader.set(i64::from(
            report["leader"] == report["id"] && !report["leader"].is_null(),
        ));
        raft.commit_index.set(number(&report["commitIndex"]));
        raft.leases.set(number(&report["leases"]["count"]));
        raft.leased.set(number(&report["leases"]["amount"]));
        let members = report["members"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        raft.voters
            .set(members.iter().filter(|m| m["voter"] == true).count() as i64);
        for member in members {
            if let (Some(peer), Some(lag)) = (member["id"].as_u64(), member["lag"].as_i64()) {
                raft.peer_lag.get_or_create(&PeerLabels { peer }).set(lag);
            }
        }
    }

    /// Counts an alert threshold crossed.
    pub fn budget_alert(&self, budget: &str, limit: &str, threshold: u32) {
        self.budget_alerts
            .get_or_create(&AlertLabels {
                budget: budget.to_owned(),
                limit: limit.to_owned(),
                threshold,
            })
            .inc();
    }

    /// Updates the metrics from a finished request.
    pub fn observe(&self, record: &AccessRecord) {
        if let Some((budget, limit)) = record.limit.as_deref().and_then(|l| l.split_once('/')) {
            self.ratelimit_rejections
                .get_or_create(&LimitLabels {
                    budget: budget.to_owned(),
                    limit: limit.to_owned(),
                })
                .inc();
        }
        if let Some(method) = record.mcp_method.as_deref() {
            // Clients choose the method string: keep the label set bounded.
            let method = match method {
                "initialize"
                | "ping"
                | "tools/list"
                | "tools/call"
                | "prompts/list"
                | "prompts/get"
                | "resources/list"
                | "resources/templates/list"
                | "resources/read"
                | "notifications/initialized"
                | "notifications/cancelled"
                | "logging/setLevel"
                | "completion/complete"
                | "server/discover"
                | "subscriptions/listen" => method,
                _ => "other",
            };
            let backend = record.upstream.as_deref().unwrap_or("").to_owned();
            if let Some(tool) = &record.tool {
                self.mcp_tool_calls
                    .get_or_create(&ToolLabels {
                        backend: backend.clone(),
                        tool: tool.clone(),
                    })
                    .inc();
            }
            self.mcp_request_duration
                .get_or_create(&McpLabels {
                    mcp_method: method.to_owned(),
                    backend,
                    status: record.status,
                })
                .observe(record.latency.as_secs_f64());
        }
        let backend = record.upstream.as_deref().unwrap_or("");
        self.requests
            .get_or_create(&RequestLabels {
                path: record.path.to_string(),
                status: record.status,
                backend: backend.to_owned(),
            })
            .inc();
        for (failed, kind) in &record.failed_attempts {
            self.upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    backend: failed.to_string(),
                    kind: (*kind).to_owned(),
                })
                .inc();
        }
        if record.error.as_deref() == Some("upstream_stream_error") {
            self.upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    backend: backend.to_owned(),
                    kind: "stream".into(),
                })
                .inc();
        }
        if !record.failed_attempts.is_empty() && record.upstream.is_some() && record.status < 400 {
            self.fallbacks
                .get_or_create(&BackendLabels {
                    backend: backend.to_owned(),
                })
                .inc();
        }
        let (Some(model), Some(_)) = (&record.model, &record.upstream) else {
            return;
        };
        let labels = ModelLabels {
            gen_ai_request_model: model.clone(),
            gen_ai_provider_name: record.provider.to_owned(),
        };
        self.request_duration
            .get_or_create(&labels)
            .observe(record.latency.as_secs_f64());
        if let Some(micro) = record.cost_micro_usd.filter(|c| *c > 0) {
            self.cost
                .get_or_create(&labels)
                .inc_by(micro as f64 / 1_000_000.0);
        }
        if let Some(usage) = record.usage {
            for (token_type, count) in [("input", usage.input), ("output", usage.output)] {
                self.token_usage
                    .get_or_create(&TokenLabels {
                        gen_ai_token_type: token_type,
                        gen_ai_request_model: model.clone(),
                        gen_ai_provider_name: record.provider.to_owned(),
                    })
                    .observe(count as f64);
            }
            if record.stream {
                if let Some(ttft) = record.ttft {
                    self.time_to_first_token
                        .get_or_create(&labels)
                        .observe(ttft.as_secs_f64());
                    if usage.output > 1 {
                        let per_token = record.latency.saturating_sub(ttft).as_secs_f64()
                            / (usage.output - 1) as f64;
                        self.time_per_output_token
                            .get_or_create(&labels)
                            .observe(per_token);
                    }
                }
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
