//! Reading what routing and accounting need from an OpenAI-style request
//! body (model, stream, stream_options) without building a JSON tree, and
//! rewriting only those spans when the gateway must (a model override, or
//! asking the upstream for usage on a stream).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The fields of a request body the gateway looks at.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestFields {
    /// `model`.
    pub model: Option<String>,
    /// Byte range of the `model` value (with its quotes).
    pub model_span: Option<Range<usize>>,
    /// `stream: true`.
    pub stream: bool,
    /// Byte range of the `stream_options` value.
    pub stream_options_span: Option<Range<usize>>,
    /// `stream_options.include_usage: true`.
    pub include_usage: bool,
    /// `max_tokens`, `max_completion_tokens` or (Responses) `max_output_tokens`.
    pub max_tokens: Option<u64>,
    /// Byte range of the `max_completion_tokens` value.
    pub max_completion_tokens_span: Option<Range<usize>>,
    /// Whether `max_tokens` is present.
    pub has_max_tokens: bool,
}

/// Request fields a provider refuses, and what becomes of them (from the
/// backend's preset).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quirks {
    /// Remove `stream_options` (the provider sends stream usage on its own).
    pub drop_stream_options: bool,
    /// Send `max_completion_tokens` as `max_tokens`.
    pub rename_max_completion_tokens: bool,
}

/// Why a body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BodyError(pub String);

/// Scans a request body.
pub fn scan(body: &[u8]) -> Result<RequestFields, BodyError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let fields = de
        .deserialize_map(FieldsVisitor {
            base: body.as_ptr() as usize,
        })
        .and_then(|f| de.end().map(|()| f))
        .map_err(|e| BodyError(describe(&e)))?;
    Ok(fields)
}

fn describe(error: &serde_json::Error) -> String {
    if error.is_syntax() || error.is_eof() {
        format!("the request body is not valid JSON: {error}")
    } else {
        format!("invalid request body: {error}")
    }
}

struct FieldsVisitor {
    base: usize,
}

impl FieldsVisitor {
    fn span(&self, raw: &RawValue) -> Range<usize> {
        let start = raw.get().as_ptr() as usize - self.base;
        start..start + raw.get().len()
    }
}

/// A key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = RequestFields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestFields, A::Error> {
        let mut fields = RequestFields::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key.0 {
                "model" => {
                    let raw: &'de RawValue = map.next_value()?;
                    let model: Option<String> = serde_json::from_str(raw.get())
                        .map_err(|_| de::Error::custom("`model` must be a string"))?;
                    fields.model = model;
                    fields.model_span = Some(self.span(raw));
                }
                "stream" => {
                    let stream: Option<bool> = map.next_value()?;
                    fields.stream = stream.unwrap_or(false);
                }
                "stream_options" => {
                    let raw: &'de RawValue = map.next_value()?;
                    let options: Option<StreamOptions> = serde_json::from_str(raw.get())
                        .map_err(|e| de::Error::custom(format!("`stream_options`: {e}")))?;
                    fields.include_usage = options.and_then(|o| o.include_usage).unwrap_or(false);
                    fields.stream_options_span = Some(self.span(raw));
                }
                "max_completion_tokens" => {
                    let raw: &'de RawValue = map.next_value()?;
                    let max: Option<u64> = serde_json::from_str(raw.get()).map_err(|_| {
                        de::Error::custom("`max_completion_tokens` must be a non-negative integer")
                    })?;
                    fields.max_tokens = fields.max_tokens.or(max);
                    fields.max_completion_tokens_span = Some(self.span(raw));
                }
                "max_tokens" | "max_output_tokens" => {
                    let max: Option<u64> = map.next_value()?;
                    fields.max_tokens = fields.max_tokens.or(max);
                    fields.has_max_tokens |= &*key.0 == "max_tokens";
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// The body to send upstream: unchanged (no copy) unless the model must be
/// replaced or usage must be requested on a stream.
pub fn rewrite(
    body: &Bytes,
    fields: &RequestFields,
    model: Option<&str>,
    ask_usage: bool,
) -> Bytes {
    rewrite_with(body, fields, model, ask_usage, Quirks::default())
}

/// [`rewrite`], also adapting the fields a provider refuses. (With
/// `drop_stream_options`, `ask_usage` is ignored.)
pub fn rewrite_with(
    body: &Bytes,
    fields: &RequestFields,
    model: Option<&str>,
    ask_usage: bool,
    quirks: Quirks,
) -> Bytes {
    let mut edits: Vec<(Range<usize>, Cow<'_, [u8]>)> = Vec::new();
    let ask_usage = ask_usage && !quirks.drop_stream_options;
    if quirks.drop_stream_options {
        if let Some(member) = fields
            .stream_options_span
            .as_ref()
            .and_then(|span| member_span(body, span, b"stream_options"))
        {
            edits.push((member, Cow::Borrowed(b"")));
        }
    }
    if quirks.rename_max_completion_tokens {
        if let Some(span) = &fields.max_completion_tokens_span {
            if fields.has_max_tokens {
                // Both given: the provider's own field wins.
                if let Some(member) = member_span(body, span, b"max_completion_tokens") {
                    edits.push((member, Cow::Borrowed(b"")));
                }
            } else if let Some(start) = key_start(body, span.start, b"max_completion_tokens") {
                let key_len = b"\"max_completion_tokens\"".len();
                edits.push((start..start + key_len, Cow::Borrowed(b"\"max_tokens\"")));
            }
        }
    }
    if let (Some(model), Some(span)) = (model, &fields.model_span) {
        let quoted = serde_json::Value::String(model.to_owned()).to_string();
        edits.push((span.clone(), Cow::Owned(quoted.into_bytes())));
    }
    if ask_usage {
        match &fields.stream_options_span {
            Some(span) => {
                let mut options: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&body[span.clone()]).unwrap_or_default();
                options.insert("include_usage".into(), serde_json::Value::Bool(true));
                let text = serde_json::Value::Object(options).to_string();
                edits.push((span.clone(), Cow::Owned(text.into_bytes())));
            }
            None => {
                // Right after the opening brace; the object has keys (`stream` at least).
                let at = body.iter().position(|&b| b == b'{').map_or(0, |p| p + 1);
                edits.push((
                    at..at,
                    Cow::Borrowed(b"\"stream_options\":{\"include_usage\":true},"),
                ));
            }
        }
    }
    if edits.is_empty() {
        return body.clone();
    }
    edits.sort_by_key(|(range, _)| range.start);
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut at = 0;
    for (range, replacement) in &edits {
        out.extend_from_slice(&body[at..range.start]);
        out.extend_from_slice(replacement);
        at = range.end;
    }
    out.extend_from_slice(&body[at..]);
    Bytes::from(out)
}

/// Where the key `"key"` of the member whose value starts at `value_start`
/// begins; `None` when the key is written differently (with escapes).
fn key_start(body: &[u8], value_start: usize, key: &[u8]) -> Option<usize> {
    let mut at = value_start;
    while at > 0 && body[at - 1].is_ascii_whitespace() {
        at -= 1;
    }
    if at == 0 || body[at - 1] != b':' {
        return None;
    }
    at -= 1;
    while at > 0 && body[at - 1].is_ascii_whitespace() {
        at -= 1;
    }
    let quoted_len = key.len() + 2;
    let start = at.checked_sub(quoted_len)?;
    let quoted = &body[start..at];
    (quoted[0] == b'"' && quoted[quoted_len - 1] == b'"' && &quoted[1..quoted_len - 1] == key)
        .then_some(start)
}

/// The bytes to remove to drop a member (key, value and one comma).
fn member_span(body: &[u8], value: &Range<usize>, key: &[u8]) -> Option<Range<usize>> {
    let start = key_start(body, value.start, key)?;
    let mut before = start;
    while before > 0 && body[before - 1].is_ascii_whitespace() {
        before -= 1;
    }
    if before > 0 && body[before - 1] == b',' {
        return Some(before - 1..value.end);
    }
    // The first member: take the comma after it, if any.
    let mut after = value.end;
    while after < body.len() && body[after].is_ascii_whitespace() {
        after += 1;
    }
    if after < body.len() && body[after] == b',' {
        return Some(start..after + 1);
    }
    Some(start..value.end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn scans_the_fields_it_needs() {
        let body = br#"{"messages":[{"role":"user","content":"{\"model\":\"fake\"}"}],"model":"gpt-4o","stream":true,"max_tokens":64}"#;
        let fields = scan(body).unwrap();
        assert_eq!(fields.model.as_deref(), Some("gpt-4o"));
        assert_eq!(&body[fields.model_span.clone().unwrap()], b"\"gpt-4o\"");
        assert!(fields.stream);
        assert!(!fields.include_usage);
        assert_eq!(fields.max_tokens, Some(64));
    }

    #[test]
    fn refuses_bad_bodies_clearly() {
        assert!(scan(b"{\"model\":")
            .unwrap_err()
            .0
            .contains("not valid JSON"));
        assert!(scan(b"[1,2]").unwrap_err().0.contains("JSON object"));
        assert!(scan(b"{\"model\":42}")
            .unwrap_err()
            .0
            .contains("`model` must be a string"));
        assert!(scan(b"{\"stream\":\"yes\"}").is_err());
        assert!(scan(b"{} trailing").is_err());
        assert!(scan(b"").is_err());
        assert_eq!(scan(b"{}").unwrap(), RequestFields::default());
    }

    #[test]
    fn escaped_keys_are_understood() {
        let fields = scan(br#"{"mod\u0065l":"x"}"#).unwrap();
        assert_eq!(fields.model.as_deref(), Some("x"));
    }

    #[test]
    fn rewrites_only_what_it_must() {
        let body = Bytes::from_static(br#"{"model":"gpt-4o","stream":true,"messages":[]}"#);
        let fields = scan(&body).unwrap();
        let same = rewrite(&body, &fields, None, false);
        assert_eq!(same.as_ptr(), body.as_ptr(), "no copy when nothing changes");

        let out = rewrite(&body, &fields, Some("gpt-4o-2024-08-06"), true);
        let out = json(&out);
        assert_eq!(out["model"], "gpt-4o-2024-08-06");
        assert_eq!(out["stream_options"]["include_usage"], true);
        assert_eq!(out["messages"], serde_json::json!([]));
    }

    #[test]
    fn turns_on_usage_in_existing_stream_options() {
        let body = Bytes::from_static(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":false,"x":1}}"#,
        );
        let fields = scan(&body).unwrap();
        assert!(!fields.include_usage);
        let out = json(&rewrite(&body, &fields, None, true));
        assert_eq!(
            out["stream_options"],
            serde_json::json!({"include_usage": true, "x": 1})
        );
    }

    #[test]
    fn drops_stream_options_where_refused() {
        let quirks = Quirks {
            drop_stream_options: true,
            rename_max_completion_tokens: false,
        };
        for text in [
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
            r#"{"stream_options" : {"include_usage":true} , "model":"m","stream":true}"#,
            r#"{"model":"m", "stream_options":null, "stream":true}"#,
        ] {
            let body = Bytes::from(text);
            let fields = scan(&body).unwrap();
            let out = rewrite_with(&body, &fields, Some("x"), true, quirks);
            let out = json(&out);
            assert_eq!(
                out,
                serde_json::json!({"model":"x","stream":true}),
                "{text}"
            );
        }
        // Nothing to drop: the body is not copied, and no usage is asked for.
        let body = Bytes::from_static(br#"{"model":"m","stream":true}"#);
        let fields = scan(&body).unwrap();
        let out = rewrite_with(&body, &fields, None, true, quirks);
        assert_eq!(out.as_ptr(), body.as_ptr());
    }

    #[test]
    fn renames_max_completion_tokens_where_refused() {
        let quirks = Quirks {
            drop_stream_options: false,
            rename_max_completion_tokens: true,
        };
        let body = Bytes::from_static(br#"{"model":"m","max_completion_tokens": 64}"#);
        let fields = scan(&body).unwrap();
        assert_eq!(fields.max_tokens, Some(64));
        let out = json(&rewrite_with(&body, &fields, None, false, quirks));
        assert_eq!(out, serde_json::json!({"model":"m","max_tokens":64}));

        let body =
            Bytes::from_static(br#"{"max_completion_tokens":64,"model":"m","max_tokens":32}"#);
        let fields = scan(&body).unwrap();
        let out = json(&rewrite_with(&body, &fields, None, false, quirks));
        assert_eq!(out, serde_json::json!({"model":"m","max_tokens":32}));

        assert!(scan(br#"{"max_completion_tokens":"x"}"#)
            .unwrap_err()
            .0
            .contains("max_completion_tokens"));
        let fields = scan(br#"{"max_output_tokens":9}"#).unwrap();
        assert_eq!(fields.max_tokens, Some(9));
    }

    #[test]
    fn never_panics_on_mangled_bodies() {
        let valid = br#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false},"max_tokens":5,"max_completion_tokens":7,"messages":[{"role":"user","content":"h\u00e9llo"}]}"#;
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let mut body = valid.to_vec();
            for _ in 0..rng.usize(1..4) {
                match rng.u8(0..3) {
                    0 => {
                        let at = rng.usize(..body.len());
                        body[at] = rng.u8(..);
                    }
                    1 => body.truncate(rng.usize(..body.len())),
                    _ => {
                        let at = rng.usize(..=body.len());
                        let junk: &[u8] = b"{}[]\",:0e-";
                        body.insert(at, junk[rng.usize(..junk.len())]);
                    }
                }
                if body.is_empty() {
                    break;
                }
            }
            if let Ok(fields) = scan(&body) {
                let bytes = Bytes::from(body);
                let _ = rewrite(&bytes, &fields, Some("other"), true);
                let all = Quirks {
                    drop_stream_options: true,
                    rename_max_completion_tokens: true,
                };
                let _ = rewrite_with(&bytes, &fields, Some("other"), true, all);
            }
        }
    }
}
