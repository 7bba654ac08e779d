//! An OpenAI chat request as a Converse request, in one pass over borrowed
//! structs: system messages to `system`, turns merged so that user and
//! assistant alternate, tool calls and tool results as `toolUse` and
//! `toolResult` blocks, sampling settings to `inferenceConfig`, tools to
//! `toolConfig`. What Converse cannot express is refused with a message
//! naming the field.

use std::borrow::Cow;

use super::{
    BlockOut, ConverseRequest, DocumentOut, Empty, ImageOut, ImageSource, InferenceConfig,
    InputSchema, MessageOut, Named, S3Location, TextBlock, ToolChoiceOut, ToolConfig, ToolOut,
    ToolResultOut, ToolSpec, ToolUseOut,
};
use crate::llm::translate::media::{self, Source};
use crate::llm::translate::openai::{
    self, tool_input, ChatRequest, Content, Part, Stop, ToolChoice,
};
use crate::llm::translate::TranslateError;

/// An OpenAI chat request as a Converse request body (the model goes in
/// the path, see [`super::path`]).
pub fn to_bedrock(body: &[u8]) -> Result<Vec<u8>, TranslateError> {
    let request: ChatRequest<'_> = serde_json::from_slice(body).map_err(TranslateError::request)?;
    if request.n.is_some_and(|n| n > 1) {
        return Err(TranslateError::Request(
            "`n` greater than 1 is not supported by Bedrock backends".into(),
        ));
    }
    request.refuse_audio_output("Bedrock")?;
    let mut system = Vec::new();
    let mut messages: Vec<MessageOut<'_>> = Vec::with_capacity(request.messages.len());
    let mut tool_blocks = false;
    for (i, message) in request.messages.iter().enumerate() {
        match &*message.role {
            "system" | "developer" => match &message.content {
                Some(Content::Text(text)) if !text.is_empty() => system.push(TextBlock { text }),
                Some(Content::Parts(parts)) => {
                    for part in parts {
                        match part {
                            Part::Text { text } if text.is_empty() => {}
                            Part::Text { text } => system.push(TextBlock { text }),
                            _ => {
                                return Err(TranslateError::Request(format!(
                                    "messages[{i}]: a system message can only hold text"
                                )))
                            }
                        }
                    }
                }
                _ => {}
            },
            "user" => {
                let blocks = blocks(message.content.as_ref(), i)?;
                push_turn(&mut messages, "user", blocks);
            }
            "assistant" => {
                let mut blocks = blocks(message.content.as_ref(), i)?;
                for call in message.tool_calls.iter().flatten() {
                    tool_blocks = true;
                    blocks.push(BlockOut::ToolUse(ToolUseOut {
                        tool_use_id: &call.id,
                        name: &call.function.name,
                        input: tool_input(&call.function.arguments).ok_or_else(|| {
                            TranslateError::Request(format!(
                                "messages[{i}]: the arguments of tool call `{}` are not a JSON object",
                                call.id
                            ))
                        })?,
                    }));
                }
                push_turn(&mut messages, "assistant", blocks);
            }
            "tool" => {
                let Some(id) = message.tool_call_id.as_deref() else {
                    return Err(TranslateError::Request(format!(
                        "messages[{i}]: a tool message needs `tool_call_id`"
                    )));
                };
                tool_blocks = true;
                let mut content = blocks(message.content.as_ref(), i)?;
                if content.is_empty() {
                    // Converse wants at least one block in a result.
                    content.push(BlockOut::Text(Cow::Borrowed("(empty)")));
                }
                push_turn(
                    &mut messages,
                    "user",
                    vec![BlockOut::ToolResult(ToolResultOut {
                        tool_use_id: id,
                        content,
                    })],
                );
            }
            other => {
                return Err(TranslateError::Request(format!(
                    "messages[{i}]: role `{other}` is not supported by Bedrock backends"
                )))
            }
        }
    }
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
            tool_spec: ToolSpec {
                name: &tool.function.name,
                description: tool
                    .function
                    .description
                    .as_deref()
                    .filter(|d| !d.is_empty()),
                input_schema: InputSchema {
                    json: tool
                        .function
                        .parameters
                        .map_or_else(super::super::openai::empty_schema, Cow::Borrowed),
                },
            },
        })
        .collect();
    let tool_choice = match &request.tool_choice {
        None => None,
        Some(ToolChoice::Mode(mode)) => match &**mode {
            "required" => Some(ToolChoiceOut::Any(Empty {})),
            "none" => None,
            _ => Some(ToolChoiceOut::Auto(Empty {})),
        },
        Some(ToolChoice::Named { function, .. }) => Some(ToolChoiceOut::Tool(Named {
            name: &function.name,
        })),
    };
    // `none` has no Converse form: the tools are left out, unless the
    // conversation already holds tool blocks (Converse then needs them).
    let none = matches!(&request.tool_choice, Some(ToolChoice::Mode(m)) if m == "none");
    let tool_config =
        (!tools.is_empty() && (!none || tool_blocks)).then_some(ToolConfig { tools, tool_choice });
    let out = ConverseRequest {
        messages,
        system,
        inference_config: InferenceConfig {
            max_tokens: request.max_completion_tokens.or(request.max_tokens),
            temperature: request.temperature.map(|t| t.clamp(0.0, 1.0)),
            top_p: request.top_p,
            stop_sequences,
        },
        tool_config,
    };
    serde_json::to_vec(&out).map_err(TranslateError::request)
}

/// Appends a turn, merging it into the previous one of the same role.
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

/// Text and image content as blocks; empty text is left out (Converse
/// refuses blank text blocks).
fn blocks<'a>(
    content: Option<&'a Content<'a>>,
    i: usize,
) -> Result<Vec<BlockOut<'a>>, TranslateError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(text)) if text.is_empty() => Ok(Vec::new()),
        Some(Content::Text(text)) => Ok(vec![BlockOut::Text(Cow::Borrowed(text))]),
        Some(Content::Parts(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                match part {
                    Part::Text { text } if text.is_empty() => {}
                    Part::Text { text } => blocks.push(BlockOut::Text(Cow::Borrowed(text))),
                    Part::ImageUrl { image_url } => {
                        blocks.push(BlockOut::Image(image(&image_url.url).map_err(|e| {
                            TranslateError::Request(format!(
                                "messages[{i}].content[{j}] (image_url): {e}"
                            ))
                        })?));
                    }
                    Part::File { file } => {
                        blocks.push(BlockOut::Document(document(file, j).map_err(|e| {
                            TranslateError::Request(format!(
                                "messages[{i}].content[{j}] (file): {e}"
                            ))
                        })?));
                    }
                    Part::InputAudio { .. } => {
                        return Err(TranslateError::Request(format!(
                            "messages[{i}].content[{j}] (input_audio): Bedrock's Converse API takes no audio input"
                        )))
                    }
                    Part::Unsupported => {
                        return Err(TranslateError::Request(format!(
                            "messages[{i}].content[{j}]: only text, image_url and file parts can be sent to Bedrock backends"
                        )))
                    }
                }
            }
            Ok(blocks)
        }
    }
}

/// The image types Converse takes, and its name for each.
const IMAGE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

fn image_format(media_type: &str) -> Option<&'static str> {
    Some(match media::accepted(media_type, &IMAGE_TYPES)? {
        "image/png" => "png",
        "image/jpeg" => "jpeg",
        "image/gif" => "gif",
        _ => "webp",
    })
}

/// `data:image/png;base64,...` as an image block with its bytes, or an
/// `s3://` URI as one read from S3. Converse does not fetch http(s) URLs.
fn image(url: &str) -> Result<ImageOut<'_>, String> {
    if url.starts_with("s3://") {
        let format = media::media_type_of_url(url)
            .and_then(image_format)
            .ok_or("an s3:// image needs a .png, .jpg, .jpeg, .gif or .webp name (Converse needs its format)")?;
        return Ok(ImageOut {
            format,
            source: ImageSource::S3Location(S3Location { uri: url }),
        });
    }
    match media::source(url)? {
        Source::Inline { media_type, data } => Ok(ImageOut {
            format: image_format(media_type).ok_or_else(|| {
                media::unsupported(media_type, "an image", "Bedrock", &IMAGE_TYPES)
            })?,
            source: ImageSource::Bytes(data),
        }),
        Source::Remote(_) => Err(
            "Bedrock does not fetch images by http(s) URL: send the bytes as a base64 data URL (data:image/png;base64,...) or an s3:// URI".into(),
        ),
    }
}

/// A `file` part holding a PDF as a document block, named after the
/// file (in the characters Converse allows) or `document-{j}`.
fn document<'a>(file: &'a openai::File<'a>, j: usize) -> Result<DocumentOut<'a>, String> {
    let Some(file_data) = file.file_data.as_deref() else {
        return Err(
            "only inline files (`file_data`) can be sent to Bedrock backends, not `file_id`".into(),
        );
    };
    let Source::Inline { media_type, data } = media::source(file_data)? else {
        return Err("`file_data` must be a base64 data URL".into());
    };
    if media::accepted(media_type, &["application/pdf"]).is_none() {
        return Err(media::unsupported(
            media_type,
            "a file",
            "Bedrock",
            &["application/pdf"],
        ));
    }
    Ok(DocumentOut {
        format: "pdf",
        name: document_name(file.filename.as_deref(), j),
        source: ImageSource::Bytes(data),
    })
}

/// A file name as Converse takes a document's: its extension dropped,
/// other characters than letters, digits, hyphens, parentheses and square
/// brackets as hyphens, runs of spaces as one.
fn document_name<'a>(filename: Option<&'a str>, j: usize) -> Cow<'a, str> {
    let stem = filename
        .map(|f| f.rsplit_once('.').map_or(f, |(stem, _)| stem).trim())
        .unwrap_or_default();
    if stem.is_empty() {
        return Cow::Owned(format!("document-{j}"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-()[]".contains(c);
    if stem.chars().all(allowed) {
        return Cow::Borrowed(stem);
    }
    let mut name = String::with_capacity(stem.len());
    for c in stem.chars() {
        if c.is_whitespace() {
            if !name.ends_with(' ') {
                name.push(' ');
            }
        } else if allowed(c) {
            name.push(c);
        } else {
            name.push('-');
        }
    }
    Cow::Owned(name)
}
