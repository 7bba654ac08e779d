//! Compiling MCPRoutes: paths, backends (which must be `provider: MCP`),
//! tool-name prefixes from the prefix mode, and tool filters. Split from
//! `compile` so each stays one concern.

use std::collections::HashMap;

use crate::error::ConfigError;
use crate::pattern::ModelPattern;
use crate::resources::MCPRouteSpec;
use crate::snapshot::{Backend, McpAccess, McpRoute, McpRouteBackend, Target};

/// Compiles every MCPRoute; errors are appended to `errors`.
pub(crate) fn compile_mcp_routes(
    specs: &[(String, &MCPRouteSpec)],
    backends: &[Backend],
    backend_index: &HashMap<&str, usize>,
    known_backend: &dyn Fn(&str) -> bool,
    errors: &mut Vec<ConfigError>,
) -> Vec<McpRoute> {
    let mut routes: Vec<McpRoute> = Vec::new();
    for (name, spec) in specs {
        let id = format!("MCPRoute/{name}");
        let before = errors.len();
        let mut push =
            |field: String, message: String| errors.push(ConfigError::new(&id, field, message));

        if !spec.path.starts_with('/') || spec.path.contains(['?', '#', ' ']) {
            push(
                "spec.path".into(),
                format!("`{}` is not a path like /mcp", spec.path),
            );
        } else if spec.path.starts_with("/v1/") || spec.path == "/v1" {
            push(
                "spec.path".into(),
                "paths under /v1 belong to the LLM API".into(),
            );
        } else if [
            "/chat/completions",
            "/completions",
            "/embeddings",
            "/models",
        ]
        .contains(&spec.path.trim_end_matches('/'))
        {
            push(
                "spec.path".into(),
                format!("`{}` is an LLM API path", spec.path),
            );
        } else if routes.iter().any(|r| r.path == spec.path) {
            push(
                "spec.path".into(),
                format!("`{}` is already served by another MCPRoute", spec.path),
            );
        }
        let prefixing = match spec.prefix_mode.as_deref().unwrap_or("Always") {
            "Always" => true,
            "Conditional" => spec.backends.len() > 1,
            "Never" => false,
            other => {
                push(
                    "spec.prefixMode".into(),
                    format!("`{other}` is not one of Always, Conditional, Never"),
                );
                true
            }
        };
        if spec.backends.is_empty() {
            push(
                "spec.backends".into(),
                "list at least one MCP backend".into(),
            );
        }
        let mut compiled = Vec::new();
        let mut pattern_errors = Vec::new();
        for (j, rb) in spec.backends.iter().enumerate() {
            let field = format!("spec.backends[{j}]");
            let index = match backend_index.get(rb.backend.as_str()) {
                Some(&index) => index,
                None => {
                    if !known_backend(&rb.backend) {
                        push(
                            format!("{field}.backend"),
                            format!("no Backend named `{}`", rb.backend),
                        );
                    }
                    continue;
                }
            };
            if !matches!(
                backends[index].target,
                Target::Mcp { .. } | Target::McpSse { .. } | Target::McpStdio { .. } | Target::Demo
            ) {
                push(
                    format!("{field}.backend"),
                    format!(
                        "Backend `{}` is not an MCP server (provider: MCP)",
                        rb.backend
                    ),
                );
                continue;
            }
            let prefix = rb.prefix.clone().unwrap_or_else(|| rb.backend.clone());
            if prefix.is_empty()
                || prefix.contains("__")
                || !prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                push(
                    format!("{field}.prefix"),
                    format!("`{prefix}` must be letters, digits, `-`, `_` or `.`, without `__`"),
                );
            }
            let (include, exclude) = match &rb.tools {
                Some(tools) => (
                    tool_patterns(
                        &tools.include,
                        &id,
                        &format!("{field}.tools.include"),
                        &mut pattern_errors,
                    ),
                    tool_patterns(
                        &tools.exclude,
                        &id,
                        &format!("{field}.tools.exclude"),
                        &mut pattern_errors,
                    ),
                ),
                None => (Vec::new(), Vec::new()),
            };
            compiled.push(McpRouteBackend {
                backend: index,
                prefix: prefixing.then_some(prefix),
                include,
                exclude,
            });
        }
        errors.append(&mut pattern_errors);
        let prefixes: Vec<&str> = compiled
            .iter()
            .filter_map(|b| b.prefix.as_deref())
            .collect();
        if (1..prefixes.len()).any(|i| prefixes[..i].contains(&prefixes[i])) {
            errors.push(ConfigError::new(
                &id,
                "spec.backends",
                "two backends share a prefix; give each its own `prefix`",
            ));
        }
        let mut access = None;
        if let Some(entries) = &spec.access {
            let mut compiled_access = Vec::new();
            for (k, entry) in entries.iter().enumerate() {
                let field = format!("spec.access[{k}]");
                if entry.tenant.is_empty() {
                    errors.push(ConfigError::new(
                        &id,
                        format!("{field}.tenant"),
                        "must not be empty",
                    ));
                }
                let include = tool_patterns(
                    &entry.tools.include,
                    &id,
                    &format!("{field}.tools.include"),
                    errors,
                );
                let exclude = tool_patterns(
                    &entry.tools.exclude,
                    &id,
                    &format!("{field}.tools.exclude"),
                    errors,
                );
                compiled_access.push(McpAccess {
                    tenant: entry.tenant.as_str().into(),
                    include,
                    exclude,
                });
            }
            access = Some(compiled_access);
        }
        let oauth = spec
            .auth
            .as_ref()
            .and_then(|a| a.oauth.as_ref())
            .and_then(|oauth| {
                crate::compile_auth::compile_oauth(
                    &id,
                    "spec.auth.oauth",
                    oauth,
                    &spec.path,
                    errors,
                )
            });
        if errors.len() == before {
            routes.push(McpRoute {
                name: name.as_str().into(),
                path: spec.path.clone(),
                backends: compiled,
                access,
                oauth,
            });
        }
    }
    routes
}

/// Compiles tool-name globs; each bad one is an error at `field[k]`.
fn tool_patterns(
    list: &[String],
    id: &str,
    field: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<ModelPattern> {
    list.iter()
        .enumerate()
        .filter_map(|(k, p)| {
            ModelPattern::parse(p)
                .map_err(|e| errors.push(ConfigError::new(id, format!("{field}[{k}]"), e)))
                .ok()
        })
        .collect()
}
