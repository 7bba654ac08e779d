//! OAuth access tokens of a Google service account, for Vertex AI
//! backends: a JWT signed with the account's key (RS256) is exchanged at
//! the key's `token_uri` for a `cloud-platform` token (RFC 7523, as
//! Google's client libraries do). The token is cached and refreshed
//! [`REFRESH_EARLY`] before it expires by [`Refreshing`] (one fetch at a
//! time, failures repeated for a while, a background refresher). Sources
//! are shared through a
//! process-wide registry keyed by the account ([`TokenSource::shared`]),
//! so a config reload that keeps the same key keeps its live token and
//! refresher instead of fetching anew. Never logs the key or a token.
//! Knows nothing of requests or routing.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use http_body_util::Full;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde::{Deserialize, Serialize};
use sluice_crds::snapshot::ServiceAccount;

use crate::llm::refreshing::{Fetch, Fresh, Refreshing, FETCH_TIMEOUT};
use crate::upstream::Pool;

/// The scope Vertex AI needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// A token is refreshed this long before it expires.
pub const REFRESH_EARLY: Duration = Duration::from_secs(300);
/// Requests do not use a token this close to its expiry.
const MARGIN: Duration = Duration::from_secs(30);
/// Lifetime asked for in the JWT (Google's maximum).
const ASSERTION_LIFETIME: u64 = 3600;
/// Largest token answer read.
const MAX_BODY: usize = 64 << 10;

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not get a Google Cloud access token: {0}")]
pub struct TokenError(pub String);

/// A token as the endpoint handed it out.
struct Token {
    /// `Bearer ...`, marked sensitive.
    header: HeaderValue,
    expires_at: Instant,
}

/// What makes two configs' accounts the same source: the key's identity
/// and where its tokens come from, plus a digest of the key itself (a
/// rotated key under the same id is a new source).
#[derive(Clone, PartialEq, Eq, Hash)]
struct SourceKey {
    client_email: String,
    private_key_id: Option<String>,
    token_uri: String,
    key_digest: [u8; 32],
}

impl SourceKey {
    fn of(account: &ServiceAccount) -> Self {
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            account.private_key.expose().as_bytes(),
        );
        let mut key_digest = [0; 32];
        key_digest.copy_from_slice(digest.as_ref());
        Self {
            client_email: account.client_email.clone(),
            private_key_id: account.private_key_id.clone(),
            token_uri: account.token_uri.clone(),
            key_digest,
        }
    }
}

/// The live sources, held weakly: a source lives while a loaded config
/// uses it (the old config is still loaded while the new one is built, so
/// a reload finds it). Locked only when a config is loaded.
static SOURCES: LazyLock<Mutex<HashMap<SourceKey, Weak<TokenSource>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The tokens of one service account, cached and refreshed
/// ([`Refreshing`]); `get` gives `Bearer TOKEN` for the next request.
pub type TokenSource = Refreshing<GoogleAccount>;

/// A service account whose tokens are fetched.
pub struct GoogleAccount {
    client_email: String,
    key_id: Option<String>,
    token_uri: String,
    key: RsaKeyPair,
}

impl std::fmt::Debug for GoogleAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl Refreshing<GoogleAccount> {
    /// The source for `account`: the live one when a loaded config already
    /// uses the same account (its token and refresher carry over), else a
    /// new one ([`GoogleAccount::new`]).
    pub fn shared(account: &ServiceAccount) -> Result<Arc<Self>, String> {
        let key = SourceKey::of(account);
        let mut sources = SOURCES.lock().unwrap_or_else(PoisonError::into_inner);
        sources.retain(|_, source| source.strong_count() > 0);
        if let Some(source) = sources.get(&key).and_then(Weak::upgrade) {
            return Ok(source);
        }
        let source = Arc::new(Refreshing::new(GoogleAccount::new(account)?));
        sources.insert(key, Arc::downgrade(&source));
        Ok(source)
    }
}

impl Fetch for GoogleAccount {
    type Value = HeaderValue;
    type Error = TokenError;

    async fn fetch(&self, pool: &Arc<Pool>) -> Result<Fresh<HeaderValue>, TokenError> {
        let token = self.fetch_token(pool).await?;
        tracing::debug!(account = %self.client_email, "fetched a Google Cloud access token");
        Ok(Fresh {
            value: token.header,
            use_until: Some(before(token.expires_at, MARGIN)),
            refresh_at: Some(before(token.expires_at, REFRESH_EARLY)),
        })
    }

    fn timed_out(&self) -> TokenError {
        TokenError(format!(
            "{} gave no answer within {}s",
            self.token_uri,
            FETCH_TIMEOUT.as_secs()
        ))
    }

    fn owner(&self) -> &str {
        &self.client_email
    }
}

/// `at` less `early`, or now if that is before the clock's start.
fn before(at: Instant, early: Duration) -> Instant {
    at.checked_sub(early).unwrap_or_else(Instant::now)
}

impl GoogleAccount {
    /// Reads the account's key; nothing is fetched until a request needs a
    /// token. The error never quotes the key.
    pub fn new(account: &ServiceAccount) -> Result<Self, String> {
        let der = pem_body(account.private_key.expose())
            .ok_or("the service account's `private_key` is not a PEM key")?;
        let key = RsaKeyPair::from_pkcs8(&der)
            .or_else(|_| RsaKeyPair::from_der(&der))
            .map_err(|e| format!("the service account's `private_key` is not an RSA key: {e}"))?;
        Ok(Self {
            client_email: account.client_email.clone(),
            key_id: account.private_key_id.clone(),
            token_uri: account.token_uri.clone(),
            key,
        })
    }

    /// The signed assertion (RFC 7523 section 2.1).
    fn assertion(&self) -> Result<String, TokenError> {
        #[derive(Serialize)]
        struct Header<'a> {
            alg: &'static str,
            typ: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            kid: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            scope: &'static str,
            aud: &'a str,
            iat: u64,
            exp: u64,
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut jwt = encoded(&Header {
            alg: "RS256",
            typ: "JWT",
            kid: self.key_id.as_deref(),
        })?;
        jwt.push('.');
        jwt.push_str(&encoded(&Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat: now,
            exp: now + ASSERTION_LIFETIME,
        })?);
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                jwt.as_bytes(),
                &mut signature,
            )
            .map_err(|_| TokenError("signing the assertion failed".into()))?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(jwt)
    }

    /// POSTs the assertion, reads the token.
    async fn fetch_token(&self, pool: &Arc<Pool>) -> Result<Token, TokenError> {
        let assertion = self.assertion()?;
        let form = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
        );
        let mut request = Request::new(Full::new(Bytes::from(form)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self
            .token_uri
            .parse()
            .map_err(|e| TokenError(format!("bad token_uri: {e}")))?;
        request.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let (response, conn) = pool
            .send(request)
            .await
            .map_err(|e| TokenError(format!("{}: {e}", self.token_uri)))?;
        let status = response.status();
        let out = crate::upstream::read_body(response, conn, MAX_BODY)
            .await
            .map_err(TokenError)?;
        parse_answer(status, &out)
    }
}

/// The token endpoint's answer: a token, or its error in words.
fn parse_answer(status: http::StatusCode, body: &[u8]) -> Result<Token, TokenError> {
    #[derive(Deserialize)]
    struct Answer<'a> {
        #[serde(borrow, default)]
        access_token: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        expires_in: Option<u64>,
        #[serde(borrow, default)]
        error: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, default)]
        error_description: Option<std::borrow::Cow<'a, str>>,
    }
    let answer: Option<Answer<'_>> = serde_json::from_slice(body).ok();
    match answer {
        Some(Answer {
            access_token: Some(token),
            expires_in,
            ..
        }) if status.is_success() => {
            let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| TokenError("the token is not a valid header value".into()))?;
            header.set_sensitive(true);
            Ok(Token {
                header,
                expires_at: Instant::now() + Duration::from_secs(expires_in.unwrap_or(3600)),
            })
        }
        Some(Answer {
            error: Some(error),
            error_description,
            ..
        }) => Err(TokenError(format!(
            "the token endpoint answered {status}: {error}{}",
            error_description
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ))),
        _ => Err(TokenError(format!(
            "the token endpoint answered {status} without a token"
        ))),
    }
}

/// The DER bytes of the first PEM block.
fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN ")?;
    let rest = &pem[start..];
    let body_start = rest.find('\n')? + 1;
    let end = rest.find("-----END ")?;
    let body: String = rest
        .get(body_start..end)?
        // Keys pasted into JSON sometimes keep `\n` as two characters.
        .replace("\\n", "")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(body).ok()
}

/// A JWT segment: base64url JSON.
fn encoded<T: Serialize>(value: &T) -> Result<String, TokenError> {
    serde_json::to_vec(value)
        .map(|json| URL_SAFE_NO_PAD.encode(json))
        .map_err(|e| TokenError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_token_answers_and_errors() {
        let ok = parse_answer(
            http::StatusCode::OK,
            br#"{"access_token":"ya29.a","expires_in":3599,"token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(ok.header, "Bearer ya29.a");
        assert!(ok.header.is_sensitive());
        let err = parse_answer(
            http::StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
        )
        .err()
        .unwrap();
        assert_eq!(
            err.to_string(),
            "could not get a Google Cloud access token: the token endpoint answered 400 Bad Request: invalid_grant (Invalid JWT Signature.)"
        );
        let err = parse_answer(http::StatusCode::BAD_GATEWAY, b"<html>")
            .err()
            .unwrap();
        assert!(err.0.contains("502"), "{err}");
    }

    fn test_account(token_uri: &str) -> ServiceAccount {
        #[derive(Deserialize)]
        struct KeyFile {
            private_key: String,
            client_email: String,
            private_key_id: String,
        }
        let file: KeyFile =
            serde_json::from_str(sluice_test_upstream::gemini::TEST_SERVICE_ACCOUNT).unwrap();
        ServiceAccount {
            client_email: file.client_email,
            private_key_id: Some(file.private_key_id),
            private_key: sluice_crds::values::Secret::new(file.private_key),
            token_uri: token_uri.to_owned(),
        }
    }

    #[test]
    fn sources_are_shared_while_a_config_uses_them() {
        let account = test_account("http://127.0.0.1:9/shared-test/token");
        let first = TokenSource::shared(&account).unwrap();
        let again = TokenSource::shared(&account).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "same account, same source");
        let elsewhere =
            TokenSource::shared(&test_account("http://127.0.0.1:9/other/token")).unwrap();
        assert!(!Arc::ptr_eq(&first, &elsewhere), "another token_uri");
        let mut other_id = account.clone();
        other_id.private_key_id = Some("rotated".into());
        assert!(!Arc::ptr_eq(
            &first,
            &TokenSource::shared(&other_id).unwrap()
        ));
        // Once no config holds it, the next load starts afresh.
        let weak = Arc::downgrade(&first);
        drop((first, again));
        assert!(weak.upgrade().is_none());
        let fresh = TokenSource::shared(&account).unwrap();
        assert_eq!(Arc::strong_count(&fresh), 1);
    }

    #[test]
    fn pem_blocks_are_read_with_real_or_escaped_newlines() {
        assert_eq!(
            pem_body("-----BEGIN PRIVATE KEY-----\nAAEC\nAw==\n-----END PRIVATE KEY-----\n"),
            Some(vec![0, 1, 2, 3])
        );
        assert_eq!(pem_body("no pem here"), None);
    }
}
