//! The stateless MCP revision 2026-07-28 end to end over raw HTTP, against
//! the built-in demo MCP server: `server/discover`, lists and calls with the
//! per-request `_meta` envelope, and the refusals the revision prescribes
//! (header mismatches, unsupported versions, unknown methods, GET and
//! DELETE). e2e/python/test_mcp_stateless.py drives real servers with the
//! official SDK's 2026-07-28 client.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "support/fake_mcp.rs"]
mod fake_mcp;
mod support;

use fake_mcp::FakeMcp;
use serde_json::{json, Value};
use support::{client, Sluice};

const VERSION: &str = "2026-07-28";

fn config() -> String {
    "kind: AIGateway\nmetadata: {name: gw}\nspec:\n  auth:\n    apiKeys: [{name: ci, tenant: team-a, valueFrom: {env: TEAM_A_KEY}}]\n---\nkind: Backend\nmetadata: {name: flights}\nspec: {provider: Demo}\n---\nkind: Backend\nmetadata: {name: calendar}\nspec: {provider: Demo}\n---\nkind: MCPRoute\nmetadata: {name: tools}\nspec:\n  path: /mcp\n  backends:\n    - {backend: flights, prefix: kiwi, tools: {include: [\"search-*\"]}}\n    - {backend: calendar, prefix: cal, tools: {exclude: [\"search-*\"]}}\n".to_owned()
}

const ENV: &[(&str, &str)] = &[("TEAM_A_KEY", "sk-team-a")];

/// A 2026-07-28 request: `_meta` envelope and mirrored headers.
fn request(id: u64, method: &str, params: Value) -> (Value, Vec<(String, String)>) {
    request_with(id, method, params, json!({}))
}

/// The same, with client capabilities.
fn request_with(
    id: u64,
    method: &str,
    mut params: Value,
    capabilities: Value,
) -> (Value, Vec<(String, String)>) {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "1"},
    });
    let mut headers = vec![
        ("mcp-protocol-version".to_owned(), VERSION.to_owned()),
        ("mcp-method".to_owned(), method.to_owned()),
    ];
    let name = params
        .get("name")
        .or_else(|| params.get("uri"))
        .and_then(Value::as_str);
    if let (Some(name), true) = (
        name,
        matches!(method, "tools/call" | "prompts/get" | "resources/read"),
    ) {
        headers.push(("mcp-name".to_owned(), name.to_owned()));
    }
    (
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        headers,
    )
}

async fn post(
    url: &str,
    body: &Value,
    headers: &[(String, String)],
) -> (reqwest::StatusCode, Value) {
    let mut request = client()
        .post(url)
        .header("authorization", "Bearer sk-team-a")
        .header("accept", "application/json, text/event-stream")
        .header("x-session-id", "agent-2026")
        .json(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    assert!(
        response.headers().get("mcp-session-id").is_none(),
        "no sessions in 2026-07-28"
    );
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_list_and_call_without_a_session() {
    let sluice = Sluice::start(&config(), ENV);
    let url = format!("{}/mcp", sluice.url);

    let (body, headers) = request(1, "server/discover", json!({}));
    let (status, discover) = post(&url, &body, &headers).await;
    assert_eq!(status, 200, "{discover}");
    let result = &discover["result"];
    assert_eq!(result["resultType"], "complete");
    assert_eq!(
        result["supportedVersions"],
        json!(["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"])
    );
    assert!(result["capabilities"]["tools"].is_object(), "{result}");
    assert_eq!(result["ttlMs"], 0);
    assert_eq!(result["cacheScope"], "private");
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "sluice"
    );

    let (body, headers) = request(2, "tools/list", json!({}));
    let (status, tools) = post(&url, &body, &headers).await;
    assert_eq!(status, 200);
    assert_eq!(tools["id"], 2);
    assert_eq!(tools["result"]["resultType"], "complete");
    assert_eq!(tools["result"]["ttlMs"], 0);
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
    for method in ["prompts/list", "resources/list", "resources/templates/list"] {
        let (body, headers) = request(3, method, json!({}));
        let (status, list) = post(&url, &body, &headers).await;
        assert_eq!(status, 200, "{method}: {list}");
        assert_eq!(list["result"]["resultType"], "complete", "{method}");
    }

    let (body, headers) = request(
        4,
        "tools/call",
        json!({"name": "kiwi__search-flight", "arguments": {"origin": "Paris", "destination": "Rome", "date": "01/02/2027"}}),
    );
    let (status, called) = post(&url, &body, &headers).await;
    assert_eq!(status, 200, "{called}");
    assert_eq!(called["id"], 4);
    assert_eq!(called["result"]["resultType"], "complete");
    let text = called["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("from Paris to Rome") && text.contains("AF123"),
        "{text}"
    );
    let (body, headers) = request(5, "tools/call", json!({"name": "cal__search-flight"}));
    let (status, hidden) = post(&url, &body, &headers).await;
    assert_eq!(status, 400);
    assert_eq!(
        hidden["error"]["code"], -32602,
        "a filtered tool is unknown: {hidden}"
    );

    let lines = sluice.access_log(6);
    let call = lines
        .iter()
        .find(|l| l["mcp_method"] == "tools/call")
        .unwrap();
    assert_eq!(call["tool"], "search-flight");
    assert_eq!(call["upstream"], "flights");
    assert_eq!(call["session_id"], "agent-2026");
    assert_eq!(call["tenant"], "team-a");
    assert_eq!(call["status"], 200);
    let metrics = client()
        .get(format!("{}/metrics", sluice.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "mcp_request_duration_count{mcp_method=\"server/discover\",backend=\"\",status=\"200\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcp_request_duration_count{mcp_method=\"tools/call\",backend=\"flights\",status=\"200\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revision_refusals() {
    let sluice = Sluice::start(&config(), ENV);
    let url = format!("{}/mcp", sluice.url);
    let code = |body: &Value| body["error"]["code"].as_i64().unwrap_or_default();

    // MCP-Protocol-Version differs from _meta.
    let (mut body, headers) = request(1, "tools/list", json!({}));
    body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2025-11-25");
    let (status, answer) = post(&url, &body, &headers).await;
    assert_eq!((status.as_u16(), code(&answer)), (400, -32020), "{answer}");
    assert_eq!(answer["id"], 1);

    // Mcp-Method differs from the method.
    let (body, mut headers) = request(2, "tools/list", json!({}));
    headers[1].1 = "prompts/list".into();
    let (status, answer) = post(&url, &body, &headers).await;
    assert_eq!((status.as_u16(), code(&answer)), (400, -32020), "{answer}");

    // Mcp-Name differs from params.name, or is missing.
    let (body, mut headers) = request(3, "tools/call", json!({"name": "kiwi__search-flight"}));
    headers[2].1 = "cal__create-event".into();
    let (status, answer) = post(&url, &body, &headers).await;
    assert_eq!((status.as_u16(), code(&answer)), (400, -32020), "{answer}");
    headers.pop();
    let (status, answer) = post(&url, &body, &headers).await;
    assert_eq!((status.as_u16(), code(&answer)), (400, -32020), "{answer}");

    // A version nobody serves: the revision's error names those served.
    let (mut body, mut headers) = request(4, "tools/list", json!({}));
    body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    headers[0].1 = "2099-01-01".into();
    let (status, answer) = post(&url, &body, &headers).await;
    assert_eq!((status.as_u16(), code(&answer)), (400, -32022), "{answer}");
    assert_eq!(answer["error"]["data"]["requested"], "2099-01-01");
    assert!(answer["error"]["data"]["supported"]
        .as_array()
        .unwrap()
        .contains(&json!("2026-07-28")));

    // No _meta envelope.
    let (mut body, headers) = request(5, "tools/list", json!({}));
    body["params"] = json!({});
    let (status, answer) = post(&url, &body, &headers).await;
    assert_eq!((status.as_u16(), code(&answer)), (400, -32602), "{answer}");

    // Methods of the session-based revisions, or unknown ones: 404.
    for method in ["ping", "initialize", "logging/setLevel", "nope/nope"] {
        let (body, headers) = request(6, method, json!({}));
        let (status, answer) = post(&url, &body, &headers).await;
        assert_eq!(
            (status.as_u16(), code(&answer)),
            (404, -32601),
            "{method}: {answer}"
        );
    }

    // A client's response: refused. A notification: accepted.
    let headers = vec![("mcp-protocol-version".to_owned(), VERSION.to_owned())];
    let (status, answer) = post(
        &url,
        &json!({"jsonrpc": "2.0", "id": 1, "result": {}}),
        &headers,
    )
    .await;
    assert_eq!((status.as_u16(), code(&answer)), (400, -32600), "{answer}");
    let (status, _) = post(
        &url,
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}),
        &headers,
    )
    .await;
    assert_eq!(status, 202);

    // No GET stream and no session to delete.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = client()
            .request(method.clone(), &url)
            .header("authorization", "Bearer sk-team-a")
            .header("mcp-protocol-version", VERSION)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(response.headers()["allow"], "POST");
    }

    // Credentials apply as on the session path.
    let (body, headers) = request(7, "tools/list", json!({}));
    let mut unkeyed = client().post(&url).json(&body);
    for (name, value) in &headers {
        unkeyed = unkeyed.header(name, value);
    }
    assert_eq!(unkeyed.send().await.unwrap().status(), 401);

    // The session path is untouched: a 2025 client still initialises.
    let init = client()
        .post(&url)
        .header("authorization", "Bearer sk-team-a")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    assert!(init.headers().get("mcp-session-id").is_some());
    // Also when it sends a version header the session path does not list.
    let init = client()
        .post(&url)
        .header("authorization", "Bearer sk-team-a")
        .header("mcp-protocol-version", "2024-11-05")
        .json(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2024-11-05"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    assert!(init.headers().get("mcp-session-id").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_acknowledges_what_it_can_honour() {
    let sluice = Sluice::start(&config(), ENV);
    let url = format!("{}/mcp", sluice.url);
    let (body, headers) = request(
        "9".parse().unwrap(),
        "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true, "promptsListChanged": true}}),
    );
    let mut request = client()
        .post(&url)
        .header("authorization", "Bearer sk-team-a")
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    let mut response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let first = response.chunk().await.unwrap().unwrap();
    let text = String::from_utf8(first.to_vec()).unwrap();
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let acknowledged: Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        acknowledged["method"],
        "notifications/subscriptions/acknowledged"
    );
    assert_eq!(
        acknowledged["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        9
    );
    // The demo servers announce no list changes: nothing is honoured.
    assert_eq!(acknowledged["params"]["notifications"], json!({}));
}

/// The JSON-RPC messages of an SSE body.
fn sse_messages(text: &str) -> Vec<Value> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            (!data.is_empty()).then(|| serde_json::from_str(&data.join("\n")).unwrap())
        })
        .collect()
}

async fn post_sse(url: &str, body: &Value, headers: &[(String, String)]) -> Vec<Value> {
    let mut request = client()
        .post(url)
        .header("authorization", "Bearer sk-team-a")
        .header("accept", "application/json, text/event-stream")
        .json(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    sse_messages(&response.text().await.unwrap())
}

fn fake_config(url: &str) -> String {
    format!(
        "kind: AIGateway\nmetadata: {{name: gw}}\nspec:\n  auth:\n    apiKeys: [{{name: ci, tenant: team-a, valueFrom: {{env: TEAM_A_KEY}}}}]\n---\nkind: Backend\nmetadata: {{name: fake}}\nspec: {{provider: MCP, endpoint: \"{url}\", timeout: 10s}}\n---\nkind: MCPRoute\nmetadata: {{name: tools}}\nspec:\n  path: /mcp\n  backends:\n    - {{backend: fake}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_based_server_behind_a_stateless_client() {
    let fake = FakeMcp::start().await;
    let sluice = Sluice::start(&fake_config(&fake.url), ENV);
    let url = format!("{}/mcp", sluice.url);
    let elicit = json!({"elicitation": {}});

    // The upstream session is opened with the client's capabilities, once.
    let (body, headers) = request_with(1, "tools/list", json!({}), elicit.clone());
    let (status, tools) = post(&url, &body, &headers).await;
    assert_eq!(status, 200, "{tools}");
    assert_eq!(tools["result"]["tools"][0]["name"], "fake__ask");
    let (body, headers) = request_with(2, "tools/list", json!({}), elicit.clone());
    assert_eq!(post(&url, &body, &headers).await.0, 200);
    assert_eq!(fake.seen.lock().unwrap().initialized, vec![elicit.clone()]);

    // The server elicits during the call: input_required, then the retry.
    let ask = json!({"name": "fake__ask", "arguments": {}, "_meta": {"progressToken": "p"}});
    let (body, headers) = request_with(3, "tools/call", ask.clone(), elicit.clone());
    let messages = post_sse(&url, &body, &headers).await;
    assert_eq!(
        messages[0]["method"], "notifications/progress",
        "{messages:?}"
    );
    let first = messages.last().unwrap();
    assert_eq!(first["id"], 3);
    let result = &first["result"];
    assert_eq!(result["resultType"], "input_required", "{first}");
    let (key, asked) = result["inputRequests"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    assert_eq!(asked["method"], "elicitation/create");
    assert_eq!(asked["params"]["message"], "Your name?");
    let mut retry = ask.clone();
    retry["requestState"] = result["requestState"].clone();
    retry["inputResponses"] = json!({key: {"action": "accept", "content": {"name": "Ada"}}});
    let (body, headers) = request_with(4, "tools/call", retry.clone(), elicit.clone());
    let messages = post_sse(&url, &body, &headers).await;
    let done = messages.last().unwrap();
    assert_eq!(done["id"], 4);
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert_eq!(done["result"]["content"][0]["text"], "hello Ada");
    let (body, headers) = request_with(5, "tools/call", retry, elicit.clone());
    let (status, spent) = post(&url, &body, &headers).await;
    assert_eq!(
        (status.as_u16(), &spent["error"]["code"]),
        (400, &json!(-32602))
    );

    // Without the capability, the client is not asked: the server is refused.
    let (body, headers) = request(6, "tools/call", ask);
    let messages = post_sse(&url, &body, &headers).await;
    assert_eq!(
        messages.last().unwrap()["result"]["content"][0]["text"],
        "hello nobody"
    );
    assert_eq!(
        fake.seen.lock().unwrap().initialized,
        vec![elicit.clone(), json!({})],
        "other capabilities, other upstream session"
    );

    // A listen stream hears the server's list change.
    let (body, headers) = request_with(
        7,
        "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true, "resourcesListChanged": true}}),
        elicit.clone(),
    );
    let mut listen = client()
        .post(&url)
        .header("authorization", "Bearer sk-team-a")
        .json(&body);
    for (name, value) in &headers {
        listen = listen.header(name, value);
    }
    let mut stream = listen.send().await.unwrap();
    let mut seen = String::new();
    let mut read_until = async |needle: &str, seen: &mut String| {
        while !seen.contains(needle) {
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), stream.chunk())
                .await
                .expect("the listen stream went quiet")
                .unwrap()
                .expect("the listen stream ended");
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    read_until("acknowledged", &mut seen).await;
    let ack = &sse_messages(&seen)[0];
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true})
    );
    // The feed opens the server's stream in the background: wait for it.
    for _ in 0..200 {
        if !fake.seen.lock().unwrap().streams.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (body, headers) = request_with(
        8,
        "tools/call",
        json!({"name": "fake__touch"}),
        elicit.clone(),
    );
    assert_eq!(post(&url, &body, &headers).await.0, 200);
    read_until("list_changed", &mut seen).await;
    let changed = sse_messages(&seen)
        .into_iter()
        .find(|m| m["method"] == "notifications/tools/list_changed")
        .unwrap();
    assert_eq!(
        changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        7
    );

    // A server that forgot its sessions gets new ones, unnoticed.
    let (body, headers) = request_with(
        9,
        "tools/call",
        json!({"name": "fake__forget"}),
        elicit.clone(),
    );
    assert_eq!(post(&url, &body, &headers).await.0, 200);
    let (body, headers) = request_with(10, "tools/list", json!({}), elicit.clone());
    let (status, again) = post(&url, &body, &headers).await;
    assert_eq!(
        (status.as_u16(), &again["result"]["tools"][0]["name"]),
        (200, &json!("fake__ask"))
    );
    assert_eq!(fake.seen.lock().unwrap().initialized.len(), 3);
}
