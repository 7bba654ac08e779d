//! MCP tool calls count as requests against the request limits of the
//! tenant's budgets that name no models (a budget scoped to models covers
//! LLM traffic only). Admitted before the call goes upstream; settled when
//! its exchange finishes. Knows nothing of how counters are kept.

use http::StatusCode;

use super::McpError;
use crate::gateway::Gateway;
use crate::limits::{Amounts, Refusal};
use crate::runtime::Runtime;
use crate::telemetry::{AccessRecord, Exchange};

/// Admits one `tools/call`; a refusal is a JSON-RPC error with HTTP 429
/// (or 503 when the counter store is away and the budget fails closed).
pub(super) async fn admit_tool_call(
    gateway: &Gateway,
    runtime: &Runtime,
    tenant: &str,
    key: Option<&str>,
    exchange: &mut Exchange,
) -> Result<(), McpError> {
    let budgets = runtime.budgets_for(tenant, key, None);
    if budgets.is_empty() {
        return Ok(());
    }
    let need = Amounts {
        requests: 1,
        ..Amounts::default()
    };
    match gateway.limiter.admit(&budgets, need).await {
        Ok(admission) => {
            exchange.on_finish(Box::new(move |_: &mut AccessRecord| admission.settle(need)));
            Ok(())
        }
        Err(refusal) => {
            let error = match refusal {
                Refusal::Reached(reached) => {
                    crate::error::GatewayError::LimitReached(Box::new(reached))
                }
                Refusal::Unavailable { limit, detail } => {
                    crate::error::GatewayError::LimitsUnavailable { limit, detail }
                }
            };
            exchange.record.limit = error.limit();
            let status = error.status();
            let code = if status == StatusCode::TOO_MANY_REQUESTS {
                -32000
            } else {
                -32603
            };
            Err(McpError::new(status, code, error.code(), error.to_string()))
        }
    }
}
