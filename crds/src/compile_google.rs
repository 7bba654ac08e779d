//! Compiling the Google backends (`Gemini`, `VertexAI`): their base URLs
//! and Vertex AI's `auth.gcp` service account key, read and checked once
//! here so that the proxy only signs, or Vertex AI's express mode (an
//! `apiKey`, no `auth.gcp`). Split from `compile` so each stays one concern.

use serde::Deserialize;

use crate::compile::SecretSource;
use crate::error::ConfigError;
use crate::resources::BackendSpec;
use crate::snapshot::{Provider, ServiceAccount, Target};
use crate::values::Secret;

/// The target of a `Gemini` or `VertexAI` backend; `None` after an error.
pub(crate) fn compile_google_target(
    id: &str,
    provider: Provider,
    spec: &BackendSpec,
    secrets: &dyn SecretSource,
    errors: &mut Vec<ConfigError>,
) -> Option<Target> {
    let mut error = |field: &str, message: String| {
        errors.push(ConfigError::new(id, field, message));
    };
    if provider == Provider::Gemini {
        if spec.auth.as_ref().is_some_and(|a| a.gcp.is_some()) {
            error(
                "spec.auth.gcp",
                "only for provider VertexAI (Gemini takes an `apiKey`)".into(),
            );
            return None;
        }
        let endpoint = spec
            .endpoint
            .as_deref()
            .or(provider.default_endpoint())
            .unwrap_or_default();
        return match crate::compile::base_url(endpoint, provider.preset().version_path) {
            Ok(base_url) => Some(Target::Gemini {
                base_url,
                service_account: None,
            }),
            Err(e) => {
                error("spec.endpoint", e);
                None
            }
        };
    }
    let Some(gcp) = spec.auth.as_ref().and_then(|a| a.gcp.as_ref()) else {
        if spec.auth.as_ref().is_some_and(|a| a.api_key.is_some()) {
            return express_mode(spec, &mut error);
        }
        error(
            "spec.auth.gcp",
            "required for provider VertexAI: a service account key, its project and location (or an `apiKey` for express mode, Gemini models only)"
                .into(),
        );
        return None;
    };
    if spec.auth.as_ref().is_some_and(|a| a.api_key.is_some()) {
        error(
            "spec.auth.apiKey",
            "set either `auth.gcp` (a service account) or `apiKey` (express mode), not both".into(),
        );
        return None;
    }
    let key = match secrets.get(&gcp.service_account_key.value_from) {
        Ok(key) => key,
        Err(e) => {
            error("spec.auth.gcp.serviceAccountKey.valueFrom", e);
            return None;
        }
    };
    let (account, key_project) = match service_account(key.expose()) {
        Ok(parsed) => parsed,
        Err(e) => {
            error("spec.auth.gcp.serviceAccountKey.valueFrom", e);
            return None;
        }
    };
    let Some(project) = gcp.project.clone().or(key_project) else {
        error(
            "spec.auth.gcp.project",
            "required: the key has no `project_id`".into(),
        );
        return None;
    };
    let location = gcp.location.as_str();
    if !is_name(location) {
        error(
            "spec.auth.gcp.location",
            format!("`{location}` is not a region like us-central1 (or `global`)"),
        );
        return None;
    }
    if !is_name(&project) {
        error(
            "spec.auth.gcp.project",
            format!("`{project}` is not a project id"),
        );
        return None;
    }
    let host = match spec.endpoint.as_deref() {
        Some(endpoint) => match crate::compile::base_url(endpoint, "") {
            Ok(host) => host,
            Err(e) => {
                error("spec.endpoint", e);
                return None;
            }
        },
        None if location == "global" => "https://aiplatform.googleapis.com".to_owned(),
        None => format!("https://{location}-aiplatform.googleapis.com"),
    };
    Some(Target::Gemini {
        base_url: format!("{host}/v1/projects/{project}/locations/{location}/publishers/google"),
        service_account: Some(account),
    })
}

/// Vertex AI in express mode: an API key (sent as `x-goog-api-key`) on
/// the global endpoint, no project or location in the path
/// (cloud.google.com/vertex-ai/generative-ai/docs/start/express-mode).
/// Google's models only: Claude's `rawPredict` takes no API key.
fn express_mode(spec: &BackendSpec, error: &mut dyn FnMut(&str, String)) -> Option<Target> {
    if let Some(model) = spec
        .models
        .iter()
        .flatten()
        .find(|m| m.starts_with("claude-"))
    {
        error(
            "spec.models",
            format!("`{model}`: Vertex AI's express mode (an API key) serves Gemini models only; Claude models need `auth.gcp`"),
        );
        return None;
    }
    let host = match spec.endpoint.as_deref() {
        Some(endpoint) => match crate::compile::base_url(endpoint, "") {
            Ok(host) => host,
            Err(e) => {
                error("spec.endpoint", e);
                return None;
            }
        },
        None => "https://aiplatform.googleapis.com".to_owned(),
    };
    Some(Target::Gemini {
        base_url: format!("{host}/v1/publishers/google"),
        service_account: None,
    })
}

/// Lower-case letters, digits and dashes (project ids, regions).
fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The fields of a JSON key file the gateway uses.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    private_key_id: Option<String>,
    private_key: String,
    client_email: String,
    #[serde(default)]
    token_uri: Option<String>,
}

/// Google's OAuth token endpoint, when a key names none.
const TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// Reads a service account JSON key; the error never quotes the key.
fn service_account(json: &str) -> Result<(ServiceAccount, Option<String>), String> {
    let file: KeyFile = serde_json::from_str(json).map_err(|e| {
        format!(
            "not a service account JSON key file (line {}, column {}: {})",
            e.line(),
            e.column(),
            match e.classify() {
                serde_json::error::Category::Data => "a field is missing or of the wrong type",
                _ => "invalid JSON",
            }
        )
    })?;
    if let Some(kind) = file.kind.as_deref().filter(|k| *k != "service_account") {
        return Err(format!(
            "the key's `type` is `{kind}`; a `service_account` key is needed"
        ));
    }
    if !file.private_key.contains("-----BEGIN PRIVATE KEY-----")
        && !file.private_key.contains("-----BEGIN RSA PRIVATE KEY-----")
    {
        return Err("the key's `private_key` is not a PEM private key".into());
    }
    let token_uri = file.token_uri.unwrap_or_else(|| TOKEN_URI.to_owned());
    if !(token_uri.starts_with("https://") || token_uri.starts_with("http://")) {
        return Err(format!("the key's `token_uri` `{token_uri}` is not a URL"));
    }
    Ok((
        ServiceAccount {
            client_email: file.client_email,
            private_key_id: file.private_key_id,
            private_key: Secret::new(file.private_key),
            token_uri,
        },
        file.project_id,
    ))
}
