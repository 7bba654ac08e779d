//! Media checks shared by the provider faces: base64 that decodes
//! (standard alphabet, padded, as the providers' JSON takes it) and bytes
//! that are what their declared type says (the providers sniff images and
//! refuse a PNG labelled `image/jpeg`). A translator that mislabels or
//! mangles media then fails against the face as it would against the
//! provider.

use base64::Engine as _;

/// The bytes of standard, padded base64; `Err` says why not.
pub(crate) fn decode(data: &str) -> Result<Vec<u8>, String> {
    if data.is_empty() {
        return Err("the base64 data is empty".into());
    }
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| format!("the data is not valid base64: {e}"))
}

/// Whether `bytes` start as a file of `media_type` does (types without a
/// known signature pass).
pub(crate) fn looks_like(media_type: &str, bytes: &[u8]) -> bool {
    let riff = |form: &[u8]| bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(form);
    match media_type {
        "image/png" => bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "image/jpeg" => bytes.starts_with(b"\xFF\xD8\xFF"),
        "image/gif" => bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a"),
        "image/webp" => riff(b"WEBP"),
        "audio/wav" => riff(b"WAVE"),
        "audio/mp3" | "audio/mpeg" => {
            bytes.starts_with(b"ID3") || (bytes.first() == Some(&0xFF) && bytes.len() > 1)
        }
        "application/pdf" => bytes.starts_with(b"%PDF-"),
        _ => true,
    }
}

/// Decodes `data` and checks it is a `media_type` file: the message a
/// provider would give otherwise.
pub(crate) fn check(media_type: &str, data: &str) -> Result<(), String> {
    let bytes = decode(data)?;
    if looks_like(media_type, &bytes) {
        Ok(())
    } else {
        Err(format!(
            "the data does not match the declared media type {media_type}"
        ))
    }
}

/// `data:{type};base64,{data}` split and checked, for faces that take
/// OpenAI-style `image_url` parts.
pub(crate) fn check_data_url(url: &str, accepted: &[&str]) -> Result<(), String> {
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(());
    }
    let Some((meta, data)) = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(','))
    else {
        return Err("the image URL must be http(s) or a base64 data URL".into());
    };
    let Some(media_type) = meta.strip_suffix(";base64") else {
        return Err("the data URL must be base64-encoded".into());
    };
    if !accepted.contains(&media_type) {
        return Err(format!("unsupported image type {media_type}"));
    }
    check(media_type, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";

    #[test]
    fn checks_base64_and_signatures() {
        assert!(check("image/png", PNG).is_ok());
        assert!(check("image/jpeg", PNG).unwrap_err().contains("image/jpeg"));
        assert!(check("image/png", "iVBORw0KGgo")
            .unwrap_err()
            .contains("base64"));
        assert!(check("image/png", "").unwrap_err().contains("empty"));
        assert!(check("application/pdf", "JVBERi0=").is_ok());
        assert!(check("audio/wav", "UklGRgAAAABXQVZF").is_ok());
        assert!(check_data_url(&format!("data:image/png;base64,{PNG}"), &["image/png"]).is_ok());
        assert!(check_data_url("https://x.test/a.png", &[]).is_ok());
        assert!(
            check_data_url("data:image/tiff;base64,AAAA", &["image/png"])
                .unwrap_err()
                .contains("image/tiff")
        );
        assert!(check_data_url("ftp://x", &[]).is_err());
    }
}
