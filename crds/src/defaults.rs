//! The built-in config of `sluice run` without `-f`: the in-process demo
//! model, plus the providers whose keys are in the environment. Built as the
//! same YAML a user would write, so it goes through the same `compile`.

/// The default config text and a human summary of what it configures.
pub struct DefaultConfig {
    /// Multi-document YAML.
    pub text: String,
    /// One line per configured backend, for the startup banner.
    pub summary: Vec<String>,
}

/// Builds the default config from the environment (`OPENAI_API_KEY`,
/// `OPENAI_BASE_URL`).
pub fn default_config(env: &dyn Fn(&str) -> Option<String>) -> DefaultConfig {
    let mut routes =
        String::from("      - models: [sluice-demo]\n        backends: [{backend: demo}]\n");
    let mut backends = String::from(
        "---\nkind: Backend\nmetadata: {name: demo}\nspec: {provider: Demo, models: [sluice-demo]}\n",
    );
    let mut summary = vec![
        "sluice-demo -> built-in demo model (in process, deterministic, no network)".to_owned(),
    ];

    if env("OPENAI_API_KEY").is_some_and(|k| !k.is_empty()) {
        let endpoint = env("OPENAI_BASE_URL").filter(|u| !u.is_empty());
        routes.push_str("      - models: [\"*\"]\n        backends: [{backend: openai}]\n");
        backends
            .push_str("---\nkind: Backend\nmetadata: {name: openai}\nspec:\n  provider: OpenAI\n");
        if let Some(url) = &endpoint {
            // A JSON string is a valid YAML scalar, whatever the URL holds.
            let quoted = serde_json::Value::String(url.clone()).to_string();
            backends.push_str(&format!("  endpoint: {quoted}\n"));
        }
        backends.push_str("  auth: {apiKey: {valueFrom: {env: OPENAI_API_KEY}}}\n");
        summary.push(format!(
            "every other model -> OpenAI at {} (key from OPENAI_API_KEY)",
            endpoint.as_deref().unwrap_or("https://api.openai.com/v1")
        ));
    }

    summary.push(
        "MCP /mcp -> built-in demo MCP server (search-flight, list-events, create-event)"
            .to_owned(),
    );
    // The demo backend also speaks MCP; one backend, so its tools keep their names.
    let mcp = "---\nkind: MCPRoute\nmetadata: {name: demo}\nspec: {path: /mcp, prefixMode: Conditional, backends: [{backend: demo}]}\n";
    let text = format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: AIGateway\nmetadata: {{name: default}}\nspec:\n  auth: {{anonymousTenant: local}}\n  llm:\n    routes:\n{routes}{backends}{mcp}"
    );
    DefaultConfig { text, summary }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile, load_documents, StandaloneSecrets};

    fn compile_default(env: &dyn Fn(&str) -> Option<String>) -> crate::Snapshot {
        let config = default_config(env);
        let loaded = load_documents(&[("default".into(), config.text)]);
        compile(&loaded, &StandaloneSecrets { env }).unwrap()
    }

    #[test]
    fn demo_only_without_keys() {
        let snapshot = compile_default(&|_| None);
        assert_eq!(snapshot.routes.len(), 1);
        assert_eq!(snapshot.backends.len(), 1);
        assert_eq!(snapshot.mcp_routes[0].path, "/mcp");
        assert_eq!(snapshot.mcp_routes[0].backends[0].prefix, None);
        assert_eq!(
            snapshot.auth.anonymous_tenant.as_ref().map(|t| &*t.0),
            Some("local")
        );
    }

    #[test]
    fn openai_from_environment() {
        let env = |name: &str| match name {
            "OPENAI_API_KEY" => Some("sk-x".to_owned()),
            "OPENAI_BASE_URL" => Some("http://127.0.0.1:9/v1".to_owned()),
            _ => None,
        };
        let snapshot = compile_default(&env);
        assert_eq!(snapshot.routes.len(), 2);
        let openai = &snapshot.backends[1];
        assert_eq!(
            openai.target,
            crate::snapshot::Target::OpenAICompatible {
                base_url: "http://127.0.0.1:9/v1".into()
            }
        );
    }
}
