//! Client authentication: a presented API key (`Authorization: Bearer KEY`
//! or `x-api-key: KEY`) is hashed and looked up; the key itself is never
//! stored or logged. Knows nothing of routing or limits.

use std::sync::Arc;

use http::HeaderMap;
use sluice_crds::snapshot::ApiKeyHash;

use crate::error::GatewayError;
use crate::runtime::Runtime;

/// The authenticated client.
pub struct Principal {
    /// Its tenant.
    pub tenant: Arc<str>,
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
/// key); otherwise both are refused.
pub fn authenticate(runtime: &Runtime, headers: &HeaderMap) -> Result<Principal, GatewayError> {
    let key = presented_key(headers);
    if let Some(key) = key {
        if let Some(entry) = runtime.keys.get(&ApiKeyHash::of(key)) {
            return Ok(Principal {
                tenant: entry.tenant.clone(),
            });
        }
    }
    if let Some(tenant) = &runtime.anonymous_tenant {
        return Ok(Principal {
            tenant: tenant.clone(),
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
        let text = format!(
            "kind: AIGateway\nmetadata: {{name: gw}}\nspec:\n  auth:\n    apiKeys: [{{name: ci, tenant: team-a, valueFrom: {{env: K}}}}]\n{}",
            if anonymous { "    anonymousTenant: local\n" } else { "" }
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
        authenticate(rt, &headers(pairs))
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
}
