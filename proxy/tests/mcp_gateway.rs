//! The MCP endpoint end to end over raw HTTP, against the built-in demo MCP
//! server (no external peers needed here; e2e/python drives real MCP
//! servers with the official SDK): the session handshake, prefixed lists,
//! calls, sealed session ids moving between processes, and the refusals.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use serde_json::{json, Value};
use support::{client, Sluice};

/// An MCP client over raw HTTP.
struct Mcp {
    url: String,
    session: Option<String>,
}

impl Mcp {
    fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            session: None,
        }
    }

    async fn post(&self, body: Value, extra: &[(&str, &str)]) -> reqwest::Response {
        let mut request = client()
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .header("x-session-id", "agent-7")
            .json(&body);
        if let Some(session) = &self.session {
            request = request.header("mcp-session-id", session);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// `initialize` with extra headers; keeps the session id the gateway issues.
    async fn open(&mut self, extra: &[(&str, &str)]) -> reqwest::Response {
        let response = self
            .post(
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}),
                extra,
            )
            .await;
        self.session = response
            .headers()
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_owned());
        response
    }

    async fn initialize(&mut self) -> Value {
        let response = self
            .post(
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}),
                &[],
            )
            .await;
        assert_eq!(response.status(), 200);
        self.session = Some(
            response.headers()["mcp-session-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        let body: Value = response.json().await.unwrap();
        let notified = self
            .post(
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                &[],
            )
            .await;
        assert_eq!(notified.status(), 202);
        body
    }

    async fn call(&self, id: u64, method: &str, params: Value) -> Value {
        let response = self
            .post(
                json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
                &[],
            )
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

fn demo_config(session_key: bool) -> String {
    let key = if session_key {
        "  sessionKey: {valueFrom: {env: SLUICE_SESSION_KEY}}\n"
    } else {
        ""
    };
    format!(
        "kind: AIGateway\nmetadata: {{name: gw}}\nspec:\n{key}  auth:\n    apiKeys: [{{name: ci, tenant: team-a, valueFrom: {{env: TEAM_A_KEY}}}}]\n---\nkind: Backend\nmetadata: {{name: flights}}\nspec: {{provider: Demo}}\n---\nkind: Backend\nmetadata: {{name: calendar}}\nspec: {{provider: Demo}}\n---\nkind: MCPRoute\nmetadata: {{name: tools}}\nspec:\n  path: /mcp\n  backends:\n    - {{backend: flights, prefix: kiwi, tools: {{include: [\"search-*\"]}}}}\n    - {{backend: calendar, prefix: cal, tools: {{exclude: [\"search-*\"]}}}}\n"
    )
}

const ENV: &[(&str, &str)] = &[
    ("TEAM_A_KEY", "sk-team-a"),
    ("SLUICE_SESSION_KEY", "a-long-random-shared-secret"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_config_serves_the_demo_flight_search() {
    let sluice = Sluice::start_with(None, &[], &[]);
    assert!(sluice
        .stderr()
        .contains("MCP /mcp -> built-in demo MCP server"));
    let mut mcp = Mcp::new(&format!("{}/mcp", sluice.url));
    let init = mcp.initialize().await;
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(init["result"]["serverInfo"]["name"], "sluice");
    let tools = mcp.call(1, "tools/list", json!({})).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["search-flight", "list-events", "create-event"],
        "one backend: no prefix"
    );
    let result = mcp
        .call(2, "tools/call", json!({"name": "search-flight", "arguments": {"origin": "New York", "destination": "Los Angeles", "date": "31/12/2026"}}))
        .await;
    assert_eq!(result["id"], 2);
    assert!(result["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("AF123"));
    let line = sluice.last_log(4);
    assert_eq!(line["path"], "/mcp");
    assert_eq!(line["mcp_method"], "tools/call");
    assert_eq!(line["tool"], "search-flight");
    assert_eq!(line["upstream"], "demo");
    assert_eq!(line["session_id"], "agent-7");
    assert_eq!(line["tenant"], "local");
    // Without a session header, lines are tagged with a digest of the MCP session.
    let mut anonymous = Mcp::new(&mcp.url);
    anonymous.initialize().await;
    let untagged = client()
        .post(&mcp.url)
        .header("mcp-session-id", anonymous.session.as_deref().unwrap())
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(untagged.status(), 200);
    let lines = sluice.access_log(7);
    let names: Vec<&str> = lines[4..7]
        .iter()
        .map(|l| l["session_id"].as_str().unwrap())
        .collect();
    assert!(
        names[2].starts_with("mcp-") && names[2].len() == 20,
        "{names:?}"
    );
    assert!(
        names.iter().all(|n| *n == names[2] || *n == "agent-7"),
        "{names:?}"
    );
    assert!(
        !sluice
            .access_log_text()
            .contains(anonymous.session.as_deref().unwrap()),
        "the session id itself is not logged"
    );
    let metrics = client()
        .get(format!("{}/metrics", sluice.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sluice_mcp_tool_calls_total{backend=\"demo\",tool=\"search-flight\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("mcp_request_duration_count{mcp_method=\"tools/call\",backend=\"demo\",status=\"200\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_filters_and_routing() {
    let sluice = Sluice::start(&demo_config(false), ENV);
    let mut mcp = Mcp::new(&format!("{}/mcp", sluice.url));
    let response = mcp.open(&[]).await;
    assert_eq!(response.status(), 401, "API keys apply to MCP too");
    let init = {
        let mut keyed = Mcp::new(&mcp.url);
        let response = keyed
            .post(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}), &[("authorization", "Bearer sk-team-a")])
            .await;
        keyed.session = Some(
            response.headers()["mcp-session-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        mcp.session = keyed.session.clone();
        response.json::<Value>().await.unwrap()
    };
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    let keyed = |body: Value| {
        let mcp = &mcp;
        async move {
            mcp.post(body, &[("authorization", "Bearer sk-team-a")])
                .await
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let tools = keyed(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "kiwi__search-flight",
            "cal__list-events",
            "cal__create-event"
        ]
    );
    let event = keyed(json!({"jsonrpc": "2.0", "id": "e", "method": "tools/call", "params": {"name": "cal__create-event", "arguments": {"title": "Fly", "date": "31/12/2026"}}})).await;
    assert_eq!(event["id"], "e");
    assert!(event["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Created \"Fly\""));
    // Filtered out, or no such prefix: unknown, never routed.
    for name in [
        "cal__search-flight",
        "kiwi__list-events",
        "nobody__x",
        "search-flight",
    ] {
        let error = keyed(
            json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": name}}),
        )
        .await;
        assert_eq!(error["error"]["code"], -32602, "{name}: {error}");
    }
    let unknown = keyed(json!({"jsonrpc": "2.0", "id": 10, "method": "sampling/whatever"})).await;
    assert_eq!(unknown["error"]["code"], -32601);
    let ping = keyed(json!({"jsonrpc": "2.0", "id": 11, "method": "ping"})).await;
    assert_eq!(ping["result"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_sealed_and_move_between_replicas() {
    let one = Sluice::start(&demo_config(true), ENV);
    let two = Sluice::start(&demo_config(true), ENV);
    let auth = [("authorization", "Bearer sk-team-a")];
    let mut on_one = Mcp::new(&format!("{}/mcp", one.url));
    on_one.open(&auth).await;
    let session = on_one.session.clone().unwrap();

    // The other process continues the session: the id carries it.
    let mut on_two = Mcp::new(&format!("{}/mcp", two.url));
    on_two.session = Some(session.clone());
    let tools = on_two
        .post(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
            &auth,
        )
        .await;
    assert_eq!(tools.status(), 200);

    // A process with another key cannot.
    let other = Sluice::start(
        &demo_config(true),
        &[
            ("TEAM_A_KEY", "sk-team-a"),
            ("SLUICE_SESSION_KEY", "another-secret"),
        ],
    );
    let mut on_other = Mcp::new(&format!("{}/mcp", other.url));
    on_other.session = Some(session.clone());
    assert_eq!(
        on_other
            .post(
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
                &auth
            )
            .await
            .status(),
        404
    );

    // Tampered, missing, bad origin, GET.
    let mut tampered = session.into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'x' { b'y' } else { b'x' };
    on_two.session = Some(String::from_utf8(tampered).unwrap());
    let response = on_two
        .post(
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
            &auth,
        )
        .await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        -32001
    );
    on_two.session = None;
    assert_eq!(
        on_two
            .post(
                json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
                &auth
            )
            .await
            .status(),
        400
    );
    let evil = on_one
        .post(
            json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list"}),
            &[auth[0], ("origin", "http://evil.example.com")],
        )
        .await;
    assert_eq!(evil.status(), 403);
    let get = client()
        .get(&on_one.url)
        .header("authorization", "Bearer sk-team-a")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 400, "GET needs a session like any request");
    let get = client()
        .get(&on_one.url)
        .header("authorization", "Bearer sk-team-a")
        .header("mcp-session-id", on_one.session.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        get.status(),
        405,
        "the demo servers offer no stream of their own"
    );
    // Malformed JSON-RPC and batches are refused clearly.
    let bad = client()
        .post(&on_one.url)
        .header("authorization", "Bearer sk-team-a")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"]["code"], -32700);
    let batch = client()
        .post(&on_one.url)
        .header("authorization", "Bearer sk-team-a")
        .body("[{}]")
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), 400);
    // DELETE ends it (2xx).
    let deleted = client()
        .delete(&on_one.url)
        .header("authorization", "Bearer sk-team-a")
        .header("mcp-session-id", on_one.session.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
    // An ended session is gone for good (on the process that ended it).
    let after = on_one
        .post(
            json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}),
            &auth,
        )
        .await;
    assert_eq!(after.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_protocol_version_is_refused() {
    let sluice = Sluice::start(&demo_config(false), ENV);
    let auth = [("authorization", "Bearer sk-team-a")];
    let mut mcp = Mcp::new(&format!("{}/mcp", sluice.url));
    mcp.open(&auth).await;
    let refused = client()
        .post(&mcp.url)
        .header("authorization", "Bearer sk-team-a")
        .header("mcp-session-id", mcp.session.as_deref().unwrap())
        .header("mcp-protocol-version", "1999-01-01")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("unsupported MCP-Protocol-Version"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_sees_and_calls_only_its_tools() {
    let config = demo_config(false)
        .replace(
            "    apiKeys: [{name: ci, tenant: team-a, valueFrom: {env: TEAM_A_KEY}}]",
            "    apiKeys:\n      - {name: ci, tenant: team-a, valueFrom: {env: TEAM_A_KEY}}\n      - {name: b, tenant: team-b, valueFrom: {env: TEAM_B_KEY}}\n      - {name: c, tenant: team-c, valueFrom: {env: TEAM_C_KEY}}",
        )
        + "  access:\n    - {tenant: team-a}\n    - {tenant: team-b, tools: {include: [\"cal__*\"], exclude: [\"cal__create-event\"]}}\n";
    let env = [
        ("TEAM_A_KEY", "sk-team-a"),
        ("TEAM_B_KEY", "sk-team-b"),
        ("TEAM_C_KEY", "sk-team-c"),
    ];
    let sluice = Sluice::start(&config, &env);
    let url = format!("{}/mcp", sluice.url);
    let tools_of = |key: &'static str| {
        let url = url.clone();
        async move {
            let auth = format!("Bearer {key}");
            let mut mcp = Mcp::new(&url);
            mcp.open(&[("authorization", &auth)]).await;
            let list: Value = mcp
                .post(
                    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
                    &[("authorization", &auth)],
                )
                .await
                .json()
                .await
                .unwrap();
            let names: Vec<String> = list["result"]["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect();
            let call: Value = mcp
                .post(
                    json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "cal__create-event", "arguments": {"title": "x", "date": "y"}}}),
                    &[("authorization", &auth)],
                )
                .await
                .json()
                .await
                .unwrap();
            (names, call.get("result").is_some())
        }
    };
    assert_eq!(
        tools_of("sk-team-a").await,
        (
            vec![
                "kiwi__search-flight".to_owned(),
                "cal__list-events".to_owned(),
                "cal__create-event".to_owned()
            ],
            true
        )
    );
    assert_eq!(
        tools_of("sk-team-b").await,
        (vec!["cal__list-events".to_owned()], false),
        "team-b may not create events"
    );
    assert_eq!(
        tools_of("sk-team-c").await,
        (vec![], false),
        "no entry: no tools"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused() {
    let config = demo_config(false).replacen("spec:\n", "spec:\n  maxRequestBody: 1KiB\n", 1);
    let sluice = Sluice::start(&config, ENV);
    let padding = "x".repeat(4096);
    let response = client()
        .post(format!("{}/mcp", sluice.url))
        .header("authorization", "Bearer sk-team-a")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"padding": padding}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("exceeds the limit"));
}
