//! The compiled, validated runtime model: what `compile` produces and the
//! proxy serves from. Immutable once built; nothing in it is optional where
//! validation already decided, and secrets are either hashed (client keys)
//! or wrapped in [`Secret`] (upstream credentials).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::pattern::ModelPattern;
use crate::values::{MicroUsd, Secret};

/// A compiled gateway config.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// `sha256:` of the sources it was compiled from.
    pub hash: String,
    /// Data-plane address.
    pub listen: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// Client authentication.
    pub auth: Auth,
    /// Lower-cased session-id header names, in priority order.
    pub session_headers: Vec<String>,
    /// Largest request body accepted, in bytes.
    pub max_request_body: u64,
    /// LLM routes, in the order written.
    pub routes: Vec<Route>,
    /// Backends; routes refer to them by index.
    pub backends: Vec<Backend>,
    /// Where access-log lines go.
    pub access_log: AccessLogTarget,
    /// The key MCP session ids are encrypted with (`None`: a random key per process).
    pub session_key: Option<Secret>,
    /// MCP routes.
    pub mcp_routes: Vec<McpRoute>,
    /// Budgets and rate limits.
    pub budgets: Vec<Budget>,
    /// Where their counters live.
    pub state: StateStore,
}

/// One MCP route: many MCP servers behind one path.
#[derive(Debug, Clone)]
pub struct McpRoute {
    /// The MCPRoute's name.
    pub name: Arc<str>,
    /// The path it serves, e.g. `/mcp`.
    pub path: String,
    /// Its backends, in the order written.
    pub backends: Vec<McpRouteBackend>,
    /// Per-tenant tool allow-lists; `None`: every tenant sees every tool.
    pub access: Option<Vec<McpAccess>>,
    /// OAuth resource server; `None`: clients use the gateway's `auth`.
    pub oauth: Option<OAuth>,
}

/// How bearer JWTs are checked (`AIGateway` `auth.jwt`, `MCPRoute` `auth.oauth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtRules {
    /// Expected `iss`, exactly.
    pub issuer: String,
    /// Accepted `aud` values (at least one).
    pub audiences: Vec<String>,
    /// The JWKS URL (http or https).
    pub jwks_uri: String,
    /// Top-level claim that names the tenant.
    pub tenant_claim: String,
    /// Shortest time between two JWKS fetches.
    pub jwks_refetch_interval: Duration,
}

/// An MCP route's OAuth 2.1 resource-server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth {
    /// How its access tokens are checked.
    pub jwt: JwtRules,
    /// Scopes every token must carry.
    pub scopes: Vec<String>,
    /// The configured public URL of the route; `None`: built per request.
    pub resource: Option<String>,
}

impl McpRoute {
    /// Whether `tenant` may see and call the tool clients know as `tool`.
    pub fn allows(&self, tenant: &str, tool: &str) -> bool {
        let Some(access) = &self.access else {
            return true;
        };
        access.iter().any(|entry| {
            *entry.tenant == *tenant
                && (entry.include.is_empty() || entry.include.iter().any(|p| p.matches(tool)))
                && !entry.exclude.iter().any(|p| p.matches(tool))
        })
    }
}

/// The tools one tenant may use on a route.
#[derive(Debug, Clone)]
pub struct McpAccess {
    /// The tenant.
    pub tenant: Arc<str>,
    /// Client-facing tool names allowed (empty: all).
    pub include: Vec<ModelPattern>,
    /// Client-facing tool names refused.
    pub exclude: Vec<ModelPattern>,
}

/// One MCP server of a route.
#[derive(Debug, Clone)]
pub struct McpRouteBackend {
    /// Index into [`Snapshot::backends`] (a `provider: MCP` backend).
    pub backend: usize,
    /// Prefix of its tool and prompt names (`{prefix}__{name}`); `None`
    /// when the route's prefix mode leaves names as they are.
    pub prefix: Option<String>,
    /// Tools to expose (empty: all).
    pub include: Vec<ModelPattern>,
    /// Tools to hide.
    pub exclude: Vec<ModelPattern>,
}

impl McpRouteBackend {
    /// Whether the route exposes the upstream tool `name`.
    pub fn exposes(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(name)))
            && !self.exclude.iter().any(|p| p.matches(name))
    }
}

/// A tenant name; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(pub Arc<str>);

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A backend name; cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendName(pub Arc<str>);

impl fmt::Display for BackendName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The SHA-256 of a client API key: the only form in which keys are kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiKeyHash(pub [u8; 32]);

impl ApiKeyHash {
    /// Hashes a presented or configured key.
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }
}

impl fmt::Debug for ApiKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ApiKeyHash({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// Client authentication.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Configured client keys.
    pub api_keys: Vec<ApiKey>,
    /// Tenant for requests without a credential; `None` requires one.
    pub anonymous_tenant: Option<TenantId>,
    /// JWT bearer tokens accepted besides the keys.
    pub jwt: Option<JwtRules>,
}

/// One client key, hashed.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// The key's name (safe to log).
    pub name: Arc<str>,
    /// Its tenant.
    pub tenant: TenantId,
    /// SHA-256 of its value.
    pub hash: ApiKeyHash,
}

/// One LLM route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Client model names it serves.
    pub models: Vec<ModelPattern>,
    /// Its backends, as written.
    pub backends: Vec<RouteBackend>,
    /// Retry and fallback policy.
    pub retry: Retry,
    /// Deadline for response headers across all attempts.
    pub timeout: Duration,
}

/// A backend of a route.
#[derive(Debug, Clone)]
pub struct RouteBackend {
    /// Index into [`Snapshot::backends`].
    pub backend: usize,
    /// Model name sent upstream instead of the client's.
    pub model: Option<Arc<str>>,
    /// Traffic share within its priority.
    pub weight: u32,
    /// 0 first; higher values are fallbacks.
    pub priority: u32,
}

/// When to make another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Total attempts, the first included (1..=10).
    pub attempts: u32,
    /// Retry on connection failures.
    pub on_connect: bool,
    /// Retry when the backend's timeout elapses before headers.
    pub on_timeout: bool,
    /// Retry on HTTP 429.
    pub on_429: bool,
    /// Retry on HTTP 5xx.
    pub on_5xx: bool,
}

/// The providers Sluice knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// The built-in, in-process demo model.
    Demo,
    /// OpenAI.
    OpenAI,
    /// Any OpenAI-compatible endpoint.
    OpenAICompatible,
    /// Ollama's OpenAI-compatible API.
    Ollama,
    /// vLLM's OpenAI-compatible server.
    VLLM,
    /// LM Studio's local server.
    LMStudio,
    /// Mistral La Plateforme.
    Mistral,
    /// Groq.
    Groq,
    /// DeepSeek.
    DeepSeek,
    /// Together AI.
    Together,
    /// Fireworks AI.
    Fireworks,
    /// OpenRouter.
    OpenRouter,
    /// xAI.
    XAI,
    /// Cerebras.
    Cerebras,
    /// SambaNova.
    SambaNova,
    /// DeepInfra.
    DeepInfra,
    /// Perplexity (Sonar).
    Perplexity,
    /// Gemini's OpenAI-compatible endpoint.
    GeminiOpenAI,
    /// Azure OpenAI (deployment URLs, `api-key` header).
    AzureOpenAI,
    /// An MCP server (streamable HTTP).
    Mcp,
    /// Anthropic's Messages API (translated from and to OpenAI's schema).
    Anthropic,
    /// Google's Gemini API (AI Studio), native `generateContent`.
    Gemini,
    /// Gemini (and Anthropic's Claude) models on Google Cloud Vertex AI
    /// (service-account auth, or an API key in express mode).
    VertexAI,
    /// AWS Bedrock's Converse API (translated, requests signed with SigV4).
    Bedrock,
    /// Cohere's v2 Chat API (translated from and to OpenAI's schema).
    Cohere,
}

impl Provider {
    /// Every supported provider with its name in config.
    pub const ALL: [(&'static str, Provider); 25] = [
        ("Demo", Provider::Demo),
        ("OpenAI", Provider::OpenAI),
        ("OpenAICompatible", Provider::OpenAICompatible),
        ("Ollama", Provider::Ollama),
        ("VLLM", Provider::VLLM),
        ("LMStudio", Provider::LMStudio),
        ("Mistral", Provider::Mistral),
        ("Groq", Provider::Groq),
        ("DeepSeek", Provider::DeepSeek),
        ("Together", Provider::Together),
        ("Fireworks", Provider::Fireworks),
        ("OpenRouter", Provider::OpenRouter),
        ("XAI", Provider::XAI),
        ("Cerebras", Provider::Cerebras),
        ("SambaNova", Provider::SambaNova),
        ("DeepInfra", Provider::DeepInfra),
        ("Perplexity", Provider::Perplexity),
        ("GeminiOpenAI", Provider::GeminiOpenAI),
        ("AzureOpenAI", Provider::AzureOpenAI),
        ("MCP", Provider::Mcp),
        ("Anthropic", Provider::Anthropic),
        ("Gemini", Provider::Gemini),
        ("VertexAI", Provider::VertexAI),
        ("Bedrock", Provider::Bedrock),
        ("Cohere", Provider::Cohere),
    ];

    /// Providers of API.md whose translators are not built yet.
    pub const NOT_YET: [&'static str; 0] = [];

    /// Parses a config name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("Unknown", |(n, _)| n)
    }

    /// Default base URL (`None`: an endpoint is required, or none is used).
    pub fn default_endpoint(self) -> Option<&'static str> {
        self.preset().default_endpoint
    }

    /// What Sluice knows of the provider's API: the one place per-provider
    /// facts live. Each arm cites where its quirks are documented.
    pub fn preset(self) -> Preset {
        let openai = Preset::OPENAI_LIKE;
        match self {
            Self::Demo | Self::Mcp => Preset {
                default_endpoint: None,
                ..openai
            },
            // https://platform.openai.com/docs/api-reference/chat
            Self::OpenAI => Preset {
                default_endpoint: Some("https://api.openai.com/v1"),
                ..openai
            },
            Self::OpenAICompatible => Preset {
                default_endpoint: None,
                ..openai
            },
            // docs.ollama.com/api/openai-compatibility: stream_options.include_usage
            // is a supported field; no key needed.
            Self::Ollama => Preset {
                default_endpoint: Some("http://127.0.0.1:11434/v1"),
                ..openai
            },
            // Self-hosted: where it runs is the operator's choice.
            Self::VLLM => Preset {
                default_endpoint: None,
                ..openai
            },
            Self::LMStudio => Preset {
                default_endpoint: Some("http://127.0.0.1:1234/v1"),
                ..openai
            },
            // Mistral's API refuses unknown fields with 422 `extra_forbidden`,
            // `stream_options` and `max_completion_tokens` among them, and
            // puts usage in the last chunk of every stream on its own.
            Self::Mistral => Preset {
                default_endpoint: Some("https://api.mistral.ai/v1"),
                stream_options: false,
                max_completion_tokens: false,
                ..openai
            },
            // console.groq.com/docs/openai
            Self::Groq => Preset {
                default_endpoint: Some("https://api.groq.com/openai/v1"),
                ..openai
            },
            // api-docs.deepseek.com: stream_options.include_usage supported.
            Self::DeepSeek => Preset {
                default_endpoint: Some("https://api.deepseek.com/v1"),
                ..openai
            },
            Self::Together => Preset {
                default_endpoint: Some("https://api.together.xyz/v1"),
                ..openai
            },
            Self::Fireworks => Preset {
                default_endpoint: Some("https://api.fireworks.ai/inference/v1"),
                ..openai
            },
            // openrouter.ai/docs: stream_options.include_usage is accepted and
            // has no effect (usage is always sent).
            Self::OpenRouter => Preset {
                default_endpoint: Some("https://openrouter.ai/api/v1"),
                ..openai
            },
            Self::XAI => Preset {
                default_endpoint: Some("https://api.x.ai/v1"),
                ..openai
            },
            // inference-docs.cerebras.ai/resources/openai
            Self::Cerebras => Preset {
                default_endpoint: Some("https://api.cerebras.ai/v1"),
                ..openai
            },
            Self::SambaNova => Preset {
                default_endpoint: Some("https://api.sambanova.ai/v1"),
                ..openai
            },
            Self::DeepInfra => Preset {
                default_endpoint: Some("https://api.deepinfra.com/v1/openai"),
                ..openai
            },
            // docs.perplexity.ai/docs/sonar/openai-compatibility: the base URL
            // has no version path (`/chat/completions` on the host).
            Self::Perplexity => Preset {
                default_endpoint: Some("https://api.perplexity.ai"),
                version_path: "",
                ..openai
            },
            // ai.google.dev/gemini-api/docs/openai: Bearer GEMINI_API_KEY.
            Self::GeminiOpenAI => Preset {
                default_endpoint: Some("https://generativelanguage.googleapis.com/v1beta/openai"),
                ..openai
            },
            // learn.microsoft.com/azure/ai-foundry/openai/reference: the key
            // goes in `api-key`; the endpoint is the resource's.
            Self::AzureOpenAI => Preset {
                default_endpoint: None,
                key_header: "api-key",
                version_path: "",
                ..openai
            },
            // docs.anthropic.com/en/api/messages: the bare key in `x-api-key`;
            // translated from and to OpenAI's schema (llm/translate).
            Self::Anthropic => Preset {
                default_endpoint: Some("https://api.anthropic.com/v1"),
                key_header: "x-api-key",
                ..openai
            },
            // ai.google.dev/api/generate-content: `{base}/models/{model}:generateContent`
            // (`:streamGenerateContent?alt=sse`), the bare key in `x-goog-api-key`;
            // translated from and to OpenAI's schema (llm/translate/gemini).
            Self::Gemini => Preset {
                default_endpoint: Some("https://generativelanguage.googleapis.com"),
                version_path: "/v1beta",
                key_header: "x-goog-api-key",
                ..openai
            },
            // cloud.google.com/vertex-ai/generative-ai/docs/reference/rest: the
            // same body as Gemini under `/v1/projects/{p}/locations/{l}/publishers/google`
            // on `https://{l}-aiplatform.googleapis.com`, with an OAuth token
            // from a service account (`auth.gcp`); the endpoint is built from it.
            // Express mode: an `apiKey` in `x-goog-api-key` on
            // `https://aiplatform.googleapis.com/v1/publishers/google`.
            Self::VertexAI => Preset {
                default_endpoint: None,
                key_header: "x-goog-api-key",
                ..openai
            },
            // docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html:
            // `{endpoint}/model/{modelId}/converse[-stream]`, no version path;
            // the endpoint defaults to the region's (see `Target::Bedrock`).
            // An API key (Bedrock API keys) goes as `Authorization: Bearer`.
            Self::Bedrock => Preset {
                default_endpoint: None,
                version_path: "",
                ..openai
            },
            // docs.cohere.com/reference/chat: `POST {base}/v2/chat`, the key as
            // `Authorization: Bearer`; translated from and to OpenAI's schema
            // (llm/translate/cohere).
            Self::Cohere => Preset {
                default_endpoint: Some("https://api.cohere.com"),
                version_path: "/v2",
                ..openai
            },
        }
    }
}

/// Per-provider facts of an OpenAI-shaped API (see [`Provider::preset`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// Base URL used when a Backend sets no `endpoint` (`None`: required).
    pub default_endpoint: Option<&'static str>,
    /// Path added to an `endpoint` written without one (`/v1` for most).
    pub version_path: &'static str,
    /// Header an `apiKey` goes in unless the Backend names one; `authorization`
    /// carries `Bearer KEY`, any other the bare key.
    pub key_header: &'static str,
    /// Accepts `stream_options` (so the gateway may ask for stream usage);
    /// `false`: the field is removed from requests before they go upstream.
    pub stream_options: bool,
    /// Accepts `max_completion_tokens`; `false`: it is renamed `max_tokens`.
    pub max_completion_tokens: bool,
}

impl Preset {
    /// OpenAI's own behaviour, the starting point of every preset.
    pub const OPENAI_LIKE: Preset = Preset {
        default_endpoint: None,
        version_path: "/v1",
        key_header: "authorization",
        stream_options: true,
        max_completion_tokens: true,
    };
}

/// A compiled backend.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Its name.
    pub name: BackendName,
    /// Its provider.
    pub provider: Provider,
    /// How requests reach it.
    pub target: Target,
    /// The credential the gateway injects.
    pub credential: Option<Credential>,
    /// Models advertised in `/v1/models`.
    pub models: Vec<String>,
    /// Price overrides per model, USD per million tokens.
    pub pricing: BTreeMap<String, Price>,
    /// Per-attempt header wait and longest gap between body chunks.
    pub timeout: Duration,
    /// Headers added to every upstream request (lower-case names).
    pub headers: Vec<(String, String)>,
}

/// Where a backend's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Answered in process by the demo model.
    Demo,
    /// An OpenAI-compatible HTTP API.
    OpenAICompatible {
        /// Base URL without a trailing slash, e.g. `https://api.openai.com/v1`;
        /// `/chat/completions` etc. are appended.
        base_url: String,
    },
    /// Azure OpenAI: one resource, models by deployment name.
    AzureOpenAI {
        /// `https://{resource}.openai.azure.com`, without a trailing slash.
        endpoint: String,
        /// How request URLs are built.
        api: AzureApi,
    },
    /// Google's `generateContent` API (`Gemini`, `VertexAI`).
    Gemini {
        /// Where `/models/{model}:generateContent` is appended, e.g.
        /// `https://generativelanguage.googleapis.com/v1beta` or
        /// `https://us-central1-aiplatform.googleapis.com/v1/projects/P/locations/us-central1/publishers/google`.
        base_url: String,
        /// Vertex AI: the service account whose OAuth tokens are sent.
        service_account: Option<ServiceAccount>,
    },
    /// AWS Bedrock's Converse API.
    Bedrock {
        /// `https://bedrock-runtime.{region}.amazonaws.com`, or the Backend's
        /// `endpoint` (a VPC endpoint, a test server), without a trailing slash.
        endpoint: String,
        /// The region signatures are made for.
        region: String,
        /// How requests are signed (`None`: the Backend's `apiKey` is sent
        /// as a bearer token instead).
        aws: Option<AwsAuth>,
    },
    /// An MCP server over streamable HTTP.
    Mcp {
        /// The server's MCP endpoint, e.g. `https://mcp.example.com/mcp`.
        url: String,
    },
    /// An MCP server over the legacy HTTP+SSE transport (2024-11-05).
    McpSse {
        /// Its SSE endpoint, e.g. `http://127.0.0.1:3001/sse`.
        url: String,
    },
    /// An MCP server run as a local process over stdio (standalone only).
    McpStdio {
        /// Program and arguments.
        command: Vec<String>,
    },
}

/// A Google service account key (the fields of its JSON key file the
/// gateway uses), for OAuth tokens of the `cloud-platform` scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// `client_email`: the JWT's issuer.
    pub client_email: String,
    /// `private_key_id`: the JWT's `kid`.
    pub private_key_id: Option<String>,
    /// `private_key`: a PEM RSA key (PKCS#8), never logged.
    pub private_key: Secret,
    /// `token_uri`: where the signed JWT is exchanged for a token.
    pub token_uri: String,
}

/// Where a Bedrock backend's AWS credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsAuth {
    /// Keys from the config, read when it loads.
    Keys(AwsCredentials),
    /// The AWS SDKs' standard credential chain, resolved, cached and
    /// refreshed by the gateway (`auth.aws` with a region and no keys).
    DefaultChain,
}

/// AWS credentials, ready to sign with (Signature Version 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    /// The access key id (not a secret: it is sent in every signature).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// The session token of temporary credentials.
    pub session_token: Option<Secret>,
}

/// The URL style of an Azure OpenAI backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureApi {
    /// `{endpoint}/openai/v1/chat/completions`, the model (deployment) in
    /// the body; no `api-version` (`apiVersion: v1`).
    V1,
    /// `{endpoint}/openai/deployments/{model}/chat/completions?api-version=X`.
    Deployments {
        /// The `api-version` query value, e.g. `2024-10-21`.
        api_version: String,
    },
}

/// An upstream credential, ready to send.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Lower-case header name.
    pub header: String,
    /// Full header value (e.g. `Bearer sk-...`).
    pub value: Secret,
}

/// Prices per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    /// Input tokens.
    pub input: MicroUsd,
    /// Output tokens.
    pub output: MicroUsd,
    /// Cached input tokens.
    pub cached_input: MicroUsd,
}

/// Access-log destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output (the default).
    Stdout,
    /// No access log.
    Off,
    /// Appended to a file.
    File(PathBuf),
}

/// Where limit and budget counters live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateStore {
    /// In this process; settled spend kept in a file across restarts.
    Memory {
        /// The file (`None`: no budget needs one, or the default could not be found).
        path: Option<std::path::PathBuf>,
    },
    /// An embedded Raft group formed by the replicas.
    Raft {
        /// This replica's id.
        id: u64,
        /// Every member: id -> `host:port`.
        peers: std::collections::BTreeMap<u64, String>,
        /// Where the log and snapshots are kept (`None`: the default
        /// under the state directory).
        data_dir: Option<std::path::PathBuf>,
        /// Where to listen for Raft traffic (`None`: the peer address).
        listen: Option<std::net::SocketAddr>,
    },
    /// A Redis or Valkey server shared by the replicas.
    Redis {
        /// `redis://host:port[/db]` or `rediss://` (TLS).
        url: String,
        /// A Redis Cluster: `url` is one of its nodes.
        cluster: bool,
    },
}

/// A compiled Budget: limits on one tenant's traffic.
#[derive(Debug, Clone)]
pub struct Budget {
    /// `metadata.name`.
    pub name: Arc<str>,
    /// The tenant it applies to.
    pub tenant: Arc<str>,
    /// Models in scope; empty: every model (and MCP tool calls).
    pub models: Vec<ModelPattern>,
    /// The API key (by its `name` in `auth.apiKeys`) in scope, if only one.
    pub api_key: Option<String>,
    /// Every applicable limit must pass.
    pub limits: Vec<Limit>,
    /// What a stream that crosses a limit gets.
    pub enforcement: Enforcement,
    /// What happens when the counter store cannot be reached.
    pub failure_mode: FailureMode,
    /// Percentages of a limit that raise an alert, ascending.
    pub alerts_at: Vec<u32>,
}

/// One limit of a budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Unique within its budget, e.g. `cost-monthly`.
    pub name: String,
    /// What is counted.
    pub metric: Metric,
    /// The most that may be spent per window: micro-USD, tokens or requests.
    pub amount: u64,
    /// Over which time.
    pub window: Window,
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Spend in micro-USD.
    Cost,
    /// Tokens of this kind.
    Tokens(TokenKind),
    /// Requests (LLM requests and MCP tool calls).
    Requests,
}

/// Which tokens a token limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Input plus output.
    Total,
    /// Prompt tokens.
    Input,
    /// Completion tokens.
    Output,
}

/// The time a limit's amount is good for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// A calendar period aligned in a time zone.
    Calendar {
        /// Hourly, daily, weekly or monthly.
        period: Period,
        /// IANA name, e.g. `Europe/Paris`.
        time_zone: String,
    },
    /// The last `Duration`, sliding (per-minute limits are `Rolling(60 s)`).
    Rolling(Duration),
}

/// A calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// From the top of each hour.
    Hourly,
    /// From midnight.
    Daily,
    /// From Monday midnight.
    Weekly,
    /// From midnight on the 1st.
    Monthly,
}

/// `Strict` or `Lenient`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// A stream that outgrows what is left is ended with an error event.
    Strict,
    /// An admitted request finishes; its spend is charged.
    Lenient,
}

/// `FailClosed` or `FailOpen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Refuse (503) what cannot be counted.
    FailClosed,
    /// Serve, count locally, and settle when the store is back.
    FailOpen,
}
