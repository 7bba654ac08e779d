//! Budgets on the LLM endpoints: what a request may cost before it is
//! forwarded (prompt tokens estimated, `max_tokens` or a default for the
//! output, at the dearest price of the route's backends), admission against
//! the budgets that cover it, and settlement of what it really used when
//! its exchange finishes. Knows nothing of how counters are kept.

use std::sync::{Arc, Mutex};

use sluice_crds::snapshot::{Price, Route};

use crate::limits::estimate;
use crate::limits::pricing::cost_micro_usd;

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
    let client_model = model.unwrap_or_default();
    let input = match endpoint {
        // A rerank body's text is in `query` and `documents`.
        Endpoint::Rerank => crate::llm::translate::rerank::estimate(body),
        _ => estimate::prompt_tokens(client_model, body),
    };
    let output = match endpoint {
        Endpoint::Embeddings | Endpoint::Rerank => 0,
        _ => estimate::output_reservation(body)
            .or(fields.max_tokens)
            .unwrap_or(DEFAULT_OUTPUT_RESERVATION),
    };
    let prices: Vec<Price> = route
        .backends
        .iter()
        .filter_map(|b| runtime.price_at(route, b.backend, client_model))
        .collect();
    let cost = prices
        .iter()
        .map(|p| cost_micro_usd(p, input, output, 0))
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
    exchange.on_finish(Box::new(move |record: &mut AccessRecord| {
        Admission::settle_shared(&admission, used(record));
    }));
    Ok(Admitted { headroom, guard })
}

/// What the request used, from its finished record (its cost was worked
/// out from the answering backend's price when the record was sent).
fn used(record: &AccessRecord) -> Amounts {
    let usage = record.usage.unwrap_or_default();
    Amounts {
        input: usage.input,
        output: usage.output,
        cost: record.cost_micro_usd.unwrap_or(0),
        // A request counts once it reached a backend.
        requests: u64::from(record.upstream.is_some()),
    }
}
