//! Provider presets on the OpenAI-compatible passthrough, end to end: a real
//! `sluice run` in front of the recording test upstream, which plays each
//! provider. Checks what reaches the provider (path, query, auth header,
//! the fields a provider refuses) and what the access log and budgets see
//! (usage of Responses streams and cached input tokens).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use serde_json::{json, Value};
use sluice_test_upstream::{Options, Upstream};
use support::{client, config, Sluice, ENV};

async fn upstream() -> Upstream {
    Upstream::start(Options {
        name: "provider".into(),
        ..Options::default()
    })
    .await
    .unwrap()
}

/// A Backend named `b` of `provider` with the upstream key, plus `extra` lines.
fn preset(provider: &str, endpoint: &str, extra: &str) -> String {
    format!(
        "---\nkind: Backend\nmetadata: {{name: b}}\nspec:\n  provider: {provider}\n  endpoint: {endpoint}\n  auth: {{apiKey: {{valueFrom: {{env: UPSTREAM_KEY}}}}}}\n  timeout: 2s\n{extra}"
    )
}

/// One catch-all route to backend `b`, sending `model` upstream if given.
fn route(model: Option<&str>) -> String {
    match model {
        Some(model) => {
            format!("      - models: [\"*\"]\n        backends: [{{backend: b, model: {model}}}]")
        }
        None => "      - models: [\"*\"]\n        backends: [{backend: b}]".to_owned(),
    }
}

async fn post(
    sluice: &Sluice,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut request = client()
        .post(sluice.v1(path))
        .header("authorization", "Bearer sk-team-a")
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn stream_chat() -> Value {
    json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_send_the_path_and_auth_of_their_provider() {
    let up = upstream().await;
    // Providers that take a Bearer key on `{endpoint}/chat/completions` and
    // accept `stream_options`: the gateway asks for stream usage.
    for provider in [
        "OpenAI",
        "Groq",
        "DeepSeek",
        "Together",
        "Fireworks",
        "OpenRouter",
        "XAI",
        "Cerebras",
        "SambaNova",
        "DeepInfra",
        "GeminiOpenAI",
        "Ollama",
        "VLLM",
        "LMStudio",
    ] {
        up.clear();
        let cfg = config(
            &route(None),
            &preset(provider, &format!("{}/openai/v1", up.url()), ""),
        );
        let sluice = Sluice::start(&cfg, ENV);
        let (status, text) = post(&sluice, "/chat/completions", &stream_chat(), &[]).await;
        assert_eq!(status, 200, "{provider}: {text}");
        assert!(
            !text.contains("\"usage\""),
            "{provider}: usage not asked for"
        );
        let seen = &up.requests()[0];
        assert_eq!(seen.path, "/openai/v1/chat/completions", "{provider}");
        assert_eq!(
            seen.header("authorization"),
            Some("Bearer sk-upstream-secret"),
            "{provider}"
        );
        assert_eq!(
            seen.json()["stream_options"],
            json!({"include_usage": true}),
            "{provider}"
        );
        let line = sluice.last_log(1);
        assert_eq!(line["tokens_in"], 7, "{provider}");
        assert!(line.get("tokens_estimated").is_none(), "{provider}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistral_gets_no_stream_options_and_max_tokens() {
    let up = upstream().await;
    let cfg = config(&route(None), &preset("Mistral", &up.url(), ""));
    let sluice = Sluice::start(&cfg, ENV);
    let mut body = stream_chat();
    body["stream_options"] = json!({"include_usage": true});
    body["max_completion_tokens"] = json!(64);
    let (status, _) = post(&sluice, "/chat/completions", &body, &[]).await;
    assert_eq!(status, 200);
    let seen = up.requests()[0].json();
    assert_eq!(up.requests()[0].path, "/v1/chat/completions");
    assert!(seen.get("stream_options").is_none(), "{seen}");
    assert!(seen.get("max_completion_tokens").is_none(), "{seen}");
    assert_eq!(seen["max_tokens"], 64);
    assert_eq!(seen["messages"], body["messages"]);

    // Without stream_options, none is added for Mistral either.
    up.clear();
    let (status, _) = post(&sluice, "/chat/completions", &stream_chat(), &[]).await;
    assert_eq!(status, 200);
    assert!(up.requests()[0].json().get("stream_options").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_clients_on_mistral_get_its_quirks_too() {
    let up = upstream().await;
    let cfg = config(&route(None), &preset("Mistral", &up.url(), ""));
    let sluice = Sluice::start(&cfg, ENV);
    let body = json!({"model": "mistral-small-latest", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let (status, text) = post(&sluice, "/messages", &body, &[]).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("event: message_stop"), "{text}");
    let seen = up.requests()[0].json();
    assert_eq!(up.requests()[0].path, "/v1/chat/completions");
    assert!(seen.get("stream_options").is_none(), "{seen}");
    assert_eq!(seen["max_tokens"], 64);
    assert_eq!(seen["stream"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perplexity_has_no_version_path_and_openrouter_gets_its_headers() {
    let up = upstream().await;
    let cfg = config(&route(None), &preset("Perplexity", &up.url(), ""));
    let sluice = Sluice::start(&cfg, ENV);
    let (status, _) = post(&sluice, "/chat/completions", &stream_chat(), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(up.requests()[0].path, "/chat/completions");
    drop(sluice);

    up.clear();
    let extra = "  headers: {HTTP-Referer: \"https://app.example\", X-Title: \"Example App\"}\n";
    let cfg = config(&route(None), &preset("OpenRouter", &up.url(), extra));
    let sluice = Sluice::start(&cfg, ENV);
    let (status, _) = post(
        &sluice,
        "/chat/completions",
        &stream_chat(),
        &[("x-title", "client's own")],
    )
    .await;
    assert_eq!(status, 200);
    let seen = &up.requests()[0];
    assert_eq!(seen.header("http-referer"), Some("https://app.example"));
    assert_eq!(
        seen.header("x-title"),
        Some("Example App"),
        "the Backend's wins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_deployments_get_their_url_api_version_and_api_key() {
    let up = upstream().await;
    let cfg = config(
        &route(Some("gpt-4o-prod")),
        &preset("AzureOpenAI", &up.url(), ""),
    );
    let sluice = Sluice::start(&cfg, ENV);
    let cases = [
        (
            "/chat/completions",
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
            "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21",
        ),
        (
            "/completions",
            json!({"model": "gpt-4o", "prompt": "hi"}),
            "/openai/deployments/gpt-4o-prod/completions?api-version=2024-10-21",
        ),
        (
            "/embeddings",
            json!({"model": "gpt-4o", "input": "hi"}),
            "/openai/deployments/gpt-4o-prod/embeddings?api-version=2024-10-21",
        ),
        (
            "/responses",
            json!({"model": "gpt-4o", "input": "hi"}),
            "/openai/responses?api-version=2024-10-21",
        ),
    ];
    for (path, body, expected) in cases {
        up.clear();
        let (status, text) = post(&sluice, path, &body, &[]).await;
        assert_eq!(status, 200, "{path}: {text}");
        let seen = &up.requests()[0];
        assert_eq!(seen.path, expected);
        assert_eq!(seen.header("api-key"), Some("sk-upstream-secret"));
        assert_eq!(seen.header("authorization"), None, "the client's key never");
        assert_eq!(seen.json()["model"], "gpt-4o-prod");
    }
    drop(sluice);

    // The v1 API with an Entra ID token, and a dated preview version.
    up.clear();
    let backend = format!(
        "---\nkind: Backend\nmetadata: {{name: b}}\nspec:\n  provider: AzureOpenAI\n  endpoint: {}/openai/v1\n  apiVersion: v1\n  auth: {{azure: {{token: {{valueFrom: {{env: UPSTREAM_KEY}}}}}}}}\n",
        up.url()
    );
    let sluice = Sluice::start(&config(&route(None), &backend), ENV);
    let (status, _) = post(&sluice, "/chat/completions", &stream_chat(), &[]).await;
    assert_eq!(status, 200);
    let seen = &up.requests()[0];
    assert_eq!(seen.path, "/openai/v1/chat/completions");
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-upstream-secret")
    );
    assert_eq!(seen.header("api-key"), None);
}

/// The `data:` payloads of an SSE body, with their `event:` names.
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|event| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in event.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap();
                }
            }
            (name, data)
        })
        .collect()
}

fn priced_openai(up: &Upstream) -> String {
    preset(
        "OpenAI",
        &up.url(),
        "  pricing: {m: {input: \"2.00\", output: \"10.00\", cachedInput: \"1.00\"}}\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_pass_through_and_their_usage_is_logged_and_priced() {
    let up = upstream().await;
    let sluice = Sluice::start(&config(&route(None), &priced_openai(&up)), ENV);
    let usage_headers = [
        ("x-mock-prompt-tokens", "1000"),
        ("x-mock-cached-tokens", "400"),
    ];

    let request = json!({"model": "m", "input": "hi", "max_output_tokens": 50});
    let (status, text) = post(&sluice, "/responses", &request, &usage_headers).await;
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["object"], "response");
    assert_eq!(body["usage"]["input_tokens_details"]["cached_tokens"], 400);
    let seen = &up.requests()[0];
    assert_eq!(seen.path, "/v1/responses");
    assert_eq!(seen.json(), request, "forwarded unchanged");
    let line = sluice.last_log(1);
    assert_eq!(line["path"], "/v1/responses");
    assert_eq!(line["tokens_in"], 1000);
    assert_eq!(line["tokens_out"], 5);
    assert_eq!(line["tokens_cached"], 400);
    // 600 fresh x $2 + 400 cached x $1 + 5 out x $10, per million.
    assert_eq!(line["cost_usd"].as_f64(), Some(0.00165));

    let mut request = request;
    request["stream"] = json!(true);
    let (status, text) = post(&sluice, "/responses", &request, &usage_headers).await;
    assert_eq!(status, 200);
    let seen = events(&text);
    assert_eq!(seen.first().unwrap().0, "response.created");
    assert_eq!(seen.last().unwrap().0, "response.completed");
    assert_eq!(seen.len(), 13, "every event forwarded, nothing added");
    assert!(!text.contains("[DONE]"));
    assert!(up.requests()[1].json().get("stream_options").is_none());
    let line = sluice.last_log(2);
    assert_eq!(line["tokens_in"], 1000);
    assert_eq!(line["tokens_out"], 5);
    assert_eq!(line["tokens_cached"], 400);
    assert!(line.get("tokens_estimated").is_none());
    assert_eq!(line["cost_usd"].as_f64(), Some(0.00165));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_cache_hits_are_charged_at_the_cached_price() {
    let up = upstream().await;
    let sluice = Sluice::start(&config(&route(None), &priced_openai(&up)), ENV);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let headers = [
        ("x-mock-prompt-tokens", "1000"),
        ("x-mock-cached-tokens", "1000"),
    ];
    let (status, _) = post(&sluice, "/chat/completions", &body, &headers).await;
    assert_eq!(status, 200);
    let line = sluice.last_log(1);
    assert_eq!(line["tokens_cached"], 1000);
    // 1000 cached x $1 + 5 out x $10, per million.
    assert_eq!(line["cost_usd"].as_f64(), Some(0.00105));

    let (status, _) = post(&sluice, "/chat/completions", &stream_chat(), &headers).await;
    assert_eq!(status, 200);
    let line = sluice.last_log(2);
    assert_eq!(line["tokens_cached"], 1000);
    assert_eq!(line["cost_usd"].as_f64(), Some(0.00105));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_budget_keeps_responses_and_asked_usage_events() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "{}\n  state: {{type: memory, path: \"{}\"}}",
        route(None),
        dir.path().join("counters.log").display()
    );
    let cfg = format!(
        "{}---\nkind: Budget\nmetadata: {{name: team-a}}\nspec:\n  tenant: team-a\n  enforcement: Strict\n  limits:\n    - {{cost: \"10.00\", period: Daily}}\n",
        config(&routes, &priced_openai(&up))
    );
    let sluice = Sluice::start(&cfg, ENV);
    let request = json!({"model": "m", "input": "hi", "stream": true});
    let (status, text) = post(&sluice, "/responses", &request, &[]).await;
    assert_eq!(status, 200);
    let seen = events(&text);
    assert_eq!(seen.last().unwrap().0, "response.completed", "{text}");
    assert_eq!(
        seen.last().unwrap().1["response"]["usage"]["output_tokens"],
        5
    );
    let line = sluice.last_log(1);
    assert_eq!(line["tokens_out"], 5);

    // A client that asked for stream usage gets the usage chunk, budget or not.
    let mut chat = stream_chat();
    chat["stream_options"] = json!({"include_usage": true});
    let (status, text) = post(&sluice, "/chat/completions", &chat, &[]).await;
    assert_eq!(status, 200);
    assert!(text.contains("\"choices\":[],\"usage\":{"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let up = upstream().await;
    let sluice = Sluice::start(&config(&route(None), &priced_openai(&up)), ENV);
    let (status, text) = post(&sluice, "/responses", &json!({"input": "hi"}), &[]).await;
    assert_eq!(status, 400);
    assert!(text.contains("`model` is required"), "{text}");
    let (status, text) = post(
        &sluice,
        "/chat/completions",
        &json!({"model": "m", "max_completion_tokens": "many"}),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("max_completion_tokens"), "{text}");
    let response = client()
        .get(sluice.v1("/responses"))
        .header("authorization", "Bearer sk-team-a")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    drop(sluice);

    // The demo model has no Responses API.
    let demo = "---\nkind: Backend\nmetadata: {name: b}\nspec:\n  provider: Demo\n";
    let sluice = Sluice::start(&config(&route(None), demo), ENV);
    let (status, text) = post(
        &sluice,
        "/responses",
        &json!({"model": "m", "input": "hi"}),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("does not serve /v1/responses"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_route_names_and_every_backends_models() {
    let up = upstream().await;
    let routes = "      - models: [\"mistral-large-latest\", \"mistral-*\"]\n        backends: [{backend: mistral}]\n      - models: [\"llama-3.3-70b-versatile\"]\n        backends: [{backend: groq}]";
    let backends = format!(
        "---\nkind: Backend\nmetadata: {{name: mistral}}\nspec:\n  provider: Mistral\n  endpoint: {0}\n  models: [mistral-small-latest]\n---\nkind: Backend\nmetadata: {{name: groq}}\nspec:\n  provider: Groq\n  endpoint: {0}\n  models: [llama-3.3-70b-versatile, qwen/qwen3-32b]\n",
        up.url()
    );
    let sluice = Sluice::start(&config(routes, &backends), ENV);
    let response = client()
        .get(sluice.v1("/models"))
        .header("authorization", "Bearer sk-team-a")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let ids: Vec<(&str, &str)> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["owned_by"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ids,
        [
            ("mistral-large-latest", "mistral"),
            ("llama-3.3-70b-versatile", "groq"),
            ("mistral-small-latest", "mistral"),
            ("qwen/qwen3-32b", "groq"),
        ]
    );
}
