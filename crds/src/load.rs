//! Loading a standalone config: `${ENV}` substitution, multi-document YAML,
//! and typed decoding of each document with the field path of any error.
//! Knows nothing of what the objects mean; that is `compile`'s job.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::ConfigError;
use crate::resources::{AIGatewaySpec, BackendSpec, BudgetSpec, MCPRouteSpec, ObjectMeta};
use crate::API_VERSION;

/// One decoded object.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    /// An `AIGateway`.
    AIGateway(ObjectMeta, AIGatewaySpec),
    /// A `Backend`.
    Backend(ObjectMeta, BackendSpec),
    /// An `MCPRoute`.
    MCPRoute(ObjectMeta, MCPRouteSpec),
    /// A `Budget`.
    Budget(ObjectMeta, BudgetSpec),
}

impl Document {
    /// `Kind/name`, as errors name objects.
    pub fn id(&self) -> String {
        let (kind, meta) = match self {
            Self::AIGateway(m, _) => ("AIGateway", m),
            Self::Backend(m, _) => ("Backend", m),
            Self::MCPRoute(m, _) => ("MCPRoute", m),
            Self::Budget(m, _) => ("Budget", m),
        };
        format!("{kind}/{}", meta.name)
    }
}

/// The documents of one or more files, the errors met while decoding them,
/// and a hash of the sources.
#[derive(Debug, Clone, Default)]
pub struct LoadedConfig {
    /// Decoded objects, in file order.
    pub documents: Vec<Document>,
    /// Problems found while decoding (the objects concerned are left out).
    pub errors: Vec<ConfigError>,
    /// `sha256:` of the raw sources, as `/config` reports it.
    pub hash: String,
}

/// Replaces `${NAME}` with the environment variable's value (`$${` is a
/// literal `${`). Every unset variable is reported with its line.
pub fn substitute_env(
    source: &str,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<ConfigError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find("${") {
        if pos > 0 && rest.as_bytes()[pos - 1] == b'$' {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let line = text.len() - rest.len() + pos;
        let line = text[..line].matches('\n').count() + 1;
        let Some(end) = after.find('}') else {
            errors.push(ConfigError::new(
                format!("{source}:{line}"),
                "",
                "`${` without a closing `}`",
            ));
            rest = "";
            break;
        };
        let name = &after[..end];
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            errors.push(ConfigError::new(
                format!("{source}:{line}"),
                "",
                format!("`${{{name}}}` is not a valid variable name"),
            ));
        } else {
            match lookup(name) {
                Some(value) => out.push_str(&value),
                None => errors.push(ConfigError::new(
                    format!("{source}:{line}"),
                    "",
                    format!("environment variable {name} is not set"),
                )),
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The envelope every document has.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Envelope {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<serde_yaml::Value>,
    #[serde(default)]
    spec: Option<serde_yaml::Value>,
    /// Written by the controller; ignored on input.
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<serde_yaml::Value>,
}

/// Decodes the multi-document YAML `sources` (`(name, text)` pairs, already
/// substituted). Each document is decoded independently, so one bad document
/// does not hide the errors of another.
pub fn load_documents(sources: &[(String, String)]) -> LoadedConfig {
    let mut loaded = LoadedConfig::default();
    let mut hasher = Sha256::new();
    for (source, text) in sources {
        hasher.update(source.as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
        for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let at = format!("{source}#{}", index + 1);
            let value = match serde_yaml::Value::deserialize(doc) {
                Ok(serde_yaml::Value::Null) => continue,
                Ok(value) => value,
                Err(e) => {
                    loaded
                        .errors
                        .push(ConfigError::new(at, "", format!("not valid YAML: {e}")));
                    // The YAML stream cannot be resynchronised after a syntax error.
                    break;
                }
            };
            match decode(&at, value) {
                Ok(document) => loaded.documents.push(document),
                Err(error) => loaded.errors.push(error),
            }
        }
    }
    loaded.hash = format!("sha256:{:x}", hasher.finalize());
    loaded
}

/// Decodes one object (`{apiVersion, kind, metadata, spec}`) found at `at`
/// (a file position, or `Kind/name` for an object the controller read).
pub fn decode_document(at: &str, value: serde_yaml::Value) -> Result<Document, ConfigError> {
    decode(at, value)
}

fn decode(at: &str, value: serde_yaml::Value) -> Result<Document, ConfigError> {
    let envelope: Envelope = serde_path_to_error::deserialize(value)
        .map_err(|e| ConfigError::new(at, e.path().to_string(), e.inner().to_string()))?;
    if let Some(version) = &envelope.api_version {
        if version != API_VERSION {
            return Err(ConfigError::new(
                at,
                "apiVersion",
                format!("unsupported apiVersion `{version}`; expected `{API_VERSION}`"),
            ));
        }
    }
    let Some(kind) = envelope.kind else {
        return Err(ConfigError::new(
            at,
            "kind",
            "missing; expected one of AIGateway, Backend, MCPRoute, Budget",
        ));
    };
    let metadata: ObjectMeta = match envelope.metadata {
        Some(value) => serde_path_to_error::deserialize(value).map_err(|e| {
            ConfigError::new(at, format!("metadata.{}", e.path()), e.inner().to_string())
        })?,
        None => ObjectMeta::default(),
    };
    if metadata.name.is_empty() {
        return Err(ConfigError::new(
            format!("{kind} at {at}"),
            "metadata.name",
            "missing; every object needs a name",
        ));
    }
    let object = format!("{kind}/{}", metadata.name);
    let spec = envelope.spec.unwrap_or(serde_yaml::Value::Null);
    let spec = match spec {
        serde_yaml::Value::Null => serde_yaml::Value::Mapping(Default::default()),
        other => other,
    };
    match kind.as_str() {
        "AIGateway" => spec_of(&object, spec).map(|s| Document::AIGateway(metadata, s)),
        "Backend" => spec_of(&object, spec).map(|s| Document::Backend(metadata, s)),
        "MCPRoute" => spec_of(&object, spec).map(|s| Document::MCPRoute(metadata, s)),
        "Budget" => spec_of(&object, spec).map(|s| Document::Budget(metadata, s)),
        other => Err(ConfigError::new(
            object,
            "kind",
            format!("unknown kind `{other}`; expected one of AIGateway, Backend, MCPRoute, Budget"),
        )),
    }
}

fn spec_of<T: DeserializeOwned>(object: &str, spec: serde_yaml::Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "spec".to_owned()
        } else {
            format!("spec.{path}")
        };
        ConfigError::new(object, field, e.inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("8080".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_and_reports_unset_variables() {
        assert_eq!(
            substitute_env("f", "listen: 127.0.0.1:${PORT}${EMPTY}", &env),
            Ok("listen: 127.0.0.1:8080".to_owned())
        );
        assert_eq!(
            substitute_env("f", "a: $${PORT}", &env),
            Ok("a: ${PORT}".to_owned())
        );
        let errors = substitute_env("f", "a: 1\nb: ${NOPE}\nc: ${ALSO_NOPE}", &env).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(
            errors[0].to_string(),
            "f:2: environment variable NOPE is not set"
        );
        assert_eq!(errors[1].object, "f:3");
        assert!(substitute_env("f", "a: ${BROKEN", &env).is_err());
        assert!(substitute_env("f", "a: ${no-dash}", &env).is_err());
    }

    #[test]
    fn decodes_documents_and_names_bad_fields() {
        let text = r#"
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: openai}
spec: {provider: OpenAI}
---
kind: Backend
metadata: {name: typo}
spec: {provider: OpenAI, endpointt: "http://x"}
---
kind: Gadget
metadata: {name: g}
---
kind: AIGateway
metadata: {name: default}
spec:
  llm:
    routes:
      - models: [a]
        backends: [{backend: openai, weight: "heavy"}]
"#;
        let loaded = load_documents(&[("gw.yaml".into(), text.into())]);
        assert_eq!(loaded.documents.len(), 1);
        assert_eq!(loaded.documents[0].id(), "Backend/openai");
        let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("Backend/typo: spec.endpointt: unknown field `endpointt`"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].starts_with("Gadget/g: kind: unknown kind `Gadget`"),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].starts_with(
                "AIGateway/default: spec.llm.routes[0].backends[0].weight: invalid type"
            ),
            "{}",
            errors[2]
        );
        assert!(loaded.hash.starts_with("sha256:"));
    }

    #[test]
    fn rejects_wrong_api_version_and_missing_names() {
        let text = "apiVersion: v1\nkind: Backend\nmetadata: {name: a}\n---\nkind: Backend\nspec: {provider: OpenAI}\n---\n: : :\n";
        let loaded = load_documents(&[("x.yaml".into(), text.into())]);
        assert!(loaded.documents.is_empty());
        assert_eq!(loaded.errors.len(), 3, "{:?}", loaded.errors);
        assert_eq!(loaded.errors[0].field, "apiVersion");
        assert_eq!(loaded.errors[1].field, "metadata.name");
        assert!(loaded.errors[2].message.contains("not valid YAML"));
    }
}
