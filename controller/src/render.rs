//! Objects -> config bundle -> compile -> a verdict per object. The same
//! decode and compile as `sluice run` (through [`ConfigBundle::compile`]),
//! so an object is judged the same way in a file and in a cluster. Pure:
//! knows nothing of the API server, the stream or leadership.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use sluice_crds::bundle::{BundleSecrets, SecretValues};
use sluice_crds::compile::{compile, SecretSource};
use sluice_crds::resources::ValueFrom;
use sluice_crds::values::Secret;
use sluice_crds::{ConfigBundle, API_VERSION};

use crate::objects::{ObjectKey, Objects, SourceObject};

/// Why a reference did not resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefProblem {
    /// A `secretKeyRef` names a Secret or key that is not there.
    SecretNotFound,
    /// A route names a Backend that does not exist.
    BackendNotFound,
}

impl RefProblem {
    /// The condition reason.
    pub fn reason(self) -> &'static str {
        match self {
            RefProblem::SecretNotFound => "SecretNotFound",
            RefProblem::BackendNotFound => "BackendNotFound",
        }
    }
}

/// What compile said about one object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Errors in the object itself (`field: message`).
    pub invalid: Vec<String>,
    /// References that did not resolve.
    pub unresolved: Vec<(RefProblem, String)>,
}

impl Verdict {
    /// Whether the object has no error of its own.
    pub fn is_clean(&self) -> bool {
        self.invalid.is_empty() && self.unresolved.is_empty()
    }
}

/// The outcome of rendering the namespace.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    /// The config to publish (its `version` is 0: the hub numbers it), or
    /// `None` when it does not compile.
    pub bundle: Option<ConfigBundle>,
    /// Every object's verdict.
    pub verdicts: BTreeMap<ObjectKey, Verdict>,
    /// Objects with errors, in order (`Kind/name`).
    pub failing: Vec<String>,
    /// Errors that name no object of the namespace.
    pub other_errors: Vec<String>,
    /// Whether the proxies share their counters (a Redis store), so each
    /// reports the fleet's spend rather than its own.
    pub shared_counters: bool,
}

/// The bundle document of an object: what a config file would hold.
pub fn document(object: &SourceObject) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": object.key.kind.as_str(),
        "metadata": {"name": object.key.name},
        "spec": object.spec,
    })
}

/// Every `secretKeyRef` in a document, as (Secret name, key).
fn secret_refs(value: &serde_json::Value, out: &mut BTreeSet<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (field, inner) in map {
                if field == "secretKeyRef" {
                    if let (Some(name), Some(key)) = (
                        inner.get("name").and_then(|v| v.as_str()),
                        inner.get("key").and_then(|v| v.as_str()),
                    ) {
                        out.insert((name.to_owned(), key.to_owned()));
                    }
                }
                secret_refs(inner, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| secret_refs(v, out)),
        _ => {}
    }
}

/// Reads secrets as a proxy will, and remembers each failure, so that the
/// errors it caused can be told apart from errors in the objects.
struct Recording<'a> {
    inner: BundleSecrets<'a>,
    failures: RefCell<BTreeSet<String>>,
}

impl SecretSource for Recording<'_> {
    fn get(&self, from: &ValueFrom) -> Result<Secret, String> {
        let result = self.inner.get(from);
        if let (Err(message), Some(_)) = (&result, &from.secret_key_ref) {
            self.failures.borrow_mut().insert(message.clone());
        }
        result
    }
}

/// Renders and compiles the objects. Objects are ordered by kind and name,
/// so the same objects always make the same bundle (and hash).
pub fn render(objects: &Objects) -> Rendered {
    let mut sorted: Vec<&SourceObject> = objects.objects.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let documents: Vec<serde_json::Value> = sorted.iter().map(|o| document(o)).collect();

    let mut wanted = BTreeSet::new();
    documents.iter().for_each(|d| secret_refs(d, &mut wanted));
    let mut secrets = SecretValues::new();
    for (name, key) in wanted {
        let Some(data) = objects.secrets.get(&name) else {
            continue;
        };
        let keys = secrets.entry(name).or_default();
        // The keys that exist are named in "no such key" errors; their
        // values stay out of the bundle unless referenced.
        for present in data.keys() {
            keys.entry(present.clone()).or_default();
        }
        if let Some(value) = data.get(&key) {
            keys.insert(key, value.clone());
        }
    }
    let bundle = ConfigBundle {
        version: 0,
        documents,
        secrets,
    };

    let recording = Recording {
        inner: BundleSecrets(&bundle.secrets),
        failures: RefCell::default(),
    };
    let loaded = bundle.load();
    let result = compile(&loaded, &recording);
    let failures = recording.failures.into_inner();

    let mut rendered = Rendered {
        verdicts: sorted
            .iter()
            .map(|o| (o.key.clone(), Verdict::default()))
            .collect(),
        ..Rendered::default()
    };
    match result {
        Ok(snapshot) => {
            rendered.shared_counters = !matches!(
                snapshot.state,
                sluice_crds::snapshot::StateStore::Memory { .. }
            );
            rendered.bundle = Some(strip_unreferenced(bundle));
        }
        Err(errors) => {
            for error in errors.0 {
                let text = if error.field.is_empty() {
                    error.message.clone()
                } else {
                    format!("{}: {}", error.field, error.message)
                };
                let verdict = rendered
                    .verdicts
                    .iter_mut()
                    .find(|(key, _)| key.to_string() == error.object);
                let Some((key, verdict)) = verdict else {
                    rendered.other_errors.push(error.to_string());
                    continue;
                };
                if failures.contains(&error.message) {
                    verdict.unresolved.push((RefProblem::SecretNotFound, text));
                } else if error.message.starts_with("no Backend named") {
                    verdict.unresolved.push((RefProblem::BackendNotFound, text));
                } else {
                    verdict.invalid.push(text);
                }
                let id = key.to_string();
                if !rendered.failing.contains(&id) {
                    rendered.failing.push(id);
                }
            }
        }
    }
    rendered
}

/// Drops the key names kept only for error messages (empty values that
/// no object references).
fn strip_unreferenced(mut bundle: ConfigBundle) -> ConfigBundle {
    let mut wanted = BTreeSet::new();
    bundle
        .documents
        .iter()
        .for_each(|d| secret_refs(d, &mut wanted));
    for (name, keys) in &mut bundle.secrets {
        keys.retain(|key, _| wanted.contains(&(name.clone(), key.clone())));
    }
    bundle.secrets.retain(|_, keys| !keys.is_empty());
    bundle
}

#[cfg(test)]
#[path = "render_tests.rs"]
pub(crate) mod tests;
