//! JWT auth end to end, against a real `sluice run`: an MCPRoute as an
//! OAuth 2.1 resource server (RFC 9728 metadata, 401/403 challenges, token
//! checks, tenants from a claim, no token passthrough, JWKS outages and key
//! rotation) and `auth.jwt` on the LLM API. The tokens are signed here with
//! the test-only keys of `tests/fixtures/jwt`, whose public halves a small
//! JWKS server on 127.0.0.1 serves; a small MCP server records what the
//! gateway sends upstream.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;
#[path = "support/jwt.rs"]
mod tokens;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{client, dead_url, Sluice};
use tokens::{jwks, now, JwksServer, TestKey, EC_P256, RSA_A, RSA_B};

const MCP_AUDIENCE: &str = "sluice-mcp";
const LLM_AUDIENCE: &str = "sluice-llm";

/// The gateway: API keys and `auth.jwt` (tenant from `org`) for the LLM API
/// and the plain route `/open`; OAuth (scope `mcp:tools`) on `/mcp`, whose
/// servers are the demo and `upstream`.
fn config(issuer: &str, jwks_uri: &str, upstream: &str) -> String {
    format!(
        r#"kind: AIGateway
metadata: {{name: gw}}
spec:
  auth:
    apiKeys: [{{name: ci, tenant: team-a, valueFrom: {{env: TEAM_A_KEY}}}}]
    jwt: {{issuer: "{issuer}", audiences: [{LLM_AUDIENCE}], jwksUri: "{jwks_uri}", tenantClaim: org}}
  llm:
    routes: [{{models: [sluice-demo], backends: [{{backend: demo}}]}}]
---
kind: Backend
metadata: {{name: demo}}
spec: {{provider: Demo}}
---
kind: Backend
metadata: {{name: upstream}}
spec:
  provider: MCP
  endpoint: {upstream}
  auth: {{apiKey: {{valueFrom: {{env: UPSTREAM_KEY}}}}}}
  timeout: 5s
---
kind: MCPRoute
metadata: {{name: tools}}
spec:
  path: /mcp
  backends: [{{backend: demo}}, {{backend: upstream, prefix: up}}]
  auth:
    oauth:
      issuer: "{issuer}"
      audiences: [{MCP_AUDIENCE}]
      jwksUri: "{jwks_uri}"
      scopes: ["mcp:tools"]
      tenantClaim: org
      jwksRefetchInterval: 1s
---
kind: MCPRoute
metadata: {{name: open}}
spec:
  path: /open
  backends: [{{backend: demo}}]
"#
    )
}

const ENV: &[(&str, &str)] = &[
    ("TEAM_A_KEY", "sk-team-a"),
    ("UPSTREAM_KEY", "sk-upstream-secret"),
];

/// Claims of a good MCP token for tenant `team-oauth`.
fn claims(issuer: &str) -> Value {
    json!({"iss": issuer, "aud": MCP_AUDIENCE, "sub": "alice", "org": "team-oauth",
        "scope": "openid mcp:tools", "iat": now(), "exp": now() + 300})
}

fn with(mut claims: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

/// Everything a test needs: keys, the JWKS and MCP servers, the gateway.
struct Setup {
    key: TestKey,
    issuer: String,
    jwks: JwksServer,
    upstream: McpUpstream,
    sluice: Sluice,
}

impl Setup {
    fn start() -> Self {
        let key = TestKey::rsa(RSA_A, "key-a");
        let jwks = JwksServer::start(tokens::jwks(&[&key, &TestKey::ec(EC_P256, "key-ec")]));
        let issuer = jwks.url.trim_end_matches("/jwks").to_owned();
        let upstream = McpUpstream::start();
        let sluice = Sluice::start(&config(&issuer, &jwks.url, &upstream.url), ENV);
        Self {
            key,
            issuer,
            jwks,
            upstream,
            sluice,
        }
    }

    fn token(&self, changes: Value) -> String {
        self.key.sign(&with(claims(&self.issuer), changes))
    }

    fn mcp(&self, path: &str, token: Option<&str>) -> Mcp {
        Mcp {
            url: format!("{}{path}", self.sluice.url),
            token: token.map(str::to_owned),
            session: None,
        }
    }
}

/// An MCP client over raw HTTP.
struct Mcp {
    url: String,
    token: Option<String>,
    session: Option<String>,
}

impl Mcp {
    async fn post(&self, body: Value) -> reqwest::Response {
        let mut request = client()
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .json(&body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session);
        }
        request.send().await.unwrap()
    }

    async fn initialize(&mut self) -> reqwest::Response {
        let response = self
            .post(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
            .await;
        self.session = response
            .headers()
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_owned());
        response
    }

    async fn call(&self, id: u64, method: &str, params: Value) -> Value {
        let response = self
            .post(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

fn challenge(response: &reqwest::Response) -> String {
    response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_served_at_both_well_known_paths() {
    let setup = Setup::start();
    let url = &setup.sluice.url;
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let response = client().get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        let document: Value = response.json().await.unwrap();
        assert_eq!(
            document,
            json!({
                "resource": format!("{url}/mcp"),
                "authorization_servers": [setup.issuer],
                "scopes_supported": ["mcp:tools"],
                "bearer_methods_supported": ["header"],
            }),
            "{path}"
        );
    }
    // Only routes with OAuth have metadata.
    let none = client()
        .get(format!("{url}/.well-known/oauth-protected-resource/open"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 404);
    // Behind a TLS proxy the resource is https.
    let proxied: Value = client()
        .get(format!("{url}/.well-known/oauth-protected-resource/mcp"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        proxied["resource"],
        format!("{}/mcp", url.replace("http://", "https://"))
    );
    let lines = setup.sluice.access_log(4);
    assert_eq!(
        lines[0]["path"],
        "/.well-known/oauth-protected-resource/mcp"
    );
    assert_eq!(lines[0]["status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_good_token_are_challenged() {
    let setup = Setup::start();
    let metadata = format!(
        "resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
        setup.sluice.url
    );

    // No token: 401, where to find the metadata, and the scope to ask for.
    let mut anonymous = setup.mcp("/mcp", None);
    let response = anonymous.initialize().await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        challenge(&response),
        format!("Bearer scope=\"mcp:tools\", {metadata}")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32001);
    assert_eq!(body["id"], Value::Null, "refused before the body is read");
    assert_eq!(setup.sluice.last_log(1)["error"], "missing_token");

    // Tokens that fail a check: 401 invalid_token, and why.
    let other_key = TestKey::rsa(RSA_B, "key-a");
    let cases = [
        (
            setup.token(json!({"exp": now() - 300})),
            "the token has expired",
        ),
        (
            setup.token(json!({"iss": "https://evil.example.com"})),
            "the token's issuer is not",
        ),
        (
            setup.token(json!({"aud": LLM_AUDIENCE})),
            "the token's audience is none of sluice-mcp",
        ),
        (
            other_key.sign(&claims(&setup.issuer)),
            "the token's signature is invalid",
        ),
        (
            TestKey::rsa(RSA_B, "key-b").sign(&claims(&setup.issuer)),
            "the issuer does not publish (kid key-b)",
        ),
        ("sk-team-a".to_owned(), "the token is not a valid JWT"),
    ];
    for (i, (token, reason)) in cases.iter().enumerate() {
        let response = setup.mcp("/mcp", Some(token)).initialize().await;
        assert_eq!(response.status(), 401, "{reason}");
        let header = challenge(&response);
        assert!(
            header.starts_with("Bearer error=\"invalid_token\", error_description=\"")
                && header.contains(reason)
                && header.ends_with(&format!("scope=\"mcp:tools\", {metadata}")),
            "{header}"
        );
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]["message"].as_str().unwrap().contains(reason),
            "{body}"
        );
        assert_eq!(setup.sluice.last_log(2 + i)["error"], "invalid_token");
    }

    // A good token without the scope: 403 insufficient_scope.
    let response = setup
        .mcp("/mcp", Some(&setup.token(json!({"scope": "openid"}))))
        .initialize()
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        challenge(&response),
        format!("Bearer error=\"insufficient_scope\", error_description=\"the token lacks the scope mcp:tools\", scope=\"mcp:tools\", {metadata}")
    );
    let line = setup.sluice.last_log(2 + cases.len());
    assert_eq!(line["error"], "insufficient_scope");
    assert_eq!(line["status"], 403);
    assert!(
        !setup
            .sluice
            .access_log_text()
            .contains(&setup.token(json!({}))[..40]),
        "tokens are not logged"
    );
    assert!(
        setup.upstream.requests().is_empty(),
        "nothing went upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_uses_the_tools_and_never_reaches_an_upstream() {
    let setup = Setup::start();
    let token = setup.token(json!({}));
    let mut mcp = setup.mcp("/mcp", Some(&token));
    let response = mcp.initialize().await;
    assert_eq!(response.status(), 200);
    assert!(mcp.session.is_some());
    let notified = mcp
        .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    assert_eq!(notified.status(), 202);
    let tools = mcp.call(1, "tools/list", json!({})).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "demo__search-flight",
            "demo__list-events",
            "demo__create-event",
            "up__echo"
        ]
    );
    let flights = mcp
        .call(2, "tools/call", json!({"name": "demo__search-flight", "arguments": {"origin": "New York", "destination": "Los Angeles", "date": "31/12/2026"}}))
        .await;
    assert!(flights["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("AF123"));
    let echo = mcp
        .call(
            3,
            "tools/call",
            json!({"name": "up__echo", "arguments": {"text": "hi"}}),
        )
        .await;
    assert_eq!(echo["result"]["content"][0]["text"], "echo: hi");

    // A renewed token (here ES256) of the same tenant continues the session.
    let renewed = TestKey::ec(EC_P256, "key-ec").sign(&claims(&setup.issuer));
    let continued = Mcp {
        token: Some(renewed),
        ..setup.mcp("/mcp", None)
    };
    let continued = Mcp {
        session: mcp.session.clone(),
        ..continued
    };
    assert!(continued.call(4, "ping", json!({})).await["result"].is_object());
    // Another tenant's token does not open it.
    let stranger = Mcp {
        token: Some(setup.token(json!({"org": "team-b"}))),
        session: mcp.session.clone(),
        url: mcp.url.clone(),
    };
    assert_eq!(
        stranger
            .post(json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}))
            .await
            .status(),
        404
    );

    let lines = setup.sluice.access_log(7);
    for line in &lines[..6] {
        assert_eq!(line["tenant"], "team-oauth", "{line}");
        assert_eq!(line["status"].as_u64().unwrap() / 100, 2, "{line}");
    }
    assert_eq!(lines[3]["tool"], "search-flight");
    assert_eq!(lines[4]["upstream"], "upstream");

    // What the MCP server received: its own credential, never the client's token.
    let requests = setup.upstream.requests();
    assert!(requests.len() >= 3, "{requests:#?}");
    for (method, headers) in &requests {
        assert_eq!(method, "POST");
        let authorization: Vec<&str> = headers
            .iter()
            .filter(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(authorization, ["Bearer sk-upstream-secret"]);
        for (name, value) in headers {
            assert!(
                !value.contains(&token[..40]) && !value.contains("eyJ"),
                "{name}: {value}"
            );
        }
    }
    assert_eq!(setup.jwks.hits(), 1, "keys are fetched once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_are_picked_up() {
    let setup = Setup::start();
    assert_eq!(
        setup
            .mcp("/mcp", Some(&setup.token(json!({}))))
            .initialize()
            .await
            .status(),
        200
    );
    let key_b = TestKey::rsa(RSA_B, "key-b");
    setup.jwks.set(jwks(&[&key_b]));
    let token_b = key_b.sign(&claims(&setup.issuer));
    // Right after a fetch the keys are not fetched again (jwksRefetchInterval: 1s)...
    assert_eq!(
        setup
            .mcp("/mcp", Some(&token_b))
            .initialize()
            .await
            .status(),
        401
    );
    assert_eq!(setup.jwks.hits(), 1);
    // ...but once it has passed, an unknown kid fetches the new set.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        setup
            .mcp("/mcp", Some(&token_b))
            .initialize()
            .await
            .status(),
        200
    );
    assert_eq!(setup.jwks.hits(), 2);
    // The key that left the set is no longer accepted.
    let old = setup
        .mcp("/mcp", Some(&setup.token(json!({}))))
        .initialize()
        .await;
    assert_eq!(old.status(), 401);
    assert!(challenge(&old).contains("kid key-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_keys_answer_503_at_once() {
    let key = TestKey::rsa(RSA_A, "key-a");
    let jwks_uri = format!("{}/jwks", dead_url());
    let issuer = "https://auth.example.com";
    let sluice = Sluice::start(&config(issuer, &jwks_uri, &dead_url()), ENV);
    let mcp_token = key.sign(&claims(issuer));
    for _ in 0..2 {
        let started = Instant::now();
        let response = Mcp {
            url: format!("{}/mcp", sluice.url),
            token: Some(mcp_token.clone()),
            session: None,
        }
        .initialize()
        .await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(response.status(), 503);
        let body: Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!(
                "the signing keys at {jwks_uri} could not be fetched"
            )),
            "{message}"
        );
    }
    assert_eq!(sluice.last_log(2)["error"], "jwks_unavailable");
    // The LLM API too: 503, OpenAI-shaped; API keys keep working.
    let llm_token = key.sign(&with(claims(issuer), json!({"aud": LLM_AUDIENCE})));
    let body = json!({"model": "sluice-demo", "messages": [{"role": "user", "content": "hi"}]});
    let response = client()
        .post(sluice.v1("/chat/completions"))
        .bearer_auth(&llm_token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "jwks_unavailable");
    assert_eq!(sluice.chat(&body, &[]).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_api_and_plain_mcp_routes_take_gateway_jwts() {
    let setup = Setup::start();
    let sluice = &setup.sluice;
    let body = json!({"model": "sluice-demo", "messages": [{"role": "user", "content": "hi"}]});
    let chat = |token: String| {
        let body = body.clone();
        let url = sluice.v1("/chat/completions");
        async move {
            client()
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let llm_claims = |changes: Value| {
        with(
            with(
                claims(&setup.issuer),
                json!({"aud": [LLM_AUDIENCE, "other"], "org": "team-jwt"}),
            ),
            changes,
        )
    };
    let response = chat(setup.key.sign(&llm_claims(json!({})))).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert!(answer["choices"][0]["message"]["content"].is_string());
    let line = sluice.last_log(1);
    assert_eq!(line["tenant"], "team-jwt");
    assert_eq!(line["path"], "/v1/chat/completions");

    let expired = chat(setup.key.sign(&llm_claims(json!({"exp": now() - 300})))).await;
    assert_eq!(expired.status(), 401);
    assert_eq!(
        challenge(&expired),
        "Bearer error=\"invalid_token\", error_description=\"the token has expired\""
    );
    let error: Value = expired.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_token");
    assert_eq!(error["error"]["type"], "authentication_error");
    assert_eq!(sluice.last_log(2)["error"], "invalid_token");
    // An MCP token is not an LLM token (audience).
    assert_eq!(chat(setup.token(json!({}))).await.status(), 401);
    // API keys still work.
    assert_eq!(sluice.chat(&body, &[]).await.status(), 200);

    // An MCPRoute without auth.oauth takes the gateway's credentials, JWTs included.
    let mut open = setup.mcp("/open", Some(&setup.key.sign(&llm_claims(json!({})))));
    assert_eq!(open.initialize().await.status(), 200);
    assert_eq!(sluice.last_log(5)["tenant"], "team-jwt");
    open.token = Some("sk-team-a".into());
    open.session = None;
    assert_eq!(open.initialize().await.status(), 200);
    assert_eq!(sluice.last_log(6)["tenant"], "team-a");
}

/// A small streamable-HTTP MCP server with one tool, `echo`, that records
/// the method and headers of every request it gets.
struct McpUpstream {
    url: String,
    requests: Arc<Seen>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl McpUpstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || serve_mcp(stream, &seen));
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}/mcp"),
            requests,
            stop,
            port,
        }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for McpUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A request's method and headers (names lower-cased).
type Recorded = (String, Vec<(String, String)>);
type Seen = Mutex<Vec<Recorded>>;

fn serve_mcp(mut stream: TcpStream, seen: &Seen) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let method = lines.next().unwrap().split(' ').next().unwrap().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    while data.len() < head_end + length {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    seen.lock().unwrap().push((method.clone(), headers));
    let message: Value = serde_json::from_slice(&data[head_end..]).unwrap_or(Value::Null);
    let id = message["id"].clone();
    let (status, extra, body) = match (method.as_str(), message["method"].as_str()) {
        ("POST", Some("initialize")) => (
            "200 OK",
            "mcp-session-id: up-1\r\n",
            json!({"jsonrpc": "2.0", "id": id, "result": {"protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}}, "serverInfo": {"name": "up", "version": "1"}}}),
        ),
        ("POST", Some("tools/list")) => (
            "200 OK",
            "",
            json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [
                {"name": "echo", "inputSchema": {"type": "object"}}]}}),
        ),
        ("POST", Some("tools/call")) => (
            "200 OK",
            "",
            json!({"jsonrpc": "2.0", "id": id, "result": {"content": [
                {"type": "text", "text": format!("echo: {}", message["params"]["arguments"]["text"].as_str().unwrap_or(""))}]}}),
        ),
        ("POST", Some(_)) if id.is_null() => ("202 Accepted", "", Value::Null),
        ("POST", Some(_)) => (
            "200 OK",
            "",
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}}),
        ),
        _ => ("405 Method Not Allowed", "", Value::Null),
    };
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}
