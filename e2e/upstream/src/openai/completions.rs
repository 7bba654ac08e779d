//! `POST /v1/completions` (legacy): a `text_completion` object, or a stream of
//! them, one per content chunk.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{
    content, to_json, BadRequest, ChunkFrame, ChunkText, Ids, Reply, StreamOptions, Usage, CREATED,
    SYSTEM_FINGERPRINT,
};
use crate::body::{Event, EventKind, EventSource};
use crate::control::Control;

/// The parts of a completion request the mock looks at.
#[derive(Debug, Deserialize)]
struct CompletionRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

/// Answers one text completion request.
pub(crate) fn reply(body: &[u8], control: &Control, ids: &Ids) -> Result<Reply, BadRequest> {
    let request: CompletionRequest<'_> =
        serde_json::from_slice(body).map_err(|e| BadRequest::json(&e))?;
    let id = format!("cmpl-mock-{}", ids.next());
    let usage = Usage::new(control.prompt_tokens, u64::from(control.chunks))
        .with_cached(control.cached_tokens);
    if request.stream == Some(true) {
        let include_usage = request
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        return Ok(Reply::Stream(Box::new(CompletionStream {
            frame: ChunkFrame::new(&id, "text_completion", &request.model, include_usage),
            chunks: control.chunks,
            usage: include_usage.then_some(usage),
            step: 0,
        })));
    }
    let text = content(control.chunks);
    let completion = TextCompletion {
        id: &id,
        object: "text_completion",
        created: CREATED,
        model: &request.model,
        choices: [Choice {
            text: &text,
            index: 0,
            logprobs: None,
            finish_reason: "stop",
        }],
        usage,
        system_fingerprint: SYSTEM_FINGERPRINT,
    };
    Ok(Reply::Json(to_json(&completion)))
}

#[derive(Serialize)]
struct TextCompletion<'a> {
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
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

/// The events of a streamed completion: content chunks, a finish chunk with
/// empty text, the usage chunk (if asked), `[DONE]`.
struct CompletionStream {
    frame: ChunkFrame,
    chunks: u32,
    usage: Option<Usage>,
    step: u32,
}

impl EventSource for CompletionStream {
    fn next_event(&mut self) -> Option<Event> {
        let step = self.step;
        self.step = self.step.saturating_add(1);
        if step < self.chunks {
            return Some(self.frame.choice(
                EventKind::Content,
                format_args!(
                    "\"text\":\"{}\",\"index\":0,\"logprobs\":null,\"finish_reason\":null",
                    ChunkText(step)
                ),
            ));
        }
        let mut rest = step - self.chunks;
        if rest == 0 {
            return Some(self.frame.choice(
                EventKind::Tail,
                format_args!(
                    "\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\""
                ),
            ));
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

    #[test]
    fn stream_text_adds_up_to_the_whole_text() {
        let body = json!({"model":"m","prompt":"hi","stream":true,"stream_options":{"include_usage":true}});
        let Reply::Stream(mut source) = reply(
            body.to_string().as_bytes(),
            &Control::default(),
            &Ids::default(),
        )
        .unwrap() else {
            panic!("expected a stream");
        };
        let events: Vec<String> = std::iter::from_fn(|| source.next_event())
            .map(|e| String::from_utf8(e.bytes.to_vec()).unwrap())
            .collect();
        assert_eq!(events.len(), 5 + 3);
        assert_eq!(events.last().unwrap(), "data: [DONE]\n\n");
        let chunks: Vec<Value> = events[..7]
            .iter()
            .map(|e| serde_json::from_str(e.trim_start_matches("data: ")).unwrap())
            .collect();
        let text: String = chunks[..6]
            .iter()
            .map(|c| c["choices"][0]["text"].as_str().unwrap())
            .collect();
        assert_eq!(text, "tok0 tok1 tok2 tok3 tok4 ");
        assert!(chunks[..6]
            .iter()
            .all(|c| c["object"] == "text_completion" && c["usage"].is_null()));
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[6]["choices"], json!([]));
        assert_eq!(
            chunks[6]["usage"],
            json!({"prompt_tokens":7,"completion_tokens":5,"total_tokens":12})
        );
    }
}
