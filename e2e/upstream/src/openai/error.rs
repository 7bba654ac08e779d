//! OpenAI-shaped error bodies: `{"error":{"message","type","param","code"}}`,
//! and which `type`/`code` go with which status.

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;

use super::to_json;

/// The `type` and `code` OpenAI reports with `status`.
pub(crate) fn kind_for(status: StatusCode) -> (&'static str, Option<&'static str>) {
    if status == StatusCode::TOO_MANY_REQUESTS {
        ("rate_limit_error", Some("rate_limit_exceeded"))
    } else if status.is_server_error() {
        ("server_error", None)
    } else {
        ("invalid_request_error", None)
    }
}

/// An error body.
pub(crate) fn body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Bytes {
    #[derive(Serialize)]
    struct Envelope<'a> {
        error: Detail<'a>,
    }
    #[derive(Serialize)]
    struct Detail<'a> {
        message: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        param: Option<&'a str>,
        code: Option<&'a str>,
    }
    to_json(&Envelope {
        error: Detail {
            message,
            kind,
            param,
            code,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_status() {
        assert_eq!(
            kind_for(StatusCode::TOO_MANY_REQUESTS),
            ("rate_limit_error", Some("rate_limit_exceeded"))
        );
        assert_eq!(kind_for(StatusCode::BAD_GATEWAY), ("server_error", None));
        assert_eq!(
            kind_for(StatusCode::UNAUTHORIZED),
            ("invalid_request_error", None)
        );
    }

    #[test]
    fn body_shape() {
        assert_eq!(
            body("boom", "server_error", None, None),
            Bytes::from_static(
                br#"{"error":{"message":"boom","type":"server_error","param":null,"code":null}}"#
            )
        );
    }
}
