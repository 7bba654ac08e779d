//! Golden tests for embeddings and rerank: the fixtures under
//! `tests/fixtures/{gemini,bedrock,cohere}/embed_*` and `rerank_*` (written
//! from each API's reference) through the request translators and the
//! whole-body pipe, the upstream answer split at every byte.

use http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::*;
use crate::llm::translate::{request as translate, Pipe, Plan, Schema};
use crate::llm::Endpoint;

fn fixture(path: &str) -> Vec<u8> {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn plan(backend: Schema) -> Plan {
    Plan::Translate {
        client: Schema::OpenAI,
        backend,
    }
}

/// The body the client gets for `answer`, fed in two pieces split at
/// `split`, and what the pipe accounts.
#[allow(
    clippy::too_many_arguments,
    reason = "a test helper: one call per case"
)]
fn through_pipe(
    endpoint: Endpoint,
    plan: Plan,
    status: u16,
    request: &[u8],
    model: &str,
    headers: &HeaderMap,
    answer: &[u8],
    split: usize,
) -> (StatusCode, Vec<u8>, Option<crate::telemetry::Usage>, bool) {
    let status = StatusCode::from_u16(status).unwrap();
    let mut pipe = Pipe::for_answer(plan, endpoint, status, false, false, 0).unwrap();
    assert!(pipe.is_whole());
    pipe.note_request(request);
    pipe.note_upstream(model, headers);
    let (a, b) = answer.split_at(split);
    let mut out = pipe
        .on_data(Bytes::copy_from_slice(a), None)
        .unwrap()
        .to_vec();
    out.extend_from_slice(&pipe.on_data(Bytes::copy_from_slice(b), None).unwrap());
    out.extend_from_slice(&pipe.finish());
    let (usage, estimated) = pipe.usage(0);
    (pipe.answer_status().unwrap(), out, usage, estimated)
}

use bytes::Bytes;

#[test]
fn requests_match_the_references() {
    for (backend, model, request, expected) in [
        (
            Schema::Gemini,
            "gemini-embedding-001",
            "gemini/embed_request.json",
            "gemini/embed_request.gemini.json",
        ),
        (
            Schema::Bedrock,
            "amazon.titan-embed-text-v2:0",
            "bedrock/embed_titan_request.json",
            "bedrock/embed_titan_request.bedrock.json",
        ),
        (
            Schema::Bedrock,
            "cohere.embed-english-v3",
            "bedrock/embed_cohere_request.json",
            "bedrock/embed_cohere_request.bedrock.json",
        ),
        (
            Schema::Cohere,
            "embed-v4.0",
            "cohere/embed_request.json",
            "cohere/embed_request.cohere.json",
        ),
    ] {
        let out = translate(
            plan(backend),
            Endpoint::Embeddings,
            &fixture(request),
            model,
        )
        .unwrap();
        assert_eq!(json(&out), json(&fixture(expected)), "{request}");
    }
    let out = translate(
        plan(Schema::Cohere),
        Endpoint::Rerank,
        &fixture("cohere/rerank_request.json"),
        "rerank-v3.5",
    )
    .unwrap();
    assert_eq!(
        json(&out),
        json(&fixture("cohere/rerank_request.cohere.json"))
    );
}

#[test]
fn answers_match_the_references_split_anywhere() {
    let request = fixture("gemini/embed_request.json");
    let estimate = ask(&request).estimate;
    let gemini_expected = String::from_utf8(fixture("gemini/embed_response.openai.json"))
        .unwrap()
        .replace("ESTIMATE", &estimate.to_string());
    // Backend, model, answer, expected, input tokens, estimated.
    type Case<'a> = (Schema, &'a str, &'a str, &'a [u8], u64, bool);
    let cases: [Case<'_>; 3] = [
        (
            Schema::Gemini,
            "gemini-embedding-001",
            "gemini/embed_response.json",
            gemini_expected.trim().as_bytes(),
            estimate,
            true,
        ),
        (
            Schema::Bedrock,
            "amazon.titan-embed-text-v2:0",
            "bedrock/embed_titan_response.json",
            &fixture("bedrock/embed_titan_response.openai.json"),
            5,
            false,
        ),
        (
            Schema::Cohere,
            "embed-v4.0",
            "cohere/embed_response.json",
            &fixture("cohere/embed_response.openai.json"),
            2,
            false,
        ),
    ];
    for (backend, model, answer, expected, tokens, guessed) in cases {
        let answer = fixture(answer);
        for split in 0..=answer.len() {
            let (status, out, usage, estimated) = through_pipe(
                Endpoint::Embeddings,
                plan(backend),
                200,
                &request,
                model,
                &HeaderMap::new(),
                &answer,
                split,
            );
            assert_eq!(status, 200);
            assert_eq!(
                std::str::from_utf8(&out).unwrap(),
                std::str::from_utf8(expected).unwrap().trim(),
                "{model} split at {split}"
            );
            assert_eq!(usage.unwrap().input, tokens);
            assert_eq!(estimated, guessed);
        }
    }
}

#[test]
fn bedrock_cohere_tokens_come_from_the_header_and_base64_packs_floats() {
    let mut headers = HeaderMap::new();
    headers.insert("x-amzn-bedrock-input-token-count", "4".parse().unwrap());
    let request = br#"{"model":"c","input":["hello","goodbye"],"encoding_format":"base64"}"#;
    let (status, out, usage, estimated) = through_pipe(
        Endpoint::Embeddings,
        plan(Schema::Bedrock),
        200,
        request,
        "cohere.embed-english-v3",
        &headers,
        &fixture("bedrock/embed_cohere_response.json"),
        10,
    );
    assert_eq!(
        (status, usage.unwrap().input, estimated),
        (StatusCode::OK, 4, false)
    );
    let out = json(&out);
    // 0.015625 = 2^-6: 00 00 80 3c; -0.03125: 00 00 00 bd; 0.046875: 00 00 40 3d.
    assert_eq!(out["data"][0]["embedding"], "AACAPAAAAL0AAEA9");
    assert_eq!(out["model"], "cohere.embed-english-v3");
}

#[test]
fn errors_keep_their_status_and_unreadable_answers_are_502() {
    for (backend, status, answer, code) in [
        (
            Schema::Gemini,
            400,
            "gemini/error_embed_400.json",
            "INVALID_ARGUMENT",
        ),
        (
            Schema::Bedrock,
            400,
            "bedrock/error_embed_validation.json",
            "invalid_request_error",
        ),
        (
            Schema::Cohere,
            400,
            "cohere/error_embed_400.json",
            "invalid_request_error",
        ),
        (
            Schema::Gemini,
            429,
            "gemini/error_429.json",
            "RESOURCE_EXHAUSTED",
        ),
    ] {
        let answer = fixture(answer);
        let (got, out, usage, _) = through_pipe(
            Endpoint::Embeddings,
            plan(backend),
            status,
            b"{}",
            "m",
            &HeaderMap::new(),
            &answer,
            3,
        );
        assert_eq!(got.as_u16(), status);
        let out = json(&out);
        assert_eq!(out["error"]["code"], code, "{out}");
        assert!(out["error"]["message"].as_str().unwrap().len() > 5);
        assert!(usage.is_none());
    }
    for (endpoint, backend) in [
        (Endpoint::Embeddings, Schema::Gemini),
        (Endpoint::Embeddings, Schema::Bedrock),
        (Endpoint::Embeddings, Schema::Cohere),
        (Endpoint::Rerank, Schema::Cohere),
    ] {
        let (status, out, _, _) = through_pipe(
            endpoint,
            plan(backend),
            200,
            b"{}",
            "m",
            &HeaderMap::new(),
            b"{\"embeddings\": [{\"val",
            5,
        );
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(json(&out)["error"]["code"], "upstream_bad_response");
    }
}

#[test]
fn rerank_answers_pass_through_with_an_estimate() {
    let request = fixture("cohere/rerank_request.json");
    let answer = fixture("cohere/rerank_response.json");
    let (status, out, usage, estimated) = through_pipe(
        Endpoint::Rerank,
        plan(Schema::Cohere),
        200,
        &request,
        "rerank-v3.5",
        &HeaderMap::new(),
        &answer,
        7,
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(out, answer);
    assert_eq!(
        usage.unwrap().input,
        crate::llm::translate::rerank::estimate(&request)
    );
    assert!(estimated);
    // OpenAI-compatible rerank passes through; other plans are untouched.
    assert!(Pipe::for_answer(
        Plan::Passthrough,
        Endpoint::Rerank,
        StatusCode::OK,
        false,
        false,
        0
    )
    .is_some_and(|p| p.is_whole()));
    assert!(Pipe::for_answer(
        Plan::Passthrough,
        Endpoint::Embeddings,
        StatusCode::OK,
        false,
        false,
        0
    )
    .is_none());
    assert!(Pipe::for_answer(
        Plan::Passthrough,
        Endpoint::Rerank,
        StatusCode::TOO_MANY_REQUESTS,
        false,
        false,
        0
    )
    .is_none());
}

#[test]
fn vertex_predict_matches_the_reference() {
    let request = fixture("gemini/embed_request.json");
    let out = crate::llm::translate::gemini::embed::to_vertex(&request).unwrap();
    assert_eq!(
        json(&out),
        json(&fixture("gemini/embed_request.vertex.json"))
    );
    let answer = fixture("gemini/embed_vertex_response.json");
    for split in [0, 40, answer.len()] {
        let (status, out, usage, estimated) = through_pipe(
            Endpoint::Embeddings,
            plan(Schema::Gemini),
            200,
            &request,
            "text-embedding-005",
            &HeaderMap::new(),
            &answer,
            split,
        );
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0058424929156899452, 0.011848051100969315, -0.048538211733102798]},{"object":"embedding","index":1,"embedding":[-0.021566025540232658, 0.014306725934147835, 0.0043112957022356987]}],"model":"text-embedding-005","usage":{"prompt_tokens":15,"total_tokens":15}}"#
        );
        assert_eq!((usage.unwrap().input, estimated), (15, false));
    }
}
