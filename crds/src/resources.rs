//! The raw, user-facing shapes of the four kinds, exactly as written in YAML
//! (camelCase, unknown fields rejected). Every field's doc comment is the
//! user documentation for it. Nothing here is validated beyond its type:
//! `compile` turns these into the runtime model.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Object metadata, as in Kubernetes. Only `name` is used by the gateway.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// The object's name; Backends are referenced by it.
    #[serde(default)]
    pub name: String,
    /// Kubernetes namespace (ignored in standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Where a secret value comes from: exactly one of `env`, `file` or
/// `secretKeyRef`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.env) ? 1 : 0) + (has(self.file) ? 1 : 0) + (has(self.secretKeyRef) ? 1 : 0) == 1",
     "message": "set exactly one of env, file or secretKeyRef"}
]))]
pub struct ValueFrom {
    /// An environment variable of the gateway process (standalone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// A file whose contents (trailing newline trimmed) are the value (standalone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// A key of a Kubernetes Secret in the object's namespace (cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// A reference to one key of a Kubernetes Secret.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The key inside the Secret's data.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A secret holder: `{valueFrom: ...}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Where the value comes from.
    pub value_from: ValueFrom,
}

// ---------------------------------------------------------------- AIGateway

/// `AIGateway`: the gateway itself (one per gateway).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AIGatewaySpec {
    /// Data-plane listen address (default `127.0.0.1:1975`; `--listen` overrides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Admin listen address for `/metrics`, `/healthz`, `/readyz`, `/config`
    /// (default `127.0.0.1:1976`; `--admin` overrides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// Client authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<GatewayAuthSpec>,
    /// Request headers that carry the agent's session id; the first one
    /// present wins (default `[x-session-id, agent-session-id]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(pattern(r"^[-!#$%&'*+.^_`|~0-9A-Za-z]+$")))]
    pub session_headers: Option<Vec<String>>,
    /// Key that encrypts MCP session ids (MCP gateway; not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<SecretRef>,
    /// Largest request body accepted, e.g. `32MiB` (default), `512KiB`, `1000000`.
    /// Larger bodies get 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body: Option<String>,
    /// LLM routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmSpec>,
    /// Where limit and budget counters live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateSpec>,
    /// Access log and tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetrySpec>,
}

/// Client authentication of the gateway.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayAuthSpec {
    /// Client API keys; each maps to a tenant. Sent as `Authorization: Bearer KEY`
    /// or `x-api-key: KEY`. Keys are kept only as SHA-256 hashes in memory.
    #[serde(default)]
    pub api_keys: Vec<ApiKeySpec>,
    /// JWT bearer tokens for LLM and MCP clients, accepted besides `apiKeys`
    /// (on MCPRoutes without `auth.oauth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
    /// Tenant given to requests without a credential. Unset: every request
    /// needs a credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub anonymous_tenant: Option<String>,
}

/// One client API key.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeySpec {
    /// A name for the key, shown in logs instead of the key.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The tenant the key belongs to.
    #[schemars(length(min = 1))]
    pub tenant: String,
    /// Where the key's value comes from.
    pub value_from: ValueFrom,
}

/// JWT validation settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtSpec {
    /// Expected `iss`, compared exactly (an http or https URL).
    #[schemars(pattern(r"^https?://[^/@?#]+"))]
    pub issuer: String,
    /// Accepted `aud` values: a token's `aud` must contain one of them.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub audiences: Vec<String>,
    /// Where the issuer publishes its signing keys (a JWKS URL).
    #[schemars(pattern(r"^https?://[^/@?#]+"))]
    pub jwks_uri: String,
    /// Top-level claim whose string value is the request's tenant (default `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub tenant_claim: Option<String>,
    /// Shortest time between two fetches of the JWKS (default `30s`): a
    /// token signed with a key id not seen yet makes the gateway fetch the
    /// keys again, at most this often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_refetch_interval: Option<String>,
}

/// LLM routing.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LlmSpec {
    /// Routes, matched in order: the first route with a matching model wins,
    /// exact names before globs.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

/// One LLM route: which client model names go to which backends.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// Model names clients send: exact (`gpt-4o`) or globs with `*` and `?`
    /// (`gpt-4o-*`).
    #[schemars(length(min = 1), inner(length(min = 1)))]
    pub models: Vec<String>,
    /// Backends that serve the route. The lowest `priority` is tried first;
    /// among equal priorities, traffic splits by `weight`.
    #[schemars(length(min = 1))]
    pub backends: Vec<RouteBackendSpec>,
    /// When to try another backend (or the same one again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Longest wait for a backend's response headers, across all attempts
    /// (default `120s`). Streams already under way are not cut by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// One backend of a route.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteBackendSpec {
    /// Name of a Backend object.
    pub backend: String,
    /// Model name sent upstream instead of the client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub model: Option<String>,
    /// Share of traffic among backends of the same priority (default 1; 0 = never picked first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// 0 is tried first; higher priorities are fallbacks (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
}

/// Retry and fallback policy of a route.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// Total upstream attempts, the first included (default: the number of
    /// backends in the route, so each is tried once; at most 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub attempts: Option<u32>,
    /// Failures that move on to the next attempt: `connect`, `timeout`, `"429"`,
    /// `"5xx"` (default: all four). Only failures before the first response
    /// byte are retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("items" = {"type": "string", "enum": ["connect", "timeout", "429", "5xx"]}))]
    pub on: Option<Vec<String>>,
}

/// Counter store selection.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.redis) || (has(self.type) && self.type == 'redis')",
     "message": "redis is set, but it belongs to type redis"},
    {"rule": "!has(self.raft) || (has(self.type) && self.type == 'raft')",
     "message": "raft is set, but it belongs to type raft"},
    {"rule": "!has(self.path) || !has(self.type) || self.type == 'memory'",
     "message": "path is set, but it belongs to type memory"},
    {"rule": "!has(self.type) || self.type != 'redis' || has(self.redis)",
     "message": "type redis needs redis: {url: redis://host:6379}"}
]))]
pub struct StateSpec {
    /// `memory` (default), `raft` or `redis`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["memory", "raft", "redis"]))]
    pub kind: Option<String>,
    /// For `memory`: the file that keeps settled spend across restarts
    /// (default `$XDG_STATE_HOME/sluice/counters.log`, else
    /// `~/.local/state/sluice/counters.log`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Redis settings (for `type: redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,
    /// Raft settings (for `type: raft`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft: Option<RaftSpec>,
}

/// Redis connection.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisSpec {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    /// With `cluster: true`, any one node of the cluster (the others are
    /// found from it).
    #[schemars(pattern(r"^rediss?://"))]
    pub url: String,
    /// The URL is a node of a Redis Cluster (or a Valkey cluster): commands
    /// are routed by key slot. Default false (a standalone server).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster: bool,
}

/// Embedded Raft group.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RaftSpec {
    /// This replica's id (1 or more; never reused by another replica).
    /// Usually given per replica with `sluice run --raft-id` instead, since
    /// the rest of the config is the same for every replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// All members as `ID=HOST:PORT`, this replica included.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Where the Raft log and snapshots are kept (default
    /// `$XDG_STATE_HOME/sluice/raft-{id}`, else
    /// `~/.local/state/sluice/raft-{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// Address to listen on for Raft traffic (default: this replica's own
    /// peer address; all interfaces on its port when that is a host name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

/// Telemetry outputs.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetrySpec {
    /// The JSON access log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogSpec>,
    /// OpenInference traces over OTLP (not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpSpec>,
}

/// Access log destination.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogSpec {
    /// `stdout` (default), `off`, or a file path (appended to).
    #[schemars(length(min = 1))]
    pub to: String,
}

/// OTLP exporter.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtlpSpec {
    /// Collector endpoint, e.g. `http://127.0.0.1:4318`.
    pub endpoint: String,
    /// `http` or `grpc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["http", "grpc"]))]
    pub protocol: Option<String>,
}

// ------------------------------------------------------------------ Backend

/// `Backend`: an LLM provider or an MCP server.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(has(self.endpoint) && has(self.command))",
     "message": "set either endpoint (streamable HTTP) or command (stdio), not both"},
    {"rule": "!has(self.command) || self.provider == 'MCP'",
     "message": "only MCP backends run a command"},
    {"rule": "!has(self.transport) || (self.provider == 'MCP' && has(self.endpoint))",
     "message": "only an MCP backend with an endpoint takes a transport"},
    {"rule": "self.provider != 'MCP' || has(self.endpoint) || has(self.command)",
     "message": "provider MCP needs an endpoint (or a command for a stdio server)"},
    {"rule": "!(self.provider in ['OpenAICompatible', 'VLLM', 'AzureOpenAI']) || has(self.endpoint)",
     "message": "providers OpenAICompatible, VLLM and AzureOpenAI need an endpoint"},
    {"rule": "!has(self.apiVersion) || self.provider == 'AzureOpenAI'",
     "message": "only AzureOpenAI backends take an apiVersion"},
    {"rule": "self.provider != 'Demo' || !has(self.endpoint)",
     "message": "the Demo provider runs in process and takes no endpoint"}
]))]
pub struct BackendSpec {
    /// The provider's API: `OpenAI`, `AzureOpenAI`, `OpenAICompatible`,
    /// `Ollama`, `VLLM`, `LMStudio`, `Mistral`, `Groq`, `DeepSeek`,
    /// `Together`, `Fireworks`, `OpenRouter`, `XAI`, `Perplexity`,
    /// `Cerebras`, `SambaNova`, `DeepInfra`, `GeminiOpenAI`, `Gemini`,
    /// `VertexAI` (Gemini and `claude-*` models; endpoint built from
    /// `auth.gcp`, or express mode with an `apiKey`), `Anthropic`, `Bedrock`,
    /// `Cohere`, `Demo`, `MCP`.
    #[schemars(length(min = 1))]
    pub provider: String,
    /// Base URL of the API, as the provider's SDK takes it (e.g.
    /// `https://api.openai.com/v1`). An endpoint with no path gets `/v1`
    /// (not for `Perplexity` and `AzureOpenAI`). Default per provider;
    /// required for `OpenAICompatible`, `VLLM`, `AzureOpenAI`
    /// (`https://{resource}.openai.azure.com`) and `MCP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://[^/@?# ]+(/[^?# ]*)?$"))]
    pub endpoint: Option<String>,
    /// Upstream credentials, injected by the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<BackendAuthSpec>,
    /// Models advertised in `GET /v1/models`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// USD per million tokens, by model. Validated now; used for `cost_usd`
    /// and budgets once those are built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<BTreeMap<String, PriceSpec>>,
    /// Per-attempt wait for response headers, and the longest gap between
    /// two chunks of a streamed body (default `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Program and arguments of a stdio MCP server (`provider: MCP` without
    /// `endpoint`; standalone only): one process per client session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), inner(length(min = 1)))]
    pub command: Option<Vec<String>>,
    /// How an MCP server at `endpoint` is spoken to: `StreamableHTTP` (the
    /// default) or `SSE`, the legacy HTTP+SSE transport of MCP 2024-11-05
    /// (`endpoint` is then its SSE URL, e.g. `http://host:3001/sse`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["StreamableHTTP", "SSE"]))]
    pub transport: Option<String>,
    /// `AzureOpenAI` only: the `api-version` of deployment URLs
    /// (`/openai/deployments/{model}/...?api-version=X`, default
    /// `2024-10-21`), or `v1` for the version-less `/openai/v1/` API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^(v1|[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?)$"))]
    pub api_version: Option<String>,
    /// Headers added to every request to this backend, e.g. OpenRouter's
    /// `HTTP-Referer` and `X-Title`. Not for credentials (use `auth`);
    /// `Authorization`, `api-key`, `Host` and hop-by-hop headers are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

/// Upstream credentials of a Backend.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendAuthSpec {
    /// An API key, sent as `Authorization: Bearer KEY` unless `header` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<BackendApiKeySpec>,
    /// AWS credentials (`Bedrock`): requests are signed with Signature
    /// Version 4 for service `bedrock` in `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<Box<BackendAwsAuthSpec>>,
    /// Google Cloud credentials (`VertexAI`): a service account key whose
    /// OAuth access tokens the gateway fetches, caches and refreshes
    /// (without it, a `VertexAI` backend with an `apiKey` uses express mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp: Option<BackendGcpAuthSpec>,
    /// Azure credentials (`AzureOpenAI`): a Microsoft Entra ID access token
    /// sent as `Authorization: Bearer TOKEN` instead of an `api-key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<BackendAzureAuthSpec>,
}

/// Google Cloud credentials and placement of a `VertexAI` Backend.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendGcpAuthSpec {
    /// The service account's JSON key file (as downloaded from the Cloud
    /// console), with the `aiplatform.endpoints.predict` permission (role
    /// `roles/aiplatform.user`).
    pub service_account_key: BackendTokenSpec,
    /// The project (default: the key's `project_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$"))]
    pub project: Option<String>,
    /// The region, e.g. `us-central1`, or `global`.
    #[schemars(pattern(r"^[a-z][-a-z0-9]*[a-z0-9]$"))]
    pub location: String,
}

/// AWS credentials of a `Bedrock` Backend: an IAM access key (and the
/// session token of temporary credentials), read when the config is loaded;
/// or, with neither key set, the AWS SDKs' standard credential chain
/// (environment, EKS web identity, shared files, ECS / EKS Pod Identity,
/// EC2 instance role), fetched and refreshed by the gateway.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendAwsAuthSpec {
    /// The AWS region, e.g. `us-east-1`: part of every signature, and of
    /// the default endpoint `https://bedrock-runtime.{region}.amazonaws.com`.
    #[schemars(pattern(r"^[a-z0-9-]+$"))]
    pub region: String,
    /// The access key id (`AKIA...`, or `ASIA...` for temporary
    /// credentials). Without it (and `secretAccessKey`), credentials come
    /// from the standard AWS credential chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<SecretRef>,
    /// The secret access key (set with `accessKeyId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<SecretRef>,
    /// The session token of temporary credentials (STS), sent as
    /// `x-amz-security-token`. Read when the config is loaded: reload the
    /// config before it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<SecretRef>,
}

/// Azure credentials of an `AzureOpenAI` Backend.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendAzureAuthSpec {
    /// An Entra ID (Azure AD) access token for the
    /// `https://cognitiveservices.azure.com` scope. Read when the config
    /// is loaded: reload the config (or update the Secret) before it expires.
    pub token: BackendTokenSpec,
}

/// A bearer token from a secret.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendTokenSpec {
    /// Where the token comes from.
    pub value_from: ValueFrom,
}

/// An upstream API key.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendApiKeySpec {
    /// Where the key comes from.
    pub value_from: ValueFrom,
    /// Header to send it in (default `Authorization`, as `Bearer KEY`, or
    /// `api-key` for `AzureOpenAI`; any other header carries the bare key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[-!#$%&'*+.^_`|~0-9A-Za-z]+$"))]
    pub header: Option<String>,
}

/// Prices in USD per million tokens, as decimal strings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriceSpec {
    /// Input (prompt) tokens.
    #[schemars(pattern(r"^([0-9]+(\.[0-9]{0,6})?|\.[0-9]{1,6})$"))]
    pub input: String,
    /// Output (completion) tokens.
    #[schemars(pattern(r"^([0-9]+(\.[0-9]{0,6})?|\.[0-9]{1,6})$"))]
    pub output: String,
    /// Cached input tokens (default: `input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([0-9]+(\.[0-9]{0,6})?|\.[0-9]{1,6})$"))]
    pub cached_input: Option<String>,
}

// ----------------------------------------------------------------- MCPRoute

/// `MCPRoute`: many MCP servers behind one endpoint.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.path != '/v1' && !self.path.startsWith('/v1/')",
     "message": "paths under /v1 belong to the LLM API", "fieldPath": ".path"}
]))]
pub struct MCPRouteSpec {
    /// Path the route serves, e.g. `/mcp`.
    #[schemars(pattern(r"^/[^?# ]*$"))]
    pub path: String,
    /// MCP backends aggregated behind the path.
    #[serde(default)]
    #[schemars(length(min = 1, max = 64))]
    pub backends: Vec<MCPRouteBackendSpec>,
    /// `Always`, `Conditional` (only with more than one backend) or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Always", "Conditional", "Never"]))]
    pub prefix_mode: Option<String>,
    /// Client authentication of the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<MCPRouteAuthSpec>,
    /// Per-tenant tool allow-lists. Unset: every tenant sees every tool.
    /// Set: a tenant sees and may call only the tools its entry allows
    /// (globs over the names clients see, prefixes included); a tenant
    /// without an entry sees none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Vec<MCPAccessSpec>>,
}

/// The tools one tenant may use on an MCPRoute.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MCPAccessSpec {
    /// The tenant.
    #[schemars(length(min = 1))]
    pub tenant: String,
    /// Tools it may see and call (`include` empty: all), by client-facing name.
    #[serde(default)]
    pub tools: ToolFilterSpec,
}

/// One MCP backend of a route.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.prefix) || !self.prefix.contains('__')",
     "message": "a prefix must not contain `__`", "fieldPath": ".prefix"}
]))]
pub struct MCPRouteBackendSpec {
    /// Name of a Backend with `provider: MCP`.
    pub backend: String,
    /// Tool-name prefix (default: the backend name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    #[schemars(pattern(r"^[A-Za-z0-9._-]+$"))]
    pub prefix: Option<String>,
    /// Tool filters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<ToolFilterSpec>,
}

/// Include/exclude globs over tool names.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolFilterSpec {
    /// Tools to expose (default: all).
    #[serde(default)]
    pub include: Vec<String>,
    /// Tools to hide.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// MCP route auth.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MCPRouteAuthSpec {
    /// OAuth 2.1 resource-server settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthSpec>,
}

/// OAuth 2.1 resource server (MCP authorization): the route accepts only
/// access tokens (JWTs) of this authorization server, and publishes RFC 9728
/// Protected Resource Metadata at `/.well-known/oauth-protected-resource{path}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OAuthSpec {
    /// The authorization server's issuer identifier (an http or https URL):
    /// the tokens' expected `iss`, and the metadata's `authorization_servers`.
    #[schemars(pattern(r"^https?://[^/@?#]+"))]
    pub issuer: String,
    /// Accepted `aud` values: a token's `aud` must contain one of them
    /// (usually the route's URL, as clients ask for it with RFC 8707 `resource`).
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub audiences: Vec<String>,
    /// Where the authorization server publishes its signing keys (a JWKS URL).
    #[schemars(pattern(r"^https?://[^/@?#]+"))]
    pub jwks_uri: String,
    /// Scopes every token must carry (in `scope` or `scp`); also the
    /// metadata's `scopes_supported`.
    #[serde(default)]
    #[schemars(inner(pattern(r#"^[!#-\[\]-~]+$"#)))]
    pub scopes: Vec<String>,
    /// Top-level claim whose string value is the request's tenant (default `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub tenant_claim: Option<String>,
    /// The route's public URL, e.g. `https://gw.example.com/mcp` (its path
    /// must be the route's `path`). Default: built from each request's `Host`
    /// (and `X-Forwarded-Proto`, else `http`) and the route's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://[^/@?#]+"))]
    pub resource: Option<String>,
    /// Shortest time between two fetches of the JWKS (default `30s`): a
    /// token signed with a key id not seen yet makes the gateway fetch the
    /// keys again, at most this often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_refetch_interval: Option<String>,
}

// ------------------------------------------------------------------- Budget

/// `Budget`: limits and spend per tenant.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetSpec {
    /// Tenant the budget applies to.
    #[schemars(pattern(r"\S"))]
    pub tenant: String,
    /// Model globs in scope (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// API key name in scope (default: all of the tenant's keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Limits; every applicable one must pass.
    #[serde(default)]
    #[schemars(length(min = 1, max = 32))]
    pub limits: Vec<LimitSpec>,
    /// `Strict` (end a stream that crosses the limit) or `Lenient`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Strict", "Lenient"]))]
    pub enforcement: Option<String>,
    /// `FailClosed` or `FailOpen`, when the counter store cannot be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["FailClosed", "FailOpen"]))]
    pub failure_mode: Option<String>,
    /// Alert thresholds in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(range(min = 1, max = 1000)))]
    pub alerts_at: Option<Vec<u32>>,
}

/// One limit of a Budget.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.cost) ? 1 : 0) + (has(self.tokens) ? 1 : 0) + (has(self.requests) ? 1 : 0) + (has(self.tokensPerMinute) ? 1 : 0) + (has(self.requestsPerMinute) ? 1 : 0) == 1",
     "message": "give exactly one of cost, tokens, requests, tokensPerMinute, requestsPerMinute (one metric per limit)"},
    {"rule": "!has(self.cost) || self.cost.matches('[1-9]')",
     "message": "cost must be more than 0", "fieldPath": ".cost"},
    {"rule": "!(has(self.period) && has(self.window))",
     "message": "set either period (calendar) or window (rolling), not both"},
    {"rule": "!(has(self.cost) || has(self.tokens) || has(self.requests)) || has(self.period) || has(self.window)",
     "message": "a cost, tokens or requests limit needs a period (Hourly, Daily, Weekly, Monthly) or a rolling window (e.g. 24h)"},
    {"rule": "!(has(self.tokensPerMinute) || has(self.requestsPerMinute)) || !(has(self.period) || has(self.window) || has(self.timeZone))",
     "message": "a per-minute limit is per minute already: remove period, window and timeZone"},
    {"rule": "!has(self.timeZone) || has(self.period)",
     "message": "timeZone goes with a calendar period"},
    {"rule": "!has(self.tokenType) || has(self.tokens) || has(self.tokensPerMinute)",
     "message": "only a tokens or tokensPerMinute limit has a tokenType"}
]))]
pub struct LimitSpec {
    /// Spend in USD over `period`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[schemars(pattern(r"^([0-9]+(\.[0-9]{0,6})?|\.[0-9]{1,6})$"))]
    pub cost: Option<String>,
    /// Tokens over `period`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tokens: Option<u64>,
    /// Requests over `period`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub requests: Option<u64>,
    /// Tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tokens_per_minute: Option<u64>,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub requests_per_minute: Option<u64>,
    /// `total` (default), `input` or `output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["total", "input", "output"]))]
    pub token_type: Option<String>,
    /// `Hourly`, `Daily`, `Weekly` (from Monday) or `Monthly`, aligned in
    /// `timeZone`; for `cost`, `tokens` and `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Hourly", "Daily", "Weekly", "Monthly"]))]
    pub period: Option<String>,
    /// A rolling window instead of a calendar period, e.g. `24h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// A name for the limit in errors, headers and `/budgets` (default:
    /// made from its metric and period, e.g. `cost-monthly`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Za-z0-9._-]+$"))]
    pub name: Option<String>,
    /// IANA time zone the calendar period aligns to (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub time_zone: Option<String>,
}
