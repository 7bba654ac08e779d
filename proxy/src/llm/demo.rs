//! The built-in demo model (`provider: Demo`, model `sluice-demo`): answers
//! in process, deterministically, with no network, so a fresh `sluice run`
//! is useful at once. It speaks the OpenAI wire format (chat, streaming,
//! tool calls, legacy completions, embeddings) and says clearly what it is.
//! Not on any hot path; it may build JSON trees freely.

use bytes::Bytes;
use serde_json::{json, Value};

use super::Endpoint;
use crate::telemetry::Usage;

/// A finished demo answer.
pub struct DemoReply {
    /// `application/json` or `text/event-stream`.
    pub content_type: &'static str,
    /// The whole body.
    pub body: Bytes,
    /// Its usage.
    pub usage: Usage,
}

const INTRO: &str =
    "Hello from sluice-demo, Sluice's built-in demo model (in process, no LLM behind it).";

/// Answers a request the handler already parsed as JSON.
pub fn reply(
    endpoint: Endpoint,
    request: &Value,
    model: &str,
    stream: bool,
    include_usage: bool,
) -> DemoReply {
    let prompt_tokens = approx_tokens(&request.to_string());
    match endpoint {
        Endpoint::Embeddings => embeddings(request, model, prompt_tokens),
        Endpoint::Completions => {
            let text = format!("{INTRO} Configure a real backend to get real completions.");
            completion(model, &text, prompt_tokens, stream, include_usage)
        }
        _ => chat(request, model, prompt_tokens, stream, include_usage),
    }
}

/// About four bytes a token: the documented approximation where no
/// tokenizer runs.
pub fn approx_tokens(text: &str) -> u64 {
    approx_tokens_len(text.len())
}

/// [`approx_tokens`] for a byte length.
pub fn approx_tokens_len(len: usize) -> u64 {
    (len as u64).div_ceil(4).max(1)
}

fn chat(
    request: &Value,
    model: &str,
    prompt_tokens: u64,
    stream: bool,
    include_usage: bool,
) -> DemoReply {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let first_tool = request["tools"]
        .as_array()
        .and_then(|tools| tools.first())
        .and_then(|tool| tool["function"]["name"].as_str())
        .map(str::to_owned);

    // A tool result came back: summarise it. Tools offered: call the first one.
    let (content, tool_call) = if last["role"] == "tool" {
        let result = text_of(&last["content"]);
        (Some(format!("{INTRO} The tool returned: {result}")), None)
    } else if let Some(name) = first_tool {
        (None, Some(name))
    } else {
        let said = text_of(&last["content"]);
        (
            Some(format!(
                "{INTRO} You said: \"{said}\". Point Sluice at a real provider (OPENAI_API_KEY, or a config file) for real answers."
            )),
            None,
        )
    };
    let words = content
        .as_deref()
        .map_or(4, |c| c.split(' ').count() as u64);
    let usage = Usage {
        input: prompt_tokens,
        output: words,
        cached_input: 0,
    };
    let usage_json = json!({"prompt_tokens": usage.input, "completion_tokens": usage.output, "total_tokens": usage.input + usage.output});
    let id = "chatcmpl-sluice-demo";
    let finish = if tool_call.is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    let arguments = "{\"query\":\"sluice-demo\"}";

    if !stream {
        let message = match &tool_call {
            Some(name) => {
                json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                    {"id": "call_sluice_demo_0", "type": "function", "function": {"name": name, "arguments": arguments}}
                ]})
            }
            None => json!({"role": "assistant", "content": content, "refusal": null}),
        };
        let body = json!({
            "id": id, "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": usage_json,
        });
        return DemoReply {
            content_type: "application/json",
            body: Bytes::from(body.to_string()),
            usage,
        };
    }

    let chunk = |delta: Value, finish: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    match (&tool_call, &content) {
        (Some(name), _) => {
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_sluice_demo_0", "type": "function", "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            ));
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}),
                Value::Null,
            ));
        }
        (None, Some(text)) => {
            let mut words = text.split_inclusive(' ');
            for word in words.by_ref() {
                events.push(chunk(json!({"content": word}), Value::Null));
            }
        }
        (None, None) => {}
    }
    events.push(chunk(json!({}), json!(finish)));
    if include_usage {
        events.push(json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": usage_json}));
    }
    DemoReply {
        content_type: "text/event-stream",
        body: sse(&events),
        usage,
    }
}

fn completion(
    model: &str,
    text: &str,
    prompt_tokens: u64,
    stream: bool,
    include_usage: bool,
) -> DemoReply {
    let usage = Usage {
        input: prompt_tokens,
        output: text.split(' ').count() as u64,
        cached_input: 0,
    };
    let usage_json = json!({"prompt_tokens": usage.input, "completion_tokens": usage.output, "total_tokens": usage.input + usage.output});
    let id = "cmpl-sluice-demo";
    if !stream {
        let body = json!({"id": id, "object": "text_completion", "created": 0, "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": "stop"}], "usage": usage_json});
        return DemoReply {
            content_type: "application/json",
            body: Bytes::from(body.to_string()),
            usage,
        };
    }
    let mut events: Vec<Value> = text
        .split_inclusive(' ')
        .map(|word| {
            json!({"id": id, "object": "text_completion", "created": 0, "model": model,
            "choices": [{"text": word, "index": 0, "logprobs": null, "finish_reason": null}]})
        })
        .collect();
    events.push(
        json!({"id": id, "object": "text_completion", "created": 0, "model": model,
        "choices": [{"text": "", "index": 0, "logprobs": null, "finish_reason": "stop"}]}),
    );
    if include_usage {
        events.push(json!({"id": id, "object": "text_completion", "created": 0, "model": model, "choices": [], "usage": usage_json}));
    }
    DemoReply {
        content_type: "text/event-stream",
        body: sse(&events),
        usage,
    }
}

fn embeddings(request: &Value, model: &str, prompt_tokens: u64) -> DemoReply {
    let inputs: Vec<String> = match &request["input"] {
        Value::Array(items) => items.iter().map(Value::to_string).collect(),
        other => vec![other.to_string()],
    };
    let base64 = request["encoding_format"] == "base64";
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = pseudo_embedding(text);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64_encode(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let usage = Usage {
        input: prompt_tokens,
        output: 0,
        cached_input: 0,
    };
    let body = json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}});
    DemoReply {
        content_type: "application/json",
        body: Bytes::from(body.to_string()),
        usage,
    }
}

/// A deterministic unit vector of 8 dimensions from the text's bytes.
fn pseudo_embedding(text: &str) -> Vec<f32> {
    let mut v = [0f32; 8];
    for (i, b) in text.bytes().enumerate() {
        v[i % 8] += f32::from(b) / 255.0;
    }
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    v.iter().map(|x| x / norm).collect()
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn sse(events: &[Value]) -> Bytes {
    let mut out = String::new();
    for event in events {
        out.push_str("data: ");
        out.push_str(&event.to_string());
        out.push_str("\n\n");
    }
    out.push_str("data: [DONE]\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_deterministically() {
        let request =
            json!({"model": "sluice-demo", "messages": [{"role": "user", "content": "hi"}]});
        let a = reply(
            Endpoint::ChatCompletions,
            &request,
            "sluice-demo",
            false,
            false,
        );
        let b = reply(
            Endpoint::ChatCompletions,
            &request,
            "sluice-demo",
            false,
            false,
        );
        assert_eq!(a.body, b.body);
        let body: Value = serde_json::from_slice(&a.body).unwrap();
        let content = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(content.contains("sluice-demo") && content.contains("You said: \"hi\""));
        assert_eq!(body["usage"]["completion_tokens"], a.usage.output);
    }

    #[test]
    fn calls_the_first_tool_then_reads_its_result() {
        let request = json!({"messages": [{"role": "user", "content": "weather?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]});
        let first = reply(
            Endpoint::ChatCompletions,
            &request,
            "sluice-demo",
            false,
            false,
        );
        let body: Value = serde_json::from_slice(&first.body).unwrap();
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            body["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "get_weather"
        );

        let follow_up = json!({"messages": [{"role": "tool", "tool_call_id": "call_sluice_demo_0", "content": "sunny"}],
            "tools": [{"type": "function", "function": {"name": "get_weather"}}]});
        let second = reply(
            Endpoint::ChatCompletions,
            &follow_up,
            "sluice-demo",
            true,
            true,
        );
        let text = String::from_utf8(second.body.to_vec()).unwrap();
        assert!(text.contains("sunny") && text.ends_with("data: [DONE]\n\n"));
        assert!(text.contains("\"choices\":[]"), "usage chunk when asked");
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(b"Ma"), "TWE=");
        assert_eq!(base64_encode(b"M"), "TQ==");
    }
}
