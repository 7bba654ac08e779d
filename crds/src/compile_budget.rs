//! Budgets: `Budget` documents compiled into [`Budget`]s, every limit
//! checked (one metric, a window that fits it, an amount, a real time zone)
//! and named. Knows nothing of counting.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ConfigError;
use crate::pattern::ModelPattern;
use crate::resources::{BudgetSpec, LimitSpec};
use crate::snapshot::{Budget, Enforcement, FailureMode, Limit, Metric, Period, TokenKind, Window};
use crate::values::{parse_duration, MicroUsd};

/// Compiles one Budget; errors are pushed under `id`.
pub(crate) fn compile_budget(
    id: &str,
    name: &str,
    spec: &BudgetSpec,
    api_key_names: &[&str],
    errors: &mut Vec<ConfigError>,
) -> Option<Budget> {
    let before = errors.len();
    if spec.tenant.trim().is_empty() {
        push(
            errors,
            id,
            "spec.tenant",
            "required: the tenant the budget applies to",
        );
    }
    let mut models = Vec::new();
    for (i, glob) in spec.models.iter().flatten().enumerate() {
        match ModelPattern::parse(glob) {
            Ok(pattern) => models.push(pattern),
            Err(e) => push(errors, id, format!("spec.models[{i}]"), e),
        }
    }
    if let Some(key) = &spec.api_key {
        if !api_key_names.contains(&key.as_str()) {
            push(
                errors,
                id,
                "spec.apiKey",
                format!("no API key named `{key}` in the AIGateway's spec.auth.apiKeys"),
            );
        }
    }
    if spec.limits.is_empty() {
        push(errors, id, "spec.limits", "list at least one limit");
    }
    let mut limits: Vec<Limit> = Vec::new();
    for (i, limit) in spec.limits.iter().enumerate() {
        let path = format!("spec.limits[{i}]");
        if let Some(limit) = compile_limit(id, &path, limit, errors) {
            if limits.iter().any(|l| l.name == limit.name) {
                push(
                    errors,
                    id,
                    format!("{path}.name"),
                    format!("two limits are named `{}`; give one a `name`", limit.name),
                );
            }
            limits.push(limit);
        }
    }
    let enforcement = match spec.enforcement.as_deref() {
        None | Some("Strict") => Enforcement::Strict,
        Some("Lenient") => Enforcement::Lenient,
        Some(other) => {
            push(
                errors,
                id,
                "spec.enforcement",
                format!("`{other}` is not one of Strict, Lenient"),
            );
            Enforcement::Strict
        }
    };
    let failure_mode = match spec.failure_mode.as_deref() {
        None | Some("FailClosed") => FailureMode::FailClosed,
        Some("FailOpen") => FailureMode::FailOpen,
        Some(other) => {
            push(
                errors,
                id,
                "spec.failureMode",
                format!("`{other}` is not one of FailClosed, FailOpen"),
            );
            FailureMode::FailClosed
        }
    };
    let mut alerts_at = spec.alerts_at.clone().unwrap_or_default();
    for (i, percent) in alerts_at.iter().enumerate() {
        if *percent == 0 || *percent > 1000 {
            push(
                errors,
                id,
                format!("spec.alertsAt[{i}]"),
                format!("{percent} is not a percentage between 1 and 1000"),
            );
        }
    }
    alerts_at.sort_unstable();
    alerts_at.dedup();
    (errors.len() == before).then(|| Budget {
        name: Arc::from(name),
        tenant: Arc::from(spec.tenant.trim()),
        models,
        api_key: spec.api_key.clone(),
        limits,
        enforcement,
        failure_mode,
        alerts_at,
    })
}

fn compile_limit(
    id: &str,
    path: &str,
    spec: &LimitSpec,
    errors: &mut Vec<ConfigError>,
) -> Option<Limit> {
    let before = errors.len();
    let set: Vec<&str> = [
        ("cost", spec.cost.is_some()),
        ("tokens", spec.tokens.is_some()),
        ("requests", spec.requests.is_some()),
        ("tokensPerMinute", spec.tokens_per_minute.is_some()),
        ("requestsPerMinute", spec.requests_per_minute.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    let Some(&field) = set.first() else {
        push(
            errors,
            id,
            path,
            "give one of cost, tokens, requests, tokensPerMinute, requestsPerMinute",
        );
        return None;
    };
    if set.len() > 1 {
        push(
            errors,
            id,
            path,
            format!(
                "one metric per limit, not {}; write one limit for each",
                set.join(" and ")
            ),
        );
        return None;
    }
    let token_kind = match spec.token_type.as_deref() {
        None | Some("total") => TokenKind::Total,
        Some("input") => TokenKind::Input,
        Some("output") => TokenKind::Output,
        Some(other) => {
            push(
                errors,
                id,
                format!("{path}.tokenType"),
                format!("`{other}` is not one of total, input, output"),
            );
            TokenKind::Total
        }
    };
    if spec.token_type.is_some() && !field.starts_with("tokens") {
        push(
            errors,
            id,
            format!("{path}.tokenType"),
            "only a tokens or tokensPerMinute limit has a token type",
        );
    }
    let (metric, amount) = match field {
        "cost" => {
            let text = spec.cost.as_deref().unwrap_or_default();
            match MicroUsd::parse(text) {
                Ok(amount) => (Metric::Cost, amount.0),
                Err(e) => {
                    push(errors, id, format!("{path}.cost"), e);
                    return None;
                }
            }
        }
        "tokens" => (Metric::Tokens(token_kind), spec.tokens.unwrap_or_default()),
        "requests" => (Metric::Requests, spec.requests.unwrap_or_default()),
        "tokensPerMinute" => (
            Metric::Tokens(token_kind),
            spec.tokens_per_minute.unwrap_or_default(),
        ),
        _ => (
            Metric::Requests,
            spec.requests_per_minute.unwrap_or_default(),
        ),
    };
    if amount == 0 {
        push(
            errors,
            id,
            format!("{path}.{field}"),
            "must be more than 0 (a Budget that allows nothing: remove the tenant's key instead)",
        );
    }
    let per_minute = field.ends_with("PerMinute");
    let window = if per_minute {
        for (name, set) in [
            ("period", spec.period.is_some()),
            ("window", spec.window.is_some()),
            ("timeZone", spec.time_zone.is_some()),
        ] {
            if set {
                push(
                    errors,
                    id,
                    format!("{path}.{name}"),
                    format!("a {field} limit is per minute already; remove `{name}`"),
                );
            }
        }
        Window::Rolling(Duration::from_secs(60))
    } else {
        match (spec.period.as_deref(), spec.window.as_deref()) {
            (Some(_), Some(_)) => {
                push(
                    errors,
                    id,
                    path,
                    "set either `period` (calendar) or `window` (rolling), not both",
                );
                return None;
            }
            (None, None) => {
                push(errors, id,
                    path,
                    format!("a {field} limit needs a `period` (Hourly, Daily, Weekly, Monthly) or a rolling `window` (e.g. 24h)"),
                );
                return None;
            }
            (Some(period), None) => {
                let period = match period {
                    "Hourly" => Period::Hourly,
                    "Daily" => Period::Daily,
                    "Weekly" => Period::Weekly,
                    "Monthly" => Period::Monthly,
                    other => {
                        push(
                            errors,
                            id,
                            format!("{path}.period"),
                            format!("`{other}` is not one of Hourly, Daily, Weekly, Monthly"),
                        );
                        return None;
                    }
                };
                let time_zone = spec.time_zone.clone().unwrap_or_else(|| "UTC".into());
                if chrono_tz::Tz::from_str(&time_zone).is_err() {
                    push(
                        errors,
                        id,
                        format!("{path}.timeZone"),
                        format!("`{time_zone}` is not an IANA time zone like Europe/Paris or UTC"),
                    );
                }
                Window::Calendar { period, time_zone }
            }
            (None, Some(window)) => {
                if spec.time_zone.is_some() {
                    push(
                        errors,
                        id,
                        format!("{path}.timeZone"),
                        "a rolling window has no time zone; remove it",
                    );
                }
                match parse_duration(window) {
                    Ok(d) if d >= Duration::from_secs(1) && d.subsec_nanos() == 0 => {
                        Window::Rolling(d)
                    }
                    Ok(_) => {
                        push(
                            errors,
                            id,
                            format!("{path}.window"),
                            "a whole number of seconds, at least 1s",
                        );
                        return None;
                    }
                    Err(e) => {
                        push(errors, id, format!("{path}.window"), e);
                        return None;
                    }
                }
            }
        }
    };
    let name = match &spec.name {
        Some(name) => {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                push(
                    errors,
                    id,
                    format!("{path}.name"),
                    format!("`{name}`: letters, digits, `-`, `_` and `.` only"),
                );
            }
            name.clone()
        }
        None => default_name(metric, per_minute, &window),
    };
    (errors.len() == before).then_some(Limit {
        name,
        metric,
        amount,
        window,
    })
}

/// `cost-monthly`, `tokens-daily`, `input-tokens-per-minute`, `requests-24h`.
fn default_name(metric: Metric, per_minute: bool, window: &Window) -> String {
    let what = match metric {
        Metric::Cost => "cost",
        Metric::Requests => "requests",
        Metric::Tokens(TokenKind::Total) => "tokens",
        Metric::Tokens(TokenKind::Input) => "input-tokens",
        Metric::Tokens(TokenKind::Output) => "output-tokens",
    };
    let when = match window {
        _ if per_minute => "per-minute".to_owned(),
        Window::Calendar { period, .. } => match period {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
        }
        .to_owned(),
        Window::Rolling(d) => humantime::format_duration(*d).to_string().replace(' ', ""),
    };
    format!("{what}-{when}")
}

fn push(
    errors: &mut Vec<ConfigError>,
    id: &str,
    field: impl Into<String>,
    message: impl Into<String>,
) {
    errors.push(ConfigError::new(id, field, message));
}
