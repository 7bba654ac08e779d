//! An OpenAI chat request as a Cohere v2 `/chat` body ([`to_cohere`]), in
//! one pass over borrowed structs. Tool definitions, calls and arguments
//! are copied as they are: Cohere takes OpenAI's shapes for them.

use std::borrow::Cow;

use super::{
    ChatRequestOut, ContentOut, FunctionDefOut, FunctionOut, ImageUrlOut, MessageOut, PartOut,
    ResponseFormatOut, ToolCallOut, ToolOut,
};
use crate::llm::translate::media::{self, Source};
use crate::llm::translate::openai::{ChatRequest, Content, Part, Stop, ToolChoice};
use crate::llm::translate::TranslateError;

/// An OpenAI chat request as a Cohere v2 chat body for `model`.
pub fn to_cohere(body: &[u8], model: &str) -> Result<Vec<u8>, TranslateError> {
    let request: ChatRequest<'_> = serde_json::from_slice(body).map_err(TranslateError::request)?;
    if request.n.is_some_and(|n| n > 1) {
        return Err(TranslateError::Request(
            "`n` greater than 1 is not supported by Cohere backends".into(),
        ));
    }
    request.refuse_audio_output("Cohere")?;
    let model = if model.is_empty() {
        &*request.model
    } else {
        model
    };
    let mut messages = Vec::with_capacity(request.messages.len());
    for (i, message) in request.messages.iter().enumerate() {
        let out = match &*message.role {
            "system" | "developer" => MessageOut {
                role: "system",
                content: Some(ContentOut::Text(text_only(message.content.as_ref(), i)?)),
                tool_calls: Vec::new(),
                tool_call_id: None,
            },
            "user" => MessageOut {
                role: "user",
                content: Some(content(message.content.as_ref(), i)?),
                tool_calls: Vec::new(),
                tool_call_id: None,
            },
            "assistant" => {
                let tool_calls: Vec<ToolCallOut<'_>> = message
                    .tool_calls
                    .iter()
                    .flatten()
                    .map(|call| ToolCallOut {
                        id: &call.id,
                        kind: "function",
                        function: FunctionOut {
                            name: &call.function.name,
                            arguments: if call.function.arguments.trim().is_empty() {
                                "{}"
                            } else {
                                &call.function.arguments
                            },
                        },
                    })
                    .collect();
                let text = text_only(message.content.as_ref(), i)?;
                MessageOut {
                    role: "assistant",
                    // Cohere refuses empty text beside calls.
                    content: (!text.is_empty() || tool_calls.is_empty())
                        .then_some(ContentOut::Text(text)),
                    tool_calls,
                    tool_call_id: None,
                }
            }
            "tool" => {
                let Some(id) = message.tool_call_id.as_deref() else {
                    return Err(TranslateError::Request(format!(
                        "messages[{i}]: a tool message needs `tool_call_id`"
                    )));
                };
                MessageOut {
                    role: "tool",
                    content: Some(ContentOut::Text(text_only(message.content.as_ref(), i)?)),
                    tool_calls: Vec::new(),
                    tool_call_id: Some(id),
                }
            }
            other => {
                return Err(TranslateError::Request(format!(
                    "messages[{i}]: role `{other}` is not supported by Cohere backends"
                )))
            }
        };
        messages.push(out);
    }
    // A named tool choice: only that tool, which must be called.
    let named = match &request.tool_choice {
        Some(ToolChoice::Named { function, .. }) => Some(&*function.name),
        _ => None,
    };
    let tools: Vec<ToolOut<'_>> = request
        .tools
        .iter()
        .flatten()
        .filter(|tool| named.is_none_or(|name| tool.function.name == name))
        .map(|tool| ToolOut {
            kind: "function",
            function: FunctionDefOut {
                name: &tool.function.name,
                description: tool.function.description.as_deref(),
                parameters: tool.function.parameters,
            },
        })
        .collect();
    if let Some(name) = named {
        if tools.is_empty() {
            return Err(TranslateError::Request(format!(
                "tool_choice names `{name}`, which is not among `tools`"
            )));
        }
    }
    let tool_choice = match &request.tool_choice {
        _ if tools.is_empty() => None,
        Some(ToolChoice::Mode(mode)) if mode == "required" => Some("REQUIRED"),
        Some(ToolChoice::Mode(mode)) if mode == "none" => Some("NONE"),
        Some(ToolChoice::Named { .. }) => Some("REQUIRED"),
        _ => None,
    };
    let response_format = match &request.response_format {
        Some(format) if format.kind == "json_object" => Some(ResponseFormatOut {
            kind: "json_object",
            json_schema: None,
        }),
        Some(format) if format.kind == "json_schema" => Some(ResponseFormatOut {
            kind: "json_object",
            json_schema: format.json_schema.as_ref().and_then(|s| s.schema),
        }),
        _ => None,
    };
    let out = ChatRequestOut {
        model,
        messages,
        tools,
        tool_choice,
        max_tokens: request.max_completion_tokens.or(request.max_tokens),
        temperature: request.temperature,
        p: request.top_p,
        stop_sequences: match &request.stop {
            None => Vec::new(),
            Some(Stop::One(one)) => vec![&**one],
            Some(Stop::Many(many)) => many.iter().map(|s| &**s).collect(),
        },
        response_format,
        stream: request.stream.unwrap_or(false),
    };
    serde_json::to_vec(&out).map_err(TranslateError::request)
}

/// Text content; parts must all be text and are joined.
fn text_only<'a>(
    content: Option<&'a Content<'a>>,
    i: usize,
) -> Result<Cow<'a, str>, TranslateError> {
    match content {
        None => Ok(Cow::Borrowed("")),
        Some(Content::Text(text)) => Ok(Cow::Borrowed(text)),
        Some(Content::Parts(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                match part {
                    Part::Text { text } => texts.push(&**text),
                    _ => {
                        return Err(TranslateError::Request(format!(
                            "messages[{i}].content[{j}]: only text can be sent in this message to Cohere backends"
                        )))
                    }
                }
            }
            Ok(match texts.as_slice() {
                [one] => Cow::Borrowed(*one),
                many => Cow::Owned(many.concat()),
            })
        }
    }
}

/// A user message's content: text, or text and image parts.
fn content<'a>(
    content: Option<&'a Content<'a>>,
    i: usize,
) -> Result<ContentOut<'a>, TranslateError> {
    match content {
        None => Ok(ContentOut::Text(Cow::Borrowed(""))),
        Some(Content::Text(text)) => Ok(ContentOut::Text(Cow::Borrowed(text))),
        Some(Content::Parts(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                out.push(match part {
                    Part::Text { text } => PartOut::Text { text },
                    Part::ImageUrl { image_url } => {
                        check_image(&image_url.url).map_err(|e| {
                            TranslateError::Request(format!(
                                "messages[{i}].content[{j}] (image_url): {e}"
                            ))
                        })?;
                        PartOut::ImageUrl {
                            image_url: ImageUrlOut {
                                url: &image_url.url,
                                detail: image_url.detail.as_deref(),
                            },
                        }
                    }
                    Part::InputAudio { .. } | Part::File { .. } => {
                        return Err(TranslateError::Request(format!(
                            "messages[{i}].content[{j}] ({}): Cohere's chat API takes no {} input",
                            part.kind(),
                            if matches!(part, Part::File { .. }) { "file" } else { "audio" }
                        )))
                    }
                    Part::Unsupported => {
                        return Err(TranslateError::Request(format!(
                            "messages[{i}].content[{j}]: only text and image_url parts can be sent to Cohere backends"
                        )))
                    }
                });
            }
            Ok(ContentOut::Parts(out))
        }
    }
}

/// The image types Cohere's vision models take.
const IMAGE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/webp", "image/gif"];

/// Cohere takes OpenAI's `image_url` as it is; a data URL is checked
/// here (form, base64, type) so that a broken one is a clear 400.
fn check_image(url: &str) -> Result<(), String> {
    match media::source(url)? {
        Source::Inline { media_type, .. } => media::accepted(media_type, &IMAGE_TYPES)
            .map(|_| ())
            .ok_or_else(|| media::unsupported(media_type, "an image", "Cohere", &IMAGE_TYPES)),
        Source::Remote(_) => Ok(()),
    }
}
