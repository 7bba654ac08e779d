//! Request bodies both ways: an OpenAI chat request for an Anthropic
//! backend ([`to_anthropic`]) and an Anthropic Messages request for an
//! OpenAI-schema backend ([`to_openai`]). Each reads the body into borrowed
//! structs and writes the other schema in one pass; tool schemas and tool
//! arguments are copied as raw JSON.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::{
    BlockIn, BlockOut, ImageSourceOut, MessageOut, MessagesRequestIn, MessagesRequestOut,
    MetadataOut, TextOrBlocks, ToolChoiceOut, ToolOut, DEFAULT_MAX_TOKENS,
};
use crate::llm::translate::media::{self, Source};
use crate::llm::translate::openai::{
    self, tool_input, ChatRequest, Content, FunctionCall, FunctionDef, ImageUrl, Part, Stop,
    StreamOptions, Tool, ToolCall, ToolChoice,
};
use crate::llm::translate::TranslateError;

/// An OpenAI chat request as an Anthropic Messages request for `model`.
pub fn to_anthropic(body: &[u8], model: &str) -> Result<Vec<u8>, TranslateError> {
    let request: ChatRequest<'_> = serde_json::from_slice(body).map_err(TranslateError::request)?;
    if request.n.is_some_and(|n| n > 1) {
        return Err(TranslateError::Request(
            "`n` greater than 1 is not supported by Anthropic backends".into(),
        ));
    }
    request.refuse_audio_output("Anthropic")?;
    let mut system: Vec<&str> = Vec::new();
    let mut messages: Vec<MessageOut<'_>> = Vec::with_capacity(request.messages.len());
    for (i, message) in request.messages.iter().enumerate() {
        match &*message.role {
            "system" | "developer" => match &message.content {
                Some(Content::Text(text)) => system.push(text),
                Some(Content::Parts(parts)) => {
                    for part in parts {
                        match part {
                            Part::Text { text } => system.push(text),
                            _ => {
                                return Err(TranslateError::Request(format!(
                                    "messages[{i}]: a system message can only hold text"
                                )))
                            }
                        }
                    }
                }
                None => {}
            },
            "user" => {
                let blocks = user_blocks(message.content.as_ref(), i)?;
                push_turn(&mut messages, "user", blocks);
            }
            "assistant" => {
                let mut blocks = user_blocks(message.content.as_ref(), i)?;
                for call in message.tool_calls.iter().flatten() {
                    blocks.push(BlockOut::ToolUse {
                        id: &call.id,
                        name: &call.function.name,
                        input: tool_input(&call.function.arguments).ok_or_else(|| {
                            TranslateError::Request(format!(
                                "messages[{i}]: the arguments of tool call `{}` are not a JSON object",
                                call.id
                            ))
                        })?,
                    });
                }
                push_turn(&mut messages, "assistant", blocks);
            }
            "tool" => {
                let Some(id) = message.tool_call_id.as_deref() else {
                    return Err(TranslateError::Request(format!(
                        "messages[{i}]: a tool message needs `tool_call_id`"
                    )));
                };
                let content = user_blocks(message.content.as_ref(), i)?;
                push_turn(
                    &mut messages,
                    "user",
                    vec![BlockOut::ToolResult {
                        tool_use_id: id,
                        content,
                    }],
                );
            }
            other => {
                return Err(TranslateError::Request(format!(
                    "messages[{i}]: role `{other}` is not supported by Anthropic backends"
                )))
            }
        }
    }
    let system = match system.as_slice() {
        [] => None,
        [one] => Some(Cow::Borrowed(*one)),
        many => Some(Cow::Owned(many.join("\n\n"))),
    };
    let stop_sequences = match &request.stop {
        None => Vec::new(),
        Some(Stop::One(one)) => vec![&**one],
        Some(Stop::Many(many)) => many.iter().map(|s| &**s).collect(),
    };
    let tools: Vec<ToolOut<'_>> = request
        .tools
        .iter()
        .flatten()
        .map(|tool| ToolOut {
            name: &tool.function.name,
            description: tool.function.description.as_deref(),
            input_schema: tool
                .function
                .parameters
                .map_or_else(super::super::openai::empty_schema, Cow::Borrowed),
        })
        .collect();
    let disable_parallel = (request.parallel_tool_calls == Some(false)).then_some(true);
    let tool_choice = match &request.tool_choice {
        None if disable_parallel.is_some() && !tools.is_empty() => Some(("auto", None)),
        None => None,
        Some(ToolChoice::Mode(mode)) => Some(match &**mode {
            "none" => ("none", None),
            "required" => ("any", None),
            _ => ("auto", None),
        }),
        Some(ToolChoice::Named { function, .. }) => Some(("tool", Some(&*function.name))),
    }
    .map(|(kind, name)| ToolChoiceOut {
        kind,
        name,
        disable_parallel_tool_use: disable_parallel.filter(|_| kind != "none"),
    });
    let out = MessagesRequestOut {
        model,
        max_tokens: request
            .max_completion_tokens
            .or(request.max_tokens)
            .unwrap_or(DEFAULT_MAX_TOKENS),
        system,
        messages,
        stop_sequences,
        // OpenAI's range is 0..=2, Anthropic's 0..=1.
        temperature: request.temperature.map(|t| t.clamp(0.0, 1.0)),
        top_p: request.top_p,
        stream: request.stream.unwrap_or(false),
        tools,
        tool_choice,
        metadata: request
            .user
            .as_deref()
            .map(|user_id| MetadataOut { user_id }),
    };
    serde_json::to_vec(&out).map_err(TranslateError::request)
}

/// Appends a turn, merging it into the previous one of the same role
/// (Anthropic wants user and assistant turns to alternate; the tool results
/// answering one assistant turn go together in one user turn).
fn push_turn<'a>(
    messages: &mut Vec<MessageOut<'a>>,
    role: &'static str,
    blocks: Vec<BlockOut<'a>>,
) {
    if blocks.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some(last) if last.role == role => last.content.extend(blocks),
        _ => messages.push(MessageOut {
            role,
            content: blocks,
        }),
    }
}

/// Text and image content as blocks; empty text is left out (Anthropic
/// refuses empty text blocks).
fn user_blocks<'a>(
    content: Option<&'a Content<'a>>,
    i: usize,
) -> Result<Vec<BlockOut<'a>>, TranslateError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(text)) if text.is_empty() => Ok(Vec::new()),
        Some(Content::Text(text)) => Ok(vec![BlockOut::Text {
            text: Cow::Borrowed(text),
        }]),
        Some(Content::Parts(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                match part {
                    Part::Text { text } if text.is_empty() => {}
                    Part::Text { text } => blocks.push(BlockOut::Text {
                        text: Cow::Borrowed(text),
                    }),
                    Part::ImageUrl { image_url } => blocks.push(BlockOut::Image {
                        source: image_source(&image_url.url).map_err(|e| {
                            TranslateError::Request(format!(
                                "messages[{i}].content[{j}] (image_url): {e}"
                            ))
                        })?,
                    }),
                    Part::File { file } => blocks.push(document(file).map_err(|e| {
                        TranslateError::Request(format!("messages[{i}].content[{j}] (file): {e}"))
                    })?),
                    Part::InputAudio { .. } => {
                        return Err(TranslateError::Request(format!(
                            "messages[{i}].content[{j}] (input_audio): Anthropic backends take no audio input"
                        )))
                    }
                    Part::Unsupported => {
                        return Err(TranslateError::Request(format!(
                            "messages[{i}].content[{j}]: only text, image_url and file parts can be sent to Anthropic backends"
                        )))
                    }
                }
            }
            Ok(blocks)
        }
    }
}

/// The image types Anthropic takes.
const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

/// `data:image/png;base64,...` (of a type Anthropic takes) or an http(s) URL.
fn image_source(url: &str) -> Result<ImageSourceOut<'_>, String> {
    match media::source(url)? {
        Source::Inline { media_type, data } => Ok(ImageSourceOut::Base64 {
            media_type: media::accepted(media_type, &IMAGE_TYPES).ok_or_else(|| {
                media::unsupported(media_type, "an image", "Anthropic", &IMAGE_TYPES)
            })?,
            data,
        }),
        Source::Remote(url) => Ok(ImageSourceOut::Url { url }),
    }
}

/// A `file` part holding a PDF as a `document` block.
fn document<'a>(file: &'a openai::File<'a>) -> Result<BlockOut<'a>, String> {
    let Some(file_data) = file.file_data.as_deref() else {
        return Err(
            "only inline files (`file_data`) can be sent to Anthropic backends, not `file_id`"
                .into(),
        );
    };
    let Source::Inline { media_type, data } = media::source(file_data)? else {
        return Err("`file_data` must be a base64 data URL".into());
    };
    let media_type = media::accepted(media_type, &["application/pdf"]).ok_or_else(|| {
        media::unsupported(media_type, "a file", "Anthropic", &["application/pdf"])
    })?;
    Ok(BlockOut::Document {
        source: ImageSourceOut::Base64 { media_type, data },
        title: file.filename.as_deref(),
    })
}

/// An Anthropic Messages request as an OpenAI chat request for `model`.
/// Streams ask for usage (`stream_options.include_usage`): the gateway
/// needs it for the final `message_delta`.
pub fn to_openai(body: &[u8], model: &str) -> Result<Vec<u8>, TranslateError> {
    let request: MessagesRequestIn<'_> =
        serde_json::from_slice(body).map_err(TranslateError::request)?;
    let mut system_blocks = None;
    let mut bodies = Vec::with_capacity(request.messages.len());
    if let Some(system) = request.system {
        system_blocks = Some(
            TextOrBlocks::parse(system)
                .map_err(|e| TranslateError::Request(format!("`system`: {e}")))?,
        );
    }
    for (i, message) in request.messages.iter().enumerate() {
        bodies.push(
            TextOrBlocks::parse(message.content)
                .map_err(|e| TranslateError::Request(format!("messages[{i}].content: {e}")))?,
        );
    }
    let mut messages = Vec::with_capacity(bodies.len() + 1);
    match &system_blocks {
        None => {}
        Some(TextOrBlocks::Text(text)) => messages.push(text_message("system", text.clone())),
        Some(TextOrBlocks::Blocks(blocks)) => {
            let text = join_text(blocks, "system")?;
            messages.push(text_message("system", text));
        }
    }
    for (i, (message, content)) in request.messages.iter().zip(&bodies).enumerate() {
        match (&*message.role, content) {
            ("user" | "assistant", TextOrBlocks::Text(text)) => {
                messages.push(text_message(role(&message.role), text.clone()));
            }
            ("user", TextOrBlocks::Blocks(blocks)) => user_messages(blocks, i, &mut messages)?,
            ("assistant", TextOrBlocks::Blocks(blocks)) => {
                messages.push(assistant_message(blocks, i)?);
            }
            (other, _) => {
                return Err(TranslateError::Request(format!(
                    "messages[{i}]: role `{other}` must be `user` or `assistant`"
                )))
            }
        }
    }
    let mut tools = Vec::new();
    for (i, tool) in request.tools.iter().flatten().enumerate() {
        match tool.kind.as_deref() {
            None | Some("custom") => tools.push(Tool {
                kind: Cow::Borrowed("function"),
                function: FunctionDef {
                    name: Cow::Borrowed(&tool.name),
                    description: tool.description.as_deref().map(Cow::Borrowed),
                    parameters: tool.input_schema,
                },
            }),
            Some(other) => {
                return Err(TranslateError::Request(format!(
                    "tools[{i}]: the server tool `{other}` is only available on Anthropic backends"
                )))
            }
        }
    }
    let tool_choice = request
        .tool_choice
        .as_ref()
        .map(|choice| match &*choice.kind {
            "any" => ToolChoice::Mode(Cow::Borrowed("required")),
            "none" => ToolChoice::Mode(Cow::Borrowed("none")),
            "tool" => ToolChoice::Named {
                kind: Cow::Borrowed("function"),
                function: openai::Named {
                    name: Cow::Borrowed(choice.name.as_deref().unwrap_or_default()),
                },
            },
            _ => ToolChoice::Mode(Cow::Borrowed("auto")),
        });
    let parallel_tool_calls = request
        .tool_choice
        .as_ref()
        .and_then(|c| c.disable_parallel_tool_use)
        .filter(|&disable| disable && !tools.is_empty())
        .map(|_| false);
    let stream = request.stream.unwrap_or(false);
    let out = ChatRequest {
        model: Cow::Borrowed(model),
        messages,
        max_tokens: request.max_tokens,
        temperature: request.temperature,
        top_p: request.top_p,
        stream: stream.then_some(true),
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
        stop: request
            .stop_sequences
            .filter(|s| !s.is_empty())
            .map(Stop::Many),
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        parallel_tool_calls,
        user: request.metadata.and_then(|m| m.user_id),
        ..ChatRequest::default()
    };
    serde_json::to_vec(&out).map_err(TranslateError::request)
}

fn role(role: &str) -> &'static str {
    if role == "assistant" {
        "assistant"
    } else {
        "user"
    }
}

fn text_message<'a>(role: &'static str, text: Cow<'a, str>) -> openai::Message<'a> {
    openai::Message {
        role: Cow::Borrowed(role),
        content: Some(Content::Text(text)),
        ..openai::Message::default()
    }
}

/// The text of text blocks, joined; other blocks are refused.
fn join_text<'a>(blocks: &'a [BlockIn<'a>], field: &str) -> Result<Cow<'a, str>, TranslateError> {
    let mut texts = Vec::with_capacity(blocks.len());
    for (j, block) in blocks.iter().enumerate() {
        match (&*block.kind, &block.text) {
            ("text", Some(text)) => texts.push(&**text),
            (kind, _) => {
                return Err(TranslateError::Request(format!(
                    "{field}[{j}]: a `{kind}` block cannot be sent to an OpenAI-compatible backend here"
                )))
            }
        }
    }
    Ok(match texts.as_slice() {
        [] => Cow::Borrowed(""),
        [one] => Cow::Borrowed(*one),
        many => Cow::Owned(many.join("\n\n")),
    })
}

/// A user turn: its tool results become `tool` messages (first, as OpenAI
/// wants them right after the assistant's calls), the rest one user message.
fn user_messages<'a>(
    blocks: &'a [BlockIn<'a>],
    i: usize,
    messages: &mut Vec<openai::Message<'a>>,
) -> Result<(), TranslateError> {
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        match &*block.kind {
            "text" => parts.push(Part::Text {
                text: Cow::Borrowed(block.text.as_deref().unwrap_or_default()),
            }),
            "image" => parts.push(image_part(block).ok_or_else(|| {
                TranslateError::Request(format!(
                    "messages[{i}].content[{j}]: an image needs a base64 or url source (base64 with `media_type` and `data`)"
                ))
            })?),
            "document" => parts.push(document_part(block).map_err(|e| {
                TranslateError::Request(format!("messages[{i}].content[{j}] (document): {e}"))
            })?),
            "tool_result" => {
                let text = match block.content {
                    None => Cow::Borrowed(""),
                    Some(raw) => match TextOrBlocks::parse(raw).map_err(|e| {
                        TranslateError::Request(format!("messages[{i}].content[{j}].content: {e}"))
                    })? {
                        TextOrBlocks::Text(text) => text,
                        TextOrBlocks::Blocks(inner) => {
                            // The blocks borrow from `raw`, which outlives them;
                            // their joined text is owned.
                            Cow::Owned(
                                join_text(&inner, &format!("messages[{i}].content[{j}].content"))?
                                    .into_owned(),
                            )
                        }
                    },
                };
                let text = if block.is_error == Some(true) {
                    Cow::Owned(format!("Error: {text}"))
                } else {
                    text
                };
                messages.push(openai::Message {
                    role: Cow::Borrowed("tool"),
                    content: Some(Content::Text(text)),
                    tool_call_id: Some(Cow::Borrowed(
                        block.tool_use_id.as_deref().unwrap_or_default(),
                    )),
                    ..openai::Message::default()
                });
            }
            other => {
                return Err(TranslateError::Request(format!(
                    "messages[{i}].content[{j}]: a `{other}` block cannot be sent to an OpenAI-compatible backend"
                )))
            }
        }
    }
    if !parts.is_empty() {
        let content = match parts.as_slice() {
            [Part::Text { text }] => Content::Text(text.clone()),
            _ => Content::Parts(parts),
        };
        messages.push(openai::Message {
            role: Cow::Borrowed("user"),
            content: Some(content),
            ..openai::Message::default()
        });
    }
    Ok(())
}

fn image_part<'a>(block: &'a BlockIn<'a>) -> Option<Part<'a>> {
    let source = block.source.as_ref()?;
    let url = match &*source.kind {
        "base64" => Cow::Owned(media::data_url_of(
            source.media_type.as_deref()?,
            source.data.as_deref()?,
        )),
        "url" => Cow::Borrowed(source.url.as_deref()?),
        _ => return None,
    };
    Some(Part::ImageUrl {
        image_url: ImageUrl { url, detail: None },
    })
}

/// A `document` block: a base64 PDF as a `file` part, plain text as text.
/// A PDF by URL has no OpenAI form (file parts hold data or an OpenAI id).
fn document_part<'a>(block: &'a BlockIn<'a>) -> Result<Part<'a>, String> {
    let Some(source) = block.source.as_ref() else {
        return Err("a document needs a `source`".into());
    };
    match (&*source.kind, source.media_type.as_deref(), source.data.as_deref()) {
        ("base64", Some(media_type), Some(data)) => {
            let media_type = media::accepted(media_type, &["application/pdf"]).ok_or_else(|| {
                format!("a base64 document of type `{media_type}` cannot be translated (only application/pdf)")
            })?;
            Ok(Part::File {
                file: openai::File {
                    file_data: Some(Cow::Owned(media::data_url_of(media_type, data))),
                    file_id: None,
                    filename: Some(block.title.clone().unwrap_or(Cow::Borrowed("document.pdf"))),
                },
            })
        }
        ("text", _, Some(text)) => Ok(Part::Text {
            text: Cow::Borrowed(text),
        }),
        ("url", ..) => Err("a document by URL needs an Anthropic backend; send its bytes (a base64 source) instead".into()),
        (kind, ..) => Err(format!(
            "a document needs a base64 PDF source (with `media_type` and `data`) or a text source here, not `{kind}`"
        )),
    }
}

/// An assistant turn: text joined, tool uses as tool calls, thinking dropped.
fn assistant_message<'a>(
    blocks: &'a [BlockIn<'a>],
    i: usize,
) -> Result<openai::Message<'a>, TranslateError> {
    let mut texts = Vec::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        match &*block.kind {
            "text" => texts.push(block.text.as_deref().unwrap_or_default()),
            "tool_use" => calls.push(ToolCall {
                id: Cow::Borrowed(block.id.as_deref().unwrap_or_default()),
                kind: Cow::Borrowed("function"),
                function: FunctionCall {
                    name: Cow::Borrowed(block.name.as_deref().unwrap_or_default()),
                    arguments: Cow::Borrowed(block.input.map_or("{}", RawValue::get)),
                },
            }),
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(TranslateError::Request(format!(
                    "messages[{i}].content[{j}]: a `{other}` block cannot be sent to an OpenAI-compatible backend"
                )))
            }
        }
    }
    let content = match texts.as_slice() {
        [] => None,
        [one] => Some(Content::Text(Cow::Borrowed(*one))),
        many => Some(Content::Text(Cow::Owned(many.concat()))),
    };
    Ok(openai::Message {
        role: Cow::Borrowed("assistant"),
        content,
        tool_calls: (!calls.is_empty()).then_some(calls),
        ..openai::Message::default()
    })
}
