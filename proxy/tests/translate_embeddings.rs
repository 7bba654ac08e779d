//! OpenAI `/v1/embeddings` on native embedding APIs (Gemini's
//! `batchEmbedContents`, Bedrock's InvokeModel for Titan and Cohere Embed,
//! Cohere's `/v2/embed`) and `/v1/rerank` (Cohere's `/v2/rerank`, an
//! OpenAI-compatible `/rerank`), through a real `sluice run` and the test
//! upstream's faces, which refuse what each API refuses (and recompute
//! Bedrock's SigV4). Single and list inputs, dimensions, base64, usage in
//! the access record, errors with their statuses, unreadable answers,
//! fallback past backends that cannot serve the endpoint.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use base64::Engine as _;
use serde_json::{json, Value};
use sluice_test_upstream::{
    gemini::TEST_SERVICE_ACCOUNT, Upstream, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY,
};
use support::{backend, config, post_json, upstream_with, Sluice};

const TITAN: &str = "amazon.titan-embed-text-v2:0";
const BEDROCK_COHERE: &str = "cohere.embed-english-v3";

fn provider_backend(name: &str, provider: &str, url: &str) -> String {
    format!(
        "---\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  provider: {provider}\n  endpoint: {url}\n  auth: {{apiKey: {{valueFrom: {{env: UPSTREAM_KEY}}}}}}\n  timeout: 2s\n"
    )
}

fn bedrock_backend(name: &str, url: &str) -> String {
    format!(
        "---\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  provider: Bedrock\n  endpoint: {url}\n  auth:\n    aws:\n      region: us-east-1\n      accessKeyId: {{valueFrom: {{env: AWS_ID}}}}\n      secretAccessKey: {{valueFrom: {{env: AWS_SECRET}}}}\n  timeout: 2s\n"
    )
}

fn vertex_backend(name: &str, url: &str) -> String {
    format!(
        "---\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  provider: VertexAI\n  endpoint: {url}\n  auth:\n    gcp:\n      serviceAccountKey: {{valueFrom: {{env: GCP_KEY}}}}\n      location: us-central1\n  timeout: 2s\n"
    )
}

struct World {
    up: Upstream,
    _busy: Upstream,
    sluice: Sluice,
}

/// Every provider on one upstream (its faces answer by path), a busy
/// (429) Gemini for fallback.
async fn start() -> World {
    let up = upstream_with("up", None).await;
    let busy = upstream_with("busy", Some(429)).await;
    let routes = [
        "      - models: [\"gemini-*\"]\n        backends: [{backend: gemini}]",
        "      - models: [\"amazon.*\", \"cohere.*\"]\n        backends: [{backend: bedrock}]",
        "      - models: [\"embed-*\", \"rerank-*\"]\n        backends: [{backend: cohere}]",
        "      - models: [\"jina-*\"]\n        backends: [{backend: openai}]",
        "      - models: [vertex-embed]\n        backends: [{backend: vertex, model: text-embedding-005}]",
        "      - models: [fallback-embed]\n        backends: [{backend: busy, model: gemini-embedding-001, priority: 0}, {backend: cohere, model: embed-v4.0, priority: 1}]\n        retry: {attempts: 2, on: [\"5xx\", \"429\"]}",
        "      - models: [any-rerank]\n        backends: [{backend: gemini, model: gemini-2.5-flash, priority: 0}, {backend: openai, model: jina-reranker-v2, priority: 1}]\n        retry: {attempts: 2, on: [\"5xx\", \"429\"]}",
    ]
    .join("\n");
    let url = up.url();
    let backends = [
        provider_backend("gemini", "Gemini", &url),
        provider_backend("busy", "Gemini", &busy.url()),
        provider_backend("cohere", "Cohere", &url),
        bedrock_backend("bedrock", &url),
        backend("openai", &format!("{url}/v1")),
        vertex_backend("vertex", &url),
    ]
    .concat();
    let mut key: Value = serde_json::from_str(TEST_SERVICE_ACCOUNT).unwrap();
    key["token_uri"] = json!(format!("{url}/token"));
    let key = key.to_string();
    let env = [
        ("TEAM_A_KEY", "sk-team-a"),
        ("UPSTREAM_KEY", "upstream-secret"),
        ("AWS_ID", TEST_ACCESS_KEY_ID),
        ("AWS_SECRET", TEST_SECRET_ACCESS_KEY),
        ("GCP_KEY", key.as_str()),
    ];
    let sluice = Sluice::start(&config(&routes, &backends), &env);
    World {
        up,
        _busy: busy,
        sluice,
    }
}

async fn embed(world: &World, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let response = post_json(&world.sluice, "/embeddings", &body, headers).await;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

fn vectors(answer: &Value) -> Vec<Vec<f64>> {
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, item)| {
            assert_eq!(item["object"], "embedding");
            assert_eq!(item["index"], i);
            item["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// The access log writes `tokens_estimated` only when true.
fn estimated(log: &Value) -> bool {
    log["tokens_estimated"].as_bool().unwrap_or(false)
}

fn decode_base64(text: &str) -> Vec<f64> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
        .chunks(4)
        .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_embeds_lists_with_dimensions_and_estimates_usage() {
    let world = start().await;
    let (status, answer) = embed(
        &world,
        json!({"model": "gemini-embedding-001", "input": ["first text", "second"], "dimensions": 4}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "list");
    assert_eq!(answer["model"], "gemini-embedding-001");
    let got = vectors(&answer);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|v| v.len() == 4));
    assert_ne!(got[0], got[1]);
    let tokens = answer["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(tokens >= 3, "{answer}");
    assert_eq!(answer["usage"]["total_tokens"], tokens);
    let seen = world.up.requests();
    let last = seen.last().unwrap();
    assert!(
        last.path
            .ends_with("/models/gemini-embedding-001:batchEmbedContents"),
        "{}",
        last.path
    );
    assert_eq!(last.header("x-goog-api-key"), Some("upstream-secret"));
    assert_eq!(
        last.json(),
        json!({"requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "first text"}]}, "outputDimensionality": 4},
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "second"}]}, "outputDimensionality": 4}]})
    );
    let log = world.sluice.last_log(1);
    assert_eq!(log["path"], "/v1/embeddings");
    assert_eq!(log["upstream"], "gemini");
    assert_eq!(log["tokens_in"].as_u64(), Some(tokens), "{log}");
    assert!(estimated(&log), "{log}");

    // A single string, and the same text as base64: the same numbers.
    let (status, floats) = embed(
        &world,
        json!({"model": "gemini-embedding-001", "input": "first text", "dimensions": 6}),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let (status, packed) = embed(
        &world,
        json!({"model": "gemini-embedding-001", "input": "first text", "dimensions": 6,
            "encoding_format": "base64"}),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let text = packed["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(decode_base64(text), vectors(&floats)[0]);
    assert_eq!(vectors(&floats)[0][..4], got[0][..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_titan_embeds_one_text_and_refuses_a_batch() {
    let world = start().await;
    let (status, answer) = embed(
        &world,
        json!({"model": TITAN, "input": "hello", "dimensions": 256}),
        &[("x-mock-prompt-tokens", "3")],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(vectors(&answer)[0].len(), 256);
    assert_eq!(answer["model"], TITAN);
    assert_eq!(answer["usage"]["prompt_tokens"], 3);
    let seen = world.up.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
    assert!(last
        .header("authorization")
        .unwrap()
        .starts_with("AWS4-HMAC-SHA256 Credential=AKIDSLUICETEST/"));
    assert_eq!(
        last.json(),
        json!({"inputText": "hello", "dimensions": 256})
    );
    let log = world.sluice.last_log(1);
    assert_eq!(
        (log["tokens_in"].as_u64(), Some(estimated(&log))),
        (Some(3), Some(false)),
        "{log}"
    );

    // A list of one is fine; of two, a 400 naming the limit, nothing sent.
    let (status, _) = embed(&world, json!({"model": TITAN, "input": ["one"]}), &[]).await;
    assert_eq!(status, 200);
    let before = world.up.requests().len();
    let (status, answer) = embed(&world, json!({"model": TITAN, "input": ["a", "b"]}), &[]).await;
    assert_eq!(status, 400);
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("one text per request"), "{message}");
    assert_eq!(world.up.requests().len(), before);

    // A dimension Titan refuses: Bedrock's ValidationException, status kept.
    let (status, answer) = embed(
        &world,
        json!({"model": TITAN, "input": "x", "dimensions": 300}),
        &[],
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "ValidationException");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("dimensions"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_cohere_embeds_a_batch_with_the_header_token_count() {
    let world = start().await;
    let (status, answer) = embed(
        &world,
        json!({"model": BEDROCK_COHERE, "input": ["a", "b", "c"], "encoding_format": "base64"}),
        &[("x-mock-prompt-tokens", "11")],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(
        decode_base64(data[2]["embedding"].as_str().unwrap()).len(),
        1024
    );
    assert_eq!(answer["usage"]["prompt_tokens"], 11);
    let seen = world.up.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.path, "/model/cohere.embed-english-v3/invoke");
    assert_eq!(
        last.json(),
        json!({"texts": ["a", "b", "c"], "input_type": "search_document"})
    );
    let log = world.sluice.last_log(1);
    assert_eq!(log["tokens_in"].as_u64(), Some(11), "{log}");
    assert!(!estimated(&log), "{log}");

    // Models Bedrock serves but this translation does not speak: a 400.
    let (status, answer) = embed(
        &world,
        json!({"model": "amazon.nova-lite-v1:0", "input": "a"}),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cohere.embed-*"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cohere_embeds_with_billed_tokens_and_output_dimension() {
    let world = start().await;
    let (status, answer) = embed(
        &world,
        json!({"model": "embed-v4.0", "input": ["x", "y"], "dimensions": 256, "user": "u1"}),
        &[("x-mock-prompt-tokens", "5")],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let got = vectors(&answer);
    assert_eq!((got.len(), got[0].len()), (2, 256));
    assert_eq!(answer["usage"]["prompt_tokens"], 5);
    let seen = world.up.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.path, "/v2/embed");
    assert_eq!(last.header("authorization"), Some("Bearer upstream-secret"));
    assert_eq!(
        last.json(),
        json!({"model": "embed-v4.0", "texts": ["x", "y"], "input_type": "search_document",
            "embedding_types": ["float"], "output_dimension": 256})
    );
    let log = world.sluice.last_log(1);
    assert_eq!(
        (log["tokens_in"].as_u64(), Some(estimated(&log))),
        (Some(5), Some(false)),
        "{log}"
    );
    // Cohere refuses dimensions on v3 models: its message, status kept.
    let (status, answer) = embed(
        &world,
        json!({"model": "embed-english-v3.0", "input": "x", "dimensions": 256}),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("output_dimension"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_refused_before_any_backend() {
    let world = start().await;
    for model in ["gemini-embedding-001", TITAN, "embed-v4.0"] {
        for (input, needle) in [
            (json!([1, 2, 3]), "token ids"),
            (json!([[1, 2], [3]]), "token ids"),
            (json!([]), "must not be empty"),
            (json!(42), "a string or an array of strings"),
        ] {
            let (status, answer) =
                embed(&world, json!({"model": model, "input": input}), &[]).await;
            assert_eq!(status, 400, "{model} {input}");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(message.contains(needle), "{model} {input}: {message}");
        }
        let (status, _) = embed(
            &world,
            json!({"model": model, "input": "a", "encoding_format": "int8"}),
            &[],
        )
        .await;
        assert_eq!(status, 400);
    }
    assert!(world.up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_keep_their_status_in_openai_shape() {
    let world = start().await;
    for (model, status, code) in [
        ("gemini-embedding-001", "429", "RESOURCE_EXHAUSTED"),
        (TITAN, "503", "ServiceUnavailableException"),
        ("embed-v4.0", "400", "invalid_request_error"),
    ] {
        let (got, answer) = embed(
            &world,
            json!({"model": model, "input": "a"}),
            &[("x-mock-status", status)],
        )
        .await;
        assert_eq!(got.to_string(), status, "{model}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{model}: {answer}");
        assert!(answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Mock upstream error"));
    }
    // Unreadable answers: a clean 502, logged.
    for (i, model) in ["gemini-embedding-001", TITAN, "embed-v4.0"]
        .into_iter()
        .enumerate()
    {
        let (status, answer) = embed(
            &world,
            json!({"model": model, "input": "a"}),
            &[("x-mock-malformed", "1")],
        )
        .await;
        assert_eq!(status, 502, "{model}: {answer}");
        assert_eq!(answer["error"]["code"], "upstream_bad_response");
        let log = world.sluice.last_log(4 + i);
        assert_eq!(log["status"], 502, "{log}");
        assert_eq!(log["error"], "upstream_bad_response", "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_past_a_busy_backend() {
    let world = start().await;
    // A busy Gemini, then Cohere: served by Cohere.
    let (status, answer) = embed(
        &world,
        json!({"model": "fallback-embed", "input": "a"}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model"], "fallback-embed");
    assert_eq!(world.up.requests().last().unwrap().path, "/v2/embed");
    let log = world.sluice.last_log(1);
    assert_eq!(log["upstream"], "cohere", "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vertex_embeds_through_predict_with_its_token_counts() {
    let world = start().await;
    let (status, answer) = embed(
        &world,
        json!({"model": "vertex-embed", "input": ["a", "b"], "dimensions": 16}),
        &[("x-mock-prompt-tokens", "2")],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let got = vectors(&answer);
    assert_eq!((got.len(), got[0].len()), (2, 16));
    // Two instances of 2 tokens each.
    assert_eq!(answer["usage"]["prompt_tokens"], 4);
    let seen = world.up.requests();
    let last = seen.last().unwrap();
    assert_eq!(
        last.path,
        "/v1/projects/sluice-test/locations/us-central1/publishers/google/models/text-embedding-005:predict"
    );
    assert!(last
        .header("authorization")
        .unwrap()
        .starts_with("Bearer ya29.mock-"));
    assert_eq!(
        last.json(),
        json!({"instances": [{"content": "a"}, {"content": "b"}],
            "parameters": {"outputDimensionality": 16}})
    );
    let log = world.sluice.last_log(1);
    assert_eq!(
        (log["tokens_in"].as_u64(), estimated(&log)),
        (Some(4), false),
        "{log}"
    );
    // Vertex's own refusals keep their status (a dimension too large).
    let (status, answer) = embed(
        &world,
        json!({"model": "vertex-embed", "input": "a", "dimensions": 4096}),
        &[],
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "INVALID_ARGUMENT");
}

async fn rerank(world: &World, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let response = post_json(&world.sluice, "/rerank", &body, headers).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerank_on_cohere_and_openai_compatible_backends() {
    let world = start().await;
    let documents = json!([
        "Carson City is the capital of Nevada.",
        "Washington, D.C. is the capital of the United States.",
        "Bananas are yellow."
    ]);
    let (status, answer) = rerank(
        &world,
        json!({"model": "rerank-v3.5", "query": "capital of the United States",
            "documents": documents, "top_n": 2, "return_documents": false}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["index"], 1);
    assert_eq!(answer["meta"]["billed_units"]["search_units"], 1);
    let seen = world.up.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.path, "/v2/rerank");
    assert_eq!(
        last.json(),
        json!({"model": "rerank-v3.5", "query": "capital of the United States",
            "documents": documents, "top_n": 2})
    );
    let log = world.sluice.last_log(1);
    assert_eq!(log["path"], "/v1/rerank");
    assert!(log["tokens_in"].as_u64().unwrap() >= 15, "{log}");
    assert!(estimated(&log), "{log}");

    // OpenAI-compatible (Jina, vLLM): passed through, usage from the answer.
    let (status, answer) = rerank(
        &world,
        json!({"model": "jina-reranker-v2", "query": "red fox",
            "documents": ["a red fox", {"text": "blue sky"}], "return_documents": true}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"][0]["document"]["text"], "a red fox");
    assert_eq!(world.up.requests().last().unwrap().path, "/v1/rerank");
    let log = world.sluice.last_log(2);
    assert_eq!(
        (log["tokens_in"].as_u64(), Some(estimated(&log))),
        (Some(7), Some(false)),
        "{log}"
    );

    // Gemini has no rerank: the next backend serves it; alone, a 400.
    let (status, answer) = rerank(
        &world,
        json!({"model": "any-rerank", "query": "q", "documents": ["a"]}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(world.sluice.last_log(3)["upstream"], "openai");
    let (status, answer) = rerank(
        &world,
        json!({"model": "gemini-2.5-flash", "query": "q", "documents": ["a"]}),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does not serve /v1/rerank"));

    // Errors and unreadable answers.
    let (status, answer) = rerank(
        &world,
        json!({"model": "rerank-v3.5", "query": "q", "documents": ["a"]}),
        &[("x-mock-status", "429")],
    )
    .await;
    assert_eq!(status, 429);
    assert!(answer["error"]["message"].is_string(), "{answer}");
    let (status, answer) = rerank(
        &world,
        json!({"model": "rerank-v3.5", "query": "q", "documents": ["a"]}),
        &[("x-mock-malformed", "1")],
    )
    .await;
    assert_eq!(status, 502, "{answer}");
    let (status, answer) = rerank(&world, json!({"model": "rerank-v3.5", "query": "q"}), &[]).await;
    assert_eq!(status, 400);
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("documents"));
}
