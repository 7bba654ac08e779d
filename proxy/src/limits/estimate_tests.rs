use super::*;

/// Reference texts with their o200k_base counts, measured with tiktoken-rs
/// 0.12.1 (cl100k_base in the comment where it differs).
const PROSE: &str = "The gateway reserves an estimate of each request's tokens before forwarding it, and settles the real usage when the response arrives. A tenant whose budget is spent gets a 429 with a retry-after header, and operators see the spend, the remaining allowance and the next reset in kubectl get budgets.";
const PROSE_O200K: u64 = 59;
const CODE: &str = "fn settle(&self, lease: &Lease, used: u64) -> Result<(), StoreError> {\n    let rest = lease.amount.saturating_sub(used);\n    self.balance.fetch_add(rest, Ordering::Relaxed);\n    Ok(())\n}\n";
const CODE_O200K: u64 = 51;
const CHINESE: &str = "人工智能网关位于应用程序和模型提供商之间。";
const CHINESE_O200K: u64 = 14; // cl100k_base: 21

fn chat(content: &serde_json::Value) -> Vec<u8> {
    serde_json::json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": content}],
    })
    .to_string()
    .into_bytes()
}

#[test]
fn text_estimates_err_a_little_high() {
    for (text, reference) in [
        (PROSE, PROSE_O200K),
        (CODE, CODE_O200K),
        (CHINESE, CHINESE_O200K),
    ] {
        let estimate = text_tokens(text);
        assert!(
            estimate >= reference && estimate <= reference * 3 / 2,
            "{estimate} for {reference} reference tokens: {text:?}"
        );
    }
}

#[test]
fn text_classes() {
    assert_eq!(text_tokens(""), 0);
    assert_eq!(text_tokens("hello"), 1);
    assert_eq!(text_tokens(" hello world"), 2);
    assert_eq!(text_tokens("internationalization"), 4);
    assert_eq!(text_tokens("1234567"), 3);
    assert_eq!(text_tokens("你好"), 2);
    assert_eq!(text_tokens("a\n\n    b"), 3);
    // A long rule is a handful of tokens, not one per character.
    assert!(text_tokens(&"-".repeat(200)) <= 14);
    assert!(text_tokens(&" ".repeat(500)) <= 10);
    // Emoji cost a couple of tokens each.
    assert_eq!(text_tokens("🙂"), 2);
}

#[test]
fn chat_messages_add_openai_overhead() {
    let body = chat(&serde_json::json!(PROSE));
    // 3 per message + "user" + the text + 3 priming the reply.
    assert_eq!(
        prompt_tokens("gpt-4o", &body),
        PER_MESSAGE + 1 + text_tokens(PROSE) + REPLY_PRIMING
    );
    let named = serde_json::json!({
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "name": "ada", "content": "Hi"},
        ]
    })
    .to_string();
    assert_eq!(
        prompt_tokens("gpt-4o", named.as_bytes()),
        (3 + 2 + 2) + (3 + 1 + 1 + 1 + 1) + 3
    );
}

#[test]
fn content_parts_count_their_text_and_images_by_family() {
    let plain = prompt_tokens("gpt-4o", &chat(&serde_json::json!(PROSE)));
    let parts = chat(&serde_json::json!([
        {"type": "text", "text": PROSE},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(100_000))}},
    ]));
    assert_eq!(prompt_tokens("gpt-4o", &parts), plain + 765);
    assert_eq!(
        prompt_tokens("claude-sonnet-4-5", &parts),
        plain + 1_600,
        "the base64 data is not counted as text"
    );
    assert_eq!(prompt_tokens("gemini-2.5-flash", &parts), plain + 258);
    assert_eq!(image_tokens("openrouter/anthropic/claude-3-opus"), 1_600);
}

#[test]
fn escapes_are_decoded_before_counting() {
    let escaped = br#"{"messages":[{"role":"user","content":"\u4f60\u597d"}]}"#;
    assert_eq!(prompt_tokens("gpt-4o", escaped), 3 + 1 + 2 + 3);
}

#[test]
fn tools_and_tool_calls_are_counted() {
    let without = serde_json::json!({
        "messages": [{"role": "user", "content": "weather in Paris?"}],
    });
    let mut with = without.clone();
    with["tools"] = serde_json::json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    }]);
    let a = prompt_tokens("gpt-4o", without.to_string().as_bytes());
    let b = prompt_tokens("gpt-4o", with.to_string().as_bytes());
    assert!(b > a + 20, "{a} -> {b}");

    let calls = serde_json::json!({"messages": [
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
    ]});
    let n = prompt_tokens("gpt-4o", calls.to_string().as_bytes());
    assert!(n > 3 + 3 + 3 + text_tokens("18C and sunny"), "{n}");
}

#[test]
fn completions_embeddings_and_responses() {
    let prompt = serde_json::json!({"model": "gpt-3.5-turbo-instruct", "prompt": PROSE});
    assert_eq!(
        prompt_tokens("gpt-3.5-turbo-instruct", prompt.to_string().as_bytes()),
        text_tokens(PROSE)
    );
    let batch = serde_json::json!({"prompt": [PROSE, CODE]});
    assert_eq!(
        prompt_tokens("x", batch.to_string().as_bytes()),
        text_tokens(PROSE) + text_tokens(CODE)
    );
    // Embeddings of token ids count the ids.
    let ids = br#"{"model":"text-embedding-3-small","input":[[1,2,3],[4,5]]}"#;
    assert_eq!(prompt_tokens("text-embedding-3-small", ids), 5);
    let strings = serde_json::json!({"input": ["hello", "world"]});
    assert_eq!(prompt_tokens("x", strings.to_string().as_bytes()), 2);
    // Responses API: instructions plus input items with typed parts.
    let responses = serde_json::json!({
        "model": "gpt-5",
        "instructions": "Be brief.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
    });
    assert_eq!(
        prompt_tokens("gpt-5", responses.to_string().as_bytes()),
        text_tokens("Be brief.") + (3 + 1 + 1) + 3
    );
    let plain = serde_json::json!({"model": "gpt-5", "input": PROSE});
    assert_eq!(
        prompt_tokens("gpt-5", plain.to_string().as_bytes()),
        text_tokens(PROSE)
    );
}

#[test]
fn anthropic_messages() {
    let body = serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "18C"}]},
            ]},
        ],
    });
    let n = prompt_tokens("claude-sonnet-4-5", body.to_string().as_bytes());
    let floor = text_tokens("Be brief.") + 3 * 3 + 3 + text_tokens("Weather?") + text_tokens("18C");
    assert!(n > floor && n < floor + 40, "{n} vs {floor}");
}

#[test]
fn bodies_that_are_not_objects_count_as_text() {
    assert_eq!(prompt_tokens("gpt-4o", b""), 0);
    assert_eq!(
        prompt_tokens("gpt-4o", PROSE.as_bytes()),
        text_tokens(PROSE)
    );
    assert!(prompt_tokens("gpt-4o", b"{\"messages\":[{\"role\":") > 0);
    assert!(prompt_tokens("gpt-4o", &[0xff, 0xfe, b'a']) > 0);
    // Deep nesting neither recurses without bound nor stops counting.
    let deep = format!(
        "{{\"messages\":[{{\"role\":\"user\",\"content\":{}\"hi\"{}}}]}}",
        "[".repeat(100),
        "]".repeat(100)
    );
    assert!(prompt_tokens("gpt-4o", deep.as_bytes()) > 3);
    let deeper = format!(
        "{{\"input\":{}1{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(prompt_tokens("gpt-4o", deeper.as_bytes()) > 0);
}

#[test]
fn never_panics_on_mangled_bodies() {
    let valid = serde_json::json!({
        "model": "gpt-4o",
        "max_tokens": 5,
        "n": 2,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "name": "x", "content": [{"type": "text", "text": "h\u{e9}llo 你好 🙂"},
                {"type": "image_url", "image_url": {"url": "data:,"}}]},
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "input": [[1, 2], "x", {"role": "user", "content": "y"}],
    })
    .to_string()
    .into_bytes();
    let mut rng = fastrand::Rng::with_seed(11);
    for round in 0..20_000 {
        let body: Vec<u8> = if round % 10 == 0 {
            (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect()
        } else {
            let mut body = valid.clone();
            for _ in 0..rng.usize(1..4) {
                if body.is_empty() {
                    break;
                }
                match rng.u8(0..3) {
                    0 => {
                        let at = rng.usize(..body.len());
                        body[at] = rng.u8(..);
                    }
                    1 => body.truncate(rng.usize(..body.len())),
                    _ => {
                        let at = rng.usize(..=body.len());
                        let junk: &[u8] = b"{}[]\",:0e-\\u";
                        body.insert(at, junk[rng.usize(..junk.len())]);
                    }
                }
            }
            body
        };
        let _ = prompt_tokens("gpt-4o", &body);
        let _ = output_reservation(&body);
        let _ = output_tokens_in(&String::from_utf8_lossy(&body));
    }
}

#[test]
fn output_reservation_reads_the_limit_fields() {
    let r = |json: &str| output_reservation(json.as_bytes());
    assert_eq!(r(r#"{"max_tokens":100}"#), Some(100));
    assert_eq!(
        r(r#"{"max_tokens":100,"max_completion_tokens":50}"#),
        Some(50)
    );
    assert_eq!(
        r(r#"{"max_completion_tokens":50,"max_tokens":100}"#),
        Some(50)
    );
    assert_eq!(r(r#"{"max_output_tokens":70}"#), Some(70));
    assert_eq!(r(r#"{"max_tokens":100,"n":3}"#), Some(300));
    assert_eq!(r(r#"{"max_tokens":100,"n":0}"#), Some(100));
    assert_eq!(r(r#"{"max_tokens":100,"n":"two"}"#), Some(100));
    assert_eq!(
        r(r#"{"max_completion_tokens":null,"max_tokens":9}"#),
        Some(9)
    );
    assert_eq!(r(r#"{"max_completion_tokens":-1,"max_tokens":9}"#), Some(9));
    assert_eq!(r(r#"{"max_tokens":1.5}"#), None);
    assert_eq!(
        r(r#"{"max_tokens":18446744073709551615,"n":2}"#),
        Some(u64::MAX)
    );
    assert_eq!(r(r#"{"messages":[],"n":4}"#), None);
    assert_eq!(r("{}"), None);
    assert_eq!(r("[1]"), None);
    assert_eq!(r("{\"max_tokens\":"), None);
}

#[test]
fn streamed_output_is_counted_per_chunk() {
    assert_eq!(output_tokens_in(""), 0);
    let whole = output_tokens_in(PROSE);
    let chunked: u64 = PROSE
        .as_bytes()
        .chunks(7)
        .map(|c| output_tokens_in(&String::from_utf8_lossy(c)))
        .sum();
    assert!(chunked >= whole, "{chunked} < {whole}");
    assert!(chunked <= whole * 2, "{chunked} vs {whole}");
}
