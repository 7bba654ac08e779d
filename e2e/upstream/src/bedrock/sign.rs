//! The AWS side of the Bedrock face, written apart from the gateway's code
//! so that each checks the other: SigV4 verification (the canonical request
//! rebuilt from what arrived, the signature recomputed with the test keys)
//! and event stream framing with CRC-32.

use std::fmt::Write as _;

use http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

/// The access key id whose signatures the mock recomputes.
pub const TEST_ACCESS_KEY_ID: &str = "AKIDSLUICETEST";
/// Its secret.
pub const TEST_SECRET_ACCESS_KEY: &str = "sluice/test+SECRET/key0123456789abcdefghij";

type Refused = (StatusCode, &'static str, String);

fn refused(kind: &'static str, message: impl Into<String>) -> Refused {
    (StatusCode::FORBIDDEN, kind, message.into())
}

/// Checks the request's credentials: a bearer API key, or a SigV4
/// signature that is well formed (scope `{date}/{region}/bedrock/aws4_request`
/// matching `x-amz-date`, `host` and `x-amz-date` signed) and, for the test
/// key id or credentials the credential faces handed out, correct.
pub fn verify(method: &str, path: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), Refused> {
    let Some(authorization) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err(refused(
            "UnrecognizedClientException",
            "Missing Authentication Token",
        ));
    };
    if let Some(key) = authorization.strip_prefix("Bearer ") {
        return if key.trim().is_empty() {
            Err(refused(
                "UnrecognizedClientException",
                "Invalid API Key format",
            ))
        } else {
            Ok(())
        };
    }
    let malformed = |what: &str| {
        refused(
            "IncompleteSignatureException",
            format!("Authorization header requires {what}. Authorization={authorization}"),
        )
    };
    let rest = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| malformed("the AWS4-HMAC-SHA256 algorithm"))?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(", ") {
        match part.split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return Err(malformed("Credential, SignedHeaders and Signature")),
        }
    }
    let (credential, signed_headers, signature) = match (credential, signed_headers, signature) {
        (Some(c), Some(h), Some(s)) => (c, h, s),
        _ => return Err(malformed("Credential, SignedHeaders and Signature")),
    };
    let parts: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, terminator] = parts.as_slice() else {
        return Err(malformed(
            "a Credential of KEY/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| malformed("an x-amz-date header"))?;
    let well_formed = amz_date.len() == 16
        && amz_date.starts_with(date)
        && *service == "bedrock"
        && *terminator == "aws4_request"
        && !region.is_empty()
        && signature.len() == 64
        && signature
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if !well_formed {
        return Err(malformed(
            "a scope of the x-amz-date's day for service bedrock and a hex signature",
        ));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"host") || !names.contains(&"x-amz-date") {
        return Err(malformed("host and x-amz-date among the SignedHeaders"));
    }
    let secret = if *key_id == TEST_ACCESS_KEY_ID {
        TEST_SECRET_ACCESS_KEY.to_owned()
    } else if let Some(issued) = crate::aws_creds::lookup(key_id) {
        // Temporary credentials of the credential faces: the session token
        // must come along (signed), before the expiry.
        let token = headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok());
        if token != Some(issued.session_token.as_str()) {
            return Err(refused(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ));
        }
        if !names.contains(&"x-amz-security-token") {
            return Err(malformed("x-amz-security-token among the SignedHeaders"));
        }
        if issued.expires <= std::time::SystemTime::now() {
            return Err(refused(
                "ExpiredTokenException",
                "The security token included in the request is expired",
            ));
        }
        issued.secret_access_key
    } else if key_id.starts_with(crate::aws_creds::ISSUED_KEY_PREFIX) {
        return Err(refused(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    } else {
        return Ok(());
    };
    let mut canonical = format!("{method}\n{}\n\n", canonical_path(path));
    for name in &names {
        let values: Vec<String> = headers
            .get_all(*name)
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if values.is_empty() {
            return Err(malformed(&format!("the signed header {name}")));
        }
        let _ = writeln!(canonical, "{name}:{}", values.join(","));
    }
    let _ = write!(
        canonical,
        "\n{signed_headers}\n{}",
        hex(&Sha256::digest(body))
    );
    let scope = format!("{date}/{region}/bedrock/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    for part in [*region, "bedrock", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    if hex(&hmac(&key, to_sign.as_bytes())) != signature {
        return Err(refused(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
        ));
    }
    Ok(())
}

/// Each path segment encoded again, as SigV4 wants for every service but S3.
fn canonical_path(path: &str) -> String {
    let mut out = String::new();
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        for b in segment.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x36))
        .chain_update(data)
        .finalize();
    Sha256::new()
        .chain_update(block.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// CRC-32 (IEEE), bit by bit: the mock needs no speed.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One event stream message with string headers.
pub fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut head = Vec::new();
    for (name, value) in headers {
        head.push(name.len() as u8);
        head.extend_from_slice(name.as_bytes());
        head.push(7);
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        head.extend_from_slice(value.as_bytes());
    }
    let total = 12 + head.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    let prelude = crc32(&out);
    out.extend_from_slice(&prelude.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// `(:event-type, payload)` of one framed message (tests).
#[cfg(test)]
pub fn unframe(bytes: &[u8]) -> (String, String) {
    let total = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let head_len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    assert_eq!(total, bytes.len());
    assert_eq!(crc32(&bytes[..8]).to_be_bytes(), bytes[8..12]);
    assert_eq!(crc32(&bytes[..total - 4]).to_be_bytes(), bytes[total - 4..]);
    let mut at = 12;
    let mut event = String::new();
    while at < 12 + head_len {
        let name_len = usize::from(bytes[at]);
        let name = &bytes[at + 1..at + 1 + name_len];
        at += 1 + name_len + 1;
        let len = usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]));
        let value = &bytes[at + 2..at + 2 + len];
        at += 2 + len;
        if name == b":event-type" {
            event = String::from_utf8_lossy(value).into_owned();
        }
    }
    (
        event,
        String::from_utf8_lossy(&bytes[12 + head_len..total - 4]).into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn crc_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn refuses_missing_and_malformed_signatures() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            verify("POST", "/", &headers, b"").unwrap_err().0,
            StatusCode::FORBIDDEN
        );
        headers.insert(
            "authorization",
            HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=x"),
        );
        assert_eq!(
            verify("POST", "/", &headers, b"").unwrap_err().1,
            "IncompleteSignatureException"
        );
        headers.insert(
            "authorization",
            HeaderValue::from_static("Bearer bedrock-api-key-1"),
        );
        assert!(verify("POST", "/", &headers, b"").is_ok());
    }

    /// A signature over `headers` made with `secret` for `key_id`.
    fn signed(key_id: &str, secret: &str, token: Option<&str>) -> HeaderMap {
        let amz_date = "20261126T080000Z";
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("bedrock.test"));
        headers.insert("x-amz-date", HeaderValue::from_static(amz_date));
        let mut names = vec!["host", "x-amz-date"];
        if let Some(token) = token {
            headers.insert(
                "x-amz-security-token",
                HeaderValue::from_str(token).unwrap(),
            );
            names.push("x-amz-security-token");
        }
        let mut canonical = "POST\n/model/m/converse\n\n".to_owned();
        for name in &names {
            let _ = writeln!(canonical, "{name}:{}", headers[*name].to_str().unwrap());
        }
        let signed_headers = names.join(";");
        let _ = write!(
            canonical,
            "\n{signed_headers}\n{}",
            hex(&Sha256::digest(b"{}"))
        );
        let scope = "20261126/us-east-1/bedrock/aws4_request";
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let mut key = hmac(format!("AWS4{secret}").as_bytes(), b"20261126");
        for part in ["us-east-1", "bedrock", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let signature = hex(&hmac(&key, to_sign.as_bytes()));
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!(
                "AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
            ))
            .unwrap(),
        );
        headers
    }

    #[test]
    fn verifies_issued_temporary_credentials() {
        use std::time::Duration;
        let path = "/model/m/converse";
        let good = crate::aws_creds::issue("sts", Duration::from_secs(60));
        let (id, secret, token) = (
            good.access_key_id.as_str(),
            good.secret_access_key.as_str(),
            good.session_token.as_str(),
        );
        assert!(verify("POST", path, &signed(id, secret, Some(token)), b"{}").is_ok());
        let kind = |headers: HeaderMap| verify("POST", path, &headers, b"{}").unwrap_err().1;
        assert_eq!(
            kind(signed(id, "wrong", Some(token))),
            "InvalidSignatureException"
        );
        assert_eq!(
            kind(signed(id, secret, None)),
            "UnrecognizedClientException"
        );
        assert_eq!(
            kind(signed(id, secret, Some("other"))),
            "UnrecognizedClientException"
        );
        assert_eq!(
            kind(signed("ASIASLUICE999999X", secret, Some(token))),
            "UnrecognizedClientException"
        );
        let expired = crate::aws_creds::issue("imds", Duration::ZERO);
        assert_eq!(
            kind(signed(
                &expired.access_key_id,
                &expired.secret_access_key,
                Some(&expired.session_token)
            )),
            "ExpiredTokenException"
        );
    }
}
