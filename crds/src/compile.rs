//! `compile`: loaded documents (+ a way to read secrets) -> [`Snapshot`], or
//! every error found, each naming its object and field. The one place where
//! the API's rules live; the proxy and the controller both call it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{ConfigError, ConfigErrors};
use crate::load::{Document, LoadedConfig};
use crate::pattern::ModelPattern;
use crate::resources::{
    AIGatewaySpec, BackendAuthSpec, BackendSpec, BudgetSpec, PriceSpec, RaftSpec, RetrySpec,
    RouteSpec, ValueFrom,
};
use crate::snapshot::{
    AccessLogTarget, ApiKey, ApiKeyHash, Auth, AwsAuth, AwsCredentials, AzureApi, Backend,
    BackendName, Budget, Credential, Price, Provider, Retry, Route, RouteBackend, Snapshot,
    StateStore, Target, TenantId,
};
use crate::values::{parse_duration, parse_size, MicroUsd, Secret};

/// Default data-plane address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1975";
/// Default admin address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:1976";
const DEFAULT_MAX_BODY: u64 = 32 << 20;
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_ATTEMPTS: u32 = 10;

/// Reads the value behind a `valueFrom`.
pub trait SecretSource {
    /// The value, or why it cannot be read (never containing the value).
    fn get(&self, from: &ValueFrom) -> Result<Secret, String>;
}

/// Secrets of `sluice run`: environment variables and files.
pub struct StandaloneSecrets<F: Fn(&str) -> Option<String>> {
    /// Looks up an environment variable.
    pub env: F,
}

impl<F: Fn(&str) -> Option<String>> SecretSource for StandaloneSecrets<F> {
    fn get(&self, from: &ValueFrom) -> Result<Secret, String> {
        match (&from.env, &from.file, &from.secret_key_ref) {
            (Some(name), None, None) => (self.env)(name)
                .filter(|v| !v.is_empty())
                .map(Secret::new)
                .ok_or_else(|| format!("environment variable {name} is not set or empty")),
            (None, Some(path), None) => std::fs::read_to_string(path)
                .map(|v| Secret::new(v.trim_end_matches(['\n', '\r'])))
                .map_err(|e| format!("cannot read secret file {path}: {e}")),
            (None, None, Some(r)) => Err(format!(
                "secretKeyRef {}/{} needs the Kubernetes controller; use `env` or `file` with `sluice run`",
                r.name, r.key
            )),
            _ => Err("set exactly one of `env`, `file` or `secretKeyRef`".into()),
        }
    }
}

/// Collects errors while compiling.
struct Errors(Vec<ConfigError>);

impl Errors {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn push(&mut self, object: &str, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(object, field, message));
    }
}

/// Compiles loaded documents into a snapshot.
pub fn compile(
    loaded: &LoadedConfig,
    secrets: &dyn SecretSource,
) -> Result<Snapshot, ConfigErrors> {
    let mut errors = Errors(loaded.errors.clone());
    let mut gateways = Vec::new();
    let mut backend_specs: Vec<(String, &BackendSpec)> = Vec::new();
    let mut mcp_route_specs = Vec::new();
    let mut budget_specs: Vec<(String, &BudgetSpec)> = Vec::new();
    for document in &loaded.documents {
        match document {
            Document::AIGateway(meta, spec) => gateways.push((meta.name.clone(), spec)),
            Document::Backend(meta, spec) => {
                if backend_specs.iter().any(|(name, _)| *name == meta.name) {
                    errors.push(
                        &document.id(),
                        "metadata.name",
                        "a Backend of this name is defined twice",
                    );
                } else {
                    backend_specs.push((meta.name.clone(), spec));
                }
            }
            Document::MCPRoute(meta, spec) => mcp_route_specs.push((meta.name.clone(), spec)),
            Document::Budget(meta, spec) => {
                if budget_specs.iter().any(|(name, _)| *name == meta.name) {
                    errors.push(
                        &document.id(),
                        "metadata.name",
                        "a Budget of this name is defined twice",
                    );
                } else {
                    budget_specs.push((meta.name.clone(), spec));
                }
            }
        }
    }

    let default_spec = AIGatewaySpec::default();
    let (gateway_name, gateway) = match gateways.as_slice() {
        [] => ("default".to_owned(), &default_spec),
        [(name, spec)] => (name.clone(), *spec),
        [(first, spec), rest @ ..] => {
            for (name, _) in rest {
                errors.push(
                    &format!("AIGateway/{name}"),
                    "",
                    format!("only one AIGateway is allowed per gateway; AIGateway/{first} is already defined"),
                );
            }
            (first.clone(), *spec)
        }
    };
    let gateway_id = format!("AIGateway/{gateway_name}");

    let backends: Vec<Backend> = backend_specs
        .iter()
        .filter_map(|(name, spec)| compile_backend(name, spec, secrets, &mut errors))
        .collect();
    let backend_index: HashMap<&str, usize> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| (&*b.name.0, i))
        .collect();
    let known_backend = |name: &str| backend_specs.iter().any(|(n, _)| n == name);

    let backend_targets: Vec<Target> = backends.iter().map(|b| b.target.clone()).collect();
    let snapshot = compile_gateway(
        &gateway_id,
        gateway,
        secrets,
        &backend_index,
        &backend_targets,
        &known_backend,
        &mut errors,
    );
    let mcp_routes = crate::compile_mcp::compile_mcp_routes(
        &mcp_route_specs,
        &backends,
        &backend_index,
        &known_backend,
        &mut errors.0,
    );
    let key_names: Vec<&str> = gateway
        .auth
        .iter()
        .flat_map(|auth| auth.api_keys.iter().map(|k| k.name.as_str()))
        .collect();
    let budgets: Vec<Budget> = budget_specs
        .iter()
        .filter_map(|(name, spec)| {
            crate::compile_budget::compile_budget(
                &format!("Budget/{name}"),
                name,
                spec,
                &key_names,
                &mut errors.0,
            )
        })
        .collect();
    if !errors.0.is_empty() {
        return Err(ConfigErrors(errors.0));
    }
    let Some(mut snapshot) = snapshot else {
        return Err(ConfigErrors(vec![ConfigError::new(
            &gateway_id,
            "",
            "invalid",
        )]));
    };
    snapshot.hash = loaded.hash.clone();
    snapshot.backends = backends;
    snapshot.mcp_routes = mcp_routes;
    if !budgets.is_empty() {
        if let StateStore::Memory { path: path @ None } = &mut snapshot.state {
            *path = default_state_path();
        }
    }
    snapshot.budgets = budgets;
    Ok(snapshot)
}

fn compile_gateway(
    id: &str,
    spec: &AIGatewaySpec,
    secrets: &dyn SecretSource,
    backend_index: &HashMap<&str, usize>,
    backend_targets: &[Target],
    known_backend: &dyn Fn(&str) -> bool,
    errors: &mut Errors,
) -> Option<Snapshot> {
    let mut parse_addr = |field: &str, value: Option<&String>, default: &str| {
        let text = value.map_or(default, String::as_str);
        text.parse::<SocketAddr>()
            .map_err(|_| {
                errors.push(
                    id,
                    field,
                    format!("`{text}` is not an address like 127.0.0.1:1975"),
                )
            })
            .ok()
    };
    let listen = parse_addr("spec.listen", spec.listen.as_ref(), DEFAULT_LISTEN);
    let admin = parse_addr("spec.admin", spec.admin.as_ref(), DEFAULT_ADMIN);

    let mut auth = Auth::default();
    if let Some(auth_spec) = &spec.auth {
        let mut seen: HashMap<ApiKeyHash, &str> = HashMap::new();
        for (i, key) in auth_spec.api_keys.iter().enumerate() {
            let field = format!("spec.auth.apiKeys[{i}]");
            if key.name.is_empty() {
                errors.push(id, format!("{field}.name"), "must not be empty");
            }
            if key.tenant.is_empty() {
                errors.push(id, format!("{field}.tenant"), "must not be empty");
            }
            if auth_spec.api_keys[..i].iter().any(|k| k.name == key.name) {
                errors.push(
                    id,
                    format!("{field}.name"),
                    format!("key name `{}` is used twice", key.name),
                );
            }
            match secrets.get(&key.value_from) {
                Ok(value) => {
                    let hash = ApiKeyHash::of(value.expose());
                    if let Some(other) = seen.insert(hash, &key.name) {
                        errors.push(
                            id,
                            format!("{field}.valueFrom"),
                            format!("keys `{other}` and `{}` have the same value", key.name),
                        );
                    }
                    auth.api_keys.push(ApiKey {
                        name: key.name.as_str().into(),
                        tenant: TenantId(key.tenant.as_str().into()),
                        hash,
                    });
                }
                Err(message) => errors.push(id, format!("{field}.valueFrom"), message),
            }
        }
        if let Some(jwt) = &auth_spec.jwt {
            auth.jwt = crate::compile_auth::compile_jwt(id, "spec.auth.jwt", jwt, &mut errors.0);
        }
        if let Some(tenant) = &auth_spec.anonymous_tenant {
            if tenant.is_empty() {
                errors.push(id, "spec.auth.anonymousTenant", "must not be empty");
            }
            auth.anonymous_tenant = Some(TenantId(tenant.as_str().into()));
        }
    }

    let session_headers = match &spec.session_headers {
        None => vec!["x-session-id".to_owned(), "agent-session-id".to_owned()],
        Some(list) => {
            for (i, name) in list.iter().enumerate() {
                if http_token(name).is_err() {
                    errors.push(
                        id,
                        format!("spec.sessionHeaders[{i}]"),
                        format!("`{name}` is not a header name"),
                    );
                }
            }
            list.iter().map(|h| h.to_ascii_lowercase()).collect()
        }
    };
    let session_key = spec.session_key.as_ref().and_then(|key| {
        secrets
            .get(&key.value_from)
            .map_err(|e| errors.push(id, "spec.sessionKey.valueFrom", e))
            .ok()
    });

    let max_request_body = match &spec.max_request_body {
        None => DEFAULT_MAX_BODY,
        Some(text) => parse_size(text)
            .map_err(|e| errors.push(id, "spec.maxRequestBody", e))
            .unwrap_or(DEFAULT_MAX_BODY),
    };

    let mut routes = Vec::new();
    if let Some(llm) = &spec.llm {
        for (i, route) in llm.routes.iter().enumerate() {
            let field = format!("spec.llm.routes[{i}]");
            if let Some(route) = compile_route(
                id,
                &field,
                route,
                backend_index,
                backend_targets,
                known_backend,
                errors,
            ) {
                routes.push(route);
            }
        }
    }

    let mut state = StateStore::Memory { path: None };
    if let Some(spec) = &spec.state {
        let kind = spec.kind.as_deref().unwrap_or("memory");
        for (field, set, owner) in [
            ("redis", spec.redis.is_some(), "redis"),
            ("raft", spec.raft.is_some(), "raft"),
            ("path", spec.path.is_some(), "memory"),
        ] {
            if set && kind != owner {
                errors.push(
                    id,
                    format!("spec.state.{field}"),
                    format!("set, but spec.state.type is {kind}; it belongs to type {owner}"),
                );
            }
        }
        match kind {
            "memory" => {
                state = StateStore::Memory {
                    path: spec.path.as_deref().map(PathBuf::from),
                }
            }
            "redis" => match spec.redis.as_ref() {
                Some(redis)
                    if redis.url.starts_with("redis://") || redis.url.starts_with("rediss://") =>
                {
                    state = StateStore::Redis {
                        url: redis.url.clone(),
                        cluster: redis.cluster,
                    }
                }
                Some(redis) => errors.push(
                    id,
                    "spec.state.redis.url",
                    format!("`{}` is not a redis:// or rediss:// URL", redis.url),
                ),
                None => errors.push(
                    id,
                    "spec.state.redis",
                    "required for type redis: {url: redis://host:6379}",
                ),
            },
            "raft" => match spec.raft.as_ref() {
                Some(raft) => {
                    if let Some(compiled) = compile_raft(id, raft, errors) {
                        state = compiled;
                    }
                }
                None => errors.push(
                    id,
                    "spec.state.raft",
                    "required for type raft: {peers: [\"1=host:7101\", ...]}",
                ),
            },
            other => errors.push(
                id,
                "spec.state.type",
                format!("`{other}` is not one of memory, raft, redis"),
            ),
        }
    }

    let mut access_log = AccessLogTarget::Stdout;
    if let Some(telemetry) = &spec.telemetry {
        if let Some(log) = &telemetry.access_log {
            access_log = match log.to.as_str() {
                "stdout" => AccessLogTarget::Stdout,
                "off" => AccessLogTarget::Off,
                "" => {
                    errors.push(
                        id,
                        "spec.telemetry.accessLog.to",
                        "must be `stdout`, `off` or a file path",
                    );
                    AccessLogTarget::Off
                }
                path => AccessLogTarget::File(PathBuf::from(path)),
            };
        }
        if telemetry.otlp.is_some() {
            errors.push(
                id,
                "spec.telemetry.otlp",
                "OTLP traces are not supported yet",
            );
        }
    }

    Some(Snapshot {
        hash: String::new(),
        listen: listen?,
        admin: admin?,
        auth,
        session_headers,
        max_request_body,
        routes,
        backends: Vec::new(),
        access_log,
        session_key,
        mcp_routes: Vec::new(),
        budgets: Vec::new(),
        state,
    })
}

/// `$XDG_STATE_HOME/sluice/counters.log`, else `~/.local/state/sluice/counters.log`.
fn default_state_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local").join("state"))
        })?;
    Some(base.join("sluice").join("counters.log"))
}

fn compile_route(
    id: &str,
    field: &str,
    spec: &RouteSpec,
    backend_index: &HashMap<&str, usize>,
    backend_targets: &[Target],
    known_backend: &dyn Fn(&str) -> bool,
    errors: &mut Errors,
) -> Option<Route> {
    let before = errors.0.len();
    if spec.models.is_empty() {
        errors.push(
            id,
            format!("{field}.models"),
            "list at least one model name or glob",
        );
    }
    let models: Vec<ModelPattern> = spec
        .models
        .iter()
        .enumerate()
        .filter_map(|(j, m)| {
            ModelPattern::parse(m)
                .map_err(|e| errors.push(id, format!("{field}.models[{j}]"), e))
                .ok()
        })
        .collect();
    if spec.backends.is_empty() {
        errors.push(id, format!("{field}.backends"), "list at least one backend");
    }
    let mut backends = Vec::new();
    for (j, rb) in spec.backends.iter().enumerate() {
        match backend_index.get(rb.backend.as_str()) {
            Some(&index)
                if matches!(
                    backend_targets[index],
                    Target::Mcp { .. } | Target::McpSse { .. } | Target::McpStdio { .. }
                ) =>
            {
                errors.push(
                    id,
                    format!("{field}.backends[{j}].backend"),
                    format!(
                        "Backend `{}` is an MCP server; LLM routes need an LLM provider",
                        rb.backend
                    ),
                )
            }
            Some(&index) => backends.push(RouteBackend {
                backend: index,
                model: rb.model.as_deref().map(Arc::from),
                weight: rb.weight.unwrap_or(1),
                priority: rb.priority.unwrap_or(0),
            }),
            // A Backend that exists but failed to compile has its own error already.
            None if known_backend(&rb.backend) => {}
            None => errors.push(
                id,
                format!("{field}.backends[{j}].backend"),
                format!("no Backend named `{}`", rb.backend),
            ),
        }
        if rb.model.as_deref() == Some("") {
            errors.push(
                id,
                format!("{field}.backends[{j}].model"),
                "must not be empty",
            );
        }
    }
    let retry = compile_retry(id, field, spec.retry.as_ref(), spec.backends.len(), errors);
    let timeout = match &spec.timeout {
        None => DEFAULT_ROUTE_TIMEOUT,
        Some(text) => parse_duration(text)
            .map_err(|e| errors.push(id, format!("{field}.timeout"), e))
            .unwrap_or(DEFAULT_ROUTE_TIMEOUT),
    };
    (errors.0.len() == before).then_some(Route {
        models,
        backends,
        retry,
        timeout,
    })
}

fn compile_retry(
    id: &str,
    field: &str,
    spec: Option<&RetrySpec>,
    backends: usize,
    errors: &mut Errors,
) -> Retry {
    let default_attempts = u32::try_from(backends)
        .unwrap_or(MAX_ATTEMPTS)
        .clamp(1, MAX_ATTEMPTS);
    let mut retry = Retry {
        attempts: default_attempts,
        on_connect: true,
        on_timeout: true,
        on_429: true,
        on_5xx: true,
    };
    let Some(spec) = spec else { return retry };
    if let Some(attempts) = spec.attempts {
        if !(1..=MAX_ATTEMPTS).contains(&attempts) {
            errors.push(
                id,
                format!("{field}.retry.attempts"),
                format!("must be between 1 and {MAX_ATTEMPTS}"),
            );
        }
        retry.attempts = attempts.clamp(1, MAX_ATTEMPTS);
    }
    if let Some(on) = &spec.on {
        retry.on_connect = false;
        retry.on_timeout = false;
        retry.on_429 = false;
        retry.on_5xx = false;
        for (k, condition) in on.iter().enumerate() {
            match condition.as_str() {
                "connect" => retry.on_connect = true,
                "timeout" => retry.on_timeout = true,
                "429" => retry.on_429 = true,
                "5xx" => retry.on_5xx = true,
                other => errors.push(
                    id,
                    format!("{field}.retry.on[{k}]"),
                    format!("`{other}` is not one of connect, timeout, \"429\", \"5xx\""),
                ),
            }
        }
    }
    retry
}

fn compile_backend(
    name: &str,
    spec: &BackendSpec,
    secrets: &dyn SecretSource,
    errors: &mut Errors,
) -> Option<Backend> {
    let id = format!("Backend/{name}");
    let before = errors.0.len();
    let Some(provider) = Provider::parse(&spec.provider) else {
        let message = if Provider::NOT_YET.contains(&spec.provider.as_str()) {
            format!("provider `{}` is not supported yet", spec.provider)
        } else {
            let known: Vec<&str> = Provider::ALL.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown provider `{}`; supported: {}",
                spec.provider,
                known.join(", ")
            )
        };
        errors.push(&id, "spec.provider", message);
        return None;
    };
    let target = match provider {
        Provider::Demo => {
            if spec.endpoint.is_some() {
                errors.push(
                    &id,
                    "spec.endpoint",
                    "the Demo provider runs in process and takes no endpoint",
                );
            }
            Target::Demo
        }
        Provider::Mcp => match spec.endpoint.as_deref() {
            None => match &spec.command {
                Some(command) if command.first().is_some_and(|p| !p.is_empty()) => {
                    Target::McpStdio {
                        command: command.clone(),
                    }
                }
                Some(_) => {
                    errors.push(
                        &id,
                        "spec.command",
                        "give the program and its arguments, e.g. [npx, some-mcp-server]",
                    );
                    Target::Demo
                }
                None => {
                    errors.push(
                        &id,
                        "spec.endpoint",
                        "required for provider MCP: the server's streamable HTTP URL (or `command` for a stdio server)",
                    );
                    Target::Demo
                }
            },
            Some(endpoint) => match (mcp_url(endpoint), spec.transport.as_deref()) {
                (Err(e), _) => {
                    errors.push(&id, "spec.endpoint", e);
                    Target::Demo
                }
                (Ok(url), None | Some("StreamableHTTP")) => Target::Mcp { url },
                (Ok(url), Some("SSE")) => Target::McpSse { url },
                (Ok(_), Some(other)) => {
                    errors.push(
                        &id,
                        "spec.transport",
                        format!("unknown transport `{other}`: StreamableHTTP (the default) or SSE"),
                    );
                    Target::Demo
                }
            },
        },
        Provider::AzureOpenAI => match spec.endpoint.as_deref() {
            None => {
                errors.push(
                    &id,
                    "spec.endpoint",
                    "required for provider AzureOpenAI: your resource's endpoint, e.g. https://my-resource.openai.azure.com",
                );
                Target::Demo
            }
            Some(endpoint) => match base_url(endpoint, "") {
                Ok(endpoint) => Target::AzureOpenAI {
                    endpoint: azure_resource(&endpoint),
                    api: match spec.api_version.as_deref() {
                        Some("v1") => AzureApi::V1,
                        Some(version) => AzureApi::Deployments {
                            api_version: version.to_owned(),
                        },
                        None => AzureApi::Deployments {
                            api_version: DEFAULT_AZURE_API_VERSION.to_owned(),
                        },
                    },
                },
                Err(e) => {
                    errors.push(&id, "spec.endpoint", e);
                    Target::Demo
                }
            },
        },
        Provider::Gemini | Provider::VertexAI => crate::compile_google::compile_google_target(
            &id,
            provider,
            spec,
            secrets,
            &mut errors.0,
        )
        .unwrap_or(Target::Demo),
        Provider::Bedrock => compile_bedrock(&id, spec, secrets, errors),
        _ => match spec.endpoint.as_deref().or(provider.default_endpoint()) {
            None => {
                errors.push(
                    &id,
                    "spec.endpoint",
                    format!("required for provider {}", provider.name()),
                );
                Target::Demo
            }
            Some(endpoint) => match base_url(endpoint, provider.preset().version_path) {
                Ok(base_url) => Target::OpenAICompatible { base_url },
                Err(e) => {
                    errors.push(&id, "spec.endpoint", e);
                    Target::Demo
                }
            },
        },
    };
    if let Some(version) = &spec.api_version {
        if provider != Provider::AzureOpenAI {
            errors.push(
                &id,
                "spec.apiVersion",
                "only AzureOpenAI backends take an apiVersion",
            );
        } else if !is_api_version(version) {
            errors.push(
                &id,
                "spec.apiVersion",
                format!(
                    "`{version}` is not an api-version like 2024-10-21, 2025-04-01-preview or v1"
                ),
            );
        }
    }
    let headers = compile_headers(&id, spec.headers.as_ref(), errors);
    let credential = spec
        .auth
        .as_ref()
        .and_then(|auth| compile_credential(&id, provider, auth, secrets, errors));
    if spec.transport.is_some() && (provider != Provider::Mcp || spec.endpoint.is_none()) {
        errors.push(
            &id,
            "spec.transport",
            "only an MCP backend with an `endpoint` takes a transport",
        );
    }
    if spec.command.is_some() && provider != Provider::Mcp {
        errors.push(&id, "spec.command", "only MCP backends run a command");
    } else if spec.command.is_some() && spec.endpoint.is_some() {
        errors.push(
            &id,
            "spec.command",
            "set either `endpoint` (streamable HTTP) or `command` (stdio), not both",
        );
    }
    let mut pricing = BTreeMap::new();
    for (model, price) in spec.pricing.iter().flatten() {
        if let Some(price) = compile_price(&id, &format!("spec.pricing.{model}"), price, errors) {
            pricing.insert(model.clone(), price);
        }
    }
    let timeout = match &spec.timeout {
        None => DEFAULT_BACKEND_TIMEOUT,
        Some(text) => parse_duration(text)
            .map_err(|e| errors.push(&id, "spec.timeout", e))
            .unwrap_or(DEFAULT_BACKEND_TIMEOUT),
    };
    (errors.0.len() == before).then(|| Backend {
        name: BackendName(name.into()),
        provider,
        target,
        credential,
        models: spec.models.clone().unwrap_or_default(),
        pricing,
        timeout,
        headers,
    })
}

/// A Bedrock backend: its endpoint (the region's unless `endpoint` names
/// one) and the AWS keys its requests are signed with (none: the standard
/// credential chain, resolved by the gateway).
fn compile_bedrock(
    id: &str,
    spec: &BackendSpec,
    secrets: &dyn SecretSource,
    errors: &mut Errors,
) -> Target {
    let auth = spec.auth.as_ref();
    let Some(aws) = auth.and_then(|a| a.aws.as_ref()) else {
        // A Bedrock API key: a bearer token, no signature; the endpoint
        // names the region.
        return match (
            spec.endpoint.as_deref(),
            auth.and_then(|a| a.api_key.as_ref()),
        ) {
            (Some(endpoint), Some(_)) => match base_url(endpoint, "") {
                Ok(endpoint) => Target::Bedrock {
                    endpoint,
                    region: String::new(),
                    aws: None,
                },
                Err(e) => {
                    errors.push(id, "spec.endpoint", e);
                    Target::Demo
                }
            },
            _ => {
                errors.push(
                    id,
                    "spec.auth.aws",
                    "required for provider Bedrock: `region` (with `accessKeyId` and `secretAccessKey`, or alone for the standard AWS credential chain), or an `endpoint` with a Bedrock API key in `apiKey`",
                );
                Target::Demo
            }
        };
    };
    if auth.is_some_and(|a| a.api_key.is_some()) {
        errors.push(
            id,
            "spec.auth.aws",
            "set either `aws` (signed requests) or `apiKey` (a Bedrock API key), not both",
        );
    }
    let region_ok = !aws.region.is_empty()
        && aws
            .region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !region_ok {
        errors.push(
            id,
            "spec.auth.aws.region",
            format!("`{}` is not an AWS region like us-east-1", aws.region),
        );
        return Target::Demo;
    }
    let endpoint = match spec.endpoint.as_deref() {
        None => format!("https://bedrock-runtime.{}.amazonaws.com", aws.region),
        Some(endpoint) => match base_url(endpoint, "") {
            Ok(endpoint) => endpoint,
            Err(e) => {
                errors.push(id, "spec.endpoint", e);
                return Target::Demo;
            }
        },
    };
    let mut read =
        |field: &str, from: &crate::resources::SecretRef| match secrets.get(&from.value_from) {
            Ok(value) if value.expose().trim().is_empty() => {
                errors.push(
                    id,
                    format!("spec.auth.aws.{field}.valueFrom"),
                    "the value is empty",
                );
                None
            }
            Ok(value) if value.expose().bytes().any(|b| b < 0x20 || b == 0x7f) => {
                errors.push(
                    id,
                    format!("spec.auth.aws.{field}.valueFrom"),
                    "the value contains control characters",
                );
                None
            }
            Ok(value) => Some(Secret::new(value.expose().trim())),
            Err(e) => {
                errors.push(id, format!("spec.auth.aws.{field}.valueFrom"), e);
                None
            }
        };
    let (access_key_id, secret_access_key) = match (&aws.access_key_id, &aws.secret_access_key) {
        (None, None) => {
            if aws.session_token.is_some() {
                errors.push(
                    id,
                    "spec.auth.aws.sessionToken",
                    "only with `accessKeyId` and `secretAccessKey` (without keys, credentials come from the standard AWS credential chain)",
                );
                return Target::Demo;
            }
            return Target::Bedrock {
                endpoint,
                region: aws.region.clone(),
                aws: Some(AwsAuth::DefaultChain),
            };
        }
        (Some(id_ref), Some(secret_ref)) => (
            read("accessKeyId", id_ref),
            read("secretAccessKey", secret_ref),
        ),
        (Some(_), None) | (None, Some(_)) => {
            errors.push(
                id,
                "spec.auth.aws",
                "set both `accessKeyId` and `secretAccessKey`, or neither for the standard AWS credential chain",
            );
            return Target::Demo;
        }
    };
    let session_token = aws
        .session_token
        .as_ref()
        .map(|token| read("sessionToken", token));
    match (access_key_id, secret_access_key, session_token) {
        // `Some(None)`: the session token could not be read (reported).
        (Some(access_key_id), Some(secret_access_key), token @ (None | Some(Some(_)))) => {
            Target::Bedrock {
                endpoint,
                region: aws.region.clone(),
                aws: Some(AwsAuth::Keys(AwsCredentials {
                    access_key_id: access_key_id.expose().to_owned(),
                    secret_access_key,
                    session_token: token.flatten(),
                })),
            }
        }
        _ => Target::Demo,
    }
}

/// The `api-version` of Azure deployment URLs when a Backend names none:
/// the latest GA data-plane inference version of the classic API
/// (learn.microsoft.com/azure/ai-foundry/openai/reference).
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

/// `v1`, or a date with an optional `-preview`.
fn is_api_version(text: &str) -> bool {
    if text == "v1" {
        return true;
    }
    let date = text.strip_suffix("-preview").unwrap_or(text);
    let b = date.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// An Azure endpoint written with the SDK's `/openai` or `/openai/v1`
/// suffix still names the resource: the gateway adds the paths itself.
fn azure_resource(endpoint: &str) -> String {
    let trimmed = endpoint
        .strip_suffix("/openai/v1")
        .or_else(|| endpoint.strip_suffix("/openai"))
        .unwrap_or(endpoint);
    trimmed.to_owned()
}

/// Headers the gateway sets or that carry credentials: not for `headers`.
const RESERVED_HEADERS: [&str; 12] = [
    "authorization",
    "api-key",
    "x-api-key",
    "host",
    "content-length",
    "content-type",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-authorization",
];

fn compile_headers(
    id: &str,
    headers: Option<&BTreeMap<String, String>>,
    errors: &mut Errors,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in headers.into_iter().flatten() {
        let field = format!("spec.headers.{name}");
        let lower = name.to_ascii_lowercase();
        if let Err(e) = http_token(&lower) {
            errors.push(id, field, e);
        } else if RESERVED_HEADERS.contains(&lower.as_str()) {
            errors.push(
                id,
                field,
                format!("`{name}` is set by the gateway (credentials go in `auth`)"),
            );
        } else if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            errors.push(id, field, "the value contains control characters");
        } else {
            out.push((lower, value.clone()));
        }
    }
    out
}

fn compile_credential(
    id: &str,
    provider: Provider,
    auth: &BackendAuthSpec,
    secrets: &dyn SecretSource,
    errors: &mut Errors,
) -> Option<Credential> {
    // `Gemini` and `VertexAI` check `gcp` where their target is compiled.
    if auth.gcp.is_some() && !matches!(provider, Provider::Gemini | Provider::VertexAI) {
        errors.push(id, "spec.auth.gcp", "only for provider VertexAI");
    }
    if auth.aws.is_some() {
        // Bedrock's keys sign requests (see `compile_bedrock`): no header.
        if provider != Provider::Bedrock {
            errors.push(id, "spec.auth.aws", "only for provider Bedrock");
        }
        return None;
    }
    if let Some(azure) = &auth.azure {
        if provider != Provider::AzureOpenAI {
            errors.push(id, "spec.auth.azure", "only for provider AzureOpenAI");
            return None;
        }
        if auth.api_key.is_some() {
            errors.push(
                id,
                "spec.auth.azure",
                "set either `apiKey` or `azure.token`, not both",
            );
            return None;
        }
        let token = match secrets.get(&azure.token.value_from) {
            Ok(token) => token,
            Err(e) => {
                errors.push(id, "spec.auth.azure.token.valueFrom", e);
                return None;
            }
        };
        if token.expose().bytes().any(|b| b < 0x20 || b == 0x7f) {
            errors.push(
                id,
                "spec.auth.azure.token.valueFrom",
                "the token contains control characters",
            );
            return None;
        }
        return Some(Credential {
            header: "authorization".into(),
            value: Secret::new(format!("Bearer {}", token.expose().trim())),
        });
    }
    let key = auth.api_key.as_ref()?;
    let header = key
        .header
        .as_deref()
        .unwrap_or(provider.preset().key_header)
        .to_ascii_lowercase();
    if let Err(e) = http_token(&header) {
        errors.push(id, "spec.auth.apiKey.header", e);
        return None;
    }
    let value = match secrets.get(&key.value_from) {
        Ok(value) => value,
        Err(e) => {
            errors.push(id, "spec.auth.apiKey.valueFrom", e);
            return None;
        }
    };
    if value.expose().bytes().any(|b| b < 0x20 || b == 0x7f) {
        errors.push(
            id,
            "spec.auth.apiKey.valueFrom",
            "the key contains control characters",
        );
        return None;
    }
    let value = if header == "authorization" {
        Secret::new(format!("Bearer {}", value.expose()))
    } else {
        value
    };
    Some(Credential { header, value })
}

fn compile_price(id: &str, field: &str, spec: &PriceSpec, errors: &mut Errors) -> Option<Price> {
    let mut parse = |sub: &str, text: &str| {
        MicroUsd::parse(text)
            .map_err(|e| errors.push(id, format!("{field}.{sub}"), e))
            .ok()
    };
    let input = parse("input", &spec.input);
    let output = parse("output", &spec.output);
    let cached_input = match &spec.cached_input {
        Some(text) => parse("cachedInput", text),
        None => input,
    };
    Some(Price {
        input: input?,
        output: output?,
        cached_input: cached_input?,
    })
}

/// Normalises an endpoint into a base URL: `http(s)://host[:port]/path`
/// without a trailing slash, `version_path` (the provider's, `/v1` for
/// most) when no path is given.
pub(crate) fn base_url(endpoint: &str, version_path: &str) -> Result<String, String> {
    let (scheme, rest) = endpoint
        .split_once("://")
        .ok_or_else(|| format!("`{endpoint}` is not a URL like https://api.openai.com/v1"))?;
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "`{endpoint}`: only http and https endpoints are supported"
        ));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) {
        return Err(format!("`{endpoint}` has no valid host"));
    }
    if path.contains(['?', '#', ' ']) {
        return Err(format!(
            "`{endpoint}`: the endpoint must not carry a query or fragment"
        ));
    }
    let path = path.trim_end_matches('/');
    let path = if path.is_empty() { version_path } else { path };
    Ok(format!("{scheme}://{authority}{path}"))
}

/// Checks an MCP endpoint: an http(s) URL, kept as written (no `/v1`).
fn mcp_url(endpoint: &str) -> Result<String, String> {
    base_url(endpoint, "")?;
    Ok(endpoint.trim_end_matches('/').to_owned())
}

/// Checks an HTTP header name (RFC 9110 token).
fn http_token(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid header name"))
    }
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;

/// Compiles `spec.state.raft`: peers as `ID=HOST:PORT` with distinct ids.
fn compile_raft(id: &str, raft: &RaftSpec, errors: &mut Errors) -> Option<StateStore> {
    let mut peers = std::collections::BTreeMap::new();
    let before = errors.len();
    for (i, peer) in raft.peers.iter().enumerate() {
        let field = format!("spec.state.raft.peers[{i}]");
        let parsed = peer
            .split_once('=')
            .and_then(|(n, addr)| Some((n.trim().parse::<u64>().ok()?, addr.trim())));
        match parsed {
            Some((n, addr))
                if n > 0
                    && addr
                        .rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
            {
                if peers.insert(n, addr.to_owned()).is_some() {
                    errors.push(id, field, format!("id {n} is listed twice"));
                }
            }
            _ => errors.push(
                id,
                field,
                format!("`{peer}` is not ID=HOST:PORT with an id of 1 or more"),
            ),
        }
    }
    if raft.peers.is_empty() {
        errors.push(
            id,
            "spec.state.raft.peers",
            "list every member as ID=HOST:PORT",
        );
    }
    if let Some(n) = raft.id {
        if !raft.peers.is_empty() && !peers.contains_key(&n) {
            errors.push(
                id,
                "spec.state.raft.id",
                format!("{n} is not among the peers"),
            );
        }
    }
    let listen = match raft.listen.as_deref().map(str::parse::<SocketAddr>) {
        None => None,
        Some(Ok(addr)) => Some(addr),
        Some(Err(_)) => {
            errors.push(id, "spec.state.raft.listen", "not an IP:PORT address");
            None
        }
    };
    if errors.len() > before {
        return None;
    }
    Some(StateStore::Raft {
        id: raft.id.unwrap_or(0),
        peers,
        data_dir: raft.data_dir.as_deref().map(PathBuf::from),
        listen,
    })
}
