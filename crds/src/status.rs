//! The `status` of the four kinds, as the controller writes it and
//! `kubectl get` shows it. Only the controller writes these; users never do.
//! The CRD's status schema is generated from these types, so a field the
//! controller writes must be added here first (the API server prunes
//! anything the schema does not list).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A condition, in the shape of Kubernetes' `metav1.Condition`. Sluice uses
/// the types `Accepted` (the object compiled), `ResolvedRefs` (the Backends
/// and Secrets it names exist) and `Programmed` (the proxies run it).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// The condition's type in CamelCase, e.g. `Accepted`, `ResolvedRefs`,
    /// `Programmed`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    #[schemars(pattern(
        r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
    ))]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    /// Why the condition has this status, in CamelCase (e.g. `Invalid`,
    /// `BackendNotFound`, `Programmed`).
    #[schemars(length(min = 1, max = 1024))]
    #[schemars(pattern(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"))]
    pub reason: String,
    /// What a human should know or do, e.g. every config error with its
    /// field.
    #[schemars(length(max = 32768))]
    pub message: String,
    /// When the status last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
    /// The `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

/// The status of an `AIGateway`, a `Backend` or an `MCPRoute`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectStatus {
    /// `Accepted`, `ResolvedRefs` and `Programmed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::crd::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

/// Amounts per metric, in the current window of the budget's first limit
/// of that metric.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetAmounts {
    /// USD, as a decimal string (e.g. `"12.340000"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
    /// Tokens (input and output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub tokens: Option<i64>,
    /// Input tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub input_tokens: Option<i64>,
    /// Output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub output_tokens: Option<i64>,
    /// Requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub requests: Option<i64>,
}

/// One limit of a Budget in its current window, as `GET /budgets` and
/// `sluice budgets` show it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitStatus {
    /// The limit's name (e.g. `cost-monthly`).
    pub name: String,
    /// `cost`, `tokens`, `input-tokens`, `output-tokens` or `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The limit's amount (USD as a decimal string for cost limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::int_or_string")]
    pub limit: Option<serde_json::Value>,
    /// Spent in the current window, same unit as `limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::int_or_string")]
    pub spent: Option<serde_json::Value>,
    /// Left in the current window, same unit as `limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::crd::int_or_string")]
    pub remaining: Option<serde_json::Value>,
    /// `spent` as a percentage of `limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub percent: Option<i64>,
    /// The window, e.g. `Monthly (Europe/Paris)`, `24h` or `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// When the current window ends (RFC 3339; empty when unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<String>,
}

/// The status of a `Budget`: spend read from the counter store.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetStatus {
    /// `Accepted` (the budget compiled) and `Programmed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::crd::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// Spent in the current window, per metric (the first limit of each
    /// metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent: Option<BudgetAmounts>,
    /// Left in the current window, per metric (the first limit of each
    /// metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<BudgetAmounts>,
    /// When the first limit's window ends (RFC 3339; empty when unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resets_at: Option<String>,
    /// Every limit in its current window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<LimitStatus>,
    /// How many proxy replicas reported these figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub reported_by: Option<i64>,
}
