//! The one place that maps gateway errors to HTTP: status code, an
//! OpenAI-shaped JSON body, and a low-cardinality label for logs and metrics.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::body::ResponseBody;

/// Why the gateway answered instead of an upstream.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// The request body is not what the endpoint takes.
    #[error("{0}")]
    BadRequest(String),
    /// No credential, or one the gateway does not know.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A JWT that does not pass its checks (signature, issuer, audience, expiry, tenant claim).
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The keys that check JWTs cannot be fetched, so no token can be checked.
    #[error("{0}")]
    AuthUnavailable(String),
    /// No route serves the requested model.
    #[error(
        "model `{0}` is not served by this gateway; GET /v1/models lists the models it serves"
    )]
    UnknownModel(String),
    /// No such endpoint.
    #[error("no endpoint {0}")]
    UnknownPath(String),
    /// Wrong method for an endpoint.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// The body exceeds the configured limit.
    #[error("request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(u64),
    /// Every attempt failed to connect or lost the connection before a response.
    #[error("upstream {backend} failed: {detail}")]
    UpstreamFailed {
        /// The last backend tried.
        backend: String,
        /// What went wrong (no secrets).
        detail: String,
    },
    /// Every attempt timed out before response headers.
    #[error("upstream {0} did not answer in time")]
    UpstreamTimeout(String),
    /// A budget or rate limit has no room for the request.
    #[error("{}", describe_reached(.0))]
    LimitReached(Box<crate::limits::Reached>),
    /// The counter store cannot be reached and the budget fails closed.
    #[error("limit {limit} cannot be checked (the counter store is unreachable: {detail}); the budget fails closed")]
    LimitsUnavailable {
        /// `budget/limit`.
        limit: String,
        /// What the store said.
        detail: String,
    },
}

/// What a client reads when a limit refuses it.
fn describe_reached(reached: &crate::limits::Reached) -> String {
    let amount = crate::limits::format_amount(reached.metric, reached.amount);
    let left = crate::limits::format_amount(reached.metric, reached.remaining);
    let needed = crate::limits::format_amount(reached.metric, reached.needed);
    if reached.calendar {
        format!(
            "budget {}: limit {} reached ({amount} per period; {left} left, this request needs {needed}); it resets at {}",
            reached.budget,
            reached.limit,
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_millis(u64::try_from(reached.resets_at_ms).unwrap_or(0))
            )
        )
    } else {
        format!(
            "rate limit {}/{} reached ({amount} per window; {left} left, this request needs {needed}); retry in {}s",
            reached.budget, reached.limit, reached.retry_after_s
        )
    }
}

impl GatewayError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::AuthUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::UnknownModel(_) | Self::UnknownPath(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::LimitReached(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::LimitsUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// OpenAI's `error.type`.
    fn error_type(&self) -> &'static str {
        match self {
            Self::BadRequest(_)
            | Self::UnknownModel(_)
            | Self::UnknownPath(_)
            | Self::MethodNotAllowed(_) => "invalid_request_error",
            Self::PayloadTooLarge(_) => "invalid_request_error",
            Self::Unauthorized(_) | Self::InvalidToken(_) => "authentication_error",
            Self::AuthUnavailable(_) => "server_error",
            Self::UpstreamFailed { .. } | Self::UpstreamTimeout(_) => "upstream_error",
            Self::LimitReached(reached) if reached.calendar => "insufficient_quota",
            Self::LimitReached(_) => "rate_limit_exceeded",
            Self::LimitsUnavailable { .. } => "server_error",
        }
    }

    /// Low-cardinality label: the access log's `error` and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "invalid_api_key",
            Self::InvalidToken(_) => "invalid_token",
            Self::AuthUnavailable(_) => "jwks_unavailable",
            Self::UnknownModel(_) => "model_not_found",
            Self::UnknownPath(_) => "unknown_path",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::PayloadTooLarge(_) => "request_too_large",
            Self::UpstreamFailed { .. } => "upstream_failed",
            Self::UpstreamTimeout(_) => "upstream_timeout",
            Self::LimitReached(reached) if reached.calendar => "budget_exceeded",
            Self::LimitReached(_) => "rate_limited",
            Self::LimitsUnavailable { .. } => "limits_unavailable",
        }
    }

    /// `budget/limit` behind a limit refusal, for the access log.
    pub fn limit(&self) -> Option<String> {
        match self {
            Self::LimitReached(r) => Some(format!("{}/{}", r.budget, r.limit)),
            Self::LimitsUnavailable { limit, .. } => Some(limit.clone()),
            _ => None,
        }
    }

    /// The OpenAI-shaped error body.
    pub fn body(&self) -> Bytes {
        error_body(&self.to_string(), self.error_type(), self.code())
    }

    /// The full response.
    pub fn response(&self) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::full(self.body()));
        *response.status_mut() = self.status();
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(challenge) = self.challenge() {
            response
                .headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, challenge);
        }
        if let Self::LimitReached(reached) = self {
            let headers = response.headers_mut();
            headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(reached.retry_after_s),
            );
            crate::limits::insert_headroom(
                headers,
                &[crate::limits::Headroom {
                    metric: crate::limits::metric_label(reached.metric),
                    limit: reached.amount,
                    remaining: reached.remaining,
                    reset_s: reached.retry_after_s,
                }],
            );
        }
        if self.before_body() {
            // The request body was not read: the connection cannot carry
            // another request, so say so rather than let the client race it.
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// The `WWW-Authenticate` value of a 401 (RFC 6750).
    pub fn challenge(&self) -> Option<HeaderValue> {
        match self {
            Self::Unauthorized(_) => Some(HeaderValue::from_static("Bearer")),
            Self::InvalidToken(reason) => HeaderValue::from_str(&format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                quotable(reason)
            ))
            .ok(),
            _ => None,
        }
    }

    /// Whether the gateway answers before reading the request body.
    fn before_body(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized(_)
                | Self::InvalidToken(_)
                | Self::AuthUnavailable(_)
                | Self::PayloadTooLarge(_)
                | Self::MethodNotAllowed(_)
                | Self::UnknownPath(_)
        )
    }
}

/// `text` as the inside of an HTTP quoted-string: printable ASCII, with
/// `"` and `\` (and anything else) replaced by `'`.
pub fn quotable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '\'',
        })
        .collect()
}

/// `{"error":{"message","type","param":null,"code"}}`.
pub fn error_body(message: &str, error_type: &str, code: &str) -> Bytes {
    let body = serde_json::json!({
        "error": {"message": message, "type": error_type, "param": null, "code": code}
    });
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_openai_shaped() {
        let error = GatewayError::UnknownModel("gpt-9".into());
        assert_eq!(error.status(), StatusCode::NOT_FOUND);
        let body: serde_json::Value = serde_json::from_slice(&error.body()).unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "model_not_found");
        assert!(body["error"]["message"].as_str().unwrap().contains("gpt-9"));
        assert_eq!(
            GatewayError::PayloadTooLarge(10).status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            GatewayError::UpstreamTimeout("a".into()).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        let unauthorized = GatewayError::Unauthorized("no key").response();
        assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
        assert!(unauthorized
            .headers()
            .contains_key(http::header::WWW_AUTHENTICATE));
        let invalid = GatewayError::InvalidToken("the \"token\" has expired".into()).response();
        assert_eq!(invalid.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            invalid.headers()[http::header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\", error_description=\"the 'token' has expired\""
        );
        let unavailable = GatewayError::AuthUnavailable("keys down".into());
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.code(), "jwks_unavailable");
    }
}
