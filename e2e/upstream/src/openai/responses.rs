//! `POST /v1/responses` (OpenAI Responses API): a `response` object, or its
//! stream of typed `response.*` events, as OpenAI's API reference shows
//! them: `response.created`, `response.in_progress`,
//! `response.output_item.added`, `response.content_part.added`, one
//! `response.output_text.delta` per content chunk, then the `.done` events
//! and `response.completed`, whose `response.usage` carries the token counts
//! (`input_tokens`, `input_tokens_details.cached_tokens`, `output_tokens`,
//! `output_tokens_details.reasoning_tokens`, `total_tokens`). No `[DONE]`.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{content, to_json, BadRequest, ChunkText, Ids, Reply, CREATED};
use crate::body::{Event, EventKind, EventSource};
use crate::control::Control;

/// The parts of a Responses request the mock looks at.
#[derive(Debug, Deserialize)]
struct ResponsesRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    /// A string or a list of input items; required, not read.
    input: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
}

/// `usage` of a response.
#[derive(Debug, Clone, Copy, Serialize)]
struct ResponseUsage {
    input_tokens: u64,
    input_tokens_details: CachedDetails,
    output_tokens: u64,
    output_tokens_details: ReasoningDetails,
    total_tokens: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct CachedDetails {
    cached_tokens: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct ReasoningDetails {
    reasoning_tokens: u64,
}

/// Answers one Responses request.
pub(crate) fn reply(body: &[u8], control: &Control, ids: &Ids) -> Result<Reply, BadRequest> {
    let request: ResponsesRequest<'_> =
        serde_json::from_slice(body).map_err(|e| BadRequest::json(&e))?;
    if request.input.is_none() {
        return Err(BadRequest {
            message: "Missing required parameter: 'input'.".into(),
            param: Some("input"),
        });
    }
    let n = ids.next();
    let usage = ResponseUsage {
        input_tokens: control.prompt_tokens,
        input_tokens_details: CachedDetails {
            cached_tokens: control.cached_tokens.min(control.prompt_tokens),
        },
        output_tokens: u64::from(control.chunks),
        output_tokens_details: ReasoningDetails {
            reasoning_tokens: 0,
        },
        total_tokens: control
            .prompt_tokens
            .saturating_add(u64::from(control.chunks)),
    };
    let shape = Shape {
        id: format!("resp_mock_{n}"),
        message_id: format!("msg_mock_{n}"),
        model: request.model.into_owned(),
        instructions: request.instructions,
        max_output_tokens: request.max_output_tokens,
    };
    if request.stream == Some(true) {
        return Ok(Reply::Stream(Box::new(ResponseStream {
            shape,
            usage,
            chunks: control.chunks,
            step: 0,
            sequence: 0,
        })));
    }
    let text = content(control.chunks);
    Ok(Reply::Json(to_json(&shape.response(
        "completed",
        Some(&text),
        Some(usage),
    ))))
}

/// What every rendering of one response repeats.
struct Shape {
    id: String,
    message_id: String,
    model: String,
    instructions: Option<String>,
    max_output_tokens: Option<u64>,
}

impl Shape {
    /// The output message; `None` text: still in progress, no content yet.
    fn message(&self, text: Option<&str>) -> Value {
        match text {
            Some(text) => json!({
                "id": self.message_id,
                "type": "message",
                "status": "completed",
                "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}],
                "role": "assistant",
            }),
            None => json!({
                "id": self.message_id,
                "type": "message",
                "status": "in_progress",
                "content": [],
                "role": "assistant",
            }),
        }
    }

    /// The `response` object.
    fn response(&self, status: &str, text: Option<&str>, usage: Option<ResponseUsage>) -> Value {
        let output = match text {
            Some(text) => vec![self.message(Some(text))],
            None => Vec::new(),
        };
        json!({
            "id": self.id,
            "object": "response",
            "created_at": CREATED,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": null,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "max_tool_calls": null,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null},
            "service_tier": "default",
            "store": true,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_logprobs": 0,
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": null,
            "metadata": {},
        })
    }
}

/// The events of a streamed response.
struct ResponseStream {
    shape: Shape,
    usage: ResponseUsage,
    chunks: u32,
    step: u32,
    sequence: u64,
}

impl ResponseStream {
    fn event(&mut self, kind: EventKind, name: &str, mut data: Value) -> Event {
        data["type"] = Value::from(name);
        data["sequence_number"] = Value::from(self.sequence);
        self.sequence += 1;
        let data = to_json(&data);
        let mut bytes = Vec::with_capacity(name.len() + data.len() + 16);
        bytes.extend_from_slice(b"event: ");
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(b"\ndata: ");
        bytes.extend_from_slice(&data);
        bytes.extend_from_slice(b"\n\n");
        Event {
            kind,
            bytes: Bytes::from(bytes),
        }
    }

    fn part(&self, text: &str) -> Value {
        json!({
            "item_id": self.shape.message_id,
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": text},
        })
    }
}

impl EventSource for ResponseStream {
    fn next_event(&mut self) -> Option<Event> {
        let step = self.step;
        self.step = self.step.saturating_add(1);
        let lead = 4;
        if step < lead {
            return Some(match step {
                0 => {
                    let response = self.shape.response("in_progress", None, None);
                    self.event(
                        EventKind::Lead,
                        "response.created",
                        json!({ "response": response }),
                    )
                }
                1 => {
                    let response = self.shape.response("in_progress", None, None);
                    self.event(
                        EventKind::Lead,
                        "response.in_progress",
                        json!({ "response": response }),
                    )
                }
                2 => {
                    let item = self.shape.message(None);
                    self.event(
                        EventKind::Lead,
                        "response.output_item.added",
                        json!({"output_index": 0, "item": item}),
                    )
                }
                _ => {
                    let part = self.part("");
                    self.event(EventKind::Lead, "response.content_part.added", part)
                }
            });
        }
        let i = step - lead;
        if i < self.chunks {
            let data = json!({
                "item_id": self.shape.message_id,
                "output_index": 0,
                "content_index": 0,
                "delta": ChunkText(i).to_string(),
                "logprobs": [],
            });
            return Some(self.event(EventKind::Content, "response.output_text.delta", data));
        }
        let text = content(self.chunks);
        Some(match i - self.chunks {
            0 => {
                let data = json!({
                    "item_id": self.shape.message_id,
                    "output_index": 0,
                    "content_index": 0,
                    "text": text,
                    "logprobs": [],
                });
                self.event(EventKind::Tail, "response.output_text.done", data)
            }
            1 => {
                let part = self.part(&text);
                self.event(EventKind::Tail, "response.content_part.done", part)
            }
            2 => {
                let item = self.shape.message(Some(&text));
                self.event(
                    EventKind::Tail,
                    "response.output_item.done",
                    json!({"output_index": 0, "item": item}),
                )
            }
            3 => {
                let response = self
                    .shape
                    .response("completed", Some(&text), Some(self.usage));
                self.event(
                    EventKind::Tail,
                    "response.completed",
                    json!({ "response": response }),
                )
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(body: Value, control: &Control) -> Vec<(String, Value)> {
        let Reply::Stream(mut source) =
            reply(body.to_string().as_bytes(), control, &Ids::default()).unwrap()
        else {
            panic!("expected a stream");
        };
        std::iter::from_fn(|| source.next_event())
            .map(|e| {
                let text = String::from_utf8(e.bytes.to_vec()).unwrap();
                let (event, data) = text.split_once('\n').unwrap();
                let name = event.strip_prefix("event: ").unwrap().to_owned();
                let data: Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap().trim_end()).unwrap();
                assert_eq!(data["type"], name.as_str());
                (name, data)
            })
            .collect()
    }

    #[test]
    fn answers_a_whole_response() {
        let control = Control {
            cached_tokens: 3,
            ..Control::default()
        };
        let Reply::Json(bytes) = reply(
            br#"{"model":"m","input":"hi","max_output_tokens":64}"#,
            &control,
            &Ids::default(),
        )
        .unwrap() else {
            panic!("expected JSON");
        };
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["object"], "response");
        assert_eq!(body["id"], "resp_mock_1");
        assert_eq!(body["status"], "completed");
        assert_eq!(body["max_output_tokens"], 64);
        assert_eq!(
            body["output"][0]["content"][0]["text"],
            "tok0 tok1 tok2 tok3 tok4 "
        );
        assert_eq!(
            body["usage"],
            json!({"input_tokens":7,"input_tokens_details":{"cached_tokens":3},"output_tokens":5,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":12})
        );
    }

    #[test]
    fn streams_typed_events_ending_in_completed() {
        let events = stream(
            json!({"model":"m","input":[{"role":"user","content":"hi"}],"stream":true}),
            &Control::default(),
        );
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let sequence: Vec<u64> = events
            .iter()
            .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(sequence, (0..13).collect::<Vec<_>>());
        assert!(events[0].1["response"]["usage"].is_null());
        let deltas: String = events[4..9]
            .iter()
            .map(|(_, d)| d["delta"].as_str().unwrap())
            .collect();
        assert_eq!(deltas, "tok0 tok1 tok2 tok3 tok4 ");
        let completed = &events[12].1["response"];
        assert_eq!(completed["status"], "completed");
        assert_eq!(completed["usage"]["input_tokens"], 7);
        assert_eq!(completed["usage"]["output_tokens"], 5);
    }

    #[test]
    fn refuses_a_request_without_input() {
        let error = reply(br#"{"model":"m"}"#, &Control::default(), &Ids::default())
            .err()
            .unwrap();
        assert_eq!(error.param, Some("input"));
    }
}
