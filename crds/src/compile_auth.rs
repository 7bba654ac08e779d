//! Compiling token validation: `AIGateway` `spec.auth.jwt` and `MCPRoute`
//! `spec.auth.oauth` into [`JwtRules`] and [`OAuth`]. Split from `compile`
//! and `compile_mcp` so both share one set of rules.

use std::time::Duration;

use crate::error::ConfigError;
use crate::resources::{JwtSpec, OAuthSpec};
use crate::snapshot::{JwtRules, OAuth};
use crate::values::parse_duration;

const DEFAULT_TENANT_CLAIM: &str = "sub";
const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// The fields both kinds of token settings share.
struct TokenFields<'a> {
    issuer: &'a str,
    audiences: &'a [String],
    jwks_uri: &'a str,
    tenant_claim: Option<&'a str>,
    jwks_refetch_interval: Option<&'a str>,
}

/// Compiles `spec.auth.jwt` of an AIGateway (`field` is its path).
pub(crate) fn compile_jwt(
    id: &str,
    field: &str,
    spec: &JwtSpec,
    errors: &mut Vec<ConfigError>,
) -> Option<JwtRules> {
    compile_rules(
        id,
        field,
        &TokenFields {
            issuer: &spec.issuer,
            audiences: &spec.audiences,
            jwks_uri: &spec.jwks_uri,
            tenant_claim: spec.tenant_claim.as_deref(),
            jwks_refetch_interval: spec.jwks_refetch_interval.as_deref(),
        },
        errors,
    )
}

/// Compiles `spec.auth.oauth` of an MCPRoute serving `path`.
pub(crate) fn compile_oauth(
    id: &str,
    field: &str,
    spec: &OAuthSpec,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<OAuth> {
    let before = errors.len();
    let jwt = compile_rules(
        id,
        field,
        &TokenFields {
            issuer: &spec.issuer,
            audiences: &spec.audiences,
            jwks_uri: &spec.jwks_uri,
            tenant_claim: spec.tenant_claim.as_deref(),
            jwks_refetch_interval: spec.jwks_refetch_interval.as_deref(),
        },
        errors,
    );
    for (k, scope) in spec.scopes.iter().enumerate() {
        // RFC 6749 scope-token: printable ASCII without space, `"` or `\`
        // (scopes are quoted in WWW-Authenticate).
        let valid = !scope.is_empty()
            && scope
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\');
        if !valid {
            errors.push(ConfigError::new(
                id,
                format!("{field}.scopes[{k}]"),
                format!("`{scope}` is not a scope: printable ASCII without spaces, `\"` or `\\`"),
            ));
        }
    }
    let resource = spec.resource.as_ref().and_then(|resource| {
        let checked = http_url(resource, false)
            .and_then(|url| match url_path(&url) {
                p if p == path || (p.is_empty() && path == "/") => Ok(url),
                p => Err(format!(
                    "the path of `{resource}` is `{}`, not the route's path `{path}`; the metadata is served at /.well-known/oauth-protected-resource{path}",
                    if p.is_empty() { "/" } else { p }
                )),
            });
        checked
            .map_err(|e| errors.push(ConfigError::new(id, format!("{field}.resource"), e)))
            .ok()
    });
    let jwt = jwt?;
    (errors.len() == before).then(|| OAuth {
        jwt,
        scopes: spec.scopes.clone(),
        resource,
    })
}

fn compile_rules(
    id: &str,
    field: &str,
    spec: &TokenFields<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<JwtRules> {
    let before = errors.len();
    let mut push = |sub: &str, message: String| {
        errors.push(ConfigError::new(id, format!("{field}.{sub}"), message))
    };
    if let Err(e) = http_url(spec.issuer, false) {
        push("issuer", e);
    }
    if spec.audiences.is_empty() {
        push(
            "audiences",
            "list at least one accepted audience (usually this gateway's URL)".into(),
        );
    }
    for (k, audience) in spec.audiences.iter().enumerate() {
        if audience.is_empty() {
            push(&format!("audiences[{k}]"), "must not be empty".into());
        }
    }
    if let Err(e) = http_url(spec.jwks_uri, true) {
        push("jwksUri", e);
    }
    let tenant_claim = spec.tenant_claim.unwrap_or(DEFAULT_TENANT_CLAIM);
    if tenant_claim.is_empty() {
        push("tenantClaim", "must not be empty".into());
    }
    let jwks_refetch_interval = match spec.jwks_refetch_interval {
        None => DEFAULT_REFETCH_INTERVAL,
        Some(text) => parse_duration(text)
            .map_err(|e| push("jwksRefetchInterval", e))
            .unwrap_or(DEFAULT_REFETCH_INTERVAL),
    };
    (errors.len() == before).then(|| JwtRules {
        issuer: spec.issuer.to_owned(),
        audiences: spec.audiences.to_vec(),
        jwks_uri: spec.jwks_uri.to_owned(),
        tenant_claim: tenant_claim.to_owned(),
        jwks_refetch_interval,
    })
}

/// Checks an absolute `http(s)://host[:port][/path][?query]` URL, kept as
/// written (an issuer is compared byte for byte, trailing slash included).
fn http_url(text: &str, allow_query: bool) -> Result<String, String> {
    let bad = || format!("`{text}` is not an http or https URL like https://auth.example.com");
    let (scheme, rest) = text.split_once("://").ok_or_else(bad)?;
    if scheme != "http" && scheme != "https" {
        return Err(bad());
    }
    if text.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'"') || text.contains('#') {
        return Err(format!(
            "`{text}` must not contain spaces, quotes or a fragment"
        ));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("`{text}` has no valid host"));
    }
    if !allow_query && text.contains('?') {
        return Err(format!("`{text}` must not carry a query"));
    }
    Ok(text.to_owned())
}

/// The path of a URL checked by [`http_url`], without its query; `""` for none.
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    path.split('?').next().unwrap_or_default()
}
