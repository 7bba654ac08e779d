//! Images, audio and documents in translated requests: reading OpenAI's
//! `image_url` URLs (a base64 data URL or an http(s) URL), checking a
//! media type against what a backend accepts, and checking base64 so that a
//! broken data URL is the gateway's clear 400 rather than the provider's
//! puzzling one. Each backend's request translator decides what it takes;
//! this module only reads and checks. Nothing here decodes the bytes.

/// Where an image (or document) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// Inline: `data:{media_type};base64,{data}`.
    Inline {
        /// The media type as written (parameters dropped).
        media_type: &'a str,
        /// The base64 text, checked.
        data: &'a str,
    },
    /// An `http://` or `https://` URL, fetched by the provider.
    Remote(&'a str),
}

/// A data URL, or an http(s) URL; `Err` says what is wrong with it (the
/// caller adds where the part is).
pub fn source(url: &str) -> Result<Source<'_>, String> {
    if let Some(rest) = strip_prefix_ignore_case(url, "data:") {
        let (media_type, data) = data_url(rest)?;
        return Ok(Source::Inline { media_type, data });
    }
    if strip_prefix_ignore_case(url, "https://").is_some()
        || strip_prefix_ignore_case(url, "http://").is_some()
    {
        return Ok(Source::Remote(url));
    }
    Err("the URL must be an http(s) URL or a base64 data URL (data:<media type>;base64,...)".into())
}

/// `{media_type}[;params];base64,{data}` (after `data:`), checked.
fn data_url(rest: &str) -> Result<(&str, &str), String> {
    let malformed = || "malformed data URL: expected data:<media type>;base64,<data>".to_owned();
    let (meta, data) = rest.split_once(',').ok_or_else(malformed)?;
    let mut params = meta.split(';');
    let media_type = params.next().unwrap_or_default().trim();
    if media_type.is_empty() || !media_type.contains('/') {
        return Err(malformed());
    }
    if !params.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return Err("the data URL must be base64-encoded (data:<media type>;base64,<data>)".into());
    }
    check_base64(data)?;
    Ok((media_type, data))
}

/// Standard base64 with padding (RFC 4648 §4), as every provider's JSON
/// takes it: the alphabet, a length that is a multiple of 4, and `=` only
/// at the end. One pass over the bytes, no decoding.
pub fn check_base64(data: &str) -> Result<(), String> {
    let bytes = data.as_bytes();
    if bytes.is_empty() {
        return Err("the base64 data is empty".into());
    }
    if !bytes.len().is_multiple_of(4) {
        return Err(format!(
            "the data is not valid base64 (its length, {}, is not a multiple of 4)",
            bytes.len()
        ));
    }
    let body = bytes
        .strip_suffix(b"==")
        .or_else(|| bytes.strip_suffix(b"="))
        .unwrap_or(bytes);
    match body
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'+' || b == b'/'))
    {
        None => Ok(()),
        Some(at) => Err(format!(
            "the data is not valid base64 (unexpected {:?} at byte {at})",
            char::from(body[at])
        )),
    }
}

/// The canonical spelling of a media type among `accepted`, compared
/// without case (`image/jpg`, a common misspelling, is `image/jpeg`).
pub fn accepted(media_type: &str, accepted: &[&'static str]) -> Option<&'static str> {
    let media_type = if media_type.eq_ignore_ascii_case("image/jpg") {
        "image/jpeg"
    } else {
        media_type
    };
    accepted
        .iter()
        .copied()
        .find(|a| a.eq_ignore_ascii_case(media_type))
}

/// The message for a media type a backend refuses.
pub fn unsupported(media_type: &str, what: &str, backend: &str, list: &[&str]) -> String {
    format!(
        "{what} of type `{media_type}` cannot be sent to {backend} backends (they take {})",
        list.join(", ")
    )
}

/// The audio formats of OpenAI's `input_audio` as media types.
pub fn audio_media_type(format: &str) -> Option<&'static str> {
    match format.to_ascii_lowercase().as_str() {
        "wav" => Some("audio/wav"),
        "mp3" => Some("audio/mp3"),
        _ => None,
    }
}

/// The type a URL's extension names, if a common one (for Gemini's
/// `fileData`, where the type helps the model read a fetched file).
pub fn media_type_of_url(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let file = path.rsplit('/').next().unwrap_or(path);
    let extension = file.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "wav" => "audio/wav",
        "mp3" => "audio/mp3",
        _ => return None,
    })
}

/// A `data:` URL of `media_type` holding `data` (base64), for OpenAI's
/// `image_url` and `file_data`.
pub fn data_url_of(media_type: &str, data: &str) -> String {
    format!("data:{media_type};base64,{data}")
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_data_and_http_urls() {
        assert_eq!(
            source("data:image/png;base64,iVBORw0KGgo="),
            Ok(Source::Inline {
                media_type: "image/png",
                data: "iVBORw0KGgo="
            })
        );
        assert_eq!(
            source("data:image/jpeg;name=a.jpg;base64,/9j/"),
            Ok(Source::Inline {
                media_type: "image/jpeg",
                data: "/9j/"
            })
        );
        assert_eq!(
            source("https://example.com/cat.png"),
            Ok(Source::Remote("https://example.com/cat.png"))
        );
        assert_eq!(
            source("HTTP://example.com/cat"),
            Ok(Source::Remote("HTTP://example.com/cat"))
        );
    }

    #[test]
    fn refuses_broken_urls_with_the_reason() {
        for (url, needle) in [
            ("ftp://example.com/cat.png", "http(s)"),
            ("cat.png", "http(s)"),
            ("", "http(s)"),
            ("data:image/png;base64", "malformed"),
            ("data:;base64,AAAA", "malformed"),
            ("data:image/png,AAAA", "base64-encoded"),
            ("data:image/png;base64,", "empty"),
            ("data:image/png;base64,AAA", "multiple of 4"),
            ("data:image/png;base64,AA A", "unexpected ' '"),
            ("data:image/png;base64,A=AA", "unexpected '='"),
            ("data:image/png;base64,AA-_", "unexpected '-'"),
            ("data:é", "malformed"),
        ] {
            let error = source(url).unwrap_err();
            assert!(error.contains(needle), "{url}: {error}");
        }
    }

    #[test]
    fn media_types_are_matched_without_case() {
        let list = ["image/png", "image/jpeg"];
        assert_eq!(accepted("IMAGE/PNG", &list), Some("image/png"));
        assert_eq!(accepted("image/jpg", &list), Some("image/jpeg"));
        assert_eq!(accepted("image/tiff", &list), None);
        assert_eq!(audio_media_type("WAV"), Some("audio/wav"));
        assert_eq!(audio_media_type("flac"), None);
        assert_eq!(
            media_type_of_url("https://x.test/a.b/cat.JPG?size=2#top"),
            Some("image/jpeg")
        );
        assert_eq!(media_type_of_url("https://x.test/a.b/cat"), None);
    }
}

#[cfg(test)]
#[path = "media_tests.rs"]
mod translator_tests;
