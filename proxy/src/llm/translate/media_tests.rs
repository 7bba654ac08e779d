//! Images, audio and PDFs through every request translator: golden
//! fixtures written from each API's reference (`tests/fixtures/<provider>/
//! media_*`), Anthropic clients' blocks through the OpenAI pivot, and each
//! refusal with the part it names.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::llm::translate::{anthropic, bedrock, cohere, gemini, TranslateError};

fn fixture(provider: &str, name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(provider)
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

fn parsed(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Each backend's translation of an OpenAI request.
fn to(backend: &str, request: &Value) -> Result<Value, TranslateError> {
    let body = bytes(request);
    let out = match backend {
        "anthropic" => anthropic::request::to_anthropic(&body, "claude-sonnet-4-5"),
        "gemini" => gemini::request::to_gemini(&body),
        "bedrock" => bedrock::request::to_bedrock(&body),
        "cohere" => cohere::request::to_cohere(&body, "command-a-vision-07-2025"),
        other => panic!("no backend {other}"),
    }?;
    Ok(parsed(&out))
}

/// An Anthropic Messages request through the pivot to `backend`.
fn from_anthropic(backend: &str, request: &Value) -> Result<Value, TranslateError> {
    let openai = anthropic::request::to_openai(&bytes(request), "m")?;
    to(backend, &parsed(&openai))
}

fn user(parts: Value) -> Value {
    json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": parts}]})
}

const PNG: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";

fn png_url() -> String {
    format!("data:image/png;base64,{PNG}")
}

#[test]
fn openai_media_matches_each_backends_reference() {
    for (provider, expected) in [
        ("anthropic", "media_request.anthropic.json"),
        ("gemini", "media_request.gemini.json"),
        ("bedrock", "media_request.converse.json"),
        ("cohere", "media_request.cohere.json"),
    ] {
        let request = fixture(provider, "media_request.json");
        assert_eq!(
            to(provider, &request).unwrap(),
            fixture(provider, expected),
            "{provider}"
        );
    }
}

#[test]
fn anthropic_media_blocks_become_openai_parts() {
    let out = anthropic::request::to_openai(
        &bytes(&fixture("anthropic", "media_messages.json")),
        "gpt-4o",
    )
    .unwrap();
    assert_eq!(
        parsed(&out),
        fixture("anthropic", "media_messages.openai.json")
    );
}

#[test]
fn anthropic_media_blocks_reach_other_backends_through_the_pivot() {
    let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}});
    let pdf = json!({"type": "document", "title": "a.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}});
    let request = user(json!([image, pdf, {"type": "text", "text": "what is it?"}]));

    let gemini = from_anthropic("gemini", &request).unwrap();
    assert_eq!(
        gemini["contents"][0]["parts"],
        json!([
            {"inlineData": {"mimeType": "image/png", "data": PNG}},
            {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
            {"text": "what is it?"}
        ])
    );
    let bedrock = from_anthropic("bedrock", &request).unwrap();
    assert_eq!(
        bedrock["messages"][0]["content"],
        json!([
            {"image": {"format": "png", "source": {"bytes": PNG}}},
            {"document": {"format": "pdf", "name": "a", "source": {"bytes": "JVBERi0="}}},
            {"text": "what is it?"}
        ])
    );
    let cohere = from_anthropic("cohere", &user(json!([image]))).unwrap();
    assert_eq!(
        cohere["messages"][0]["content"],
        json!([{"type": "image_url", "image_url": {"url": png_url()}}])
    );
    // A url image: Gemini fetches it, Bedrock cannot.
    let by_url = user(
        json!([{"type": "image", "source": {"type": "url", "url": "https://example.com/a.webp"}}]),
    );
    assert_eq!(
        from_anthropic("gemini", &by_url).unwrap()["contents"][0]["parts"][0],
        json!({"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/a.webp"}})
    );
    let error = from_anthropic("bedrock", &by_url).unwrap_err().to_string();
    assert!(
        error.contains("messages[0].content[0] (image_url)") && error.contains("http(s) URL"),
        "{error}"
    );
    // A bad media type is named whichever way it came.
    let tiff = user(
        json!([{"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "AAAA"}}]),
    );
    for backend in ["gemini", "bedrock", "cohere"] {
        let error = from_anthropic(backend, &tiff).unwrap_err().to_string();
        assert!(error.contains("`image/tiff`"), "{backend}: {error}");
    }
}

#[test]
fn audio_goes_to_gemini_only() {
    let audio = |format: &str| {
        user(
            json!([{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": format}}]),
        )
    };
    for (format, mime) in [("wav", "audio/wav"), ("mp3", "audio/mp3")] {
        assert_eq!(
            to("gemini", &audio(format)).unwrap()["contents"][0]["parts"][0],
            json!({"inlineData": {"mimeType": mime, "data": "UklGRg=="}})
        );
    }
    for (backend, needle) in [
        ("anthropic", "Anthropic backends take no audio input"),
        ("bedrock", "Converse API takes no audio input"),
        ("cohere", "takes no audio input"),
        ("gemini", "`flac` is not one of wav, mp3"),
    ] {
        let format = if backend == "gemini" { "flac" } else { "wav" };
        let error = to(backend, &audio(format)).unwrap_err();
        assert!(
            matches!(&error, TranslateError::Request(m)
                if m.contains("messages[0].content[0] (input_audio)") && m.contains(needle)),
            "{backend}: {error}"
        );
    }
    let bad = user(
        json!([{"type": "input_audio", "input_audio": {"data": "not base64!", "format": "wav"}}]),
    );
    let error = to("gemini", &bad).unwrap_err().to_string();
    assert!(error.contains("not valid base64"), "{error}");
}

#[test]
fn audio_output_is_refused_on_every_translated_backend() {
    let request = json!({"model": "m", "modalities": ["text", "audio"],
        "audio": {"voice": "alloy", "format": "wav"},
        "messages": [{"role": "user", "content": "say hi"}]});
    for backend in ["anthropic", "gemini", "bedrock", "cohere"] {
        let error = to(backend, &request).unwrap_err();
        assert!(
            matches!(&error, TranslateError::Request(m)
                if m.contains("`modalities`") && m.contains("audio output")),
            "{backend}: {error}"
        );
    }
    let text_only = json!({"model": "m", "modalities": ["text"],
        "messages": [{"role": "user", "content": "hi"}]});
    for backend in ["anthropic", "gemini", "bedrock", "cohere"] {
        assert!(to(backend, &text_only).is_ok(), "{backend}");
    }
}

#[test]
fn bad_images_are_refused_with_the_part_named() {
    let image = |url: &str| {
        user(
            json!([{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}}]),
        )
    };
    let all = ["anthropic", "gemini", "bedrock", "cohere"];
    for (url, backends, needle) in [
        ("data:image/png;base64", &all[..], "malformed data URL"),
        ("data:image/png,AAAA", &all[..], "base64-encoded"),
        ("data:image/png;base64,AAA", &all[..], "not valid base64"),
        ("data:image/png;base64,AA!A", &all[..], "not valid base64"),
        ("ftp://example.com/a.png", &all[..], "http(s) URL"),
        ("data:image/tiff;base64,AAAA", &all[..], "`image/tiff`"),
        ("data:image/gif;base64,AAAA", &["gemini"][..], "`image/gif`"),
        (
            "data:image/heic;base64,AAAA",
            &["anthropic", "bedrock", "cohere"][..],
            "`image/heic`",
        ),
        (
            "https://example.com/a.png",
            &["bedrock"][..],
            "does not fetch images by http(s) URL",
        ),
        ("s3://bucket/a.tiff", &["bedrock"][..], "s3:// image needs"),
    ] {
        for backend in backends {
            let error = to(backend, &image(url)).unwrap_err();
            assert!(
                matches!(&error, TranslateError::Request(m)
                    if m.contains("messages[0].content[1] (image_url)") && m.contains(needle)),
                "{backend} {url}: {error}"
            );
        }
    }
    // What each takes: gif on Anthropic, Bedrock and Cohere; heic on Gemini;
    // `image/jpg` as `image/jpeg`.
    let gif = image("data:image/gif;base64,R0lGODlh");
    assert_eq!(
        to("anthropic", &gif).unwrap()["messages"][0]["content"][1]["source"]["media_type"],
        "image/gif"
    );
    assert_eq!(
        to("bedrock", &gif).unwrap()["messages"][0]["content"][1]["image"]["format"],
        "gif"
    );
    assert!(to("cohere", &gif).is_ok());
    assert_eq!(
        to("gemini", &image("data:image/heic;base64,AAAA")).unwrap()["contents"][0]["parts"][1]
            ["inlineData"]["mimeType"],
        "image/heic"
    );
    assert_eq!(
        to("anthropic", &image("data:IMAGE/JPG;base64,/9j/")).unwrap()["messages"][0]["content"][1]
            ["source"]["media_type"],
        "image/jpeg"
    );
}

#[test]
fn bad_files_are_refused_with_the_part_named() {
    let file = |file: Value| user(json!([{"type": "file", "file": file}]));
    for (body, backends, needle) in [
        (
            json!({"file_id": "file-abc"}),
            &["anthropic", "gemini", "bedrock"][..],
            "not `file_id`",
        ),
        (
            json!({"file_data": "data:text/csv;base64,YSxi", "filename": "a.csv"}),
            &["anthropic", "gemini", "bedrock"][..],
            "`text/csv`",
        ),
        (
            json!({"file_data": "https://example.com/a.pdf"}),
            &["anthropic", "gemini", "bedrock"][..],
            "base64 data URL",
        ),
        (
            json!({"file_data": "data:application/pdf;base64,%%"}),
            &["anthropic", "gemini", "bedrock"][..],
            "not valid base64",
        ),
        (
            json!({"file_data": "data:application/pdf;base64,JVBERi0="}),
            &["cohere"][..],
            "takes no file input",
        ),
    ] {
        for backend in backends {
            let error = to(backend, &file(body.clone())).unwrap_err();
            assert!(
                matches!(&error, TranslateError::Request(m)
                    if m.contains("messages[0].content[0] (file)") && m.contains(needle)),
                "{backend} {body}: {error}"
            );
        }
    }
    // A file without a name still gets one on Bedrock (Converse requires it).
    let unnamed = file(json!({"file_data": "data:application/pdf;base64,JVBERi0="}));
    assert_eq!(
        to("bedrock", &unnamed).unwrap()["messages"][0]["content"][0]["document"]["name"],
        "document-0"
    );
    let odd = file(
        json!({"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a_b.c  d.pdf"}),
    );
    assert_eq!(
        to("bedrock", &odd).unwrap()["messages"][0]["content"][0]["document"]["name"],
        "a-b-c d"
    );
}

#[test]
fn bad_anthropic_media_blocks_are_refused_with_the_block_named() {
    for (block, needle) in [
        (
            json!({"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}),
            "(document): a document by URL needs an Anthropic backend",
        ),
        (
            json!({"type": "document", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}),
            "(document): a base64 document of type `image/png`",
        ),
        (
            json!({"type": "document"}),
            "(document): a document needs a `source`",
        ),
        (
            json!({"type": "image", "source": {"type": "base64", "data": PNG}}),
            "an image needs a base64 or url source",
        ),
    ] {
        let error = anthropic::request::to_openai(&bytes(&user(json!([block]))), "m").unwrap_err();
        assert!(
            matches!(&error, TranslateError::Request(m)
                if m.contains("messages[0].content[0]") && m.contains(needle)),
            "{block}: {error}"
        );
    }
}
