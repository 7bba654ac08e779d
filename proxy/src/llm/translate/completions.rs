//! OpenAI's legacy text completions (`/v1/completions`) on backends that
//! only chat (Anthropic, Gemini, Bedrock, Cohere): the prompt becomes one
//! user message of an OpenAI chat request, which the backend's translator
//! takes from there, and the chat answer that comes back (whole or as
//! chunks) becomes a `text_completion`. What a chat API cannot do (echo,
//! suffix, logprobs, best_of, several prompts, token-id prompts) is refused
//! with a 400 naming the field. Knows nothing of any backend schema.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::openai::{
    ChatCompletion, ChatRequest, ChunkIn, Content, Message, Stop, StreamOptions, Usage,
};
use super::{event_data, events, Splitter, TranslateError};

/// `POST /v1/completions` body: the fields a chat request can carry.
#[derive(Deserialize)]
struct TextRequest<'a> {
    #[serde(borrow, default)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    prompt: Option<&'a RawValue>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(borrow, default)]
    stop: Option<Stop<'a>>,
    #[serde(borrow, default)]
    user: Option<Cow<'a, str>>,
    // Refused unless absent or neutral.
    #[serde(default)]
    echo: Option<bool>,
    #[serde(borrow, default)]
    suffix: Option<Cow<'a, str>>,
    #[serde(default)]
    logprobs: Option<u64>,
    #[serde(default)]
    best_of: Option<u64>,
}

/// One prompt: a string, or a list holding one string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Prompt<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Cow<'a, str>>),
}

/// The OpenAI chat request a text completion request stands for; `model`
/// replaces the client's when the route overrides it.
pub fn to_chat(body: &[u8], model: &str) -> Result<Vec<u8>, TranslateError> {
    let request: TextRequest<'_> = serde_json::from_slice(body).map_err(TranslateError::request)?;
    let refuse = |field: &str, why: &str| {
        Err(TranslateError::Request(format!(
            "`{field}` {why} on this backend: it serves text completions through its chat API"
        )))
    };
    if request.echo == Some(true) {
        return refuse("echo", "is not supported");
    }
    if request.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return refuse("suffix", "is not supported");
    }
    if request.logprobs.is_some() {
        return refuse("logprobs", "is not supported");
    }
    if request.best_of.is_some_and(|n| n > 1) {
        return refuse("best_of", "above 1 is not supported");
    }
    let Some(raw) = request.prompt else {
        return Err(TranslateError::Request("`prompt` is required".into()));
    };
    let prompt =
        match serde_json::from_str::<Prompt<'_>>(raw.get()) {
            Ok(Prompt::One(text)) => text,
            Ok(Prompt::Many(mut texts)) if texts.len() == 1 => texts.remove(0),
            Ok(Prompt::Many(texts)) => {
                return Err(TranslateError::Request(format!(
                    "`prompt` holds {} prompts; this backend takes one per request",
                    texts.len()
                )))
            }
            Err(_) => return Err(TranslateError::Request(
                "`prompt` must be a string (token-id prompts are not supported on this backend)"
                    .into(),
            )),
        };
    let chat = ChatRequest {
        model: if model.is_empty() {
            request.model
        } else {
            Cow::Borrowed(model)
        },
        messages: vec![Message {
            role: Cow::Borrowed("user"),
            content: Some(Content::Text(prompt)),
            ..Message::default()
        }],
        max_tokens: request.max_tokens,
        temperature: request.temperature,
        top_p: request.top_p,
        n: request.n,
        stream: request.stream,
        stream_options: request.stream_options,
        stop: request.stop,
        user: request.user,
        ..ChatRequest::default()
    };
    serde_json::to_vec(&chat).map_err(|e| TranslateError::Request(e.to_string()))
}

/// A `text_completion` (whole, or one chunk of a stream).
#[derive(Serialize)]
struct TextCompletion<'a> {
    id: Cow<'a, str>,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<TextChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

/// `chatcmpl-x` becomes `cmpl-x`, as OpenAI names text completions.
fn text_id(id: &str) -> Cow<'_, str> {
    match id.strip_prefix("chatcmpl-") {
        Some(rest) => Cow::Owned(format!("cmpl-{rest}")),
        None => Cow::Borrowed(id),
    }
}

/// A whole `chat.completion` as a `text_completion`; anything else (an
/// error body) is returned as it is.
pub fn whole_to_text(body: &[u8]) -> Option<Vec<u8>> {
    let chat: ChatCompletion<'_> = serde_json::from_slice(body).ok()?;
    if chat.object != "chat.completion" {
        return None;
    }
    let text = TextCompletion {
        id: text_id(&chat.id),
        object: "text_completion",
        created: chat.created,
        model: &chat.model,
        choices: chat
            .choices
            .iter()
            .map(|choice| TextChoice {
                text: choice.message.content.as_deref().unwrap_or_default(),
                index: choice.index,
                logprobs: None,
                finish_reason: choice.finish_reason.as_deref(),
            })
            .collect(),
        usage: chat.usage,
    };
    serde_json::to_vec(&text).ok()
}

/// Chat chunks in, text completion chunks out, event by event.
#[derive(Default)]
pub struct ToText {
    splitter: Splitter,
    created: u64,
}

/// A chunk's `created`, which [`ChunkIn`] does not keep.
#[derive(Deserialize)]
struct Created {
    #[serde(default)]
    created: u64,
}

impl ToText {
    /// Rewrites the whole events of `data` (OpenAI chat chunks, `[DONE]`,
    /// error events) for a text completions client; a partial event waits
    /// for the rest.
    pub fn on_data(&mut self, data: &[u8]) -> Vec<u8> {
        let Some(whole) = self.splitter.push(data) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(whole.len());
        for event in events(&whole) {
            self.rewrite(event, &mut out);
        }
        out
    }

    fn rewrite(&mut self, event: &[u8], out: &mut Vec<u8>) {
        let Some(data) = event_data(event) else {
            out.extend_from_slice(event);
            return;
        };
        let Ok(chunk) = serde_json::from_slice::<ChunkIn<'_>>(&data) else {
            // `[DONE]` and anything else unreadable go as they came.
            out.extend_from_slice(event);
            return;
        };
        if chunk.error.is_some() {
            out.extend_from_slice(event);
            return;
        }
        if self.created == 0 {
            self.created = serde_json::from_slice::<Created>(&data).map_or(0, |c| c.created);
        }
        let choices: Vec<TextChoice<'_>> = chunk
            .choices
            .iter()
            .filter_map(|choice| {
                let text = choice.delta.content.as_deref().unwrap_or_default();
                let finish_reason = choice.finish_reason.as_deref();
                // A role-only or tool delta has nothing for a text client.
                (!text.is_empty() || finish_reason.is_some()).then_some(TextChoice {
                    text,
                    index: choice.index,
                    logprobs: None,
                    finish_reason,
                })
            })
            .collect();
        if choices.is_empty() && chunk.usage.is_none() {
            return;
        }
        let text = TextCompletion {
            id: text_id(&chunk.id),
            object: "text_completion",
            created: self.created,
            model: &chunk.model,
            choices,
            usage: chunk.usage,
        };
        if let Ok(json) = serde_json::to_vec(&text) {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&json);
            out.extend_from_slice(b"\n\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> serde_json::Value {
        serde_json::from_slice(&to_chat(body.as_bytes(), "").unwrap()).unwrap()
    }

    #[test]
    fn a_prompt_becomes_one_user_message_with_the_sampling_fields() {
        let out = chat(
            r#"{"model":"m","prompt":"Say hi","max_tokens":7,"temperature":0.5,"stop":["\n"],"stream":true,"stream_options":{"include_usage":true}}"#,
        );
        assert_eq!(
            out,
            serde_json::json!({"model":"m","messages":[{"role":"user","content":"Say hi"}],
                "max_tokens":7,"temperature":0.5,"stream":true,
                "stream_options":{"include_usage":true},"stop":["\n"]})
        );
        let one = chat(r#"{"model":"m","prompt":["only one"]}"#);
        assert_eq!(one["messages"][0]["content"], "only one");
        let overridden: serde_json::Value =
            serde_json::from_slice(&to_chat(br#"{"model":"m","prompt":"x"}"#, "other").unwrap())
                .unwrap();
        assert_eq!(overridden["model"], "other");
    }

    #[test]
    fn what_a_chat_api_cannot_do_is_refused_by_name() {
        for (body, needle) in [
            (r#"{"model":"m","prompt":"x","echo":true}"#, "`echo`"),
            (r#"{"model":"m","prompt":"x","suffix":"end"}"#, "`suffix`"),
            (r#"{"model":"m","prompt":"x","logprobs":2}"#, "`logprobs`"),
            (r#"{"model":"m","prompt":"x","best_of":3}"#, "`best_of`"),
            (r#"{"model":"m","prompt":["a","b"]}"#, "2 prompts"),
            (r#"{"model":"m","prompt":[1,2,3]}"#, "token-id"),
            (r#"{"model":"m"}"#, "`prompt` is required"),
            (r#"{"model":"m","prompt":"x""#, "not valid JSON"),
        ] {
            let error = to_chat(body.as_bytes(), "").unwrap_err();
            assert!(
                matches!(&error, TranslateError::Request(m) if m.contains(needle)),
                "{body}: {error}"
            );
        }
        // Neutral values pass.
        assert!(to_chat(
            br#"{"model":"m","prompt":"x","echo":false,"best_of":1,"suffix":""}"#,
            ""
        )
        .is_ok());
    }

    #[test]
    fn a_whole_chat_answer_becomes_a_text_completion() {
        let body = br#"{"id":"chatcmpl-abc","object":"chat.completion","created":5,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        let out: serde_json::Value = serde_json::from_slice(&whole_to_text(body).unwrap()).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"id":"cmpl-abc","object":"text_completion","created":5,"model":"m",
                "choices":[{"text":"Hello","index":0,"logprobs":null,"finish_reason":"stop"}],
                "usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}})
        );
        assert!(whole_to_text(br#"{"error":{"message":"no"}}"#).is_none());
    }

    #[test]
    fn chat_chunks_become_text_chunks_split_anywhere() {
        let stream = concat!(
            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":9,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":9,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \\\"there\\\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":9,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":9,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":2,\"total_tokens\":4}}\n\n",
            "data: [DONE]\n\n",
        );
        let expected = concat!(
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":9,\"model\":\"m\",\"choices\":[{\"text\":\"Hi \\\"there\\\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":9,\"model\":\"m\",\"choices\":[{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":9,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":2,\"total_tokens\":4}}\n\n",
            "data: [DONE]\n\n",
        );
        for split in 0..stream.len() {
            let mut to_text = ToText::default();
            let mut out = to_text.on_data(&stream.as_bytes()[..split]);
            out.extend(to_text.on_data(&stream.as_bytes()[split..]));
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected,
                "split at {split}"
            );
        }
        // An error event goes as it came.
        let error = "data: {\"error\":{\"message\":\"cut\",\"type\":\"upstream_error\"}}\n\n";
        assert_eq!(
            ToText::default().on_data(error.as_bytes()),
            error.as_bytes()
        );
    }
}
