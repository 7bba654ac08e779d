//! An OpenAI chat request as a Gemini `generateContent` body
//! ([`to_gemini`]), in one pass over borrowed structs. The model and
//! whether to stream are not in the body: they are in the URL. Tool call
//! arguments are copied as raw JSON; tool schemas are the one place a
//! document is rebuilt, to keep only the OpenAPI subset Gemini accepts.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{
    signature_of, Blob, ContentOut, FileData, FunctionCallOut, FunctionCallingConfigOut,
    FunctionDeclarationOut, FunctionResponseOut, GenerateRequestOut, GenerationConfigOut, PartOut,
    SystemOut, ToolConfigOut, ToolOut,
};
use crate::llm::translate::media::{self, Source};
use crate::llm::translate::openai::{
    self, tool_input, ChatRequest, Content, Part, Stop, ToolChoice,
};
use crate::llm::translate::TranslateError;

/// An OpenAI chat request as a Gemini `generateContent` body.
pub fn to_gemini(body: &[u8]) -> Result<Vec<u8>, TranslateError> {
    let request: ChatRequest<'_> = serde_json::from_slice(body).map_err(TranslateError::request)?;
    if request.n.is_some_and(|n| n > 1) {
        return Err(TranslateError::Request(
            "`n` greater than 1 is not supported by Gemini backends".into(),
        ));
    }
    request.refuse_audio_output("Gemini")?;
    // Tool call id -> function name, for the tool messages that answer them.
    let mut called: HashMap<&str, &str> = HashMap::new();
    let mut system: Vec<PartOut<'_>> = Vec::new();
    let mut contents: Vec<ContentOut<'_>> = Vec::with_capacity(request.messages.len());
    for (i, message) in request.messages.iter().enumerate() {
        match &*message.role {
            "system" | "developer" => match &message.content {
                Some(Content::Text(text)) => system.push(text_part(text)),
                Some(Content::Parts(parts)) => {
                    for part in parts {
                        match part {
                            Part::Text { text } => system.push(text_part(text)),
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
                let parts = user_parts(message.content.as_ref(), i)?;
                push_turn(&mut contents, "user", parts);
            }
            "assistant" => {
                let mut parts = user_parts(message.content.as_ref(), i)?;
                for call in message.tool_calls.iter().flatten() {
                    called.insert(&call.id, &call.function.name);
                    let args = tool_input(&call.function.arguments).ok_or_else(|| {
                        TranslateError::Request(format!(
                            "messages[{i}]: the arguments of tool call `{}` are not a JSON object",
                            call.id
                        ))
                    })?;
                    parts.push(PartOut {
                        function_call: Some(FunctionCallOut {
                            name: &call.function.name,
                            args,
                        }),
                        thought_signature: signature_of(&call.id),
                        ..PartOut::default()
                    });
                }
                push_turn(&mut contents, "model", parts);
            }
            "tool" => {
                let Some(id) = message.tool_call_id.as_deref() else {
                    return Err(TranslateError::Request(format!(
                        "messages[{i}]: a tool message needs `tool_call_id`"
                    )));
                };
                let Some(name) = called.get(id).copied().or(message.name.as_deref()) else {
                    return Err(TranslateError::Request(format!(
                        "messages[{i}]: `tool_call_id` {id} answers no earlier tool call"
                    )));
                };
                let response = tool_response(message.content.as_ref(), i)?;
                push_turn(
                    &mut contents,
                    "user",
                    vec![PartOut {
                        function_response: Some(FunctionResponseOut { name, response }),
                        ..PartOut::default()
                    }],
                );
            }
            other => {
                return Err(TranslateError::Request(format!(
                    "messages[{i}]: role `{other}` is not supported by Gemini backends"
                )))
            }
        }
    }
    let mut declarations = Vec::new();
    for (i, tool) in request.tools.iter().flatten().enumerate() {
        let parameters = match tool.function.parameters {
            None => None,
            Some(raw) => gemini_schema(raw, true).map_err(|e| {
                TranslateError::Request(format!("tools[{i}].function.parameters: {e}"))
            })?,
        };
        declarations.push(FunctionDeclarationOut {
            name: &tool.function.name,
            description: tool.function.description.as_deref(),
            parameters,
        });
    }
    let tool_config = match &request.tool_choice {
        None => None,
        Some(ToolChoice::Mode(mode)) => Some((
            match &**mode {
                "none" => "NONE",
                "required" => "ANY",
                _ => "AUTO",
            },
            Vec::new(),
        )),
        Some(ToolChoice::Named { function, .. }) => Some(("ANY", vec![&*function.name])),
    }
    .filter(|_| !declarations.is_empty())
    .map(|(mode, allowed_function_names)| ToolConfigOut {
        function_calling_config: FunctionCallingConfigOut {
            mode,
            allowed_function_names,
        },
    });
    let (response_mime_type, response_schema) = match &request.response_format {
        Some(format) if format.kind == "json_object" => (Some("application/json"), None),
        Some(format) if format.kind == "json_schema" => {
            let schema = match format.json_schema.as_ref().and_then(|s| s.schema) {
                None => None,
                Some(raw) => gemini_schema(raw, false).map_err(|e| {
                    TranslateError::Request(format!("response_format.json_schema.schema: {e}"))
                })?,
            };
            (Some("application/json"), schema)
        }
        _ => (None, None),
    };
    let out = GenerateRequestOut {
        contents,
        system_instruction: (!system.is_empty()).then_some(SystemOut { parts: system }),
        tools: if declarations.is_empty() {
            Vec::new()
        } else {
            vec![ToolOut {
                function_declarations: declarations,
            }]
        },
        tool_config,
        generation_config: GenerationConfigOut {
            stop_sequences: match &request.stop {
                None => Vec::new(),
                Some(Stop::One(one)) => vec![&**one],
                Some(Stop::Many(many)) => many.iter().map(|s| &**s).collect(),
            },
            max_output_tokens: request.max_completion_tokens.or(request.max_tokens),
            temperature: request.temperature,
            top_p: request.top_p,
            response_mime_type,
            response_schema,
        },
    };
    serde_json::to_vec(&out).map_err(TranslateError::request)
}

fn text_part<'a>(text: &'a str) -> PartOut<'a> {
    PartOut {
        text: Some(Cow::Borrowed(text)),
        ..PartOut::default()
    }
}

/// Appends a turn, merging it into the previous one of the same role (the
/// answers to one model turn's calls go together in one user turn).
fn push_turn<'a>(contents: &mut Vec<ContentOut<'a>>, role: &'static str, parts: Vec<PartOut<'a>>) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some(last) if last.role == role => last.parts.extend(parts),
        _ => contents.push(ContentOut { role, parts }),
    }
}

/// Text and image content as parts; empty text is left out.
fn user_parts<'a>(
    content: Option<&'a Content<'a>>,
    i: usize,
) -> Result<Vec<PartOut<'a>>, TranslateError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(text)) if text.is_empty() => Ok(Vec::new()),
        Some(Content::Text(text)) => Ok(vec![text_part(text)]),
        Some(Content::Parts(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                match part {
                    Part::Text { text } if text.is_empty() => {}
                    Part::Text { text } => out.push(text_part(text)),
                    Part::ImageUrl { image_url } => out.push(image_part(&image_url.url).map_err(|e| {
                        TranslateError::Request(format!(
                            "messages[{i}].content[{j}] (image_url): {e}"
                        ))
                    })?),
                    Part::InputAudio { input_audio } => out.push(audio_part(input_audio).map_err(|e| {
                        TranslateError::Request(format!(
                            "messages[{i}].content[{j}] (input_audio): {e}"
                        ))
                    })?),
                    Part::File { file } => out.push(file_part(file).map_err(|e| {
                        TranslateError::Request(format!("messages[{i}].content[{j}] (file): {e}"))
                    })?),
                    Part::Unsupported => {
                        return Err(TranslateError::Request(format!(
                            "messages[{i}].content[{j}]: only text, image_url, input_audio and file parts can be sent to Gemini backends"
                        )))
                    }
                }
            }
            Ok(out)
        }
    }
}

/// The image types Gemini takes.
const IMAGE_TYPES: [&str; 5] = [
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/heic",
    "image/heif",
];

/// The document types the gateway sends Gemini from a `file` part.
const DOCUMENT_TYPES: [&str; 1] = ["application/pdf"];

fn inline<'a>(mime_type: &'static str, data: &'a str) -> PartOut<'a> {
    PartOut {
        inline_data: Some(Blob { mime_type, data }),
        ..PartOut::default()
    }
}

/// `data:image/png;base64,...` as `inlineData`; an http(s) URL as
/// `fileData`, which Gemini fetches itself (public or signed URLs), with
/// the type its extension names when it names a known one.
fn image_part(url: &str) -> Result<PartOut<'_>, String> {
    match media::source(url)? {
        Source::Inline { media_type, data } => {
            let mime_type = media::accepted(media_type, &IMAGE_TYPES).ok_or_else(|| {
                media::unsupported(media_type, "an image", "Gemini", &IMAGE_TYPES)
            })?;
            Ok(inline(mime_type, data))
        }
        Source::Remote(url) => Ok(PartOut {
            file_data: Some(FileData {
                mime_type: media::media_type_of_url(url),
                file_uri: url,
            }),
            ..PartOut::default()
        }),
    }
}

/// `input_audio` (base64 wav or mp3) as `inlineData` of `audio/wav` or `audio/mp3`.
fn audio_part<'a>(audio: &'a openai::InputAudio<'a>) -> Result<PartOut<'a>, String> {
    let mime_type = media::audio_media_type(&audio.format)
        .ok_or_else(|| format!("the audio format `{}` is not one of wav, mp3", audio.format))?;
    media::check_base64(&audio.data)?;
    Ok(inline(mime_type, &audio.data))
}

/// A `file` part holding a PDF (`file_data`) as `inlineData`.
fn file_part<'a>(file: &'a openai::File<'a>) -> Result<PartOut<'a>, String> {
    let Some(file_data) = file.file_data.as_deref() else {
        return Err(
            "only inline files (`file_data`) can be sent to Gemini backends, not `file_id`".into(),
        );
    };
    let Source::Inline { media_type, data } = media::source(file_data)? else {
        return Err("`file_data` must be a base64 data URL".into());
    };
    let mime_type = media::accepted(media_type, &DOCUMENT_TYPES)
        .ok_or_else(|| media::unsupported(media_type, "a file", "Gemini", &DOCUMENT_TYPES))?;
    Ok(inline(mime_type, data))
}

/// A tool message's content as a `functionResponse.response` object: a
/// JSON object as is, any other text as `{"content": text}`.
fn tool_response<'a>(
    content: Option<&'a Content<'a>>,
    i: usize,
) -> Result<Cow<'a, RawValue>, TranslateError> {
    let text: Cow<'a, str> = match content {
        None => Cow::Borrowed(""),
        Some(Content::Text(text)) => Cow::Borrowed(text),
        Some(Content::Parts(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                match part {
                    Part::Text { text } => texts.push(&**text),
                    _ => {
                        return Err(TranslateError::Request(format!(
                            "messages[{i}].content[{j}]: a tool result can only hold text for Gemini backends"
                        )))
                    }
                }
            }
            Cow::Owned(texts.concat())
        }
    };
    if let Cow::Borrowed(text) = text {
        if let Some(raw) = tool_input(text).filter(|_| !text.trim().is_empty()) {
            return Ok(raw);
        }
    }
    #[derive(Serialize)]
    struct Wrapped<'t> {
        content: &'t str,
    }
    let wrapped = serde_json::to_string(&Wrapped { content: &text })
        .map_err(|e| TranslateError::Request(e.to_string()))?;
    RawValue::from_string(wrapped)
        .map(Cow::Owned)
        .map_err(|e| TranslateError::Request(e.to_string()))
}

/// The schema keywords Gemini's `Schema` (an OpenAPI 3.0 subset) knows;
/// others (`additionalProperties`, `$schema`, `$ref`, `strict`, ...) make
/// it refuse the request, so they are dropped.
const SCHEMA_KEYS: [&str; 22] = [
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];

/// A JSON schema in the subset Gemini accepts. `None` for a top-level
/// object schema without properties: Gemini refuses an OBJECT with empty
/// `properties`, and a function without `parameters` takes none.
/// Tool schemas are small and rewritten key by key, so this one piece is
/// read into a `Value` (never the request body).
fn gemini_schema(raw: &RawValue, parameters: bool) -> Result<Option<Box<RawValue>>, String> {
    let mut schema: Value = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
    if !schema.is_object() {
        return Err("a schema must be a JSON object".into());
    }
    clean(&mut schema);
    if parameters
        && schema
            .get("properties")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
    {
        return Ok(None);
    }
    serde_json::value::to_raw_value(&schema)
        .map(Some)
        .map_err(|e| e.to_string())
}

fn clean(schema: &mut Value) {
    let Value::Object(map) = schema else {
        return;
    };
    map.retain(|key, _| SCHEMA_KEYS.contains(&key.as_str()));
    // `"type": ["string", "null"]` is `"type": "string", "nullable": true`.
    if let Some(Value::Array(types)) = map.get("type") {
        let nullable = types.iter().any(|t| t == "null");
        let first = types.iter().find(|t| *t != "null").cloned();
        match first {
            Some(first) => {
                map.insert("type".into(), first);
            }
            None => {
                map.remove("type");
            }
        }
        if nullable {
            map.insert("nullable".into(), Value::Bool(true));
        }
    }
    if let Some(Value::Object(properties)) = map.get_mut("properties") {
        properties.values_mut().for_each(clean);
    }
    if let Some(items) = map.get_mut("items") {
        clean(items);
    }
    if let Some(Value::Array(any_of)) = map.get_mut("anyOf") {
        any_of.iter_mut().for_each(clean);
    }
}
