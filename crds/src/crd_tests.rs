//! Tests of the generated CRDs: the checked-in YAML is current, the schemas
//! are structural and documented, the printer columns point at real fields,
//! and every object in the docs fits its kind's schema.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;

fn repo() -> PathBuf {
    // At run time: cargo may reuse a test binary built from another
    // checkout that shares the target dir.
    let manifest = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    Path::new(&manifest).join("..")
}

fn crd_of(kind: &str) -> Value {
    crds()
        .into_iter()
        .find(|crd| crd["spec"]["names"]["kind"] == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"))
}

fn root_schema(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
}

#[test]
fn checked_in_yaml_is_up_to_date() {
    let drifted = drifted_files(&repo()).unwrap();
    assert!(
        drifted.is_empty(),
        "the CRD YAML differs from the sluice-crds types: {drifted:?}\nrun `{GENERATE_COMMAND}` to update"
    );
}

#[test]
fn checked_in_reference_page_is_up_to_date() {
    let drifted = crate::reference::reference_drifted(&repo());
    assert!(
        drifted.is_none(),
        "{} differs from the CRDs it documents (a field, description, rule or column changed)\nrun `{GENERATE_COMMAND}` to update it (it also rewrites the CRD YAML)",
        crate::reference::REFERENCE_PATH
    );
}

#[test]
fn yaml_11_boolean_keys_are_quoted() {
    let quoted = quote_yaml11_keys("a:\n  on:\n    - off: 1\n  'no': x\n  only: on\n");
    assert_eq!(
        quoted,
        "a:\n  'on':\n    - 'off': 1\n  'no': x\n  only: on\n"
    );
    let (_, aigateway) = crd_files()
        .unwrap()
        .into_iter()
        .find(|(name, _)| name.contains("aigateways"))
        .unwrap();
    assert!(aigateway.contains("'on':"), "retry.on is not quoted");
    assert!(!aigateway.lines().any(|l| l.trim_start() == "on:"));
}

#[test]
fn four_namespaced_kinds_in_the_sluice_category() {
    let crds = crds();
    let kinds: Vec<&str> = crds
        .iter()
        .map(|c| c["spec"]["names"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["AIGateway", "Backend", "MCPRoute", "Budget"]);
    for crd in &crds {
        let names = &crd["spec"]["names"];
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(names["categories"], json!(["sluice"]));
        assert!(!names["shortNames"].as_array().unwrap().is_empty());
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert_eq!(version["subresources"], json!({"status": {}}));
        let status = &root_schema(crd)["properties"]["status"]["properties"];
        let conditions = &status["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(
            conditions["items"]["required"],
            json!(["type", "status", "reason", "message", "lastTransitionTime"])
        );
        assert!(conditions["items"]["properties"]["observedGeneration"].is_object());
    }
    let budget = crd_of("Budget");
    let status = &root_schema(&budget)["properties"]["status"]["properties"];
    for field in ["spent", "remaining", "resetsAt", "limits"] {
        assert!(status[field].is_object(), "Budget status has no {field}");
    }
}

/// Walks every schema node: `path` names it for failure messages.
fn walk<'a>(schema: &'a Value, path: String, visit: &mut dyn FnMut(&str, &'a Value)) {
    visit(&path, schema);
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            walk(child, format!("{path}.{name}"), visit);
        }
    }
    if let Some(items) = schema.get("items") {
        walk(items, format!("{path}[]"), visit);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        walk(values, format!("{path}{{}}"), visit);
    }
}

#[test]
fn schemas_are_structural_and_every_field_is_described() {
    let mut problems = Vec::new();
    for crd in crds() {
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
        let root = root_schema(&crd);
        let text = root.to_string();
        for forbidden in [
            "$ref",
            "$defs",
            "definitions",
            "anyOf",
            "oneOf",
            "allOf",
            "nullable",
        ] {
            if text.contains(&format!("\"{forbidden}\"")) {
                problems.push(format!("{kind}: the schema has `{forbidden}`"));
            }
        }
        walk(root, kind.clone(), &mut |path, node| {
            let is_metadata = path == format!("{kind}.metadata");
            let typed = node.get("type").is_some()
                || node.get("x-kubernetes-int-or-string") == Some(&json!(true));
            if !typed {
                problems.push(format!("{path}: no type"));
            }
            if node.get("additionalProperties") == Some(&json!(false)) {
                problems.push(format!("{path}: additionalProperties: false"));
            }
            if node.get("properties").is_some() && node.get("additionalProperties").is_some() {
                problems.push(format!("{path}: both properties and additionalProperties"));
            }
            let is_item = path.ends_with("[]") || path.ends_with("{}");
            let described = node
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| !d.trim().is_empty());
            if !described && !is_metadata && !is_item {
                problems.push(format!("{path}: no description"));
            }
            if node.get("type") == Some(&json!("object"))
                && node.get("properties").is_none()
                && node.get("additionalProperties").is_none()
                && node.get("x-kubernetes-preserve-unknown-fields").is_none()
                && !is_metadata
            {
                problems.push(format!("{path}: an object with no fields"));
            }
        });
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The schema node a simple JSON path (`.spec.limits[?(@.cost)].cost`)
/// points at, if any.
fn resolve<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let without_filters = regex::Regex::new(r"\[[^\]]*\]")
        .unwrap()
        .replace_all(path, "[]");
    let mut node = root;
    for part in without_filters.trim_start_matches('.').split('.') {
        let (name, indexed) = match part.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (part, false),
        };
        if name == "metadata" && node == root {
            return Some(&root["properties"]["metadata"]);
        }
        node = node.get("properties")?.get(name)?;
        if indexed {
            node = node.get("items")?;
        }
    }
    Some(node)
}

#[test]
fn printer_columns_point_at_fields() {
    for crd in crds() {
        let root = root_schema(&crd);
        let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap();
        assert!(columns.len() >= 3);
        for column in columns {
            let path = column["jsonPath"].as_str().unwrap();
            assert!(
                resolve(root, path).is_some(),
                "{}: column {} points at {path}, which the schema does not have",
                crd["metadata"]["name"],
                column["name"]
            );
            assert!(column["description"].is_string());
        }
    }
    let names: Vec<Value> = crd_of("Budget")["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    for name in ["Tenant", "Spent", "Limit", "Resets"] {
        assert!(
            names.contains(&json!(name)),
            "no {name} column in {names:?}"
        );
    }
    assert!(resolve(root_schema(&crd_of("Budget")), ".spec.nothing").is_none());
}

/// A small check of a value against a structural schema: types, required
/// and unknown fields (the API server prunes them; `kubectl` refuses them),
/// enums, lengths, ranges and patterns. CEL rules are not evaluated here
/// (`e2e/kube/chart_test.sh --server-dry-run` sends the docs' objects to a
/// real API server).
fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if schema.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            errors.push(format!("{path}: not an integer or a string"));
        }
        return;
    }
    let kind = schema["type"].as_str().unwrap_or_default();
    let fits = match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !fits {
        errors.push(format!("{path}: not of type {kind}: {value}"));
        return;
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        if !values.contains(value) {
            errors.push(format!("{path}: {value} is not one of {values:?}"));
        }
    }
    if let Some(text) = value.as_str() {
        let length = text.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|min| length < min)
        {
            errors.push(format!("{path}: shorter than minLength"));
        }
        if schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|max| length > max)
        {
            errors.push(format!("{path}: longer than maxLength"));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            if !regex::Regex::new(pattern).unwrap().is_match(text) {
                errors.push(format!("{path}: `{text}` does not match {pattern}"));
            }
        }
    }
    if let Some(number) = value.as_f64() {
        if schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|min| number < min)
        {
            errors.push(format!("{path}: {number} is below the minimum"));
        }
        if schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|max| number > max)
        {
            errors.push(format!("{path}: {number} is above the maximum"));
        }
    }
    if let Some(items) = value.as_array() {
        if schema
            .get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|min| (items.len() as u64) < min)
        {
            errors.push(format!("{path}: fewer items than minItems"));
        }
        for (i, item) in items.iter().enumerate() {
            check(&schema["items"], item, &format!("{path}[{i}]"), errors);
        }
    }
    if let Some(fields) = value.as_object() {
        if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true)) {
            return;
        }
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = required.as_str().unwrap_or_default();
            if !fields.contains_key(name) {
                errors.push(format!("{path}.{name}: required"));
            }
        }
        for (name, field) in fields {
            let child = format!("{path}.{name}");
            match (schema.get("properties"), schema.get("additionalProperties")) {
                (Some(properties), _) => match properties.get(name) {
                    Some(property) => check(property, field, &child, errors),
                    None => errors.push(format!("{child}: unknown field")),
                },
                (None, Some(values)) => check(values, field, &child, errors),
                (None, None) => errors.push(format!("{child}: unknown field")),
            }
        }
    }
}

fn spec_errors(kind: &str, spec: &Value) -> Vec<String> {
    let crd = crd_of(kind);
    let mut errors = Vec::new();
    check(
        &root_schema(&crd)["properties"]["spec"],
        spec,
        &format!("{kind}.spec"),
        &mut errors,
    );
    errors
}

/// Every object (with a `kind`) in the YAML blocks of the docs.
fn doc_objects() -> Vec<(String, Value)> {
    let mut objects = Vec::new();
    let mut sources: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    sources.push(repo().join("README.md"));
    sources.sort();
    for source in sources {
        let text = std::fs::read_to_string(&source).unwrap();
        for (n, block) in text.split("```yaml\n").skip(1).enumerate() {
            let block = block.split("```").next().unwrap_or_default();
            // Some blocks are fragments with `...`; only whole objects count.
            let Ok(documents) = serde_yaml::Deserializer::from_str(block)
                .map(serde::Deserialize::deserialize)
                .collect::<Result<Vec<Value>, _>>()
            else {
                continue;
            };
            for document in documents {
                if document.get("kind").is_some() {
                    let name = format!(
                        "{}#{} {}",
                        source.file_name().unwrap().to_string_lossy(),
                        n + 1,
                        document["kind"].as_str().unwrap_or_default()
                    );
                    objects.push((name, document));
                }
            }
        }
    }
    objects
}

#[test]
fn every_object_in_the_docs_fits_its_schema() {
    let objects = doc_objects();
    let mut errors = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (name, object) in &objects {
        let kind = object["kind"].as_str().unwrap();
        if !["AIGateway", "Backend", "MCPRoute", "Budget"].contains(&kind) {
            continue; // e.g. the Secret of an example
        }
        seen.insert(kind.to_owned());
        let spec = object.get("spec").cloned().unwrap_or(json!({}));
        for error in spec_errors(kind, &spec) {
            errors.push(format!("{name}: {error}"));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert!(
        objects.len() >= 10,
        "only {} objects found in docs/",
        objects.len()
    );
    assert_eq!(seen.len(), 4, "kinds found in docs/: {seen:?}");
}

#[test]
fn the_check_refuses_what_the_api_server_would() {
    let cases = [
        (
            "Budget",
            json!({"limits": [{"cost": "1", "period": "Daily"}]}),
            "tenant: required",
        ),
        (
            "Budget",
            json!({"tenant": "a", "limits": []}),
            "fewer items than minItems",
        ),
        (
            "Budget",
            json!({"tenant": "a", "limits": [{"cost": "1", "period": "Yearly"}]}),
            "is not one of",
        ),
        (
            "Budget",
            json!({"tenant": "a", "limits": [{"cost": "-1", "period": "Daily"}]}),
            "does not match",
        ),
        (
            "Budget",
            json!({"tenant": "a", "limits": [{"tokens": 0, "period": "Daily"}]}),
            "below the minimum",
        ),
        (
            "Backend",
            json!({"provider": "OpenAI", "endpoint": "ftp://x"}),
            "does not match",
        ),
        (
            "Backend",
            json!({"provider": "OpenAI", "extra": 1}),
            "unknown field",
        ),
        (
            "MCPRoute",
            json!({"path": "/mcp", "backends": [{"backend": "x", "prefix": "a b"}]}),
            "does not match",
        ),
        (
            "AIGateway",
            json!({"state": {"type": "etcd"}}),
            "is not one of",
        ),
        (
            "AIGateway",
            json!({"llm": {"routes": [{"models": ["m"], "backends": [{"backend": "b", "weight": -1}]}]}}),
            "below the minimum",
        ),
    ];
    for (kind, spec, expected) in cases {
        let errors = spec_errors(kind, &spec);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{kind} {spec}: expected an error with `{expected}`, got {errors:?}"
        );
    }
    let aws = json!({"provider": "Bedrock", "auth": {"aws": {"region": "eu-west-1",
        "accessKeyId": {"valueFrom": {"env": "AWS_ACCESS_KEY_ID"}},
        "secretAccessKey": {"valueFrom": {"secretKeyRef": {"name": "aws", "key": "secret"}}}}}});
    assert_eq!(spec_errors("Backend", &aws), Vec::<String>::new());
    let unknown = json!({"provider": "Bedrock", "auth": {"aws": {"region": "eu-west-1", "any": {"thing": 1}}}});
    assert!(!spec_errors("Backend", &unknown).is_empty());
}

#[test]
fn cel_rules_name_fields_the_schema_has() {
    // Every `self.x` a rule reads must be a field of the object the rule is on.
    let field = regex::Regex::new(r"self\.([A-Za-z]+)").unwrap();
    let mut checked = 0;
    for crd in crds() {
        walk(root_schema(&crd), String::new(), &mut |path, node| {
            for rule in node
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let text = rule["rule"].as_str().unwrap();
                assert!(
                    rule["message"].is_string(),
                    "{path}: rule {text} has no message"
                );
                for name in field.captures_iter(text) {
                    assert!(
                        node["properties"].get(&name[1]).is_some(),
                        "{path}: rule {text} reads `{}`, not a field here",
                        &name[1]
                    );
                }
                checked += 1;
            }
        });
    }
    assert!(checked >= 15, "only {checked} CEL rules");
}
