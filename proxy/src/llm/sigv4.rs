//! AWS Signature Version 4 over the exact request the gateway sends
//! (docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html):
//! the canonical request (method, doubly encoded path, sorted query, the
//! signed headers, the body's SHA-256), the string to sign, the signing key
//! derived from the secret, date, region and service, and the
//! `Authorization` header. HMAC-SHA256 is built here on `sha2` (RFC 2104).
//! Checked against AWS's published test suite vectors. Knows nothing of
//! Bedrock or of where the keys come from; never logs a key.

use std::fmt::Write as _;

use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Uri};
use sha2::{Digest, Sha256};
use sluice_crds::snapshot::AwsCredentials;

/// `x-amz-date`.
const X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
/// `x-amz-security-token`.
const X_AMZ_SECURITY_TOKEN: HeaderName = HeaderName::from_static("x-amz-security-token");

/// Signs requests for one service in one region with one set of keys.
pub struct Signer {
    access_key_id: String,
    /// `AWS4` + the secret access key: the first HMAC key of every signature.
    key_seed: sluice_crds::values::Secret,
    session_token: Option<HeaderValue>,
    region: String,
    service: &'static str,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// Why a request could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The request URL has no host.
    #[error("the upstream URL has no host to sign")]
    NoHost,
    /// The session token cannot be sent as a header.
    #[error("the AWS session token is not a valid header value")]
    BadToken,
}

impl Signer {
    /// A signer for `service` (`bedrock`) in `region`.
    pub fn new(
        credentials: &AwsCredentials,
        region: &str,
        service: &'static str,
    ) -> Result<Self, SignError> {
        let session_token = match &credentials.session_token {
            None => None,
            Some(token) => {
                let mut value =
                    HeaderValue::from_str(token.expose()).map_err(|_| SignError::BadToken)?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Self {
            access_key_id: credentials.access_key_id.clone(),
            key_seed: sluice_crds::values::Secret::new(format!(
                "AWS4{}",
                credentials.secret_access_key.expose()
            )),
            session_token,
            region: region.to_owned(),
            service,
        })
    }

    /// Adds `x-amz-date`, `x-amz-security-token` (with temporary
    /// credentials) and `Authorization` to `headers`, signing `host`,
    /// `content-type` and every `x-amz-*` header, and `body`. `now` is
    /// `YYYYMMDDTHHMMSSZ` (see [`amz_date`]).
    pub fn sign(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &mut HeaderMap,
        body: &[u8],
        now: &str,
    ) -> Result<(), SignError> {
        let host = uri
            .authority()
            .ok_or(SignError::NoHost)?
            .as_str()
            .to_owned();
        if let Ok(date) = HeaderValue::from_str(now) {
            headers.insert(X_AMZ_DATE, date);
        }
        if let Some(token) = &self.session_token {
            headers.insert(X_AMZ_SECURITY_TOKEN, token.clone());
        }
        let mut signed: Vec<(&str, String)> = vec![("host", host)];
        for (name, value) in headers.iter() {
            let name = name.as_str();
            if name == CONTENT_TYPE.as_str() || name.starts_with("x-amz-") {
                signed.push((name, String::from_utf8_lossy(value.as_bytes()).into_owned()));
            }
        }
        let request = Canonical {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query().unwrap_or(""),
            headers: &signed,
            payload_sha256: &hex(&Sha256::digest(body)),
        };
        let authorization = authorization(
            &request,
            &self.access_key_id,
            self.key_seed.expose(),
            &self.region,
            self.service,
            now,
        );
        let mut value = HeaderValue::from_str(&authorization).map_err(|_| SignError::NoHost)?;
        value.set_sensitive(true);
        // `Host` is set by the connection from the same authority.
        headers.insert(AUTHORIZATION, value);
        Ok(())
    }
}

/// `YYYYMMDDTHHMMSSZ` for `seconds` since the Unix epoch, UTC.
pub fn amz_date(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

/// What the canonical request is made of.
pub struct Canonical<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path as sent (already percent-encoded once).
    pub path: &'a str,
    /// The query as sent, without `?`.
    pub query: &'a str,
    /// The signed headers, names lower case, in any order.
    pub headers: &'a [(&'a str, String)],
    /// Hex SHA-256 of the body.
    pub payload_sha256: &'a str,
}

impl Canonical<'_> {
    /// The signed header names, sorted, `;`-joined.
    fn signed_headers(&self) -> String {
        let mut names: Vec<&str> = self.headers.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        names.join(";")
    }

    /// The canonical request text.
    pub fn text(&self) -> String {
        let mut headers: Vec<(&str, String)> = self
            .headers
            .iter()
            .map(|(name, value)| (*name, canonical_value(value)))
            .collect();
        headers.sort_by(|a, b| a.0.cmp(b.0));
        let mut text = String::with_capacity(256);
        let _ = write!(
            text,
            "{}\n{}\n{}\n",
            self.method,
            canonical_path(self.path),
            canonical_query(self.query)
        );
        // Repeated headers: values comma-joined in order.
        let mut i = 0;
        while i < headers.len() {
            let name = headers[i].0;
            let _ = write!(text, "{name}:{}", headers[i].1);
            i += 1;
            while i < headers.len() && headers[i].0 == name {
                let _ = write!(text, ",{}", headers[i].1);
                i += 1;
            }
            text.push('\n');
        }
        let _ = write!(text, "\n{}\n{}", self.signed_headers(), self.payload_sha256);
        text
    }
}

/// The `Authorization` header value. `key_seed` is `AWS4` + the secret
/// access key; `now` is `YYYYMMDDTHHMMSSZ`.
pub fn authorization(
    request: &Canonical<'_>,
    access_key_id: &str,
    key_seed: &str,
    region: &str,
    service: &str,
    now: &str,
) -> String {
    let date = now.get(..8).unwrap_or(now);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{now}\n{scope}\n{}",
        hex(&Sha256::digest(request.text().as_bytes()))
    );
    let mut key = hmac_sha256(key_seed.as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex(&hmac_sha256(&key, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, SignedHeaders={}, Signature={signature}",
        request.signed_headers()
    )
}

/// A header value with its ends trimmed and inner runs of spaces collapsed.
fn canonical_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word.trim_matches('\t'));
    }
    out
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

fn encode_into(out: &mut String, text: &str) {
    for b in text.bytes() {
        if unreserved(b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Every path segment URI-encoded once more, as every service but S3
/// expects (a model id's `%3A` becomes `%253A`).
fn canonical_path(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    let mut out = String::with_capacity(path.len() + 16);
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        encode_into(&mut out, segment);
    }
    out
}

/// Parameters sorted by name (then value), each side encoded.
fn canonical_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let mut n = String::new();
            let mut v = String::new();
            encode_into(&mut n, &percent_decode(name));
            encode_into(&mut v, &percent_decode(value));
            (n, v)
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_at = |j: usize| bytes.get(j).and_then(|b| char::from(*b).to_digit(16));
        match (bytes[i], hex_at(i + 1), hex_at(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(data);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test suite's keys, region, service and time
    /// (docs.aws.amazon.com/general/latest/gr/signature-v4-test-suite.html).
    const ACCESS_KEY_ID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const NOW: &str = "20150830T123600Z";

    fn suite(request: &Canonical<'_>) -> String {
        authorization(
            request,
            ACCESS_KEY_ID,
            &format!("AWS4{SECRET}"),
            "us-east-1",
            "service",
            NOW,
        )
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn get_vanilla() {
        let headers = [
            ("host", "example.amazonaws.com".to_owned()),
            ("x-amz-date", NOW.to_owned()),
        ];
        let request = Canonical {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            payload_sha256: &hex(&Sha256::digest(b"")),
        };
        assert_eq!(
            hex(&Sha256::digest(request.text().as_bytes())),
            "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
            "get-vanilla.creq"
        );
        assert_eq!(
            suite(&request),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn post_x_www_form_urlencoded() {
        let headers = [
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("host", "example.amazonaws.com".to_owned()),
            ("x-amz-date", NOW.to_owned()),
        ];
        let request = Canonical {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            payload_sha256: &hex(&Sha256::digest(b"Param1=value1")),
        };
        assert_eq!(
            suite(&request),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    #[test]
    fn get_vanilla_query_order_key_case() {
        let headers = [
            ("host", "example.amazonaws.com".to_owned()),
            ("x-amz-date", NOW.to_owned()),
        ];
        let request = Canonical {
            method: "GET",
            path: "/",
            query: "Param2=value2&Param1=value1",
            headers: &headers,
            payload_sha256: &hex(&Sha256::digest(b"")),
        };
        assert!(suite(&request).ends_with(
            "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        ));
    }

    #[test]
    fn paths_are_encoded_twice_and_headers_trimmed() {
        assert_eq!(
            canonical_path("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"),
            "/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse"
        );
        assert_eq!(canonical_path(""), "/");
        assert_eq!(canonical_value("  a   b  c "), "a b c");
        assert_eq!(amz_date(1_440_938_160), NOW);
    }

    #[test]
    fn signs_a_request_in_place() {
        let credentials = AwsCredentials {
            access_key_id: ACCESS_KEY_ID.into(),
            secret_access_key: sluice_crds::values::Secret::new(SECRET),
            session_token: Some(sluice_crds::values::Secret::new("token-1")),
        };
        let signer = Signer::new(&credentials, "us-east-1", "bedrock").unwrap();
        let uri: Uri = "https://bedrock-runtime.us-east-1.amazonaws.com/model/m%3A0/converse"
            .parse()
            .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("x-other", HeaderValue::from_static("unsigned"));
        signer
            .sign(&Method::POST, &uri, &mut headers, b"{}", NOW)
            .unwrap();
        assert_eq!(headers["x-amz-date"], NOW);
        assert_eq!(headers["x-amz-security-token"], "token-1");
        let authorization = headers["authorization"].to_str().unwrap();
        assert!(authorization.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
        ));
        assert!(headers["authorization"].is_sensitive());
        assert!(!format!("{signer:?}").contains("EXAMPLEKEY"));
    }
}
