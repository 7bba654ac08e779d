//! Token estimates for admission: the input tokens a request will be charged
//! before the upstream says, the output it may produce, and a running count
//! of streamed output text. Pure functions of bytes; knows nothing of limits,
//! stores, routing or HTTP, and never panics on what a client sends.
//!
//! There is no real tokenizer here, on purpose. Measured with tiktoken-rs
//! 0.12.1, loading o200k_base costs +45 MiB of RSS and 330 ms, cl100k_base
//! +23 MiB and 72 ms, and the two vocabularies add ~5 MB to the binary; the
//! gateway idles under 30 MiB, and an estimate is settled against the real
//! usage anyway. So text is counted by [`text_tokens`], a one-pass heuristic
//! over character classes, calibrated against o200k_base and cl100k_base:
//! English prose and chat bodies come out 10-15% high, Rust code 15-20%
//! high, markdown with tables ~20% high, hash-heavy JSON ~15% low, Chinese
//! and Japanese ~30% high against o200k (about right against cl100k); over
//! 2 KB windows the ratio stayed within 0.8-1.4 (padded markdown tables up
//! to 2.1), where `bytes / 4` ranged 0.6-1.7. It costs ~4 µs per KB, a
//! twentieth of tiktoken's encode. Claude, Gemini, Llama and Mistral tokenizers were not at hand to
//! measure; they count English within roughly ±20% of cl100k, so expect
//! about ±25% there. Erring high is deliberate: admission reserves the
//! estimate and settlement gives back what was not used.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Tokens added per chat message for its role and separators (OpenAI's
/// published counting: 3 per message, 1 more when it has a `name`).
const PER_MESSAGE: u64 = 3;
/// Tokens for a message's `name`.
const PER_NAME: u64 = 1;
/// Tokens that prime the assistant's reply after the last message.
const REPLY_PRIMING: u64 = 3;
/// How deep tool results may nest content before the rest is counted raw.
const MAX_DEPTH: u8 = 6;

/// Estimated input tokens of an OpenAI-style request body: chat completions
/// (`messages` with text or content parts, `tools`, `functions`), legacy
/// completions (`prompt`), embeddings and Responses (`input`,
/// `instructions`), and Anthropic Messages (`system`, content blocks). Per
/// message it adds OpenAI's overhead (3, +1 for `name`, +3 to prime the
/// reply). An image part costs a fixed amount by model family (see
/// [`image_tokens`]); other binary parts (audio, files) are counted from
/// their encoded size, which overestimates. A body that is not a JSON
/// object is counted as text.
pub fn prompt_tokens(model: &str, body: &[u8]) -> u64 {
    let fields = is_object(body)
        .then(|| serde_json::from_slice::<Body<'_>>(body).ok())
        .flatten();
    match fields {
        Some(fields) => fields.tokens(model),
        None => text_tokens(&String::from_utf8_lossy(body)),
    }
}

/// The most output a request may produce: `max_completion_tokens`, else
/// `max_tokens`, else `max_output_tokens` (Responses API), times `n`
/// (choices, default 1). `None` when the client set no limit; the caller
/// applies its default. Values that are not non-negative integers are
/// ignored, one field at a time.
pub fn output_reservation(body: &[u8]) -> Option<u64> {
    if !is_object(body) {
        return None;
    }
    let fields: Limits<'_> = serde_json::from_slice(body).ok()?;
    let max = [
        fields.max_completion_tokens,
        fields.max_tokens,
        fields.max_output_tokens,
    ]
    .into_iter()
    .flatten()
    .find_map(as_u64)?;
    let choices = fields.n.and_then(as_u64).unwrap_or(1).max(1);
    Some(max.saturating_mul(choices))
}

/// A running estimate of the tokens in streamed output text, cheap enough
/// to call on every chunk (one pass, no allocation). Summing it per chunk
/// counts a word split across two chunks twice, so it errs high.
pub fn output_tokens_in(text: &str) -> u64 {
    text_tokens(text)
}

/// Tokens an image part is estimated at, by model family: OpenAI charges
/// 765 for a 1024x1024 high-detail image, Anthropic about w*h/750 (up to
/// ~1,600 for the largest images it does not downscale), Gemini 258.
pub fn image_tokens(model: &str) -> u64 {
    let model = model.rsplit('/').next().unwrap_or(model);
    if model.starts_with("claude") || model.starts_with("anthropic.") {
        1_600
    } else if model.starts_with("gemini") {
        258
    } else {
        765
    }
}

/// The fields of a request body that carry prompt text. Every other field
/// is skipped without being parsed into a tree.
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
    #[serde(borrow, default)]
    system: Option<&'a RawValue>,
    #[serde(borrow, default)]
    instructions: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    functions: Option<&'a RawValue>,
    #[serde(borrow, default)]
    prompt: Option<&'a RawValue>,
    #[serde(borrow, default)]
    suffix: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

impl Body<'_> {
    fn tokens(&self, model: &str) -> u64 {
        let counter = Counter {
            image: image_tokens(model),
        };
        let mut total: u64 = 0;
        let mut messages: u64 = 0;
        if let Some(raw) = self.messages {
            for item in elements(raw) {
                total = total.saturating_add(counter.item(item));
                messages += 1;
            }
        }
        if let Some(raw) = self.input {
            if raw.get().starts_with('[') {
                for item in elements(raw) {
                    total = total.saturating_add(counter.item(item));
                    messages += u64::from(item.get().starts_with('{'));
                }
            } else {
                total = total.saturating_add(counter.content(raw, 0));
            }
        }
        if messages > 0 {
            total = total.saturating_add(REPLY_PRIMING);
        }
        for raw in [self.system, self.instructions, self.prompt, self.suffix]
            .into_iter()
            .flatten()
        {
            total = total.saturating_add(counter.content(raw, 0));
        }
        for raw in [self.tools, self.functions].into_iter().flatten() {
            total = total.saturating_add(raw_tokens(raw));
        }
        total
    }
}

/// A chat message or a Responses API input item.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
    #[serde(borrow, default)]
    function_call: Option<&'a RawValue>,
    /// `function_call` items of the Responses API.
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
    /// `function_call_output` items of the Responses API.
    #[serde(borrow, default)]
    output: Option<&'a RawValue>,
}

/// A content part (OpenAI) or content block (Anthropic).
#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    /// Anthropic `tool_result` blocks.
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    /// Anthropic `tool_use` blocks.
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

/// Fields that bound a response's length.
#[derive(Deserialize)]
struct Limits<'a> {
    #[serde(borrow, default)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_output_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    n: Option<&'a RawValue>,
}

/// Whether `body` holds a JSON object (serde would also read a struct from
/// an array, by position).
fn is_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn as_u64(raw: &RawValue) -> Option<u64> {
    serde_json::from_str(raw.get()).ok()
}

struct Counter {
    /// Tokens per image part for this model family.
    image: u64,
}

impl Counter {
    /// A message or input item: its overhead and everything it says.
    fn item(&self, raw: &RawValue) -> u64 {
        if !raw.get().starts_with('{') {
            return self.content(raw, 0);
        }
        let Ok(message) = serde_json::from_str::<Message<'_>>(raw.get()) else {
            return raw_tokens(raw);
        };
        let mut total = PER_MESSAGE;
        if let Some(role) = &message.role {
            total = total.saturating_add(text_tokens(role));
        }
        if let Some(name) = &message.name {
            total = total.saturating_add(PER_NAME + text_tokens(name));
        }
        for raw in [message.content, message.output].into_iter().flatten() {
            total = total.saturating_add(self.content(raw, 0));
        }
        for raw in [message.tool_calls, message.function_call, message.arguments]
            .into_iter()
            .flatten()
        {
            total = total.saturating_add(raw_tokens(raw));
        }
        total
    }

    /// Content: a string, an array of parts (or strings, or token ids), a
    /// token id, or null.
    fn content(&self, raw: &RawValue, depth: u8) -> u64 {
        let json = raw.get();
        match json.as_bytes().first() {
            Some(b'"') => string_tokens(raw),
            Some(b'[') if depth < MAX_DEPTH => elements(raw)
                .map(|part| self.part(part, depth + 1))
                .fold(0, u64::saturating_add),
            Some(b'n') => 0,
            Some(b'-' | b'0'..=b'9') => 1,
            _ => raw_tokens(raw),
        }
    }

    fn part(&self, raw: &RawValue, depth: u8) -> u64 {
        if !raw.get().starts_with('{') {
            return self.content(raw, depth);
        }
        let Ok(part) = serde_json::from_str::<Part<'_>>(raw.get()) else {
            return raw_tokens(raw);
        };
        if part.kind.as_deref().is_some_and(|k| k.contains("image")) {
            return self.image;
        }
        let mut total: u64 = 0;
        let mut counted = false;
        if let Some(text) = part.text {
            total = total.saturating_add(string_tokens(text));
            counted = true;
        }
        if let Some(content) = part.content {
            total = total.saturating_add(if depth < MAX_DEPTH {
                self.content(content, depth + 1)
            } else {
                raw_tokens(content)
            });
            counted = true;
        }
        if let Some(input) = part.input {
            let name = part.name.as_deref().map_or(0, text_tokens);
            total = total.saturating_add(raw_tokens(input).saturating_add(name));
            counted = true;
        }
        if counted {
            total
        } else {
            raw_tokens(raw)
        }
    }
}

/// The elements of a JSON array, or nothing when `raw` is not one.
fn elements<'a>(raw: &'a RawValue) -> impl Iterator<Item = &'a RawValue> {
    serde_json::from_str::<Vec<&'a RawValue>>(raw.get())
        .unwrap_or_default()
        .into_iter()
}

/// A JSON string's text, or the raw JSON of anything else.
fn string_tokens(raw: &RawValue) -> u64 {
    match serde_json::from_str::<Cow<'_, str>>(raw.get()) {
        Ok(text) => text_tokens(&text),
        Err(_) => raw_tokens(raw),
    }
}

/// Tool schemas, call arguments and unknown parts, counted as their JSON
/// text (OpenAI renders tool schemas in a terser form, so this errs high).
fn raw_tokens(raw: &RawValue) -> u64 {
    text_tokens(raw.get())
}

/// Letters (ASCII or not, by UTF-8 byte) per token: common words are one
/// token with their leading space, longer ones split every few letters.
const LETTER_BYTES_PER_TOKEN: u64 = 6;
/// BPE vocabularies split digit runs into groups of up to three.
const DIGITS_PER_TOKEN: u64 = 3;
/// Runs of punctuation merge into pairs more often than not.
const PUNCT_PER_TOKEN: u64 = 2;
/// A punctuation character repeating the one before (`----`, `====`).
const REPEATS_PER_TOKEN: u64 = 16;
/// Spaces in a long run (indentation, padded tables).
const SPACES_PER_TOKEN: u64 = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    None,
    Letter,
    Digit,
    Space,
    Newline,
    Punct,
    Symbol,
}

/// Estimated tokens of `text`, in one pass over its characters: runs of
/// letters, digits, spaces, newlines and punctuation each cost what BPE
/// vocabularies typically make of them; a CJK character costs one token.
fn text_tokens(text: &str) -> u64 {
    let mut tokens: u64 = 0;
    let mut class = Class::None;
    let mut run: u64 = 0;
    let mut repeats: u64 = 0;
    let mut previous = '\0';
    for c in text.chars() {
        let (next, weight) = if c.is_ascii() {
            let next = match c {
                'a'..='z' | 'A'..='Z' => Class::Letter,
                '0'..='9' => Class::Digit,
                '\n' | '\r' => Class::Newline,
                // Indentation after a newline is part of the same token.
                ' ' | '\t' if class == Class::Newline => Class::Newline,
                ' ' | '\t' => Class::Space,
                _ => Class::Punct,
            };
            (next, 1)
        } else if is_cjk(c) {
            tokens = tokens.saturating_add(run_tokens(class, run, repeats) + 1);
            (class, run, repeats) = (Class::None, 0, 0);
            previous = c;
            continue;
        } else if c.is_alphabetic() {
            (Class::Letter, c.len_utf8() as u64)
        } else if c.is_whitespace() {
            (Class::Space, 1)
        } else {
            (Class::Symbol, c.len_utf8() as u64)
        };
        if next != class {
            tokens = tokens.saturating_add(run_tokens(class, run, repeats));
            (class, run, repeats) = (next, 0, 0);
        }
        if class == Class::Punct && c == previous {
            repeats += 1;
        } else {
            run += weight;
        }
        previous = c;
    }
    tokens.saturating_add(run_tokens(class, run, repeats))
}

fn run_tokens(class: Class, run: u64, repeats: u64) -> u64 {
    match class {
        Class::None => 0,
        Class::Letter => run.div_ceil(LETTER_BYTES_PER_TOKEN),
        Class::Digit => run.div_ceil(DIGITS_PER_TOKEN),
        // One space joins the word after it; longer runs are a token or so.
        Class::Space => u64::from(run > 1) + run / SPACES_PER_TOKEN,
        Class::Newline => 1 + run / SPACES_PER_TOKEN,
        Class::Punct => run.div_ceil(PUNCT_PER_TOKEN) + repeats / REPEATS_PER_TOKEN,
        // Emoji and other symbols: a token per two UTF-8 bytes.
        Class::Symbol => run.div_ceil(2),
    }
}

/// Han, kana, Hangul and full-width forms: about one token per character.
fn is_cjk(c: char) -> bool {
    matches!(
        u32::from(c),
        0x2E80..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF | 0xFF00..=0xFFEF | 0x20000..=0x3FFFF
    )
}

#[cfg(test)]
#[path = "estimate_tests.rs"]
mod tests;
