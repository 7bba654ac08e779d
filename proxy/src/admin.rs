//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/config`,
//! `/budgets`, `/cluster`. Loopback by default; serves no data-plane traffic.

use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::ResponseBody;
use crate::gateway::Gateway;

/// Serves one admin request.
pub async fn serve(gateway: Arc<Gateway>, request: Request<Incoming>) -> Response<ResponseBody> {
    let (status, content_type, body) = match request.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" if gateway.is_draining() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".to_owned(),
        ),
        "/readyz" => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            gateway.telemetry.metrics().encode(),
        ),
        "/config" => {
            let runtime = gateway.runtime();
            let backends: Vec<&str> = runtime.backends.iter().map(|b| &*b.name).collect();
            let body = serde_json::json!({
                "version": runtime.version,
                "hash": runtime.snapshot.hash,
                "loadedAt": humantime::format_rfc3339_millis(runtime.loaded_at).to_string(),
                "routes": runtime.snapshot.routes.len(),
                "mcpRoutes": runtime.snapshot.mcp_routes.len(),
                "backends": backends,
            });
            (StatusCode::OK, "application/json", body.to_string())
        }
        "/budgets" => {
            let runtime = gateway.runtime();
            let reports = crate::limits::report::report(&gateway.limiter, &runtime.budgets).await;
            let body = serde_json::json!({ "budgets": reports });
            (StatusCode::OK, "application/json", body.to_string())
        }
        "/cluster" => {
            let body = gateway.limiter.store().report();
            (StatusCode::OK, "application/json", body.to_string())
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics /healthz /readyz /config /budgets /cluster\n".to_owned(),
        ),
    };
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    response
}
