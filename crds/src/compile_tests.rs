use super::*;
use crate::load::load_documents;

fn env(name: &str) -> Option<String> {
    match name {
        "TEAM_A_KEY" => Some("sk-team-a".into()),
        "TEAM_B_KEY" => Some("sk-team-b".into()),
        "SAME_KEY" => Some("sk-team-a".into()),
        "UPSTREAM_KEY" => Some("sk-upstream".into()),
        _ => None,
    }
}

fn compile_text(text: &str) -> Result<Snapshot, Vec<String>> {
    let loaded = load_documents(&[("test.yaml".into(), text.into())]);
    compile(&loaded, &StandaloneSecrets { env })
        .map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

const GOOD: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: AIGateway
metadata: {name: default}
spec:
  listen: 127.0.0.1:9000
  auth:
    apiKeys:
      - {name: team-a-ci, tenant: team-a, valueFrom: {env: TEAM_A_KEY}}
  sessionHeaders: [X-Session-Id]
  maxRequestBody: 1MiB
  llm:
    routes:
      - models: ["gpt-4o", "gpt-4o-*"]
        backends:
          - {backend: openai, model: gpt-4o-2024-08-06, weight: 3}
          - {backend: local, priority: 1}
        retry: {attempts: 3, on: [connect, "5xx"]}
        timeout: 30s
  telemetry:
    accessLog: {to: off}
---
kind: Backend
metadata: {name: openai}
spec:
  provider: OpenAI
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
  pricing:
    gpt-4o: {input: "2.50", output: "10.00"}
  timeout: 10s
---
kind: Backend
metadata: {name: local}
spec:
  provider: OpenAICompatible
  endpoint: http://127.0.0.1:8080/
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}, header: api-key}}
"#;

#[test]
fn compiles_a_full_config() {
    let snapshot = compile_text(GOOD).unwrap();
    assert_eq!(snapshot.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(snapshot.admin.to_string(), DEFAULT_ADMIN);
    assert_eq!(snapshot.max_request_body, 1 << 20);
    assert_eq!(snapshot.session_headers, vec!["x-session-id"]);
    assert_eq!(snapshot.access_log, AccessLogTarget::Off);
    assert_eq!(snapshot.auth.api_keys.len(), 1);
    assert_eq!(snapshot.auth.api_keys[0].hash, ApiKeyHash::of("sk-team-a"));
    assert_eq!(&*snapshot.auth.api_keys[0].tenant.0, "team-a");
    assert!(snapshot.auth.anonymous_tenant.is_none());

    let route = &snapshot.routes[0];
    assert_eq!(route.models.len(), 2);
    assert_eq!(route.timeout, Duration::from_secs(30));
    assert_eq!(
        route.retry,
        Retry {
            attempts: 3,
            on_connect: true,
            on_timeout: false,
            on_429: false,
            on_5xx: true
        }
    );
    assert_eq!(route.backends[0].weight, 3);
    assert_eq!(
        route.backends[0].model.as_deref(),
        Some("gpt-4o-2024-08-06")
    );
    assert_eq!(route.backends[1].priority, 1);

    let openai = &snapshot.backends[route.backends[0].backend];
    assert_eq!(
        openai.target,
        Target::OpenAICompatible {
            base_url: "https://api.openai.com/v1".into()
        }
    );
    let credential = openai.credential.as_ref().unwrap();
    assert_eq!(credential.header, "authorization");
    assert_eq!(credential.value.expose(), "Bearer sk-upstream");
    assert_eq!(openai.pricing["gpt-4o"].input, MicroUsd(2_500_000));
    assert_eq!(openai.pricing["gpt-4o"].cached_input, MicroUsd(2_500_000));
    assert_eq!(openai.timeout, Duration::from_secs(10));

    let local = &snapshot.backends[route.backends[1].backend];
    assert_eq!(
        local.target,
        Target::OpenAICompatible {
            base_url: "http://127.0.0.1:8080/v1".into()
        }
    );
    assert_eq!(
        local.credential.as_ref().unwrap().value.expose(),
        "sk-upstream"
    );
}

#[test]
fn an_empty_config_gets_defaults() {
    let snapshot = compile_text("").unwrap();
    assert_eq!(snapshot.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(snapshot.max_request_body, 32 << 20);
    assert_eq!(
        snapshot.session_headers,
        vec!["x-session-id", "agent-session-id"]
    );
    assert!(snapshot.routes.is_empty());
}

#[test]
fn reports_every_error_with_object_and_field() {
    let text = r#"
kind: AIGateway
metadata: {name: gw}
spec:
  listen: "nowhere"
  auth:
    apiKeys:
      - {name: a, tenant: team-a, valueFrom: {env: TEAM_A_KEY}}
      - {name: b, tenant: team-b, valueFrom: {env: SAME_KEY}}
      - {name: c, tenant: team-c, valueFrom: {env: MISSING_KEY}}
  llm:
    routes:
      - models: []
        backends: [{backend: ghost}]
        retry: {attempts: 0, on: [sometimes]}
        timeout: forever
  state: {type: redis}
---
kind: Backend
metadata: {name: weird}
spec: {provider: Skynet}
---
kind: Backend
metadata: {name: local}
spec: {provider: OpenAICompatible}
---
kind: Budget
metadata: {name: team-a}
spec: {tenant: team-a}
---
kind: MCPRoute
metadata: {name: tools}
spec: {path: /mcp}
"#;
    let errors = compile_text(text).unwrap_err();
    let expect = [
        "MCPRoute/tools: spec.backends: list at least one MCP backend",
        "Budget/team-a: spec.limits: list at least one limit",
        "Backend/weird: spec.provider: unknown provider `Skynet`",
        "Backend/local: spec.endpoint: required for provider OpenAICompatible",
        "AIGateway/gw: spec.listen: `nowhere` is not an address",
        "AIGateway/gw: spec.auth.apiKeys[1].valueFrom: keys `a` and `b` have the same value",
        "AIGateway/gw: spec.auth.apiKeys[2].valueFrom: environment variable MISSING_KEY is not set",
        "AIGateway/gw: spec.llm.routes[0].models: list at least one",
        "AIGateway/gw: spec.llm.routes[0].backends[0].backend: no Backend named `ghost`",
        "AIGateway/gw: spec.llm.routes[0].retry.attempts: must be between 1 and 10",
        "AIGateway/gw: spec.llm.routes[0].retry.on[0]: `sometimes` is not one of",
        "AIGateway/gw: spec.llm.routes[0].timeout: `forever` is not a duration",
        "AIGateway/gw: spec.state.redis: required for type redis",
    ];
    for want in expect {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    // Secrets never appear in errors.
    assert!(errors.iter().all(|e| !e.contains("sk-team-a")));
}

#[test]
fn rejects_unsupported_fields_instead_of_ignoring_them() {
    let text = r#"
kind: AIGateway
metadata: {name: gw}
spec:
  telemetry: {otlp: {endpoint: "http://127.0.0.1:4318"}}
  state: {redis: {url: "redis://127.0.0.1:6379"}}
"#;
    let errors = compile_text(text).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].contains("spec.state.redis: set, but spec.state.type is memory"),
        "{errors:#?}"
    );
    assert!(errors[1].contains("spec.telemetry.otlp: OTLP traces are not supported yet"));
}

#[test]
fn duplicate_backends_and_gateways_are_errors() {
    let text = "kind: Backend\nmetadata: {name: a}\nspec: {provider: Demo}\n---\nkind: Backend\nmetadata: {name: a}\nspec: {provider: Demo}\n---\nkind: AIGateway\nmetadata: {name: one}\n---\nkind: AIGateway\nmetadata: {name: two}\n";
    let errors = compile_text(text).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].starts_with("Backend/a: metadata.name: a Backend of this name is defined twice")
    );
    assert!(errors[1].starts_with("AIGateway/two: only one AIGateway"));
}

#[test]
fn endpoints_are_normalised() {
    assert_eq!(
        base_url("https://api.openai.com", "/v1").unwrap(),
        "https://api.openai.com/v1"
    );
    assert_eq!(
        base_url("https://api.openai.com/v1/", "/v1").unwrap(),
        "https://api.openai.com/v1"
    );
    assert_eq!(
        base_url("http://h:1/openai/v1", "/v1").unwrap(),
        "http://h:1/openai/v1"
    );
    assert!(base_url("ftp://h", "/v1").is_err());
    assert!(base_url("api.openai.com", "/v1").is_err());
    assert!(base_url("http://", "/v1").is_err());
    assert!(base_url("http://h/v1?x=1", "/v1").is_err());
}

#[test]
fn compiles_mcp_routes() {
    let text = r#"
kind: AIGateway
metadata: {name: gw}
spec:
  sessionKey: {valueFrom: {env: TEAM_A_KEY}}
---
kind: Backend
metadata: {name: kiwi}
spec: {provider: MCP, endpoint: "https://mcp.kiwi.com/mcp/", auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}, header: x-kiwi-key}}}
---
kind: Backend
metadata: {name: calendar}
spec: {provider: MCP, endpoint: "http://127.0.0.1:3001/mcp"}
---
kind: Backend
metadata: {name: local}
spec: {provider: MCP, command: [npx, some-mcp-server, --stdio]}
---
kind: MCPRoute
metadata: {name: tools}
spec:
  path: /mcp
  backends:
    - {backend: kiwi, tools: {include: ["search-*"], exclude: ["search-hotels"]}}
    - {backend: calendar, prefix: cal}
---
kind: MCPRoute
metadata: {name: solo}
spec:
  path: /solo
  prefixMode: Conditional
  backends: [{backend: calendar}]
"#;
    let snapshot = compile_text(text).unwrap();
    assert_eq!(
        snapshot.session_key.as_ref().map(|k| k.expose()),
        Some("sk-team-a")
    );
    let route = &snapshot.mcp_routes[0];
    assert_eq!((&*route.name, route.path.as_str()), ("tools", "/mcp"));
    let kiwi = &route.backends[0];
    assert_eq!(kiwi.prefix.as_deref(), Some("kiwi"));
    assert!(
        kiwi.exposes("search-flight") && !kiwi.exposes("search-hotels") && !kiwi.exposes("book")
    );
    assert_eq!(route.backends[1].prefix.as_deref(), Some("cal"));
    assert!(route.backends[1].exposes("anything"));
    let backend = &snapshot.backends[kiwi.backend];
    assert_eq!(
        backend.target,
        Target::Mcp {
            url: "https://mcp.kiwi.com/mcp".into()
        }
    );
    assert_eq!(backend.credential.as_ref().unwrap().header, "x-kiwi-key");
    assert_eq!(
        snapshot.mcp_routes[1].backends[0].prefix, None,
        "Conditional with one backend: no prefix"
    );
    let stdio = snapshot
        .backends
        .iter()
        .find(|b| &*b.name.0 == "local")
        .unwrap();
    assert_eq!(
        stdio.target,
        Target::McpStdio {
            command: vec!["npx".into(), "some-mcp-server".into(), "--stdio".into()]
        }
    );
}

#[test]
fn rejects_bad_mcp_routes() {
    let text = r#"
kind: AIGateway
metadata: {name: gw}
spec:
  llm:
    routes: [{models: [x], backends: [{backend: kiwi}]}]
---
kind: Backend
metadata: {name: kiwi}
spec: {provider: MCP, endpoint: "http://127.0.0.1:1/mcp"}
---
kind: Backend
metadata: {name: llm}
spec: {provider: OpenAI}
---
kind: Backend
metadata: {name: stdio}
spec: {provider: MCP, command: []}
---
kind: Backend
metadata: {name: both}
spec: {provider: MCP, endpoint: "http://127.0.0.1:2/mcp", command: [npx, server]}
---
kind: MCPRoute
metadata: {name: shadow}
spec: {path: /chat/completions, backends: [{backend: kiwi}]}
---
kind: MCPRoute
metadata: {name: a}
spec:
  path: /v1/mcp
  prefixMode: Sometimes
  backends: [{backend: llm}, {backend: kiwi, prefix: "a__b"}, {backend: nowhere}]
  auth: {oauth: {issuer: "https://auth.example.com", audiences: [x], jwksUri: "https://auth.example.com/jwks", scopes: ["a b"]}}
"#;
    let errors = compile_text(text).unwrap_err();
    let expect = [
        "Backend/stdio: spec.command: give the program and its arguments",
        "Backend/both: spec.command: set either `endpoint` (streamable HTTP) or `command` (stdio), not both",
        "MCPRoute/shadow: spec.path: `/chat/completions` is an LLM API path",
        "AIGateway/gw: spec.llm.routes[0].backends[0].backend: Backend `kiwi` is an MCP server",
        "MCPRoute/a: spec.path: paths under /v1 belong to the LLM API",
        "MCPRoute/a: spec.auth.oauth.scopes[0]: `a b` is not a scope",
        "MCPRoute/a: spec.prefixMode: `Sometimes` is not one of",
        "MCPRoute/a: spec.backends[0].backend: Backend `llm` is not an MCP server",
        "MCPRoute/a: spec.backends[1].prefix: `a__b` must be",
        "MCPRoute/a: spec.backends[2].backend: no Backend named `nowhere`",
    ];
    for want in expect {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
}

#[test]
fn compiles_jwt_and_oauth() {
    let text = r#"
kind: AIGateway
metadata: {name: gw}
spec:
  auth:
    jwt:
      issuer: "https://auth.example.com/"
      audiences: [sluice]
      jwksUri: "https://auth.example.com/.well-known/jwks.json?v=2"
      tenantClaim: org_id
---
kind: Backend
metadata: {name: demo}
spec: {provider: Demo}
---
kind: MCPRoute
metadata: {name: tools}
spec:
  path: /mcp
  backends: [{backend: demo}]
  auth:
    oauth:
      issuer: "http://127.0.0.1:8080"
      audiences: ["https://gw.example.com/mcp"]
      jwksUri: "http://127.0.0.1:8080/jwks"
      scopes: [mcp:tools, "read:all"]
      resource: "https://gw.example.com/mcp"
      jwksRefetchInterval: 5s
---
kind: MCPRoute
metadata: {name: root}
spec:
  path: /
  backends: [{backend: demo}]
  auth:
    oauth: {issuer: "https://a.example", audiences: [x], jwksUri: "https://a.example/k", resource: "https://gw.example.com"}
"#;
    let snapshot = compile_text(text).unwrap();
    let jwt = snapshot.auth.jwt.as_ref().unwrap();
    assert_eq!(jwt.issuer, "https://auth.example.com/", "kept as written");
    assert_eq!(jwt.audiences, ["sluice"]);
    assert_eq!(jwt.tenant_claim, "org_id");
    assert_eq!(jwt.jwks_refetch_interval, Duration::from_secs(30));
    let oauth = snapshot.mcp_routes[0].oauth.as_ref().unwrap();
    assert_eq!(oauth.jwt.tenant_claim, "sub", "the default claim");
    assert_eq!(oauth.jwt.jwks_refetch_interval, Duration::from_secs(5));
    assert_eq!(oauth.scopes, ["mcp:tools", "read:all"]);
    assert_eq!(
        oauth.resource.as_deref(),
        Some("https://gw.example.com/mcp")
    );
    assert!(snapshot.mcp_routes[1].oauth.is_some());
}

#[test]
fn rejects_bad_token_settings() {
    let text = r#"
kind: AIGateway
metadata: {name: gw}
spec:
  auth:
    jwt: {issuer: x, jwksUri: "ftp://keys", tenantClaim: "", jwksRefetchInterval: soon}
---
kind: Backend
metadata: {name: demo}
spec: {provider: Demo}
---
kind: MCPRoute
metadata: {name: tools}
spec:
  path: /mcp
  backends: [{backend: demo}]
  auth:
    oauth:
      issuer: "https://auth.example.com#frag"
      audiences: [""]
      jwksUri: "https://"
      scopes: ["", "quote\"d"]
      resource: "https://gw.example.com/other"
"#;
    let errors = compile_text(text).unwrap_err();
    let expect = [
        "AIGateway/gw: spec.auth.jwt.issuer: `x` is not an http or https URL",
        "AIGateway/gw: spec.auth.jwt.audiences: list at least one accepted audience",
        "AIGateway/gw: spec.auth.jwt.jwksUri: `ftp://keys` is not an http or https URL",
        "AIGateway/gw: spec.auth.jwt.tenantClaim: must not be empty",
        "AIGateway/gw: spec.auth.jwt.jwksRefetchInterval: `soon` is not a duration",
        "MCPRoute/tools: spec.auth.oauth.issuer: `https://auth.example.com#frag` must not contain spaces, quotes or a fragment",
        "MCPRoute/tools: spec.auth.oauth.audiences[0]: must not be empty",
        "MCPRoute/tools: spec.auth.oauth.jwksUri: `https://` has no valid host",
        "MCPRoute/tools: spec.auth.oauth.scopes[0]: `` is not a scope",
        "MCPRoute/tools: spec.auth.oauth.scopes[1]: `quote\"d` is not a scope",
        "MCPRoute/tools: spec.auth.oauth.resource: the path of `https://gw.example.com/other` is `/other`, not the route's path `/mcp`",
    ];
    for want in expect {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
}

#[test]
fn mcp_backends_choose_their_transport() {
    let text = r#"
kind: AIGateway
metadata: {name: gw}
spec: {llm: {routes: []}}
---
kind: Backend
metadata: {name: legacy}
spec: {provider: MCP, endpoint: "http://127.0.0.1:3001/sse", transport: SSE}
---
kind: Backend
metadata: {name: modern}
spec: {provider: MCP, endpoint: "http://127.0.0.1:3001/mcp", transport: StreamableHTTP}
"#;
    let snapshot = compile_text(text).unwrap();
    let target = |name: &str| {
        snapshot
            .backends
            .iter()
            .find(|b| &*b.name.0 == name)
            .unwrap()
            .target
            .clone()
    };
    assert_eq!(
        target("legacy"),
        Target::McpSse {
            url: "http://127.0.0.1:3001/sse".into()
        }
    );
    assert_eq!(
        target("modern"),
        Target::Mcp {
            url: "http://127.0.0.1:3001/mcp".into()
        }
    );

    let bad = r#"
kind: AIGateway
metadata: {name: gw}
spec: {llm: {routes: []}}
---
kind: Backend
metadata: {name: odd}
spec: {provider: MCP, endpoint: "http://127.0.0.1:3001/mcp", transport: WebSocket}
---
kind: Backend
metadata: {name: local}
spec: {provider: MCP, command: [server], transport: SSE}
---
kind: Backend
metadata: {name: llm}
spec: {provider: OpenAI, transport: SSE}
"#;
    let errors = compile_text(bad).unwrap_err();
    let expect = [
        "Backend/odd: spec.transport: unknown transport `WebSocket`",
        "Backend/local: spec.transport: only an MCP backend with an `endpoint`",
        "Backend/llm: spec.transport: only an MCP backend with an `endpoint`",
    ];
    for want in expect {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
}

#[test]
fn compiles_budgets() {
    use crate::snapshot::{
        Enforcement, FailureMode, Limit, Metric, Period, StateStore, TokenKind, Window,
    };
    let text = r#"
kind: AIGateway
metadata: {name: gw}
spec:
  auth:
    apiKeys: [{name: ci, tenant: team-a, valueFrom: {env: TEAM_A_KEY}}]
  llm: {routes: []}
  state: {type: memory, path: /tmp/sluice-counters.log}
---
kind: Budget
metadata: {name: team-a}
spec:
  tenant: team-a
  models: ["gpt-4o*"]
  apiKey: ci
  limits:
    - {cost: "100.00", period: Monthly, timeZone: Europe/Paris}
    - {tokens: 2000000, period: Daily}
    - {tokensPerMinute: 100000, tokenType: output}
    - {requestsPerMinute: 600}
    - {requests: 50, window: 24h, name: burst}
  enforcement: Lenient
  failureMode: FailOpen
  alertsAt: [80, 50, 100]
"#;
    let snapshot = compile_text(text).unwrap();
    let budget = &snapshot.budgets[0];
    assert_eq!((&*budget.name, &*budget.tenant), ("team-a", "team-a"));
    assert_eq!(budget.api_key.as_deref(), Some("ci"));
    assert_eq!(budget.enforcement, Enforcement::Lenient);
    assert_eq!(budget.failure_mode, FailureMode::FailOpen);
    assert_eq!(budget.alerts_at, [50, 80, 100]);
    assert_eq!(
        budget.limits[0],
        Limit {
            name: "cost-monthly".into(),
            metric: Metric::Cost,
            amount: 100_000_000,
            window: Window::Calendar {
                period: Period::Monthly,
                time_zone: "Europe/Paris".into()
            },
        }
    );
    assert_eq!(budget.limits[1].name, "tokens-daily");
    assert_eq!(
        budget.limits[2],
        Limit {
            name: "output-tokens-per-minute".into(),
            metric: Metric::Tokens(TokenKind::Output),
            amount: 100_000,
            window: Window::Rolling(Duration::from_secs(60)),
        }
    );
    assert_eq!(budget.limits[3].name, "requests-per-minute");
    assert_eq!(budget.limits[4].name, "burst");
    assert_eq!(
        budget.limits[4].window,
        Window::Rolling(Duration::from_secs(86_400))
    );
    assert_eq!(
        snapshot.state,
        StateStore::Memory {
            path: Some("/tmp/sluice-counters.log".into())
        }
    );
}

#[test]
fn rejects_bad_budgets() {
    let text = r#"
kind: AIGateway
metadata: {name: gw}
spec: {llm: {routes: []}, state: {type: redis, redis: {url: "http://x"}}}
---
kind: Budget
metadata: {name: b}
spec:
  tenant: ""
  apiKey: nobody
  models: [""]
  limits:
    - {cost: "1.2345678", period: Monthly}
    - {tokens: 10, requests: 5, period: Daily}
    - {tokens: 10}
    - {requests: 10, period: Yearly}
    - {requests: 10, period: Daily, timeZone: Mars/Olympus}
    - {requestsPerMinute: 5, period: Daily}
    - {requests: 0, window: 1h}
    - {requests: 1, window: 1h, period: Daily}
    - {cost: "1", period: Daily, tokenType: input}
  enforcement: Sometimes
  failureMode: Maybe
  alertsAt: [0]
"#;
    let errors = compile_text(text).unwrap_err();
    let expect = [
        "AIGateway/gw: spec.state.redis.url: `http://x` is not a redis://",
        "Budget/b: spec.tenant: required",
        "Budget/b: spec.apiKey: no API key named `nobody`",
        "Budget/b: spec.models[0]:",
        "Budget/b: spec.limits[0].cost:",
        "Budget/b: spec.limits[1]: one metric per limit, not tokens and requests",
        "Budget/b: spec.limits[2]: a tokens limit needs a `period`",
        "Budget/b: spec.limits[3].period: `Yearly` is not one of",
        "Budget/b: spec.limits[4].timeZone: `Mars/Olympus` is not an IANA time zone",
        "Budget/b: spec.limits[5].period: a requestsPerMinute limit is per minute already",
        "Budget/b: spec.limits[6].requests: must be more than 0",
        "Budget/b: spec.limits[7]: set either `period` (calendar) or `window` (rolling), not both",
        "Budget/b: spec.limits[8].tokenType: only a tokens or tokensPerMinute limit",
        "Budget/b: spec.enforcement: `Sometimes` is not one of Strict, Lenient",
        "Budget/b: spec.failureMode: `Maybe` is not one of FailClosed, FailOpen",
        "Budget/b: spec.alertsAt[0]: 0 is not a percentage",
    ];
    for want in expect {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
}

#[test]
fn compiles_a_redis_state_standalone_or_cluster() {
    let state = |redis: &str| {
        let text = format!(
            "kind: AIGateway\nmetadata: {{name: gw}}\nspec: {{llm: {{routes: []}}, state: {{type: redis, redis: {redis}}}}}\n"
        );
        compile_text(&text).map(|snapshot| snapshot.state)
    };
    assert_eq!(
        state(r#"{url: "redis://10.0.0.1:6379/2"}"#).unwrap(),
        StateStore::Redis {
            url: "redis://10.0.0.1:6379/2".into(),
            cluster: false
        }
    );
    assert_eq!(
        state(r#"{url: "rediss://redis-0.redis:6379", cluster: true}"#).unwrap(),
        StateStore::Redis {
            url: "rediss://redis-0.redis:6379".into(),
            cluster: true
        }
    );
    let errors = state(r#"{url: "redis://x", cluster: "yes"}"#).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("cluster")), "{errors:#?}");
}

#[test]
fn compiles_a_raft_state_and_names_each_mistake() {
    let state = |raft: &str| {
        let text = format!(
            "kind: AIGateway\nmetadata: {{name: gw}}\nspec: {{llm: {{routes: []}}, state: {{type: raft, raft: {raft}}}}}\n"
        );
        compile_text(&text).map(|snapshot| snapshot.state)
    };
    let peers: std::collections::BTreeMap<u64, String> = [
        (1, "10.0.0.1:7101".to_owned()),
        (2, "sluice-proxy-1.peers:7101".to_owned()),
    ]
    .into();
    assert_eq!(
        state(r#"{id: 2, peers: ["1=10.0.0.1:7101", "2=sluice-proxy-1.peers:7101"], dataDir: /data, listen: "0.0.0.0:7101"}"#)
            .unwrap(),
        StateStore::Raft {
            id: 2,
            peers: peers.clone(),
            data_dir: Some("/data".into()),
            listen: Some("0.0.0.0:7101".parse().unwrap()),
        }
    );
    // The id may come from `--raft-id` instead (0: not given here).
    assert_eq!(
        state(r#"{peers: ["1=10.0.0.1:7101", "2=sluice-proxy-1.peers:7101"]}"#).unwrap(),
        StateStore::Raft {
            id: 0,
            peers,
            data_dir: None,
            listen: None,
        }
    );
    let errors = state(
        r#"{id: 9, peers: ["1=a:7101", "1=b:7101", "0=c:1", "x", "3=nohost"], listen: "here"}"#,
    )
    .unwrap_err();
    let expect = [
        "spec.state.raft.peers[1]: id 1 is listed twice",
        "spec.state.raft.peers[2]: `0=c:1` is not ID=HOST:PORT",
        "spec.state.raft.peers[3]: `x` is not ID=HOST:PORT",
        "spec.state.raft.peers[4]: `3=nohost` is not ID=HOST:PORT",
        "spec.state.raft.id: 9 is not among the peers",
        "spec.state.raft.listen: not an IP:PORT address",
    ];
    for (error, expected) in errors.iter().zip(expect) {
        assert!(error.contains(expected), "{error} / {expected}");
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    let errors = state("{peers: []}").unwrap_err();
    assert!(
        errors[0].contains("spec.state.raft.peers: list every member"),
        "{errors:#?}"
    );
    let text = "kind: AIGateway\nmetadata: {name: gw}\nspec: {state: {type: raft}}\n";
    let errors = compile_text(text).unwrap_err();
    assert!(
        errors[0].contains("spec.state.raft: required for type raft"),
        "{errors:#?}"
    );
}

/// Compiles one Backend (behind a route, so it is used) and returns it.
fn compile_backend_text(backend: &str) -> Result<Backend, Vec<String>> {
    let text = format!(
        "kind: AIGateway\nmetadata: {{name: default}}\nspec:\n  llm:\n    routes:\n      - models: [m]\n        backends: [{{backend: b}}]\n---\nkind: Backend\nmetadata: {{name: b}}\nspec:\n{backend}"
    );
    let snapshot = compile_text(&text)?;
    Ok(snapshot.backends[0].clone())
}

fn base_of(backend: &Backend) -> &str {
    match &backend.target {
        Target::OpenAICompatible { base_url } => base_url,
        other => panic!("not an OpenAI-compatible target: {other:?}"),
    }
}

#[test]
fn every_preset_compiles_with_its_default_endpoint() {
    let defaults = [
        ("OpenAI", "https://api.openai.com/v1"),
        ("Ollama", "http://127.0.0.1:11434/v1"),
        ("LMStudio", "http://127.0.0.1:1234/v1"),
        ("Mistral", "https://api.mistral.ai/v1"),
        ("Groq", "https://api.groq.com/openai/v1"),
        ("DeepSeek", "https://api.deepseek.com/v1"),
        ("Together", "https://api.together.xyz/v1"),
        ("Fireworks", "https://api.fireworks.ai/inference/v1"),
        ("OpenRouter", "https://openrouter.ai/api/v1"),
        ("XAI", "https://api.x.ai/v1"),
        ("Perplexity", "https://api.perplexity.ai"),
        ("Cerebras", "https://api.cerebras.ai/v1"),
        ("SambaNova", "https://api.sambanova.ai/v1"),
        ("DeepInfra", "https://api.deepinfra.com/v1/openai"),
        (
            "GeminiOpenAI",
            "https://generativelanguage.googleapis.com/v1beta/openai",
        ),
        ("Cohere", "https://api.cohere.com/v2"),
    ];
    for (provider, url) in defaults {
        let backend = compile_backend_text(&format!(
            "  provider: {provider}\n  auth: {{apiKey: {{valueFrom: {{env: UPSTREAM_KEY}}}}}}\n"
        ))
        .unwrap_or_else(|e| panic!("{provider}: {e:?}"));
        assert_eq!(base_of(&backend), url, "{provider}");
        let credential = backend.credential.unwrap();
        assert_eq!(credential.header, "authorization", "{provider}");
        assert_eq!(credential.value.expose(), "Bearer sk-upstream");
    }
    // Every LLM provider but the ones that need an endpoint has a default.
    for (name, provider) in Provider::ALL {
        let needs_endpoint = matches!(
            provider,
            Provider::OpenAICompatible
                | Provider::VLLM
                | Provider::AzureOpenAI
                | Provider::Mcp
                | Provider::Demo
                // Built from `auth.gcp` (see vertex_ai_urls_come_from_auth_gcp).
                | Provider::VertexAI
                // The region's endpoint, from `auth.aws.region`.
                | Provider::Bedrock
        );
        assert_eq!(
            provider.default_endpoint().is_none(),
            needs_endpoint,
            "{name}"
        );
        // Anthropic and Gemini have targets and key headers of their own.
        if !needs_endpoint && !matches!(provider, Provider::Anthropic | Provider::Gemini) {
            assert!(defaults.iter().any(|(n, _)| *n == name), "{name} untested");
        }
    }
}

#[test]
fn anthropic_defaults_to_its_api_and_x_api_key() {
    let backend = compile_backend_text(
        "  provider: Anthropic\n  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}\n",
    )
    .unwrap();
    let credential = backend.credential.unwrap();
    assert_eq!(credential.header, "x-api-key");
    assert_eq!(credential.value.expose(), "sk-upstream");
    assert_eq!(
        Provider::Anthropic.default_endpoint(),
        Some("https://api.anthropic.com/v1")
    );
}

#[test]
fn endpoints_are_required_where_there_is_no_default() {
    for provider in ["OpenAICompatible", "VLLM", "AzureOpenAI"] {
        let errors = compile_backend_text(&format!("  provider: {provider}\n")).unwrap_err();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("Backend/b: spec.endpoint: required for provider")),
            "{provider}: {errors:?}"
        );
    }
    let vllm =
        compile_backend_text("  provider: VLLM\n  endpoint: http://10.0.0.5:8000\n").unwrap();
    assert_eq!(base_of(&vllm), "http://10.0.0.5:8000/v1");
    // A path-less Perplexity endpoint gets no /v1; a written path is kept.
    let pplx = compile_backend_text("  provider: Perplexity\n  endpoint: https://pplx.example/\n")
        .unwrap();
    assert_eq!(base_of(&pplx), "https://pplx.example");
    let pplx =
        compile_backend_text("  provider: Perplexity\n  endpoint: https://api.perplexity.ai/v1\n")
            .unwrap();
    assert_eq!(base_of(&pplx), "https://api.perplexity.ai/v1");
}

#[test]
fn presets_know_their_quirks() {
    let mistral = Provider::Mistral.preset();
    assert!(!mistral.stream_options && !mistral.max_completion_tokens);
    for (name, provider) in Provider::ALL {
        if provider != Provider::Mistral {
            assert!(provider.preset().stream_options, "{name}");
        }
    }
    assert_eq!(Provider::AzureOpenAI.preset().key_header, "api-key");
    assert_eq!(Provider::Perplexity.preset().version_path, "");
}

#[test]
fn compiles_azure_backends() {
    let backend = compile_backend_text(
        "  provider: AzureOpenAI\n  endpoint: https://my-res.openai.azure.com/\n  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}\n",
    )
    .unwrap();
    assert_eq!(
        backend.target,
        Target::AzureOpenAI {
            endpoint: "https://my-res.openai.azure.com".into(),
            api: AzureApi::Deployments {
                api_version: DEFAULT_AZURE_API_VERSION.into()
            },
        }
    );
    let credential = backend.credential.unwrap();
    assert_eq!(credential.header, "api-key");
    assert_eq!(credential.value.expose(), "sk-upstream", "the bare key");

    // The SDK's `/openai/v1` suffix names the same resource; v1 style.
    let backend = compile_backend_text(
        "  provider: AzureOpenAI\n  endpoint: https://my-res.openai.azure.com/openai/v1\n  apiVersion: v1\n  auth: {azure: {token: {valueFrom: {env: UPSTREAM_KEY}}}}\n",
    )
    .unwrap();
    assert_eq!(
        backend.target,
        Target::AzureOpenAI {
            endpoint: "https://my-res.openai.azure.com".into(),
            api: AzureApi::V1,
        }
    );
    let credential = backend.credential.unwrap();
    assert_eq!(credential.header, "authorization");
    assert_eq!(credential.value.expose(), "Bearer sk-upstream");

    let preview = compile_backend_text(
        "  provider: AzureOpenAI\n  endpoint: https://r.openai.azure.com\n  apiVersion: 2025-04-01-preview\n",
    )
    .unwrap();
    assert!(matches!(
        preview.target,
        Target::AzureOpenAI { api: AzureApi::Deployments { api_version }, .. } if api_version == "2025-04-01-preview"
    ));
}

#[test]
fn rejects_bad_azure_and_header_settings() {
    let cases = [
        (
            "  provider: AzureOpenAI\n  endpoint: https://r.openai.azure.com\n  apiVersion: latest\n",
            "spec.apiVersion: `latest` is not an api-version",
        ),
        (
            "  provider: OpenAI\n  apiVersion: 2024-10-21\n",
            "spec.apiVersion: only AzureOpenAI backends take an apiVersion",
        ),
        (
            "  provider: OpenAI\n  auth: {azure: {token: {valueFrom: {env: UPSTREAM_KEY}}}}\n",
            "spec.auth.azure: only for provider AzureOpenAI",
        ),
        (
            "  provider: AzureOpenAI\n  endpoint: https://r.openai.azure.com\n  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}, azure: {token: {valueFrom: {env: UPSTREAM_KEY}}}}\n",
            "not both",
        ),
        (
            "  provider: AzureOpenAI\n  endpoint: https://r.openai.azure.com\n  auth: {azure: {token: {valueFrom: {env: NOPE}}}}\n",
            "spec.auth.azure.token.valueFrom",
        ),
        (
            "  provider: OpenRouter\n  headers: {Authorization: x}\n",
            "spec.headers.Authorization: `Authorization` is set by the gateway",
        ),
        (
            "  provider: OpenRouter\n  headers: {\"bad header\": x}\n",
            "spec.headers.bad header: `bad header` is not a valid header name",
        ),
        (
            "  provider: OpenRouter\n  headers: {X-Title: \"a\\nb\"}\n",
            "spec.headers.X-Title: the value contains control characters",
        ),
        (
            "  provider: Perplexity\n  endpoint: https://api.perplexity.ai?x=1\n",
            "spec.endpoint",
        ),
    ];
    for (backend, expected) in cases {
        let errors = compile_backend_text(backend).unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{backend}: {errors:?}"
        );
    }
    let ok = compile_backend_text(
        "  provider: OpenRouter\n  headers: {HTTP-Referer: https://example.com, X-Title: My App}\n",
    )
    .unwrap();
    assert_eq!(
        ok.headers,
        vec![
            ("http-referer".to_owned(), "https://example.com".to_owned()),
            ("x-title".to_owned(), "My App".to_owned())
        ]
    );
}

#[test]
fn every_backend_in_the_providers_page_compiles() {
    let page = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/providers.md");
    let text = std::fs::read_to_string(&page).unwrap();
    let mut count = 0;
    for block in text.split("```yaml\n").skip(1) {
        let block = block.split("```").next().unwrap_or_default();
        if !block.contains("kind: Backend") {
            continue;
        }
        let loaded = load_documents(&[("providers.md".into(), block.into())]);
        // `*_SA_KEY`: a service account key's shape (Vertex AI).
        let any_env = |name: &str| {
            Some(if name.ends_with("_SA_KEY") {
                r#"{"type":"service_account","project_id":"doc-project","private_key":"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n","client_email":"sa@doc-project.iam.gserviceaccount.com"}"#.to_owned()
            } else {
                "sk-doc".to_owned()
            })
        };
        if let Err(errors) = compile(&loaded, &StandaloneSecrets { env: any_env }) {
            panic!("{block}\n{errors:?}");
        }
        count += 1;
    }
    assert!(
        count >= 18,
        "only {count} Backend blocks in docs/providers.md"
    );
}

#[test]
fn gemini_and_vertex_ai_urls() {
    let backend = compile_backend_text(
        "  provider: Gemini\n  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}\n",
    )
    .unwrap();
    match &backend.target {
        Target::Gemini {
            base_url,
            service_account: None,
        } => assert_eq!(base_url, "https://generativelanguage.googleapis.com/v1beta"),
        other => panic!("{other:?}"),
    }
    let credential = backend.credential.unwrap();
    assert_eq!(credential.header, "x-goog-api-key");
    assert_eq!(credential.value.expose(), "sk-upstream");
    // VertexAI needs `auth.gcp`; a key that is not a service account key is refused.
    let errors = compile_backend_text("  provider: VertexAI\n").unwrap_err();
    assert!(
        format!("{errors:?}").contains("spec.auth.gcp"),
        "{errors:?}"
    );
    let errors = compile_backend_text(
        "  provider: VertexAI\n  auth: {gcp: {serviceAccountKey: {valueFrom: {env: UPSTREAM_KEY}}, location: us-central1}}\n",
    )
    .unwrap_err();
    assert!(
        format!("{errors:?}").contains("not a service account JSON key"),
        "{errors:?}"
    );
    assert!(
        !format!("{errors:?}").contains("sk-upstream"),
        "the key is never quoted"
    );
    let errors = compile_backend_text(
        "  provider: OpenAI\n  auth: {gcp: {serviceAccountKey: {valueFrom: {env: UPSTREAM_KEY}}, location: us-central1}}\n",
    )
    .unwrap_err();
    assert!(
        format!("{errors:?}").contains("only for provider VertexAI"),
        "{errors:?}"
    );
}

#[test]
fn vertex_ai_express_mode() {
    let backend = compile_backend_text(
        "  provider: VertexAI\n  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}\n",
    )
    .unwrap();
    assert_eq!(
        backend.target,
        Target::Gemini {
            base_url: "https://aiplatform.googleapis.com/v1/publishers/google".into(),
            service_account: None,
        }
    );
    let credential = backend.credential.unwrap();
    assert_eq!(credential.header, "x-goog-api-key");
    assert_eq!(credential.value.expose(), "sk-upstream");
    // Claude needs a service account; a key and a service account are one too many.
    let errors = compile_backend_text(
        "  provider: VertexAI\n  models: [gemini-2.5-flash, claude-sonnet-4@20250514]\n  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}\n",
    )
    .unwrap_err();
    assert!(
        format!("{errors:?}").contains("serves Gemini models only"),
        "{errors:?}"
    );
    let errors = compile_backend_text(
        "  provider: VertexAI\n  auth:\n    apiKey: {valueFrom: {env: UPSTREAM_KEY}}\n    gcp: {serviceAccountKey: {valueFrom: {env: UPSTREAM_KEY}}, location: us-central1}\n",
    )
    .unwrap_err();
    assert!(format!("{errors:?}").contains("not both"), "{errors:?}");
}

#[test]
fn compiles_bedrock_backends() {
    let backend = compile_backend_text(
        "  provider: Bedrock\n  auth:\n    aws:\n      region: eu-west-3\n      accessKeyId: {valueFrom: {env: TEAM_A_KEY}}\n      secretAccessKey: {valueFrom: {env: UPSTREAM_KEY}}\n",
    )
    .unwrap();
    assert_eq!(
        backend.target,
        Target::Bedrock {
            endpoint: "https://bedrock-runtime.eu-west-3.amazonaws.com".into(),
            region: "eu-west-3".into(),
            aws: Some(AwsAuth::Keys(AwsCredentials {
                access_key_id: "sk-team-a".into(),
                secret_access_key: Secret::new("sk-upstream"),
                session_token: None,
            })),
        }
    );
    assert!(backend.credential.is_none(), "signed, no header credential");

    // An endpoint override (VPC endpoint, test server) keeps its path as is.
    let backend = compile_backend_text(
        "  provider: Bedrock\n  endpoint: http://127.0.0.1:9/\n  auth:\n    aws:\n      region: us-east-1\n      accessKeyId: {valueFrom: {env: TEAM_A_KEY}}\n      secretAccessKey: {valueFrom: {env: UPSTREAM_KEY}}\n      sessionToken: {valueFrom: {env: TEAM_B_KEY}}\n",
    )
    .unwrap();
    let Target::Bedrock { endpoint, aws, .. } = backend.target else {
        panic!("not Bedrock");
    };
    assert_eq!(endpoint, "http://127.0.0.1:9");
    let Some(AwsAuth::Keys(keys)) = aws else {
        panic!("not keys");
    };
    assert_eq!(keys.session_token.unwrap().expose(), "sk-team-b");

    // A region alone: the standard AWS credential chain.
    let backend = compile_backend_text(
        "  provider: Bedrock
  auth:
    aws: {region: us-west-2}
",
    )
    .unwrap();
    assert_eq!(
        backend.target,
        Target::Bedrock {
            endpoint: "https://bedrock-runtime.us-west-2.amazonaws.com".into(),
            region: "us-west-2".into(),
            aws: Some(AwsAuth::DefaultChain),
        }
    );

    // A Bedrock API key: bearer token on an explicit endpoint.
    let backend = compile_backend_text(
        "  provider: Bedrock\n  endpoint: https://bedrock-runtime.us-west-2.amazonaws.com\n  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}\n",
    )
    .unwrap();
    assert!(matches!(backend.target, Target::Bedrock { aws: None, .. }));
    assert_eq!(
        backend.credential.unwrap().value.expose(),
        "Bearer sk-upstream"
    );
}

#[test]
fn rejects_bad_bedrock_settings() {
    let aws = "      accessKeyId: {valueFrom: {env: TEAM_A_KEY}}\n      secretAccessKey: {valueFrom: {env: UPSTREAM_KEY}}\n";
    let cases = [
        ("  provider: Bedrock\n".to_owned(), "spec.auth.aws: required for provider Bedrock"),
        (
            "  provider: Bedrock\n  auth:\n    aws:\n      region: us-east-1\n      accessKeyId: {valueFrom: {env: TEAM_A_KEY}}\n".to_owned(),
            "spec.auth.aws: set both `accessKeyId` and `secretAccessKey`, or neither",
        ),
        (
            "  provider: Bedrock\n  auth:\n    aws:\n      region: us-east-1\n      sessionToken: {valueFrom: {env: TEAM_A_KEY}}\n".to_owned(),
            "spec.auth.aws.sessionToken: only with `accessKeyId` and `secretAccessKey`",
        ),
        (
            format!("  provider: Bedrock\n  auth:\n    aws:\n      region: EU West\n{aws}"),
            "spec.auth.aws.region: `EU West` is not an AWS region",
        ),
        (
            "  provider: Bedrock\n  auth:\n    aws:\n      region: us-east-1\n      accessKeyId: {valueFrom: {env: NOPE}}\n      secretAccessKey: {valueFrom: {env: UPSTREAM_KEY}}\n".to_owned(),
            "spec.auth.aws.accessKeyId.valueFrom: environment variable NOPE is not set",
        ),
        (
            format!("  provider: Bedrock\n  auth:\n    apiKey: {{valueFrom: {{env: UPSTREAM_KEY}}}}\n    aws:\n      region: us-east-1\n{aws}"),
            "set either `aws` (signed requests) or `apiKey`",
        ),
        (
            format!("  provider: OpenAI\n  auth:\n    aws:\n      region: us-east-1\n{aws}"),
            "spec.auth.aws: only for provider Bedrock",
        ),
    ];
    for (spec, expected) in cases {
        let errors = compile_backend_text(&spec).unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{spec}: expected `{expected}` in {errors:?}"
        );
    }
}
