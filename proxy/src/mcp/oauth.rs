//! The OAuth 2.1 resource server of MCP routes with `auth.oauth` (MCP
//! authorization 2025-06-18 / 2025-11-25, RFC 9728, RFC 6750): the
//! Protected Resource Metadata document, and the access-token check of
//! every request with the `WWW-Authenticate` challenges the spec asks for.
//! The token is only read here; nothing of the client's request reaches an
//! upstream server (see `client`). Knows nothing of sessions or upstreams.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use serde_json::json;
use sluice_crds::snapshot::{McpRoute, OAuth};

use super::{json_response, McpError};
use crate::body::ResponseBody;
use crate::error::quotable;
use crate::gateway::Gateway;
use crate::jwt::{TokenError, Validator};
use crate::runtime::Runtime;

/// Where RFC 9728 metadata lives: this, then the resource's path.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The metadata paths of the routes with OAuth: `WELL_KNOWN{path}` for each,
/// and `WELL_KNOWN` itself for the route at `/` or, failing that, for the
/// only route with OAuth (clients try both forms, the path form first).
pub fn metadata_paths(routes: &[McpRoute]) -> HashMap<String, usize> {
    let with_oauth: Vec<usize> = (0..routes.len())
        .filter(|&i| routes[i].oauth.is_some())
        .collect();
    let mut paths: HashMap<String, usize> = with_oauth
        .iter()
        .map(|&i| (metadata_url_path(&routes[i].path), i))
        .collect();
    if let [only] = with_oauth[..] {
        paths.entry(WELL_KNOWN.to_owned()).or_insert(only);
    }
    paths
}

/// `WELL_KNOWN` + the path without its trailing `/` (RFC 9728 §3.1).
fn metadata_url_path(path: &str) -> String {
    format!("{WELL_KNOWN}{}", path.trim_end_matches('/'))
}

/// The route's public URL: the configured `resource`, else built from the
/// request (`X-Forwarded-Proto` or `http`, the `Host`, the route's path).
fn resource_url(
    oauth: &OAuth,
    route: &McpRoute,
    headers: &HeaderMap,
    uri: &Uri,
    listen: SocketAddr,
) -> String {
    if let Some(resource) = &oauth.resource {
        return resource.clone();
    }
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    // Only a plain host[:port] goes into the document and the header.
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
        })
        .map_or_else(|| listen.to_string(), str::to_owned);
    format!("{scheme}://{host}{}", route.path.trim_end_matches('/'))
}

/// The metadata URL of a resource (RFC 9728 §3.1).
fn metadata_url(resource: &str) -> String {
    let (scheme, rest) = resource.split_once("://").unwrap_or(("http", resource));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    format!("{scheme}://{authority}{}", metadata_url_path(path))
}

/// `GET /.well-known/oauth-protected-resource{path}`: the route's metadata,
/// served to anyone (it is what a client needs to get a token).
pub fn metadata<B>(runtime: &Runtime, request: &Request<B>) -> Response<ResponseBody> {
    let found = runtime
        .oauth_metadata
        .get(request.uri().path())
        .and_then(|&i| runtime.snapshot.mcp_routes.get(i))
        .and_then(|route| Some((route, route.oauth.as_ref()?)));
    let Some((route, oauth)) = found else {
        return json_response(StatusCode::NOT_FOUND, Bytes::new());
    };
    let mut response = match *request.method() {
        Method::GET | Method::HEAD => {
            let resource = resource_url(
                oauth,
                route,
                request.headers(),
                request.uri(),
                runtime.snapshot.listen,
            );
            let mut document = json!({
                "resource": resource,
                "authorization_servers": [oauth.jwt.issuer],
                "bearer_methods_supported": ["header"],
            });
            if !oauth.scopes.is_empty() {
                document["scopes_supported"] = json!(oauth.scopes);
            }
            json_response(StatusCode::OK, Bytes::from(document.to_string()))
        }
        Method::OPTIONS => {
            // A browser's preflight (MCP clients send MCP-Protocol-Version).
            let mut response = json_response(StatusCode::NO_CONTENT, Bytes::new());
            let headers = response.headers_mut();
            headers.insert(
                "access-control-allow-methods",
                HeaderValue::from_static("GET, OPTIONS"),
            );
            headers.insert(
                "access-control-allow-headers",
                HeaderValue::from_static("*"),
            );
            response
        }
        _ => {
            let mut response = json_response(StatusCode::METHOD_NOT_ALLOWED, Bytes::new());
            response.headers_mut().insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            response
        }
    };
    response.headers_mut().insert(
        http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// Checks the request's access token against the route's OAuth settings;
/// the tenant it names, or the refusal with its challenge.
pub(super) async fn authorize<B>(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    validator: &Validator,
    request: &Request<B>,
) -> Result<Arc<str>, McpError> {
    let Some(oauth) = &route.oauth else {
        return Err(McpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            -32603,
            "internal",
            "the route has no OAuth settings",
        ));
    };
    let challenge = |error: Option<(&str, &str)>| {
        let resource = resource_url(
            oauth,
            route,
            request.headers(),
            request.uri(),
            runtime.snapshot.listen,
        );
        let mut parts = Vec::new();
        if let Some((code, description)) = error {
            parts.push(format!("error=\"{code}\""));
            parts.push(format!("error_description=\"{}\"", quotable(description)));
        }
        if !oauth.scopes.is_empty() {
            parts.push(format!("scope=\"{}\"", oauth.scopes.join(" ")));
        }
        parts.push(format!("resource_metadata=\"{}\"", metadata_url(&resource)));
        HeaderValue::from_str(&format!("Bearer {}", parts.join(", ")))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    };
    let Some(token) = bearer_token(request.headers()) else {
        return Err(McpError::new(
            StatusCode::UNAUTHORIZED,
            -32001,
            "missing_token",
            "Unauthorized: this MCP endpoint needs an OAuth access token (Authorization: Bearer TOKEN); the WWW-Authenticate header says where its metadata is",
        )
        .with_challenge(challenge(None)));
    };
    let verified = match validator.validate(&gateway.upstreams, token).await {
        Ok(verified) => verified,
        Err(e @ TokenError::KeysUnavailable { .. }) => {
            return Err(McpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                -32603,
                "jwks_unavailable",
                e.to_string(),
            ))
        }
        Err(e) => {
            let description = e.to_string();
            return Err(McpError::new(
                StatusCode::UNAUTHORIZED,
                -32001,
                "invalid_token",
                format!("Unauthorized: {description}"),
            )
            .with_challenge(challenge(Some(("invalid_token", &description)))));
        }
    };
    let missing = verified.missing_scopes(&oauth.scopes);
    if !missing.is_empty() {
        let description = format!("the token lacks the scope {}", missing.join(" "));
        return Err(McpError::new(
            StatusCode::FORBIDDEN,
            -32000,
            "insufficient_scope",
            format!("Forbidden: {description}"),
        )
        .with_challenge(challenge(Some(("insufficient_scope", &description)))));
    }
    Ok(verified.tenant)
}

/// The token of `Authorization: Bearer TOKEN` (the only method offered).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_urls_follow_rfc_9728() {
        assert_eq!(
            metadata_url("https://gw.example.com/mcp"),
            "https://gw.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("http://127.0.0.1:1975"),
            "http://127.0.0.1:1975/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            metadata_url("https://gw.example.com/"),
            "https://gw.example.com/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            metadata_url_path("/tools/a/"),
            "/.well-known/oauth-protected-resource/tools/a"
        );
    }

    #[test]
    fn resource_urls_come_from_the_request_unless_configured() {
        let oauth = OAuth {
            jwt: sluice_crds::snapshot::JwtRules {
                issuer: "https://auth.example.com".into(),
                audiences: vec!["x".into()],
                jwks_uri: "https://auth.example.com/jwks".into(),
                tenant_claim: "sub".into(),
                jwks_refetch_interval: std::time::Duration::from_secs(30),
            },
            scopes: vec![],
            resource: None,
        };
        let route = McpRoute {
            name: "tools".into(),
            path: "/mcp".into(),
            backends: vec![],
            access: None,
            oauth: Some(oauth.clone()),
        };
        let listen: SocketAddr = "0.0.0.0:1975".parse().unwrap();
        let url = |pairs: &[(&'static str, &str)], uri: &str| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, value.parse().unwrap());
            }
            resource_url(&oauth, &route, &headers, &uri.parse().unwrap(), listen)
        };
        assert_eq!(
            url(&[("host", "gw.local:8080")], "/mcp"),
            "http://gw.local:8080/mcp"
        );
        assert_eq!(
            url(
                &[
                    ("host", "gw.example.com"),
                    ("x-forwarded-proto", "https, http")
                ],
                "/mcp"
            ),
            "https://gw.example.com/mcp"
        );
        assert_eq!(
            url(&[], "https://h2.example.com/mcp"),
            "http://h2.example.com/mcp",
            "HTTP/2: the authority"
        );
        assert_eq!(
            url(&[("host", "evil\"x")], "/mcp"),
            "http://0.0.0.0:1975/mcp",
            "no quotes smuggled into the challenge"
        );
        let configured = OAuth {
            resource: Some("https://gw.example.com/mcp".into()),
            ..oauth.clone()
        };
        assert_eq!(
            resource_url(
                &configured,
                &route,
                &HeaderMap::new(),
                &"/mcp".parse().unwrap(),
                listen
            ),
            "https://gw.example.com/mcp"
        );
        // The root well-known path goes to the only OAuth route.
        let plain = McpRoute {
            oauth: None,
            path: "/plain".into(),
            ..route.clone()
        };
        let paths = metadata_paths(&[plain.clone(), route.clone()]);
        assert_eq!(
            paths.get("/.well-known/oauth-protected-resource/mcp"),
            Some(&1)
        );
        assert_eq!(paths.get(WELL_KNOWN), Some(&1));
        assert_eq!(paths.len(), 2);
        let other = McpRoute {
            path: "/other".into(),
            ..route.clone()
        };
        let paths = metadata_paths(&[plain, route, other]);
        assert_eq!(
            paths.get(WELL_KNOWN),
            None,
            "two OAuth routes: no root form"
        );
    }
}
