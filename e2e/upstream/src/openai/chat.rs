//! `POST /v1/chat/completions`: a `chat.completion` object or a stream of
//! `chat.completion.chunk`s, with text or a single tool call.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::{
    content, json_str, to_json, BadRequest, ChunkFrame, ChunkText, Ids, Reply, StreamOptions,
    Usage, CREATED, SYSTEM_FINGERPRINT,
};
use crate::body::{Event, EventKind, EventSource};
use crate::control::Control;

/// The id of the one tool call the mock makes.
pub const TOOL_CALL_ID: &str = "call_mock_0";
/// The arguments of that call, streamed in two fragments.
pub const TOOL_CALL_ARGUMENTS: [&str; 2] = ["{\"q\":", "\"mock\"}"];

/// The parts of a chat request the mock looks at; everything else is ignored.
#[derive(Debug, Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    tools: Option<Vec<Tool>>,
    #[serde(default)]
    tool_choice: Option<ToolChoice>,
}

#[derive(Debug, Deserialize)]
struct Tool {
    #[serde(default)]
    function: Option<FunctionName>,
}

#[derive(Debug, Deserialize)]
struct FunctionName {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ToolChoice {
    /// `"none"`, `"auto"`, `"required"`.
    Mode(String),
    /// `{"type":"function","function":{"name":...}}`.
    Named { function: FunctionName },
    /// Any other shape (e.g. `allowed_tools`): treated as `auto`.
    Other(IgnoredAny),
}

impl ChatRequest<'_> {
    /// The tool the answer calls, if any: the control header wins, then a
    /// named tool choice, then the first tool when a call is required.
    fn forced_tool(&self, control: &Control) -> Option<String> {
        if let Some(name) = &control.tool_call {
            return Some(name.clone());
        }
        match &self.tool_choice {
            Some(ToolChoice::Named { function }) => Some(function.name.clone()),
            Some(ToolChoice::Mode(mode)) if mode == "required" => self
                .tools
                .iter()
                .flatten()
                .find_map(|t| t.function.as_ref())
                .map(|f| f.name.clone()),
            _ => None,
        }
    }
}

/// Answers one chat completion request.
pub(crate) fn reply(body: &[u8], control: &Control, ids: &Ids) -> Result<Reply, BadRequest> {
    let request: ChatRequest<'_> =
        serde_json::from_slice(body).map_err(|e| BadRequest::json(&e))?;
    let id = format!("chatcmpl-mock-{}", ids.next());
    let tool = request.forced_tool(control);
    let usage = Usage::new(control.prompt_tokens, u64::from(control.chunks))
        .with_cached(control.cached_tokens);
    if request.stream == Some(true) {
        let include_usage = request
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let frame = ChunkFrame::new(&id, "chat.completion.chunk", &request.model, include_usage);
        let answer = match tool {
            Some(name) => Answer::Tool {
                name_json: json_str(&name),
            },
            None => Answer::Text {
                chunks: control.chunks,
            },
        };
        return Ok(Reply::Stream(Box::new(ChatStream {
            frame,
            answer,
            usage: include_usage.then_some(usage),
            step: 0,
        })));
    }
    let text = tool.is_none().then(|| content(control.chunks));
    let tool_calls = tool.as_deref().map(|name| {
        [ToolCall {
            id: TOOL_CALL_ID,
            kind: "function",
            function: FunctionCall {
                name,
                arguments: TOOL_CALL_ARGUMENTS.concat(),
            },
        }]
    });
    let completion = ChatCompletion {
        id: &id,
        object: "chat.completion",
        created: CREATED,
        model: &request.model,
        choices: [Choice {
            index: 0,
            message: Message {
                role: "assistant",
                content: text.as_deref(),
                tool_calls,
                refusal: None,
            },
            logprobs: None,
            finish_reason: if tool.is_some() { "tool_calls" } else { "stop" },
        }],
        usage,
        system_fingerprint: SYSTEM_FINGERPRINT,
    };
    Ok(Reply::Json(to_json(&completion)))
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCall<'a>; 1]>,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCall<'a>,
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    arguments: String,
}

enum Answer {
    Text { chunks: u32 },
    Tool { name_json: String },
}

/// The events of a streamed chat completion, made one at a time:
/// role chunk, content chunks, finish chunk, usage chunk (if asked), `[DONE]`.
struct ChatStream {
    frame: ChunkFrame,
    answer: Answer,
    usage: Option<Usage>,
    step: u32,
}

impl ChatStream {
    fn content_chunks(&self) -> u32 {
        match self.answer {
            Answer::Text { chunks } => chunks,
            Answer::Tool { .. } => TOOL_CALL_ARGUMENTS.len() as u32,
        }
    }

    fn lead(&self) -> Event {
        match &self.answer {
            Answer::Text { .. } => self.frame.choice(
                EventKind::Lead,
                format_args!(
                    "\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null"
                ),
            ),
            Answer::Tool { name_json } => self.frame.choice(
                EventKind::Lead,
                format_args!(
                    "\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{{\"index\":0,\"id\":\"{TOOL_CALL_ID}\",\"type\":\"function\",\"function\":{{\"name\":{name_json},\"arguments\":\"\"}}}}]}},\"logprobs\":null,\"finish_reason\":null"
                ),
            ),
        }
    }

    fn content(&self, i: u32) -> Event {
        match &self.answer {
            Answer::Text { .. } => self.frame.choice(
                EventKind::Content,
                format_args!(
                    "\"index\":0,\"delta\":{{\"content\":\"{}\"}},\"logprobs\":null,\"finish_reason\":null",
                    ChunkText(i)
                ),
            ),
            Answer::Tool { .. } => {
                let fragment = TOOL_CALL_ARGUMENTS
                    .get(i as usize)
                    .copied()
                    .unwrap_or_default();
                self.frame.choice(
                    EventKind::Content,
                    format_args!(
                        "\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":{}}}}}]}},\"logprobs\":null,\"finish_reason\":null",
                        json_str(fragment)
                    ),
                )
            }
        }
    }

    fn finish(&self) -> Event {
        let reason = match self.answer {
            Answer::Text { .. } => "stop",
            Answer::Tool { .. } => "tool_calls",
        };
        self.frame.choice(
            EventKind::Tail,
            format_args!(
                "\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"{reason}\""
            ),
        )
    }
}

impl EventSource for ChatStream {
    fn next_event(&mut self) -> Option<Event> {
        let step = self.step;
        self.step = self.step.saturating_add(1);
        let chunks = self.content_chunks();
        if step == 0 {
            return Some(self.lead());
        }
        if step <= chunks {
            return Some(self.content(step - 1));
        }
        let mut rest = step - chunks - 1;
        if rest == 0 {
            return Some(self.finish());
        }
        rest -= 1;
        if let Some(usage) = &self.usage {
            if rest == 0 {
                return Some(self.frame.usage(usage));
            }
            rest -= 1;
        }
        (rest == 0).then(ChunkFrame::done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn json_reply(body: Value, control: &Control) -> Value {
        match reply(body.to_string().as_bytes(), control, &Ids::default()).unwrap() {
            Reply::Json(bytes) => serde_json::from_slice(&bytes).unwrap(),
            Reply::Stream(_) => panic!("expected JSON"),
        }
    }

    fn stream_reply(body: Value, control: &Control) -> Vec<String> {
        match reply(body.to_string().as_bytes(), control, &Ids::default()).unwrap() {
            Reply::Json(_) => panic!("expected a stream"),
            Reply::Stream(mut source) => std::iter::from_fn(|| source.next_event())
                .map(|e| String::from_utf8(e.bytes.to_vec()).unwrap())
                .collect(),
        }
    }

    #[test]
    fn required_tool_choice_calls_the_first_tool() {
        let body = json!({"model":"m","messages":[],"tool_choice":"required",
            "tools":[{"type":"function","function":{"name":"search","parameters":{}}}]});
        let answer = json_reply(body, &Control::default());
        assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(answer["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            answer["choices"][0]["message"]["tool_calls"][0]["function"],
            json!({"name":"search","arguments":"{\"q\":\"mock\"}"})
        );
    }

    #[test]
    fn auto_and_unknown_tool_choices_answer_text() {
        for choice in [
            json!("auto"),
            json!({"type":"allowed_tools","allowed_tools":{}}),
        ] {
            let body = json!({"model":"m","messages":[],"tool_choice":choice,
                "tools":[{"type":"function","function":{"name":"search"}}]});
            let answer = json_reply(body, &Control::default());
            assert_eq!(
                answer["choices"][0]["message"]["content"],
                "tok0 tok1 tok2 tok3 tok4 "
            );
        }
    }

    #[test]
    fn named_tool_choice_and_header() {
        let body = json!({"model":"m","messages":[],
            "tool_choice":{"type":"function","function":{"name":"picked"}}});
        let answer = json_reply(body.clone(), &Control::default());
        assert_eq!(
            answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "picked"
        );
        let control = Control {
            tool_call: Some("header\"tool".to_owned()),
            ..Control::default()
        };
        let answer = json_reply(body, &control);
        assert_eq!(
            answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "header\"tool"
        );
    }

    #[test]
    fn tool_stream_reassembles_arguments() {
        let control = Control {
            tool_call: Some("search".to_owned()),
            ..Control::default()
        };
        let events = stream_reply(json!({"model":"m","messages":[],"stream":true}), &control);
        assert_eq!(events.len(), 5);
        assert_eq!(events[4], "data: [DONE]\n\n");
        let mut arguments = String::new();
        for e in &events[..4] {
            let chunk: Value = serde_json::from_str(e.trim_start_matches("data: ")).unwrap();
            if let Some(args) =
                chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            {
                arguments.push_str(args);
            }
        }
        assert_eq!(arguments, "{\"q\":\"mock\"}");
    }

    #[test]
    fn missing_model_is_a_bad_request() {
        let err = reply(b"{\"messages\":[]}", &Control::default(), &Ids::default())
            .err()
            .unwrap();
        assert!(err.message.contains("model"), "{}", err.message);
    }
}
