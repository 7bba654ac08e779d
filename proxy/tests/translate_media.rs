//! Images, audio and PDFs through a real `sluice run`, to the test
//! upstream's Anthropic, Gemini, Bedrock and Cohere faces (which check
//! media as the providers do: types, base64, the bytes' signature,
//! Converse's unions), from OpenAI clients and Anthropic ones, streaming
//! and not; and every refusal as the gateway's own 400, naming the part,
//! before anything reaches the upstream.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use serde_json::{json, Value};
use sluice_test_upstream::{Options, Upstream, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY};
use support::{backend, config, post_json, sse_events, Sluice};

/// A 1x1 PNG.
const PNG: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";
/// Eight silent samples, 8 kHz mono 16-bit WAV.
const WAV: &str =
    "UklGRjQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YRAAAAAAAAAAAAAAAAAAAAAAAAAA";
/// An empty PDF.
const PDF: &str = "JVBERi0xLjQKMSAwIG9iajw8L1R5cGUvQ2F0YWxvZy9QYWdlcyAyIDAgUj4+ZW5kb2JqCjIgMCBvYmo8PC9UeXBlL1BhZ2VzL0tpZHNbXS9Db3VudCAwPj5lbmRvYmoKdHJhaWxlcjw8L1Jvb3QgMSAwIFI+PgolJUVPRgo=";

const BEDROCK_MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

fn provider_backend(name: &str, provider: &str, url: &str) -> String {
    format!(
        "---\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  provider: {provider}\n  endpoint: {url}\n  auth: {{apiKey: {{valueFrom: {{env: UPSTREAM_KEY}}}}}}\n  timeout: 2s\n"
    )
}

/// One upstream plays every provider (each face has its own paths).
async fn start() -> (Upstream, Sluice) {
    let upstream = Upstream::start(Options {
        name: "media".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let url = upstream.url();
    let routes = "      - models: [\"claude-*\"]\n        backends: [{backend: anthropic}]\n      - models: [\"gemini-*\"]\n        backends: [{backend: gemini}]\n      - models: [\"anthropic.*\"]\n        backends: [{backend: bedrock}]\n      - models: [\"command-*\"]\n        backends: [{backend: cohere}]\n      - models: [\"gpt-*\"]\n        backends: [{backend: gpt}]";
    let backends = format!(
        "{}{}{}{}---\nkind: Backend\nmetadata: {{name: bedrock}}\nspec:\n  provider: Bedrock\n  endpoint: {url}\n  auth:\n    aws:\n      region: us-east-1\n      accessKeyId: {{valueFrom: {{env: AWS_ID}}}}\n      secretAccessKey: {{valueFrom: {{env: AWS_SECRET}}}}\n  timeout: 2s\n",
        provider_backend("anthropic", "Anthropic", &url),
        provider_backend("gemini", "Gemini", &url),
        provider_backend("cohere", "Cohere", &url),
        backend("gpt", &url),
    );
    let env = [
        ("TEAM_A_KEY", "sk-team-a"),
        ("UPSTREAM_KEY", "sk-upstream-secret"),
        ("AWS_ID", TEST_ACCESS_KEY_ID),
        ("AWS_SECRET", TEST_SECRET_ACCESS_KEY),
    ];
    let sluice = Sluice::start(&config(routes, &backends), &env);
    (upstream, sluice)
}

fn openai_chat(model: &str, stream: bool, parts: Value) -> Value {
    json!({"model": model, "max_tokens": 20, "stream": stream,
        "messages": [{"role": "user", "content": parts}]})
}

fn png_part() -> Value {
    json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}})
}

/// The text of a chat answer, whole or streamed.
async fn openai_text(response: reqwest::Response, stream: bool) -> String {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    if !stream {
        let body: Value = serde_json::from_str(&text).unwrap();
        return body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    sse_events(&text)
        .iter()
        .filter_map(|(_, e)| e["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// The media block of the last request the upstream saw, in its schema.
fn last_media(upstream: &Upstream, model: &str) -> Value {
    let seen = upstream.requests().last().unwrap().json();
    if model.starts_with("gemini") {
        seen["contents"][0]["parts"][1].clone()
    } else {
        seen["messages"][0]["content"][1].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_images_reach_every_translated_backend() {
    let (upstream, sluice) = start().await;
    let expected = [
        (
            "claude-sonnet-4-5",
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}),
        ),
        (
            "gemini-2.5-flash",
            json!({"inlineData": {"mimeType": "image/png", "data": PNG}}),
        ),
        (
            BEDROCK_MODEL,
            json!({"image": {"format": "png", "source": {"bytes": PNG}}}),
        ),
        (
            "command-a-vision-07-2025",
            json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}}),
        ),
    ];
    for (model, block) in expected {
        for stream in [false, true] {
            let request = openai_chat(
                model,
                stream,
                json!([{"type": "text", "text": "What is this?"}, png_part()]),
            );
            let response = post_json(&sluice, "/chat/completions", &request, &[]).await;
            let text = openai_text(response, stream).await;
            assert!(text.starts_with("tok0"), "{model}: {text}");
            assert_eq!(
                last_media(&upstream, model),
                block,
                "{model} stream={stream}"
            );
        }
    }
    // What the gateway does not check (it never decodes), the provider
    // does: a PNG sent as a JPEG is the upstream's 400, in OpenAI's shape.
    for model in [
        "claude-sonnet-4-5",
        "gemini-2.5-flash",
        BEDROCK_MODEL,
        "command-a-vision-07-2025",
    ] {
        let mislabelled = json!([{"type": "text", "text": "x"},
            {"type": "image_url", "image_url": {"url": format!("data:image/jpeg;base64,{PNG}")}}]);
        let response = post_json(
            &sluice,
            "/chat/completions",
            &openai_chat(model, false, mislabelled),
            &[],
        )
        .await;
        assert_eq!(response.status(), 400, "{model}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("does not match the declared media type image/jpeg"),
            "{model}: {body}"
        );
    }
    // By URL: Anthropic and Gemini fetch it themselves, Cohere too.
    let by_url = json!([{"type": "text", "text": "And this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]);
    for (model, block) in [
        (
            "claude-sonnet-4-5",
            json!({"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}),
        ),
        (
            "gemini-2.5-flash",
            json!({"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}}),
        ),
        (
            "command-a-vision-07-2025",
            json!({"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}),
        ),
    ] {
        let response = post_json(
            &sluice,
            "/chat/completions",
            &openai_chat(model, false, by_url.clone()),
            &[],
        )
        .await;
        openai_text(response, false).await;
        assert_eq!(last_media(&upstream, model), block, "{model}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_audio_and_pdfs_where_the_backend_takes_them() {
    let (upstream, sluice) = start().await;
    for stream in [false, true] {
        let request = openai_chat(
            "gemini-2.5-flash",
            stream,
            json!([{"type": "text", "text": "Transcribe."},
                {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}}]),
        );
        let response = post_json(&sluice, "/chat/completions", &request, &[]).await;
        openai_text(response, stream).await;
        assert_eq!(
            last_media(&upstream, "gemini-2.5-flash"),
            json!({"inlineData": {"mimeType": "audio/wav", "data": WAV}})
        );
    }
    let pdf = json!([{"type": "text", "text": "Summarize."},
        {"type": "file", "file": {"file_data": format!("data:application/pdf;base64,{PDF}"), "filename": "report.pdf"}}]);
    for (model, block) in [
        (
            "claude-sonnet-4-5",
            json!({"type": "document", "title": "report.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}}),
        ),
        (
            "gemini-2.5-flash",
            json!({"inlineData": {"mimeType": "application/pdf", "data": PDF}}),
        ),
        (
            BEDROCK_MODEL,
            json!({"document": {"format": "pdf", "name": "report", "source": {"bytes": PDF}}}),
        ),
    ] {
        let response = post_json(
            &sluice,
            "/chat/completions",
            &openai_chat(model, false, pdf.clone()),
            &[],
        )
        .await;
        openai_text(response, false).await;
        assert_eq!(last_media(&upstream, model), block, "{model}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_the_gateways_400_naming_the_part() {
    let (upstream, sluice) = start().await;
    let audio = json!({"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}});
    let image = |url: &str| json!({"type": "image_url", "image_url": {"url": url}});
    let cases = [
        (
            "claude-sonnet-4-5",
            audio.clone(),
            "(input_audio): Anthropic backends take no audio input",
        ),
        (
            BEDROCK_MODEL,
            audio.clone(),
            "(input_audio): Bedrock's Converse API takes no audio input",
        ),
        (
            "command-a-vision-07-2025",
            audio.clone(),
            "(input_audio): Cohere's chat API takes no audio input",
        ),
        (
            "gemini-2.5-flash",
            json!({"type": "input_audio", "input_audio": {"data": WAV, "format": "flac"}}),
            "(input_audio): the audio format `flac` is not one of wav, mp3",
        ),
        (
            "gemini-2.5-flash",
            image("data:image/png;base64,iVBOR"),
            "(image_url): the data is not valid base64",
        ),
        (
            "claude-sonnet-4-5",
            image("data:image/png;base64"),
            "(image_url): malformed data URL",
        ),
        (
            "claude-sonnet-4-5",
            image("data:image/bmp;base64,Qk0="),
            "(image_url): an image of type `image/bmp` cannot be sent to Anthropic backends",
        ),
        (
            "gemini-2.5-flash",
            image("data:image/gif;base64,R0lGODlh"),
            "`image/gif` cannot be sent to Gemini backends",
        ),
        (
            "command-a-vision-07-2025",
            image("ftp://example.com/a.png"),
            "(image_url): the URL must be an http(s) URL",
        ),
        (
            BEDROCK_MODEL,
            image("https://example.com/cat.png"),
            "(image_url): Bedrock does not fetch images by http(s) URL",
        ),
    ];
    for stream in [false, true] {
        for (model, part, needle) in &cases {
            let request = openai_chat(model, stream, json!([{"type": "text", "text": "x"}, part]));
            let response = post_json(&sluice, "/chat/completions", &request, &[]).await;
            assert_eq!(response.status(), 400, "{model} {part}");
            let body: Value = response.json().await.unwrap();
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("messages[0].content[1]") && message.contains(needle),
                "{model}: {message}"
            );
        }
    }
    // Spoken answers: refused on every translated backend.
    for model in [
        "claude-sonnet-4-5",
        "gemini-2.5-flash",
        BEDROCK_MODEL,
        "command-a-vision-07-2025",
    ] {
        let request = json!({"model": model, "modalities": ["text", "audio"],
            "audio": {"voice": "alloy", "format": "wav"},
            "messages": [{"role": "user", "content": "say hi"}]});
        let response = post_json(&sluice, "/chat/completions", &request, &[]).await;
        assert_eq!(response.status(), 400, "{model}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("audio output"),
            "{body}"
        );
    }
    // An Anthropic client gets the refusal in Anthropic's shape.
    let request = json!({"model": BEDROCK_MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}]}]});
    let response = post_json(&sluice, "/messages", &request, &[]).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not fetch images by http(s) URL"),
        "{body}"
    );
    assert!(
        upstream.requests().is_empty(),
        "a refusal reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_image_blocks_reach_openai_gemini_and_bedrock() {
    let (upstream, sluice) = start().await;
    let blocks = json!([
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "What is this?"}]);
    let expected = [
        (
            "gpt-4o",
            json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}}),
        ),
        (
            "gemini-2.5-flash",
            json!({"inlineData": {"mimeType": "image/png", "data": PNG}}),
        ),
        (
            BEDROCK_MODEL,
            json!({"image": {"format": "png", "source": {"bytes": PNG}}}),
        ),
        (
            "command-a-vision-07-2025",
            json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}}),
        ),
    ];
    for (model, block) in expected {
        for stream in [false, true] {
            let request = json!({"model": model, "max_tokens": 20, "stream": stream,
                "messages": [{"role": "user", "content": blocks}]});
            let response = post_json(&sluice, "/messages", &request, &[]).await;
            let status = response.status();
            let text = response.text().await.unwrap();
            assert_eq!(status, 200, "{model}: {text}");
            let answer: String = if stream {
                sse_events(&text)
                    .iter()
                    .filter_map(|(_, e)| e["delta"]["text"].as_str())
                    .collect()
            } else {
                let body: Value = serde_json::from_str(&text).unwrap();
                body["content"][0]["text"].as_str().unwrap().to_owned()
            };
            assert!(answer.starts_with("tok0"), "{model}: {answer}");
            let seen = upstream.requests().last().unwrap().json();
            let first = if model.starts_with("gemini") {
                seen["contents"][0]["parts"][0].clone()
            } else {
                seen["messages"][0]["content"][0].clone()
            };
            assert_eq!(first, block, "{model} stream={stream}");
        }
    }
    // A PDF document block reaches Gemini as inline data.
    let request = json!({"model": "gemini-2.5-flash", "max_tokens": 20, "messages": [{"role": "user", "content": [
        {"type": "document", "title": "report.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}},
        {"type": "text", "text": "Summarize."}]}]});
    let response = post_json(&sluice, "/messages", &request, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        upstream.requests().last().unwrap().json()["contents"][0]["parts"][0],
        json!({"inlineData": {"mimeType": "application/pdf", "data": PDF}})
    );
}
