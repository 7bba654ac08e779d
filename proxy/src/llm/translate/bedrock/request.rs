//! An OpenAI chat request as a Converse request, in one pass over borrowed
//! structs: system messages to `system`, turns merged so that user and
//! assistant alternate, tool calls and tool results as `toolUse` and
//! `toolResult` blocks, sampling settings to `inferenceConfig`, tools to
//! `toolConfig`. What Converse cannot express is refused with a message
//! naming the field.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::{
    BlockOut, ConverseRequest, Empty, ImageOut, ImageSource, InferenceConfig, InputSchema,
    MessageOut, Named, TextBlock, ToolChoiceOut, ToolConfig, ToolOut, ToolResultOut, ToolSpec,
    ToolUseOut,
};
use crate::llm::translate::openai::{tool_input, ChatRequest, Content, Part, Stop, ToolChoice};
use crate::llm::translate::TranslateError;

/// An empty object schema, for tools defined without parameters.
const EMPTY_SCHEMA: &str = r#"{"type":"object","properties":{}}"#;

/// An OpenAI chat request as a Converse request body (the model goes in
/// the path, see [`super::path`]).
pub fn to_bedrock(body: &[u8]) -> Result<Vec<u8>, TranslateError> {
    let request: ChatRequest<'_> = serde_json::from_slice(body).map_err(TranslateError::request)?;
    if request.n.is_some_and(|n| n > 1) {
        return Err(TranslateError::Request(
            "`n` greater than 1 is not supported by Bedrock backends".into(),
        ));
    }
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
                        .map_or_else(empty_schema, Cow::Borrowed),
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

fn empty_schema<'a>() -> Cow<'a, RawValue> {
    RawValue::from_string(EMPTY_SCHEMA.to_owned())
        .map_or_else(|_| Cow::Owned(Box::<RawValue>::default()), Cow::Owned)
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
                        blocks.push(BlockOut::Image(image(&image_url.url).ok_or_else(|| {
                            TranslateError::Request(format!(
                                "messages[{i}].content[{j}]: Bedrock takes images as base64 data URLs (data:image/png;base64,...) of png, jpeg, gif or webp"
                            ))
                        })?));
                    }
                    Part::Unsupported => {
                        return Err(TranslateError::Request(format!(
                            "messages[{i}].content[{j}]: only text and image parts can be sent to Bedrock backends"
                        )))
                    }
                }
            }
            Ok(blocks)
        }
    }
}

/// `data:image/png;base64,...` as an image block.
fn image(url: &str) -> Option<ImageOut<'_>> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    let format = match media_type {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => return None,
    };
    Some(ImageOut {
        format,
        source: ImageSource { bytes: data },
    })
}
