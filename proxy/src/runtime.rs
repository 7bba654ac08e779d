//! The serving form of a config: a compiled [`Snapshot`] plus the lookup
//! tables and ready-made header values the hot path uses. Built once per
//! config load and shared as an `Arc`; requests never lock or clone it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use sluice_crds::pattern::ModelPattern;
use sluice_crds::snapshot::{ApiKeyHash, AwsAuth, AzureApi, Target, TenantId};
use sluice_crds::Snapshot;

use crate::llm::aws_creds::{CredentialChain, Signing};

/// One backend, ready to call.
pub struct BackendRuntime {
    /// Its name (for logs and metrics).
    pub name: Arc<str>,
    /// Provider name, lower case, as the `gen_ai_provider_name` label.
    pub provider: &'static str,
    /// How to reach it.
    pub kind: BackendKind,
    /// Per-attempt header wait and stream idle limit.
    pub timeout: std::time::Duration,
}

/// How a backend is reached.
pub enum BackendKind {
    /// The in-process demo model.
    Demo,
    /// An MCP server over streamable HTTP.
    Mcp {
        /// Its MCP endpoint.
        url: String,
        /// The injected credential.
        credential: Option<(HeaderName, HeaderValue)>,
    },
    /// An MCP server over the legacy HTTP+SSE transport.
    McpSse {
        /// Its SSE endpoint.
        url: String,
        /// The injected credential.
        credential: Option<(HeaderName, HeaderValue)>,
    },
    /// An MCP server run as a local process (stdio).
    McpStdio {
        /// Program and arguments.
        command: Vec<String>,
    },
    /// An OpenAI-compatible HTTP API.
    Http {
        /// Base URL, e.g. `https://api.openai.com/v1`.
        base_url: String,
        /// The injected credential.
        credential: Option<(HeaderName, HeaderValue)>,
        /// How request paths are built on the base URL.
        paths: UpstreamPaths,
        /// What the provider accepts (see `Provider::preset`).
        preset: sluice_crds::snapshot::Preset,
        /// The Backend's `headers`, added to every request.
        headers: Vec<(HeaderName, HeaderValue)>,
        /// Vertex AI: where OAuth tokens come from (sent as `authorization`).
        gcp: Option<Arc<crate::llm::gcp_auth::TokenSource>>,
        /// Signs each request (Bedrock with AWS keys, from the config or
        /// the standard credential chain).
        signer: Option<Signing>,
    },
}

/// How an HTTP backend's request paths are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamPaths {
    /// `{base}/chat/completions`, `{base}/responses`, ...
    OpenAI,
    /// Azure deployment URLs on `{endpoint}/openai`:
    /// `/deployments/{model}/chat/completions?api-version=X`.
    AzureDeployments {
        /// `api-version=X`, ready to append.
        query: String,
    },
    /// Google's `{base}/models/{model}:generateContent` (Gemini, Vertex AI).
    Gemini,
    /// Bedrock: `{endpoint}/model/{model}/converse[-stream]`.
    Bedrock,
}

/// A client key's identity.
pub struct KeyEntry {
    /// The tenant.
    pub tenant: Arc<str>,
    /// The key's name (budgets may be scoped to it).
    pub name: Arc<str>,
}

/// The running config.
pub struct Runtime {
    /// The compiled config.
    pub snapshot: Snapshot,
    /// Increments with every successful load.
    pub version: u64,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// Client keys by hash.
    pub keys: HashMap<ApiKeyHash, KeyEntry>,
    /// The anonymous tenant, if allowed.
    pub anonymous_tenant: Option<Arc<str>>,
    exact_models: HashMap<String, usize>,
    glob_models: Vec<(ModelPattern, usize)>,
    /// Backends, indexed as in the snapshot.
    pub backends: Vec<BackendRuntime>,
    /// The `/v1/models` response body.
    pub models_body: Bytes,
    /// MCP routes by path.
    pub mcp_paths: HashMap<String, usize>,
    /// Seals and opens MCP session ids.
    pub session_codec: crate::mcp::session::SessionCodec,
    /// JWT bearer tokens accepted besides the keys (`auth.jwt`).
    pub jwt: Option<crate::jwt::Validator>,
    /// Token checks of MCP routes with `auth.oauth`, indexed as the routes.
    pub mcp_oauth: Vec<Option<crate::jwt::Validator>>,
    /// Protected Resource Metadata paths, to the MCP route each describes.
    pub oauth_metadata: HashMap<String, usize>,
    /// Budgets, ready to count.
    pub budgets: Vec<Arc<crate::limits::BudgetRuntime>>,
    /// Prices by backend and model: `pricing`, then the built-in list.
    pub prices: crate::limits::pricing::PriceTable,
}

impl Runtime {
    /// The budgets that cover a request: of its tenant, its key (by name)
    /// and model (`None` for an MCP tool call). Empty for most gateways,
    /// without allocating.
    pub fn budgets_for(
        &self,
        tenant: &str,
        key: Option<&str>,
        model: Option<&str>,
    ) -> Vec<Arc<crate::limits::BudgetRuntime>> {
        if self.budgets.is_empty() {
            return Vec::new();
        }
        self.budgets
            .iter()
            .filter(|b| b.covers(tenant, key, model))
            .cloned()
            .collect()
    }
}

/// Why a snapshot could not be turned into a runtime.
#[derive(Debug, thiserror::Error)]
#[error("backend {backend}: {message}")]
pub struct RuntimeError {
    backend: String,
    message: String,
}

impl Runtime {
    /// Builds the tables.
    pub fn new(snapshot: Snapshot, version: u64) -> Result<Self, RuntimeError> {
        let keys = snapshot
            .auth
            .api_keys
            .iter()
            .map(|key| {
                (
                    key.hash,
                    KeyEntry {
                        tenant: key.tenant.0.clone(),
                        name: key.name.clone(),
                    },
                )
            })
            .collect();
        let anonymous_tenant = snapshot
            .auth
            .anonymous_tenant
            .as_ref()
            .map(|TenantId(t)| t.clone());

        // Exact names first (the first route naming a model wins), then globs in order.
        let mut exact_models = HashMap::new();
        let mut glob_models = Vec::new();
        for (index, route) in snapshot.routes.iter().enumerate() {
            for pattern in &route.models {
                match pattern {
                    ModelPattern::Exact(name) => {
                        exact_models.entry(name.clone()).or_insert(index);
                    }
                    ModelPattern::Glob(_) => glob_models.push((pattern.clone(), index)),
                }
            }
        }

        let backends = snapshot
            .backends
            .iter()
            .map(|backend| {
                let credential = match &backend.credential {
                    None => None,
                    Some(c) => {
                        let error = |message: &str| RuntimeError {
                            backend: backend.name.to_string(),
                            message: message.to_owned(),
                        };
                        let name = HeaderName::from_bytes(c.header.as_bytes())
                            .map_err(|_| error("invalid credential header name"))?;
                        let mut value = HeaderValue::from_str(c.value.expose())
                            .map_err(|_| error("the credential is not a valid header value"))?;
                        value.set_sensitive(true);
                        Some((name, value))
                    }
                };
                let kind = match &backend.target {
                    Target::Demo => BackendKind::Demo,
                    Target::OpenAICompatible { base_url } => BackendKind::Http {
                        base_url: base_url.clone(),
                        credential,
                        paths: UpstreamPaths::OpenAI,
                        preset: backend.provider.preset(),
                        headers: extra_headers(backend)?,
                        gcp: None,
                        signer: None,
                    },
                    Target::Gemini {
                        base_url,
                        service_account,
                    } => BackendKind::Http {
                        base_url: base_url.clone(),
                        credential,
                        paths: UpstreamPaths::Gemini,
                        preset: backend.provider.preset(),
                        headers: extra_headers(backend)?,
                        gcp: match service_account {
                            None => None,
                            // Shared: a reload with the same key keeps its token.
                            Some(account) => {
                                Some(crate::llm::gcp_auth::TokenSource::shared(account).map_err(
                                    |message| RuntimeError {
                                        backend: backend.name.to_string(),
                                        message,
                                    },
                                )?)
                            }
                        },
                        signer: None,
                    },
                    Target::AzureOpenAI { endpoint, api } => BackendKind::Http {
                        base_url: match api {
                            AzureApi::V1 => format!("{endpoint}/openai/v1"),
                            AzureApi::Deployments { .. } => format!("{endpoint}/openai"),
                        },
                        credential,
                        paths: match api {
                            AzureApi::V1 => UpstreamPaths::OpenAI,
                            AzureApi::Deployments { api_version } => {
                                UpstreamPaths::AzureDeployments {
                                    query: format!("api-version={api_version}"),
                                }
                            }
                        },
                        preset: backend.provider.preset(),
                        headers: extra_headers(backend)?,
                        gcp: None,
                        signer: None,
                    },
                    Target::Bedrock {
                        endpoint,
                        region,
                        aws,
                    } => BackendKind::Http {
                        base_url: endpoint.clone(),
                        credential,
                        paths: UpstreamPaths::Bedrock,
                        preset: backend.provider.preset(),
                        headers: extra_headers(backend)?,
                        signer: match aws {
                            None => None,
                            Some(AwsAuth::Keys(aws)) => Some(Signing::Keys(Arc::new(
                                crate::llm::sigv4::Signer::new(aws, region, "bedrock").map_err(
                                    |e| RuntimeError {
                                        backend: backend.name.to_string(),
                                        message: e.to_string(),
                                    },
                                )?,
                            ))),
                            // Shared with the config this one replaces.
                            Some(AwsAuth::DefaultChain) => {
                                Some(Signing::Chain(CredentialChain::shared(region)))
                            }
                        },
                        gcp: None,
                    },
                    Target::Mcp { url } => BackendKind::Mcp {
                        url: url.clone(),
                        credential,
                    },
                    Target::McpSse { url } => BackendKind::McpSse {
                        url: url.clone(),
                        credential,
                    },
                    Target::McpStdio { command } => BackendKind::McpStdio {
                        command: command.clone(),
                    },
                };
                Ok(BackendRuntime {
                    name: backend.name.0.clone(),
                    provider: provider_label(backend.provider.name()),
                    kind,
                    timeout: backend.timeout,
                })
            })
            .collect::<Result<Vec<_>, RuntimeError>>()?;

        let models_body = models_body(&snapshot);
        let mcp_paths = snapshot
            .mcp_routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.path.clone(), i))
            .collect();
        // One key cache per JWKS URL, shared by every check that uses it.
        let mut caches: HashMap<(String, std::time::Duration), Arc<crate::jwt::jwks::Jwks>> =
            HashMap::new();
        let mut validator = |rules: &sluice_crds::snapshot::JwtRules| {
            let key = (rules.jwks_uri.clone(), rules.jwks_refetch_interval);
            let jwks = caches.entry(key).or_insert_with(|| {
                Arc::new(crate::jwt::jwks::Jwks::new(
                    &rules.jwks_uri,
                    rules.jwks_refetch_interval,
                ))
            });
            crate::jwt::Validator::new(rules.clone(), jwks.clone())
        };
        let jwt = snapshot.auth.jwt.as_ref().map(&mut validator);
        let mcp_oauth = snapshot
            .mcp_routes
            .iter()
            .map(|route| route.oauth.as_ref().map(|oauth| validator(&oauth.jwt)))
            .collect();
        let oauth_metadata = crate::mcp::oauth::metadata_paths(&snapshot.mcp_routes);
        let session_codec = match &snapshot.session_key {
            Some(key) => crate::mcp::session::SessionCodec::from_secret(key.expose().as_bytes()),
            None => crate::mcp::session::SessionCodec::process_local(),
        };
        let prices = crate::limits::pricing::PriceTable::new(&snapshot.backends);
        let snapshot_budgets = snapshot
            .budgets
            .iter()
            .map(|b| Arc::new(crate::limits::BudgetRuntime::new(b)))
            .collect();
        Ok(Self {
            snapshot,
            version,
            loaded_at: SystemTime::now(),
            keys,
            anonymous_tenant,
            exact_models,
            glob_models,
            backends,
            models_body,
            mcp_paths,
            session_codec,
            jwt,
            mcp_oauth,
            oauth_metadata,
            budgets: snapshot_budgets,
            prices,
        })
    }

    /// The price of `client_model` at route backend `backend` (its model
    /// override, if any, is what the provider bills).
    pub fn price_at(
        &self,
        route: &sluice_crds::snapshot::Route,
        backend: usize,
        client_model: &str,
    ) -> Option<sluice_crds::snapshot::Price> {
        let model = route
            .backends
            .iter()
            .find(|b| b.backend == backend)
            .and_then(|b| b.model.as_deref())
            .unwrap_or(client_model);
        self.prices.price(backend, model)
    }

    /// The route serving `model`, if any.
    pub fn route_for(&self, model: &str) -> Option<usize> {
        self.exact_models.get(model).copied().or_else(|| {
            self.glob_models
                .iter()
                .find(|(pattern, _)| pattern.matches(model))
                .map(|(_, index)| *index)
        })
    }
}

/// A backend's `headers`, ready to send (compile checked them).
fn extra_headers(
    backend: &sluice_crds::snapshot::Backend,
) -> Result<Vec<(HeaderName, HeaderValue)>, RuntimeError> {
    backend
        .headers
        .iter()
        .map(|(name, value)| {
            let error = || RuntimeError {
                backend: backend.name.to_string(),
                message: format!("header `{name}` is not valid"),
            };
            Ok((
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| error())?,
                HeaderValue::from_str(value).map_err(|_| error())?,
            ))
        })
        .collect()
}

fn provider_label(name: &'static str) -> &'static str {
    // OTel's gen_ai.provider.name values are lower case.
    match name {
        "OpenAI" => "openai",
        "OpenAICompatible" => "openai_compatible",
        "Demo" => "sluice_demo",
        "Ollama" => "ollama",
        "VLLM" => "vllm",
        "LMStudio" => "lmstudio",
        "Mistral" => "mistral_ai",
        "Groq" => "groq",
        "DeepSeek" => "deepseek",
        "Together" => "together",
        "Fireworks" => "fireworks",
        "OpenRouter" => "openrouter",
        "XAI" => "x_ai",
        "Cerebras" => "cerebras",
        "SambaNova" => "sambanova",
        "DeepInfra" => "deepinfra",
        "Perplexity" => "perplexity",
        "GeminiOpenAI" => "gcp.gemini",
        "AzureOpenAI" => "azure.ai.openai",
        "Anthropic" => "anthropic",
        "Gemini" => "gcp.gemini",
        "VertexAI" => "gcp.vertex_ai",
        "Bedrock" => "aws.bedrock",
        "Cohere" => "cohere",
        "MCP" => "mcp",
        other => other,
    }
}

/// `GET /v1/models`: every exact route model and every model a backend
/// advertises, once each, in config order.
fn models_body(snapshot: &Snapshot) -> Bytes {
    let mut seen = std::collections::HashSet::new();
    let mut data = Vec::new();
    let mut add = |id: &str, owner: &str| {
        if seen.insert(id.to_owned()) {
            data.push(
                serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": owner}),
            );
        }
    };
    for route in &snapshot.routes {
        let owner = route
            .backends
            .first()
            .and_then(|b| snapshot.backends.get(b.backend))
            .map_or("sluice", |b| &*b.name.0);
        for pattern in &route.models {
            if let ModelPattern::Exact(name) = pattern {
                add(name, owner);
            }
        }
    }
    for backend in &snapshot.backends {
        for model in &backend.models {
            add(model, &backend.name.0);
        }
    }
    Bytes::from(serde_json::json!({"object": "list", "data": data}).to_string())
}
