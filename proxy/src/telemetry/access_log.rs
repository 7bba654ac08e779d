//! The JSON access log: one line per request with stable field names
//! (`ts, session_id, request_id, tenant, method, path, status, upstream,
//! model, tokens_in, tokens_out, latency_ms, ttft_ms`, `error` when it
//! failed). Runs on the telemetry thread only. Never sees a secret: records
//! carry tenant and key names, not keys.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};

use serde::Serialize;
use sluice_crds::snapshot::AccessLogTarget;

use super::AccessRecord;

/// Where lines go.
pub enum Output {
    Off,
    Stdout(BufWriter<io::Stdout>),
    File(BufWriter<std::fs::File>),
}

impl Output {
    pub fn open(target: &AccessLogTarget) -> io::Result<Self> {
        Ok(match target {
            AccessLogTarget::Off => Self::Off,
            AccessLogTarget::Stdout => {
                Self::Stdout(BufWriter::with_capacity(64 * 1024, io::stdout()))
            }
            AccessLogTarget::File(path) => Self::File(BufWriter::with_capacity(
                64 * 1024,
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
        })
    }

    pub fn write(&mut self, record: &AccessRecord, line: &mut Vec<u8>) {
        let writer: &mut dyn Write = match self {
            Self::Off => return,
            Self::Stdout(w) => w,
            Self::File(w) => w,
        };
        line.clear();
        if serde_json::to_writer(&mut *line, &Line::from(record)).is_ok() {
            line.push(b'\n');
            // A failing log sink must not take the gateway down.
            let _ = writer.write_all(line);
        }
    }

    pub fn flush(&mut self) {
        let _ = match self {
            Self::Off => Ok(()),
            Self::Stdout(w) => w.flush(),
            Self::File(w) => w.flush(),
        };
    }
}

#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    session_id: Option<&'a str>,
    request_id: &'a str,
    tenant: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    status: u16,
    upstream: Option<&'a str>,
    model: Option<&'a str>,
    tokens_in: Option<u64>,
    tokens_out: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens_cached: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tokens_estimated: bool,
    latency_ms: f64,
    ttft_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mcp_method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_usd: Option<serde_json::Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed_attempts: Vec<FailedAttempt<'a>>,
}

#[derive(Serialize)]
struct FailedAttempt<'a> {
    upstream: &'a str,
    error: &'a str,
}

/// Micro-USD as an exact decimal JSON number (`0.000123`).
fn usd_number(micro: u64) -> Option<serde_json::Number> {
    let text = format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000);
    serde_json::from_str(&text).ok()
}

fn millis(duration: std::time::Duration) -> f64 {
    // Three decimals: microsecond resolution without float noise.
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

impl<'a> From<&'a AccessRecord> for Line<'a> {
    fn from(r: &'a AccessRecord) -> Self {
        Self {
            ts: humantime::format_rfc3339_millis(r.ts).to_string(),
            session_id: r.session_id.as_deref(),
            request_id: &r.request_id,
            tenant: r.tenant.as_deref(),
            method: r.method,
            path: &r.path,
            status: r.status,
            upstream: r.upstream.as_deref(),
            model: r.model.as_deref(),
            tokens_in: r.usage.map(|u| u.input),
            tokens_out: r.usage.map(|u| u.output),
            tokens_cached: r.usage.map(|u| u.cached_input).filter(|&n| n > 0),
            tokens_estimated: r.usage_estimated,
            latency_ms: millis(r.latency),
            ttft_ms: r.ttft.map(millis),
            mcp_method: r.mcp_method.as_deref(),
            tool: r.tool.as_deref(),
            cost_usd: r.cost_micro_usd.and_then(usd_number),
            error: r.error.as_deref(),
            limit: r.limit.as_deref(),
            failed_attempts: r
                .failed_attempts
                .iter()
                .map(|(upstream, error)| FailedAttempt { upstream, error })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Usage;
    use std::time::{Duration, SystemTime};

    #[test]
    fn line_has_the_documented_fields() {
        let record = AccessRecord {
            ts: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            session_id: Some("goose-abc123".into()),
            request_id: "req-1".into(),
            tenant: Some("team-a".into()),
            method: "POST",
            path: "/v1/chat/completions".into(),
            status: 200,
            upstream: Some("openai".into()),
            model: Some("gpt-4o".into()),
            usage: Some(Usage {
                input: 342,
                output: 89,
                cached_input: 0,
            }),
            latency: Duration::from_micros(1_240_500),
            ttft: Some(Duration::from_millis(310)),
            ..AccessRecord::default()
        };
        let mut out = Vec::new();
        serde_json::to_writer(&mut out, &Line::from(&record)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"{"ts":"2023-11-14T22:13:20.000Z","session_id":"goose-abc123","request_id":"req-1","tenant":"team-a","method":"POST","path":"/v1/chat/completions","status":200,"upstream":"openai","model":"gpt-4o","tokens_in":342,"tokens_out":89,"latency_ms":1240.5,"ttft_ms":310.0}"#
        );
    }
}
