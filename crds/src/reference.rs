//! The CRD reference page, `docs/crd-reference.md`, generated from the same
//! CRDs as the YAML (see [`crate::crd`]): for each kind its names, printer
//! columns, CEL rules and a table of every spec and status field. `gen-crds`
//! writes it; a test fails when the checked-in page differs.
//!
//! The CRDs carry no `default`s (serde supplies them), so a field's default
//! is read from its description, where every default is written as
//! "(default `X`)", "(default: X)", "`X` (default)" or "Default X.".

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::crd::{crds, GENERATE_COMMAND};

/// Where the page lives, relative to the repository's root.
pub const REFERENCE_PATH: &str = "docs/crd-reference.md";

/// The page's text.
pub fn reference_markdown() -> String {
    let crds = crds();
    let mut out = String::new();
    out.push_str(&format!(
        "<!-- Generated from the sluice-crds crate by `{GENERATE_COMMAND}`; do not edit. -->\n\n"
    ));
    out.push_str("# CRD reference\n\n");
    out.push_str(
        "Every field of the four Sluice kinds, as the API server checks them. This page is \
         generated from the same Rust types as the CRDs in `charts/sluice/crds/` (their doc \
         comments are the descriptions, also shown by `kubectl explain`); a test fails when it \
         is out of date. How the kinds fit together, with examples: \
         [Kubernetes](kubernetes.md) and the [configuration reference](configuration.md).\n\n",
    );
    out.push_str(
        "The API server checks the types, enums, lengths, ranges, patterns and CEL rules \
         below; the controller then compiles the objects as `sluice validate` does, and \
         reports what the schema cannot see (a missing Backend or Secret, a duplicate route) \
         in the objects' `Accepted` and `ResolvedRefs` conditions. Unknown fields are \
         dropped by the API server, and refused by `kubectl apply`.\n\n",
    );
    out.push_str("In field paths, `[]` is an item of a list and `<key>` a key of a map.\n\n");
    for crd in &crds {
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
        out.push_str(&format!("- [{kind}](#{})\n", kind.to_ascii_lowercase()));
    }
    for crd in &crds {
        kind_section(&mut out, crd);
    }
    out
}

/// `Some(path)` when the checked-in page under `repo` is missing or
/// differs from [`reference_markdown`].
pub fn reference_drifted(repo: &Path) -> Option<PathBuf> {
    let path = repo.join(REFERENCE_PATH);
    let current = std::fs::read_to_string(&path).ok();
    (current.as_deref() != Some(reference_markdown().as_str())).then_some(path)
}

/// Writes the page under `repo`; returns its path.
pub fn write_reference(repo: &Path) -> std::io::Result<PathBuf> {
    let path = repo.join(REFERENCE_PATH);
    std::fs::write(&path, reference_markdown())?;
    Ok(path)
}

fn kind_section(out: &mut String, crd: &Value) {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let kind = names["kind"].as_str().unwrap_or_default();
    let version = &spec["versions"][0];
    let root = &version["schema"]["openAPIV3Schema"];
    out.push_str(&format!("\n## {kind}\n\n"));
    if let Some(description) = root["description"].as_str() {
        out.push_str(&format!("{}\n\n", one_line(description)));
    }
    let list = |value: &Value| {
        value
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str("| | |\n|---|---|\n");
    let rows = [
        (
            "API version",
            format!(
                "`{}/{}`",
                spec["group"].as_str().unwrap_or_default(),
                version["name"].as_str().unwrap_or_default()
            ),
        ),
        ("Kind", format!("`{kind}`")),
        (
            "Scope",
            spec["scope"].as_str().unwrap_or_default().to_owned(),
        ),
        (
            "Plural, singular",
            format!(
                "`{}`, `{}`",
                names["plural"].as_str().unwrap_or_default(),
                names["singular"].as_str().unwrap_or_default()
            ),
        ),
        ("Short names", list(&names["shortNames"])),
        ("Categories", list(&names["categories"])),
        (
            "Subresources",
            version["subresources"]
                .as_object()
                .map(|m| m.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>())
                .unwrap_or_default()
                .join(", "),
        ),
        (
            "CRD",
            format!("`{}`", crd["metadata"]["name"].as_str().unwrap_or_default()),
        ),
    ];
    for (name, value) in rows {
        out.push_str(&format!("| {name} | {value} |\n"));
    }

    out.push_str(&format!(
        "\n### {kind}: printer columns\n\n`kubectl get {}` shows these; those of priority 1 only with `-o wide`.\n\n",
        names["plural"].as_str().unwrap_or_default()
    ));
    out.push_str("| Column | Type | JSONPath | Priority | Description |\n|---|---|---|---|---|\n");
    for column in version["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            column["name"].as_str().unwrap_or_default(),
            column["type"].as_str().unwrap_or_default(),
            code(column["jsonPath"].as_str().unwrap_or_default()),
            column["priority"].as_u64().unwrap_or(0),
            cell(column["description"].as_str().unwrap_or_default()),
        ));
    }

    let mut rules = Vec::new();
    collect_rules(root, "", &mut rules);
    out.push_str(&format!("\n### {kind}: validation rules\n\n"));
    if rules.is_empty() {
        out.push_str("No CEL rules: the field table says all the API server checks.\n");
    } else {
        out.push_str(
            "CEL rules (`x-kubernetes-validations`) the API server evaluates on the object at \
             the path; a failing rule refuses the object with its message.\n\n",
        );
        out.push_str("| On | Rule | Message |\n|---|---|---|\n");
        for (path, rule) in rules {
            let on = match rule["fieldPath"].as_str() {
                Some(field) => format!(
                    "{} (error at {})",
                    code(&path),
                    code(&format!("{path}{field}"))
                ),
                None => code(&path),
            };
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                on,
                code(rule["rule"].as_str().unwrap_or_default()),
                cell(rule["message"].as_str().unwrap_or_default()),
            ));
        }
    }

    for (part, title) in [("spec", "spec"), ("status", "status")] {
        let schema = &root["properties"][part];
        let required = root["required"]
            .as_array()
            .is_some_and(|r| r.iter().any(|v| v == part));
        out.push_str(&format!("\n### {kind}: {title}\n\n"));
        if part == "status" {
            out.push_str("Written by the controller; never set it yourself.\n\n");
        }
        out.push_str(
            "| Field | Type | Required | Default | Enum | Validation | Description |\n\
             |---|---|---|---|---|---|---|\n",
        );
        let mut rows = Vec::new();
        fields(schema, part.to_owned(), required, &mut rows);
        for row in rows {
            out.push_str(&row);
        }
    }
}

/// One table row per schema node, depth first, in the schema's order.
fn fields(schema: &Value, path: String, required: bool, rows: &mut Vec<String>) {
    let description = schema["description"].as_str().unwrap_or_default();
    let enum_values = schema["enum"]
        .as_array()
        .or_else(|| schema["items"]["enum"].as_array())
        .map(|values| {
            values
                .iter()
                .map(|v| match v.as_str() {
                    Some(s) => format!("`{s}`"),
                    None => format!("`{v}`"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    rows.push(format!(
        "| {} | {} | {} | {} | {} | {} | {} |\n",
        code(&path),
        type_name(schema),
        if required { "yes" } else { "no" },
        // A required field has no default (a description's "default" is
        // then what an absent parent means).
        default_of(description)
            .filter(|_| !required)
            .map(|d| cell(&d))
            .unwrap_or_default(),
        enum_values,
        constraints(schema),
        cell(description),
    ));
    let required_names: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if let Some(properties) = schema["properties"].as_object() {
        for (name, child) in properties {
            fields(
                child,
                format!("{path}.{name}"),
                required_names.contains(&name.as_str()),
                rows,
            );
        }
    }
    let items = &schema["items"];
    if items["properties"].is_object() {
        // The list's own row describes it; its items' fields follow.
        for (name, child) in items["properties"].as_object().into_iter().flatten() {
            let item_required = items["required"]
                .as_array()
                .is_some_and(|r| r.iter().any(|v| v == name.as_str()));
            fields(child, format!("{path}[].{name}"), item_required, rows);
        }
    }
    let values = &schema["additionalProperties"];
    if values["properties"].is_object() {
        for (name, child) in values["properties"].as_object().into_iter().flatten() {
            let value_required = values["required"]
                .as_array()
                .is_some_and(|r| r.iter().any(|v| v == name.as_str()));
            fields(child, format!("{path}.<key>.{name}"), value_required, rows);
        }
    }
}

/// `string`, `integer`, `[]string`, `map[string]object`, ...
fn type_name(schema: &Value) -> String {
    if schema["x-kubernetes-int-or-string"] == Value::Bool(true) {
        return "integer or string".into();
    }
    let base = schema["type"].as_str().unwrap_or("any");
    match base {
        "array" => format!("[]{}", type_name(&schema["items"])),
        "object" if schema["additionalProperties"].is_object() => {
            format!("map[string]{}", type_name(&schema["additionalProperties"]))
        }
        "object" if schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true) => {
            "object (free-form)".into()
        }
        "string" => match schema["format"].as_str() {
            Some(format) => format!("string ({format})"),
            None => "string".into(),
        },
        other => other.into(),
    }
}

/// The schema's checks besides type and enum, e.g. `minLength: 1`.
fn constraints(schema: &Value) -> String {
    let mut parts = Vec::new();
    for (key, label) in [
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minimum", "min"),
        ("maximum", "max"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
    ] {
        if let Some(n) = schema.get(key) {
            parts.push(format!("{label} {n}"));
        }
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        parts.push(format!("pattern {}", code(pattern)));
    }
    let items = &schema["items"];
    for (key, label) in [
        ("minLength", "items: min length"),
        ("maxLength", "items: max length"),
        ("minimum", "items: min"),
        ("maximum", "items: max"),
    ] {
        if let Some(n) = items.get(key) {
            parts.push(format!("{label} {n}"));
        }
    }
    if let Some(pattern) = items["pattern"].as_str() {
        parts.push(format!("items: pattern {}", code(pattern)));
    }
    if let Some(list_type) = schema["x-kubernetes-list-type"].as_str() {
        let keys = schema["x-kubernetes-list-map-keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if keys.is_empty() {
            parts.push(format!("list type {list_type}"));
        } else {
            parts.push(format!("list type {list_type}, keyed by {keys}"));
        }
    }
    parts.join("; ")
}

/// Every CEL rule under `schema`, with the field path of the object it is on.
fn collect_rules(schema: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push((path.to_owned(), rule.clone()));
    }
    for (name, child) in schema["properties"].as_object().into_iter().flatten() {
        let child_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        collect_rules(child, &child_path, out);
    }
    if schema["items"].is_object() {
        collect_rules(&schema["items"], &format!("{path}[]"), out);
    }
    if schema["additionalProperties"].is_object() {
        collect_rules(
            &schema["additionalProperties"],
            &format!("{path}.<key>"),
            out,
        );
    }
}

/// The default a description states, if any (see the module's doc).
pub(crate) fn default_of(description: &str) -> Option<String> {
    // "`memory` (default)", "`StreamableHTTP` (the default)".
    for marker in ["` (default)", "` (the default)"] {
        if let Some(end) = description.find(marker) {
            let start = description[..end].rfind('`')?;
            return Some(description[start..=end].to_owned());
        }
    }
    // "(default `30s`)", "(default: all)", "(default 1; ...)".
    if let Some(at) = description.find("(default") {
        let rest = &description[at + "(default".len()..];
        let rest = rest.strip_prefix(':').unwrap_or(rest).trim_start();
        return clause(rest, &[')', ';']);
    }
    // "Default false (a standalone server).", "Default: built from ...".
    for marker in ["Default: ", "Default "] {
        if let Some(at) = description.find(marker) {
            let rest = &description[at + marker.len()..];
            return clause(rest, &['.', ';']);
        }
    }
    None
}

/// The start of `text` up to the first of `stops` outside backticks and
/// brackets (a `.` only ends it before a space or at the end).
fn clause(text: &str, stops: &[char]) -> Option<String> {
    let mut in_code = false;
    let mut depth = 0usize;
    let mut end = text.len();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '`' => in_code = !in_code,
            _ if in_code => {}
            '[' | '{' => depth += 1,
            ']' | '}' => depth = depth.saturating_sub(1),
            '(' if depth == 0 && stops.contains(&'(') => {
                end = i;
                break;
            }
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            '.' if depth == 0
                && stops.contains(&'.')
                && chars.peek().is_none_or(|(_, next)| next.is_whitespace()) =>
            {
                end = i;
                break;
            }
            '.' => {}
            _ if depth == 0 && stops.contains(&c) => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let found = text[..end].trim();
    (!found.is_empty()).then(|| found.to_owned())
}

/// A description on one line: paragraphs joined with `<br>`.
fn one_line(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("<br><br>")
}

/// Text for a table cell: one line, `|` escaped.
fn cell(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

/// A code span for a table cell (`|` escaped; a backtick inside makes the
/// span use double backticks).
fn code(text: &str) -> String {
    let text = text.replace('|', "\\|");
    if text.contains('`') {
        format!("`` {text} ``")
    } else {
        format!("`{text}`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_read_from_descriptions() {
        let cases = [
            ("`memory` (default), `raft` or `redis`.", Some("`memory`")),
            (
                "`StreamableHTTP` (the default) or `SSE`.",
                Some("`StreamableHTTP`"),
            ),
            (
                "Listen address (default `127.0.0.1:1975`; `--listen` overrides).",
                Some("`127.0.0.1:1975`"),
            ),
            ("Share (default 1; 0 = never picked first).", Some("1")),
            ("Tools to expose (default: all).", Some("all")),
            (
                "Name (default: made from its metric and period, e.g. `cost-monthly`).",
                Some("made from its metric and period, e.g. `cost-monthly`"),
            ),
            (
                "Headers (default `[x-session-id, agent-session-id]`).",
                Some("`[x-session-id, agent-session-id]`"),
            ),
            (
                "A cluster. Default false (a standalone server).",
                Some("false (a standalone server)"),
            ),
            (
                "Default: built from `Host` (and `X-Forwarded-Proto`, else `http`) and the path.",
                Some("built from `Host` (and `X-Forwarded-Proto`, else `http`) and the path"),
            ),
            ("Base URL. Default per provider.", Some("per provider")),
            ("The tenant.", None),
        ];
        for (text, expected) in cases {
            assert_eq!(default_of(text).as_deref(), expected, "{text}");
        }
    }

    #[test]
    fn every_kind_and_nested_field_is_in_the_page() {
        let page = reference_markdown();
        for kind in ["AIGateway", "Backend", "MCPRoute", "Budget"] {
            assert!(
                page.contains(&format!("\n## {kind}\n")),
                "no section {kind}"
            );
        }
        for path in [
            "`spec.llm.routes[].backends[].weight`",
            "`spec.pricing.<key>.input`",
            "`status.conditions[].lastTransitionTime`",
            "`status.limits[].resetsAt`",
        ] {
            assert!(page.contains(&format!("| {path} |")), "no row {path}");
        }
        assert!(page.contains("set exactly one of env, file or secretKeyRef"));
        assert!(page.contains("| `aigw` |") || page.contains("`aigw`"));
        // No `|` breaks a table: every row of a table has as many cells as its header.
        let mut columns = 0;
        for line in page.lines() {
            if !line.starts_with('|') {
                columns = 0;
                continue;
            }
            let cells = line.replace("\\|", "").matches('|').count();
            if columns == 0 {
                columns = cells;
            }
            assert_eq!(cells, columns, "a row with a stray `|`: {line}");
        }
    }
}
