//! The Kubernetes CustomResourceDefinitions of the four kinds, generated
//! from the serde types of `resources` and `status` (their doc comments
//! become the schema's descriptions, so `kubectl explain` documents every
//! field). `gen-crds` writes them to `charts/sluice/crds/` and `crds/yaml/`;
//! a test fails when the checked-in copies differ.
//!
//! Kubernetes wants *structural* schemas: every type inlined (no `$ref`),
//! no `nullable`, no `additionalProperties: false` next to `properties`.
//! [`structural`] rewrites what schemars produces into that shape. Rules
//! that one field's schema cannot say are CEL rules
//! (`x-kubernetes-validations`), written beside the types in `resources.rs`;
//! they mirror a part of what `compile` checks, which stays the authority.
//! Knows nothing of compiling or serving.

use std::path::{Path, PathBuf};

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{json_schema, JsonSchema, Schema};
use serde_json::{json, Value};

use crate::resources::{AIGatewaySpec, BackendSpec, BudgetSpec, MCPRouteSpec};
use crate::status::{BudgetStatus, ObjectStatus};

/// The API group of the four kinds.
pub const GROUP: &str = "sluice.dev";
/// The one served version.
pub const VERSION: &str = "v1alpha1";
/// The category every kind is in: `kubectl get sluice` lists them all.
pub const CATEGORY: &str = "sluice";
/// The command that regenerates the YAML files.
pub const GENERATE_COMMAND: &str = "cargo run -p sluice-crds --bin gen-crds";

/// What one kind's CRD is made of.
struct KindDef {
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
    spec: Value,
    status: Value,
    spec_required: bool,
    columns: Vec<Value>,
}

/// The CRDs of `AIGateway`, `Backend`, `MCPRoute` and `Budget`, as
/// `apiextensions.k8s.io/v1` objects.
pub fn crds() -> Vec<Value> {
    kinds().iter().map(crd).collect()
}

/// Each CRD as a YAML file: `(file name, text)`, e.g.
/// `("sluice.dev_budgets.yaml", "...")`.
pub fn crd_files() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    kinds()
        .iter()
        .map(|def| {
            let yaml = quote_yaml11_keys(&serde_yaml::to_string(&sorted_yaml(&crd(def)))?);
            let text = format!(
                "# Generated from the sluice-crds crate by `{GENERATE_COMMAND}`; do not edit.\n{yaml}"
            );
            Ok((format!("{GROUP}_{}.yaml", def.plural), text))
        })
        .collect()
}

/// The folders, relative to the repository's root, that hold the generated
/// YAML: the Helm chart's `crds/` (installed by `helm install`) and
/// `crds/yaml/` (for `kubectl apply -f`).
pub const OUTPUT_DIRS: [&str; 2] = ["charts/sluice/crds", "crds/yaml"];

/// Writes every CRD file under `repo` (see [`OUTPUT_DIRS`]) and removes
/// stale generated files; returns the paths written.
pub fn write_files(repo: &Path) -> std::io::Result<Vec<PathBuf>> {
    let files = crd_files().map_err(std::io::Error::other)?;
    let mut written = Vec::new();
    for dir in OUTPUT_DIRS {
        let dir = repo.join(dir);
        std::fs::create_dir_all(&dir)?;
        for stale in generated_names(&dir)? {
            if !files.iter().any(|(name, _)| *name == stale) {
                std::fs::remove_file(dir.join(&stale))?;
            }
        }
        for (name, text) in &files {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// The generated files under `repo` that are missing, differ from what
/// [`crd_files`] makes, or are left over from a kind that is gone.
pub fn drifted_files(repo: &Path) -> std::io::Result<Vec<PathBuf>> {
    let files = crd_files().map_err(std::io::Error::other)?;
    let mut drifted = Vec::new();
    for dir in OUTPUT_DIRS {
        let dir = repo.join(dir);
        for (name, text) in &files {
            let path = dir.join(name);
            if std::fs::read_to_string(&path).ok().as_ref() != Some(text) {
                drifted.push(path);
            }
        }
        if dir.is_dir() {
            for name in generated_names(&dir)? {
                if !files.iter().any(|(generated, _)| *generated == name) {
                    drifted.push(dir.join(name));
                }
            }
        }
    }
    Ok(drifted)
}

/// Names of the files in `dir` that look generated (`sluice.dev_*.yaml`).
fn generated_names(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    if !dir.is_dir() {
        return Ok(names);
    }
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{GROUP}_")) && name.ends_with(".yaml") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The structural schema of a spec or status type.
pub fn schema_for<T: JsonSchema>() -> Value {
    let settings = SchemaSettings::openapi3().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
    });
    let mut schema = SchemaGenerator::new(settings)
        .into_root_schema_for::<T>()
        .to_value();
    // The root's title is the Rust type's name, not for users.
    if let Some(map) = schema.as_object_mut() {
        map.remove("title");
    }
    structural(&mut schema);
    schema
}

fn kinds() -> Vec<KindDef> {
    let accepted = column(
        "Accepted",
        "string",
        r#".status.conditions[?(@.type=="Accepted")].status"#,
        "Whether the object compiled.",
        0,
    );
    let programmed = column(
        "Programmed",
        "string",
        r#".status.conditions[?(@.type=="Programmed")].status"#,
        "Whether the proxies run it.",
        0,
    );
    let age = column(
        "Age",
        "date",
        ".metadata.creationTimestamp",
        "When the object was created.",
        0,
    );
    vec![
        KindDef {
            kind: "AIGateway",
            plural: "aigateways",
            short_names: &["aigw"],
            spec: schema_for::<AIGatewaySpec>(),
            status: schema_for::<ObjectStatus>(),
            spec_required: false,
            columns: vec![
                accepted.clone(),
                programmed.clone(),
                column(
                    "State",
                    "string",
                    ".spec.state.type",
                    "Where limit and budget counters live (unset: memory).",
                    1,
                ),
                age.clone(),
            ],
        },
        KindDef {
            kind: "Backend",
            plural: "backends",
            short_names: &["be"],
            spec: schema_for::<BackendSpec>(),
            status: schema_for::<ObjectStatus>(),
            spec_required: true,
            columns: vec![
                column(
                    "Provider",
                    "string",
                    ".spec.provider",
                    "The provider's API.",
                    0,
                ),
                column(
                    "Endpoint",
                    "string",
                    ".spec.endpoint",
                    "Base URL of the API (unset: the provider's default).",
                    0,
                ),
                accepted.clone(),
                programmed.clone(),
                age.clone(),
            ],
        },
        KindDef {
            kind: "MCPRoute",
            plural: "mcproutes",
            short_names: &["mcpr"],
            spec: schema_for::<MCPRouteSpec>(),
            status: schema_for::<ObjectStatus>(),
            spec_required: true,
            columns: vec![
                column("Path", "string", ".spec.path", "The path served.", 0),
                column(
                    "Prefix Mode",
                    "string",
                    ".spec.prefixMode",
                    "How tool names are prefixed (unset: Always).",
                    1,
                ),
                accepted.clone(),
                programmed,
                age.clone(),
            ],
        },
        KindDef {
            kind: "Budget",
            plural: "budgets",
            short_names: &["bgt"],
            spec: schema_for::<BudgetSpec>(),
            status: schema_for::<BudgetStatus>(),
            spec_required: true,
            columns: vec![
                column(
                    "Tenant",
                    "string",
                    ".spec.tenant",
                    "The tenant the budget applies to.",
                    0,
                ),
                column(
                    "Spent",
                    "string",
                    ".status.spent.cost",
                    "USD spent in the current window of the first cost limit.",
                    0,
                ),
                column(
                    "Limit",
                    "string",
                    ".spec.limits[?(@.cost)].cost",
                    "USD allowed per window by the first cost limit.",
                    0,
                ),
                column(
                    "Tokens",
                    "integer",
                    ".status.spent.tokens",
                    "Tokens spent in the current window of the first tokens limit.",
                    0,
                ),
                column(
                    "Resets",
                    "string",
                    ".status.resetsAt",
                    "When the first of the limits' windows ends.",
                    0,
                ),
                column(
                    "Remaining",
                    "string",
                    ".status.remaining.cost",
                    "USD left in the current window of the first cost limit.",
                    1,
                ),
                accepted,
                age,
            ],
        },
    ]
}

fn column(name: &str, kind: &str, path: &str, description: &str, priority: u32) -> Value {
    let mut column = json!({
        "name": name,
        "type": kind,
        "jsonPath": path,
        "description": description,
    });
    if priority > 0 {
        column["priority"] = json!(priority);
    }
    column
}

fn crd(def: &KindDef) -> Value {
    let singular = def.kind.to_ascii_lowercase();
    let description = def
        .spec
        .get("description")
        .cloned()
        .unwrap_or_else(|| json!(def.kind));
    let mut root = json!({
        "type": "object",
        "description": description,
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "Versioned schema of this object: sluice.dev/v1alpha1.",
            },
            "kind": {
                "type": "string",
                "description": format!("The kind of this object: {}.", def.kind),
            },
            "metadata": {"type": "object"},
            "spec": def.spec,
            "status": def.status,
        },
    });
    if def.spec_required {
        root["required"] = json!(["spec"]);
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{}.{GROUP}", def.plural),
            "labels": {"app.kubernetes.io/part-of": "sluice"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": def.kind,
                "listKind": format!("{}List", def.kind),
                "plural": def.plural,
                "singular": singular,
                "shortNames": def.short_names,
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": def.columns,
                "schema": {"openAPIV3Schema": root},
            }],
        },
    })
}

/// Rewrites a schemars schema into a Kubernetes structural schema:
/// drops `$schema`, `title` (folded into `description`), `default` (the
/// API server would write defaults into objects; serde supplies them),
/// `nullable` (an explicit `null` is then pruned, as serde treats a
/// missing field), `additionalProperties: false` (unknown fields are
/// pruned, and `kubectl` rejects them) and the `uint*` formats Kubernetes
/// does not know.
fn structural(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("$schema");
            map.remove("default");
            map.remove("nullable");
            if map.get("additionalProperties") == Some(&Value::Bool(false)) {
                map.remove("additionalProperties");
            }
            if map
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| f.starts_with("uint"))
            {
                map.remove("format");
            }
            if let Some(Value::String(title)) = map.remove("title") {
                let description = match map.get("description").and_then(Value::as_str) {
                    Some(rest) => format!("{title}\n\n{rest}"),
                    None => title,
                };
                map.insert("description".into(), Value::String(description));
            }
            if let Some(Value::String(description)) = map.get_mut("description") {
                *description = unwrap_lines(description);
            }
            // An `enum` on an optional field must not list `null`.
            if let Some(Value::Array(values)) = map.get_mut("enum") {
                values.retain(|v| !v.is_null());
            }
            for child in map.values_mut() {
                structural(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(structural),
        _ => {}
    }
}

/// Words that YAML 1.1 reads as booleans. kubectl and Helm read YAML with
/// `sigs.k8s.io/yaml`, which follows YAML 1.1: an unquoted key `on:` would
/// reach the API server as `"true"`.
const YAML11_BOOLEANS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
    "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
];

/// Quotes the mapping keys of `yaml` (as serde_yaml writes it: one key per
/// line, block style) that YAML 1.1 would read as booleans.
fn quote_yaml11_keys(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start_matches([' ', '-']).len();
        let (lead, rest) = line.split_at(indent);
        match rest.split_once(':') {
            Some((key, value))
                if YAML11_BOOLEANS.contains(&key)
                    && (value.is_empty() || value.starts_with(' ')) =>
            {
                out.push_str(&format!("{lead}'{key}':{value}"));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Joins the lines of each paragraph of a doc comment, so `kubectl explain`
/// wraps them to the terminal.
fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .split('\n')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A copy of `value` whose mappings have their keys in sorted order, so the
/// YAML does not depend on serde_json's `preserve_order` feature.
fn sorted_yaml(value: &Value) -> serde_yaml::Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut mapping = serde_yaml::Mapping::new();
            for key in keys {
                if let Some(child) = map.get(key) {
                    mapping.insert(serde_yaml::Value::String(key.clone()), sorted_yaml(child));
                }
            }
            serde_yaml::Value::Mapping(mapping)
        }
        Value::Array(items) => serde_yaml::Value::Sequence(items.iter().map(sorted_yaml).collect()),
        Value::String(s) => serde_yaml::Value::String(s.clone()),
        Value::Bool(b) => serde_yaml::Value::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => serde_yaml::Value::Number(u.into()),
            (_, Some(i), _) => serde_yaml::Value::Number(i.into()),
            (_, _, Some(f)) => serde_yaml::Value::Number(f.into()),
            _ => serde_yaml::Value::Null,
        },
        Value::Null => serde_yaml::Value::Null,
    }
}

/// An integer or a decimal string (budget amounts: tokens and requests are
/// integers, USD a string).
pub(crate) fn int_or_string(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
    })
}

/// `status.conditions`: a list of [`Condition`](crate::status::Condition)s,
/// one per type (a map list keyed by `type`, so server-side apply merges
/// them by type).
pub(crate) fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let items = generator.subschema_for::<crate::status::Condition>();
    json_schema!({
        "type": "array",
        "items": items,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    })
}

#[cfg(test)]
#[path = "crd_tests.rs"]
mod tests;
