//! The config the Kubernetes controller streams to proxy replicas (`GET
//! /v1/config/stream`) and their answer (`POST /v1/config/ack`). A bundle
//! carries the source objects as JSON, the values of the Secret keys they
//! reference and a version. The controller and every proxy decode and
//! compile it with the same code ([`ConfigBundle::compile`]), so a proxy
//! judges a bundle exactly as the controller did. Knows nothing of HTTP or
//! of the Kubernetes API.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::compile::{compile, SecretSource};
use crate::error::{ConfigError, ConfigErrors};
use crate::load::{decode_document, LoadedConfig};
use crate::resources::ValueFrom;
use crate::snapshot::Snapshot;
use crate::values::Secret;

/// Secret values by Secret name, then key.
pub type SecretValues = BTreeMap<String, BTreeMap<String, String>>;

/// One published config: what a proxy needs to compile it, nothing else.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigBundle {
    /// Grows with every change the controller publishes. Proxies take any
    /// version the controller sends (a new controller may count afresh);
    /// it names the config in ACKs, logs and status conditions.
    pub version: u64,
    /// The objects, each `{apiVersion, kind, metadata: {name}, spec}`.
    pub documents: Vec<serde_json::Value>,
    /// The values of the Secret keys the objects reference with
    /// `secretKeyRef`, by Secret name and key. Only referenced keys.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: SecretValues,
}

impl fmt::Debug for ConfigBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secrets: Vec<String> = self
            .secrets
            .iter()
            .flat_map(|(name, keys)| keys.keys().map(move |key| format!("{name}/{key}")))
            .collect();
        f.debug_struct("ConfigBundle")
            .field("version", &self.version)
            .field("documents", &self.documents.len())
            .field("secrets", &secrets)
            .finish()
    }
}

impl ConfigBundle {
    /// `sha256:` of the documents and the secret values: equal configs
    /// hash equal whatever their version, and a rotated secret changes it.
    pub fn hash(&self) -> String {
        let mut hasher = Sha256::new();
        for document in &self.documents {
            hasher.update(document.to_string().as_bytes());
            hasher.update([0]);
        }
        for (name, keys) in &self.secrets {
            for (key, value) in keys {
                hasher.update(name.as_bytes());
                hasher.update([0]);
                hasher.update(key.as_bytes());
                hasher.update([0]);
                hasher.update(value.as_bytes());
                hasher.update([0]);
            }
        }
        format!("sha256:{:x}", hasher.finalize())
    }

    /// Decodes the documents exactly as the file loader decodes a file's.
    pub fn load(&self) -> LoadedConfig {
        let mut loaded = LoadedConfig::default();
        for (index, document) in self.documents.iter().enumerate() {
            let at = object_id(document).unwrap_or_else(|| format!("document #{}", index + 1));
            let decoded = serde_yaml::to_value(document)
                .map_err(|e| ConfigError::new(&at, "", format!("not a valid object: {e}")))
                .and_then(|value| decode_document(&at, value));
            match decoded {
                Ok(document) => loaded.documents.push(document),
                Err(error) => loaded.errors.push(error),
            }
        }
        loaded.hash = self.hash();
        loaded
    }

    /// Decodes and compiles the bundle, reading secrets from it alone.
    pub fn compile(&self) -> Result<Snapshot, ConfigErrors> {
        compile(&self.load(), &BundleSecrets(&self.secrets))
    }
}

/// `Kind/name` of a raw object, when it has both.
fn object_id(document: &serde_json::Value) -> Option<String> {
    let kind = document.get("kind")?.as_str()?;
    let name = document.get("metadata")?.get("name")?.as_str()?;
    Some(format!("{kind}/{name}"))
}

/// Secrets of a cluster: `secretKeyRef` only, read from a bundle's values.
/// `env` and `file` are refused, since they would read the proxy pod's
/// environment, which the controller cannot see or check.
pub struct BundleSecrets<'a>(pub &'a SecretValues);

impl SecretSource for BundleSecrets<'_> {
    fn get(&self, from: &ValueFrom) -> Result<Secret, String> {
        match (&from.env, &from.file, &from.secret_key_ref) {
            (None, None, Some(r)) => {
                let Some(keys) = self.0.get(&r.name) else {
                    return Err(format!(
                        "Secret `{}` not found in the namespace; create it with the key `{}`",
                        r.name, r.key
                    ));
                };
                match keys.get(&r.key) {
                    Some(value) if !value.is_empty() => Ok(Secret::new(value.clone())),
                    Some(_) => Err(format!("Secret `{}` key `{}` is empty", r.name, r.key)),
                    None => {
                        let present: Vec<&str> = keys.keys().map(String::as_str).collect();
                        Err(format!(
                            "Secret `{}` has no key `{}` (its keys: {})",
                            r.name,
                            r.key,
                            if present.is_empty() {
                                "none".to_owned()
                            } else {
                                present.join(", ")
                            }
                        ))
                    }
                }
            }
            (Some(_), None, None) | (None, Some(_), None) => Err(
                "`env` and `file` are for `sluice run`; in a cluster put the value in a Secret and use `secretKeyRef: {name, key}`".to_owned(),
            ),
            _ => Err("set exactly one of `env`, `file` or `secretKeyRef`".into()),
        }
    }
}

/// A proxy replica's answer to a bundle (`ok` false: a NACK, with the
/// compile errors), sent again periodically with its budget report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigAck {
    /// The replica's name (its pod name in a cluster).
    pub replica: String,
    /// The version answered.
    pub version: u64,
    /// Whether the replica runs it.
    pub ok: bool,
    /// Why it was rejected (for a NACK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The version the replica serves (differs from `version` after a NACK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<u64>,
    /// The replica's `GET /budgets` report (its `budgets` array).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;
    use serde_json::json;

    fn bundle(key: &str) -> ConfigBundle {
        ConfigBundle {
            version: 3,
            documents: vec![
                json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "AIGateway", "metadata": {"name": "gw"},
                       "spec": {"auth": {"apiKeys": [{"name": "ci", "tenant": "team-a",
                                 "valueFrom": {"secretKeyRef": {"name": "keys", "key": "ci"}}}]},
                                "llm": {"routes": [{"models": ["sluice-demo"], "backends": [{"backend": "demo"}]}]}}}),
                json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Backend", "metadata": {"name": "demo"},
                       "spec": {"provider": "Demo"}}),
            ],
            secrets: [(
                "keys".to_owned(),
                [(key.to_owned(), "sk-1".to_owned())].into_iter().collect(),
            )]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn compiles_with_secret_values_from_the_bundle() {
        let snapshot = bundle("ci").compile().unwrap();
        assert_eq!(snapshot.auth.api_keys.len(), 1);
        assert_eq!(snapshot.hash, bundle("ci").hash());
        assert!(!format!("{:?}", bundle("ci")).contains("sk-1"));
        let json = serde_json::to_string(&bundle("ci")).unwrap();
        let back: ConfigBundle = serde_json::from_str(&json).unwrap();
        assert_eq!(back, bundle("ci"));
    }

    #[test]
    fn a_missing_key_names_the_secret_and_its_keys() {
        let errors = bundle("other").compile().unwrap_err();
        assert_eq!(
            errors.0[0].to_string(),
            "AIGateway/gw: spec.auth.apiKeys[0].valueFrom: Secret `keys` has no key `ci` (its keys: other)"
        );
    }

    #[test]
    fn env_is_refused_and_bad_documents_are_named() {
        let mut b = bundle("ci");
        b.documents[0]["spec"]["auth"]["apiKeys"][0]["valueFrom"] = json!({"env": "KEY"});
        b.documents.push(json!({"kind": "Backend", "metadata": {"name": "x"}, "spec": {"provider": "OpenAI", "typo": 1}}));
        let errors: Vec<String> = b
            .compile()
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("Backend/x: spec.typo: unknown field")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("use `secretKeyRef")),
            "{errors:?}"
        );
    }

    #[test]
    fn the_hash_follows_secret_values() {
        let mut rotated = bundle("ci");
        rotated
            .secrets
            .get_mut("keys")
            .unwrap()
            .insert("ci".into(), "sk-2".into());
        assert_ne!(rotated.hash(), bundle("ci").hash());
        let mut renumbered = bundle("ci");
        renumbered.version = 9;
        assert_eq!(renumbered.hash(), bundle("ci").hash());
    }
}
