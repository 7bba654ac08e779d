//! Client authentication: a presented API key (`Authorization: Bearer KEY`
//! or `x-api-key: KEY`) is hashed and looked up; the key itself is never
//! stored or logged. With `auth.jwt`, a credential that is not a known key
//! and has the shape of a JWT is checked as one, and its tenant claim names
//! the tenant. Knows nothing of routing or limits.

use std::sync::Arc;

use http::HeaderMap;
use sluice_crds::snapshot::ApiKeyHash;

use crate::error::GatewayError;
use crate::jwt::{looks_like_jwt, TokenError};
use crate::runtime::Runtime;
use crate::upstream::Pool;

/// The authenticated client.
pub struct Principal {
    /// Its tenant.
    pub tenant: Arc<str>,
    /// The name of its API key, if it used one.
    pub key: Option<Arc<str>>,
}

/// The key a request presents, if any.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?.trim();
        let (scheme, key) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| key.trim())
            .filter(|k| !k.is_empty());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// Resolves the request's tenant. With an anonymous tenant configured, a
/// missing or unknown key is served as that tenant (SDKs always send some
/// key); otherwise both are refused. A JWT that fails its checks is refused
/// even then: its client expects to be known, and should renew it.
pub async fn authenticate(
    runtime: &Runtime,
    pool: &Arc<Pool>,
    headers: &HeaderMap,
) -> Result<Principal, GatewayError> {
    let key = presented_key(headers);
    if let Some(key) = key {
        if let Some(entry) = runtime.keys.get(&ApiKeyHash::of(key)) {
            return Ok(Principal {
                tenant: entry.tenant.clone(),
                key: Some(entry.name.clone()),
            });
        }
        if let Some(jwt) = runtime.jwt.as_ref().filter(|_| looks_like_jwt(key)) {
            return match jwt.validate(pool, key).await {
                Ok(verified) => Ok(Principal {
                    tenant: verified.tenant,
                    key: None,
                }),
                Err(e @ TokenError::KeysUnavailable { .. }) => {
                    Err(GatewayError::AuthUnavailable(e.to_string()))
                }
                Err(e) => Err(GatewayError::InvalidToken(e.to_string())),
            };
        }
    }
    if let Some(tenant) = &runtime.anonymous_tenant {
        return Ok(Principal {
            tenant: tenant.clone(),
            key: None,
        });
    }
    Err(GatewayError::Unauthorized(match key {
        None => "missing API key: send `Authorization: Bearer KEY` or `x-api-key: KEY`",
        Some(_) => "invalid API key",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_crds::{compile, load_documents, StandaloneSecrets};

    fn runtime(anonymous: bool) -> Runtime {
        runtime_with(if anonymous {
            "    anonymousTenant: local\n"
        } else {
            ""
        })
    }

    fn runtime_with(extra: &str) -> Runtime {
        let text = format!(
            "kind: AIGateway\nmetadata: {{name: gw}}\nspec:\n  auth:\n    apiKeys: [{{name: ci, tenant: team-a, valueFrom: {{env: K}}}}]\n{extra}"
        );
        let loaded = load_documents(&[("t".into(), text)]);
        let env = |n: &str| (n == "K").then(|| "sk-good".to_owned());
        Runtime::new(compile(&loaded, &StandaloneSecrets { env }).unwrap(), 1).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn tenant(rt: &Runtime, pairs: &[(&'static str, &str)]) -> Result<String, String> {
        let pool = Pool::new();
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(authenticate(rt, &pool, &headers(pairs)));
        result
            .map(|p| p.tenant.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn keys_map_to_tenants() {
        let rt = runtime(false);
        assert_eq!(
            tenant(&rt, &[("authorization", "Bearer sk-good")]),
            Ok("team-a".into())
        );
        assert_eq!(
            tenant(&rt, &[("authorization", "bearer  sk-good ")]),
            Ok("team-a".into())
        );
        assert_eq!(
            tenant(&rt, &[("x-api-key", "sk-good")]),
            Ok("team-a".into())
        );
        assert_eq!(
            tenant(&rt, &[("authorization", "Bearer sk-bad")]),
            Err("invalid API key".into())
        );
        assert!(tenant(&rt, &[]).unwrap_err().starts_with("missing API key"));
        assert_eq!(
            tenant(&rt, &[("authorization", "Basic abc")]).map_err(|_| ()),
            Err(())
        );
    }

    #[test]
    fn anonymous_tenant_when_configured() {
        let rt = runtime(true);
        assert_eq!(tenant(&rt, &[]), Ok("local".into()));
        assert_eq!(
            tenant(&rt, &[("authorization", "Bearer whatever")]),
            Ok("local".into())
        );
        assert_eq!(
            tenant(&rt, &[("authorization", "Bearer sk-good")]),
            Ok("team-a".into())
        );
    }

    #[test]
    fn a_bad_jwt_is_refused_even_with_an_anonymous_tenant() {
        let rt = runtime_with("    anonymousTenant: local\n    jwt: {issuer: \"https://auth.example.com\", audiences: [sluice], jwksUri: \"http://127.0.0.1:1/jwks\"}\n");
        assert_eq!(
            tenant(&rt, &[("authorization", "Bearer sk-good")]),
            Ok("team-a".into())
        );
        assert_eq!(
            tenant(&rt, &[("authorization", "Bearer not-a-jwt")]),
            Ok("local".into())
        );
        let refused = tenant(&rt, &[("authorization", "Bearer aaaa.bbbb.cccc")]).unwrap_err();
        assert!(
            refused.starts_with("invalid token: the token is not a valid JWT"),
            "{refused}"
        );
    }
}
