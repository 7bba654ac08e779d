//! What one request leaves behind: the [`Exchange`] that travels with it and
//! the [`AccessRecord`] it becomes when the response is done (or dropped).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::TelemetrySink;

/// Token usage of one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input (prompt) tokens.
    pub input: u64,
    /// Output (completion) tokens.
    pub output: u64,
    /// Of the input tokens, those read from the provider's prompt cache
    /// (`prompt_tokens_details.cached_tokens`, Responses'
    /// `input_tokens_details.cached_tokens`): charged at the cached price.
    pub cached_input: u64,
}

/// The finished record of one request.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// When the request arrived.
    pub ts: SystemTime,
    /// The agent's session id, from the configured headers.
    pub session_id: Option<String>,
    /// The request id (ours or the client's `x-request-id`).
    pub request_id: Box<str>,
    /// The tenant, once authenticated.
    pub tenant: Option<Arc<str>>,
    /// HTTP method.
    pub method: &'static str,
    /// Request path.
    pub path: Cow<'static, str>,
    /// Status sent to the client.
    pub status: u16,
    /// The backend that served it.
    pub upstream: Option<Arc<str>>,
    /// Its provider, for metrics.
    pub provider: &'static str,
    /// The model the client asked for.
    pub model: Option<String>,
    /// Token usage (from the provider, or estimated when it never came).
    pub usage: Option<Usage>,
    /// Whether `usage` is an estimate.
    pub usage_estimated: bool,
    /// Whole request, until the last body byte.
    pub latency: Duration,
    /// Until the first response body byte.
    pub ttft: Option<Duration>,
    /// Low-cardinality error label, when it failed.
    pub error: Option<Cow<'static, str>>,
    /// Backends that failed before the one that answered, with why.
    pub failed_attempts: Vec<(Arc<str>, &'static str)>,
    /// Whether a streamed response was asked for.
    pub stream: bool,
    /// The JSON-RPC method of an MCP request.
    pub mcp_method: Option<String>,
    /// The upstream tool of an MCP `tools/call`.
    pub tool: Option<String>,
    /// The price of the model at the backend that answered, if known.
    pub price: Option<sluice_crds::snapshot::Price>,
    /// What the request cost, in micro-USD, when a price is known.
    pub cost_micro_usd: Option<u64>,
    /// `budget/limit` that refused the request.
    pub limit: Option<String>,
}

impl Default for AccessRecord {
    fn default() -> Self {
        Self {
            ts: SystemTime::UNIX_EPOCH,
            session_id: None,
            request_id: Box::default(),
            tenant: None,
            method: "",
            path: Cow::Borrowed(""),
            status: 0,
            upstream: None,
            provider: "",
            model: None,
            usage: None,
            usage_estimated: false,
            latency: Duration::ZERO,
            ttft: None,
            error: None,
            failed_attempts: Vec::new(),
            stream: false,
            mcp_method: None,
            tool: None,
            price: None,
            cost_micro_usd: None,
            limit: None,
        }
    }
}

/// The telemetry context of a request in flight. Finishing it (explicitly, or
/// by dropping the response body that holds it) sends the record.
pub struct Exchange {
    sink: TelemetrySink,
    started: Instant,
    /// The record being filled in.
    pub record: AccessRecord,
    sent: bool,
    /// Runs on the finished record just before it is sent (settles a
    /// budget reservation and fills in the cost).
    on_finish: Option<FinishHook>,
}

/// See [`Exchange::on_finish`].
pub type FinishHook = Box<dyn FnOnce(&mut AccessRecord) + Send>;

impl Exchange {
    /// Starts the record of a request.
    pub fn new(
        sink: TelemetrySink,
        method: &'static str,
        path: Cow<'static, str>,
        request_id: Box<str>,
    ) -> Self {
        Self {
            sink,
            started: Instant::now(),
            record: AccessRecord {
                ts: SystemTime::now(),
                request_id,
                method,
                path,
                ..AccessRecord::default()
            },
            sent: false,
            on_finish: None,
        }
    }

    /// When the request arrived.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Marks the first body byte.
    pub fn first_byte(&mut self) {
        if self.record.ttft.is_none() {
            self.record.ttft = Some(self.started.elapsed());
        }
    }

    /// Moves the record into a new exchange (which will send it) and
    /// silences this one: for handing the record to a response body.
    pub fn hand_off(&mut self) -> Exchange {
        self.sent = true;
        Exchange {
            sink: self.sink.clone(),
            started: self.started,
            record: std::mem::take(&mut self.record),
            sent: false,
            on_finish: self.on_finish.take(),
        }
    }

    /// Runs `hook` on the record when the request is done, whatever the
    /// outcome (an earlier hook runs first).
    pub fn on_finish(&mut self, hook: FinishHook) {
        self.on_finish = Some(match self.on_finish.take() {
            None => hook,
            Some(first) => Box::new(move |record: &mut AccessRecord| {
                first(record);
                hook(record);
            }),
        });
    }

    /// Sends the record (once).
    pub fn finish(mut self) {
        self.send();
    }

    fn send(&mut self) {
        if self.sent {
            return;
        }
        self.sent = true;
        self.record.latency = self.started.elapsed();
        if let (None, Some(price), Some(usage)) = (
            self.record.cost_micro_usd,
            self.record.price,
            self.record.usage,
        ) {
            self.record.cost_micro_usd = Some(crate::limits::pricing::cost_micro_usd(
                &price,
                usage.input,
                usage.output,
                usage.cached_input,
            ));
        }
        if let Some(hook) = self.on_finish.take() {
            hook(&mut self.record);
        }
        self.sink.send(std::mem::take(&mut self.record));
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.send();
    }
}
