//! Budgets on the LLM endpoints: what a request may cost before it is
//! forwarded (prompt tokens estimated, `max_tokens` or a default for the
//! output, at the dearest price of the route's backends), admission against
//! the budgets that cover it, and settlement of what it really used when
//! its exchange finishes. Knows nothing of how counters are kept.

use std::sync::{Arc, Mutex};

use sluice_crds::snapshot::{Price, Route};

use super::request::RequestFields;
use super::Endpoint;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::limits::{Admission, Amounts, Headroom, Refusal, StreamGuard};
use crate::runtime::Runtime;
use crate::telemetry::{AccessRecord, Exchange};

/// Output tokens reserved when a request names no `max_tokens`.
pub const DEFAULT_OUTPUT_RESERVATION: u64 = 1024;

/// What admission gave a limited request.
#[derive(Default)]
pub(super) struct Admitted {
    /// Rows for the response's `x-ratelimit-*` headers.
    pub headroom: Vec<Headroom>,
    /// For a streamed answer: draws more as output grows.
    pub guard: Option<StreamGuard>,
}

/// Admits the request against the budgets covering it; on success its
/// settlement is hooked to the exchange (nothing when no budget applies).
#[allow(clippy::too_many_arguments)]
pub(super) async fn admit(
    gateway: &Gateway,
    runtime: &Arc<Runtime>,
    tenant: &str,
    key: Option<&str>,
    route: &Route,
    endpoint: Endpoint,
    body: &[u8],
    fields: &RequestFields,
    exchange: &mut Exchange,
) -> Result<Admitted, GatewayError> {
    let model = exchange.record.model.as_deref();
    let budgets = runtime.budgets_for(tenant, key, model);
    if budgets.is_empty() {
        return Ok(Admitted::default());
    }
    let input = crate::llm::demo::approx_tokens_len(body.len());
    let output = match endpoint {
        Endpoint::Embeddings => 0,
        _ => fields.max_tokens.unwrap_or(DEFAULT_OUTPUT_RESERVATION),
    };
    let prices: Vec<Price> = route
        .backends
        .iter()
        .filter_map(|b| price(runtime, b.backend, b.model.as_deref().or(model)))
        .collect();
    let cost = prices
        .iter()
        .map(|p| cost_micro_usd(p, input, output))
        .max()
        .unwrap_or(0);
    let output_price = prices.iter().map(|p| p.output.0).max().unwrap_or(0);
    let need = Amounts {
        input,
        output,
        cost,
        requests: 1,
    };
    let admission = match gateway.limiter.admit(&budgets, need).await {
        Ok(admission) => admission,
        Err(refusal) => {
            let error = match refusal {
                Refusal::Reached(reached) => GatewayError::LimitReached(Box::new(reached)),
                Refusal::Unavailable { limit, detail } => {
                    GatewayError::LimitsUnavailable { limit, detail }
                }
            };
            exchange.record.limit = error.limit();
            return Err(error);
        }
    };
    let headroom = admission.headroom();
    let admission = Arc::new(Mutex::new(admission));
    let guard = fields
        .stream
        .then(|| StreamGuard::new(admission.clone(), output, output_price));
    let runtime = runtime.clone();
    let route_backends: Vec<(usize, Option<Arc<str>>)> = route
        .backends
        .iter()
        .map(|b| (b.backend, b.model.clone()))
        .collect();
    exchange.on_finish(Box::new(move |record: &mut AccessRecord| {
        let used = used(&runtime, &route_backends, record);
        Admission::settle_shared(&admission, used);
    }));
    Ok(Admitted { headroom, guard })
}

/// What the request used, from its finished record; fills in its cost.
fn used(
    runtime: &Runtime,
    route_backends: &[(usize, Option<Arc<str>>)],
    record: &mut AccessRecord,
) -> Amounts {
    let usage = record.usage.unwrap_or_default();
    let served = record.upstream.as_deref().and_then(|name| {
        route_backends
            .iter()
            .find(|(index, _)| *runtime.backends[*index].name == *name)
    });
    let cost = served
        .and_then(|(index, model)| {
            price(
                runtime,
                *index,
                model.as_deref().or(record.model.as_deref()),
            )
        })
        .map(|p| cost_micro_usd(&p, usage.input, usage.output));
    if record.usage.is_some() {
        record.cost_micro_usd = cost.or(Some(0));
    }
    Amounts {
        input: usage.input,
        output: usage.output,
        cost: cost.unwrap_or(0),
        // A request counts once it reached a backend.
        requests: u64::from(record.upstream.is_some()),
    }
}

/// The price of `model` at a backend: its `pricing`, exact name.
fn price(runtime: &Runtime, backend: usize, model: Option<&str>) -> Option<Price> {
    let pricing = &runtime.snapshot.backends.get(backend)?.pricing;
    pricing.get(model?).copied()
}

/// Micro-USD for a usage at a price per million tokens, rounded up.
fn cost_micro_usd(price: &Price, input: u64, output: u64) -> u64 {
    let total = u128::from(input) * u128::from(price.input.0)
        + u128::from(output) * u128::from(price.output.0);
    u64::try_from(total.div_ceil(1_000_000)).unwrap_or(u64::MAX)
}
