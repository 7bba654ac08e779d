//! The signing keys published at one JWKS URL: fetched on first use and
//! cached; fetched again when a token names a key id not in the cache (at
//! most once per refetch interval) and when the cache is older than
//! [`MAX_AGE`]. One fetch at a time: other requests that need it wait for
//! that one (bounded by [`FETCH_TIMEOUT`]); requests whose key is cached
//! never wait. No lock is held across an await. Knows nothing of claims.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use http_body_util::Full;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::watch;

use crate::upstream::Pool;

/// Longest wait for a JWKS answer, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Cached keys older than this are fetched again by the next request that
/// uses them (the others keep using the cached ones meanwhile).
pub const MAX_AGE: Duration = Duration::from_secs(600);
/// Largest JWKS document read.
const MAX_BODY: usize = 1 << 20;

/// One verification key of the set.
pub struct SigningKey {
    /// Its `kid`, if the set gives one.
    pub kid: Option<String>,
    /// The public key.
    pub key: DecodingKey,
    /// Algorithms it may verify (from its `alg`, else from its type).
    pub algorithms: Vec<Algorithm>,
}

/// The keys of one fetch.
pub struct KeySet {
    keys: Vec<SigningKey>,
    fetched_at: Instant,
}

impl KeySet {
    /// Keys that may have signed a token with this `kid` and `alg`: those
    /// with that `kid`, or, for a token without one, every key for `alg`.
    pub fn matching<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a SigningKey> + 'a {
        self.keys.iter().filter(move |key| {
            key.algorithms.contains(&alg) && kid.is_none_or(|kid| key.kid.as_deref() == Some(kid))
        })
    }

    fn has(&self, kid: Option<&str>, alg: Algorithm) -> bool {
        self.matching(kid, alg).next().is_some()
    }
}

/// Why no key could be given for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The set has no key with the token's `kid` (and `alg`).
    Unknown,
    /// The set could not be fetched.
    Unavailable(String),
}

/// The key cache of one JWKS URL.
pub struct Jwks {
    uri: String,
    refetch_interval: Duration,
    keys: ArcSwapOption<KeySet>,
    state: Mutex<FetchState>,
}

#[derive(Default)]
struct FetchState {
    /// When the last fetch started.
    last_attempt: Option<Instant>,
    /// Why the last fetch failed; `None` after a success.
    last_error: Option<String>,
    /// Closes when the running fetch ends.
    running: Option<watch::Receiver<()>>,
}

enum Role {
    Lead(watch::Sender<()>),
    Follow(watch::Receiver<()>),
}

impl Jwks {
    /// An empty cache for `uri`; nothing is fetched until a token needs it.
    pub fn new(uri: &str, refetch_interval: Duration) -> Self {
        Self {
            uri: uri.to_owned(),
            refetch_interval,
            keys: ArcSwapOption::empty(),
            state: Mutex::new(FetchState::default()),
        }
    }

    /// The URL keys come from.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// A key set holding a key for a token with this `kid` and `alg`,
    /// fetching it if needed and allowed.
    pub async fn keys_for(
        &self,
        pool: &Arc<Pool>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<KeySet>, KeyError> {
        let cached = self.keys.load_full();
        if let Some(set) = &cached {
            if set.has(kid, alg) {
                if set.fetched_at.elapsed() > MAX_AGE && self.refetch(pool, false).await.is_ok() {
                    // Keys that the fresh set no longer has are revoked.
                    if let Some(fresh) = self.keys.load_full() {
                        if fresh.has(kid, alg) {
                            return Ok(fresh);
                        }
                        return Err(KeyError::Unknown);
                    }
                }
                return Ok(set.clone());
            }
        }
        // Not cached: fetch, unless the last fetch was too recent.
        let refetched = self.refetch(pool, true).await;
        match (self.keys.load_full(), refetched) {
            (Some(set), _) if set.has(kid, alg) => Ok(set),
            (_, Err(Some(error))) => Err(KeyError::Unavailable(error)),
            (None, _) => Err(KeyError::Unavailable("no successful fetch yet".into())),
            (Some(_), _) => Err(KeyError::Unknown),
        }
    }

    /// Fetches the set (or waits for the fetch under way when `wait`).
    /// `Err(None)`: not attempted (too soon after the last one, or another
    /// fetch is running and `wait` is false); `Err(Some(why))`: it failed.
    async fn refetch(&self, pool: &Arc<Pool>, wait: bool) -> Result<(), Option<String>> {
        let role = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(running) = &state.running {
                if !wait {
                    return Err(None);
                }
                Role::Follow(running.clone())
            } else if state
                .last_attempt
                .is_some_and(|at| at.elapsed() < self.refetch_interval)
            {
                return Err(state.last_error.clone());
            } else {
                let (done, running) = watch::channel(());
                state.running = Some(running);
                state.last_attempt = Some(Instant::now());
                Role::Lead(done)
            }
        };
        match role {
            Role::Follow(mut running) => {
                // Resolves when the leader's sender is dropped (done or cancelled).
                let _ = tokio::time::timeout(FETCH_TIMEOUT * 2, running.changed()).await;
                let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.last_error.clone().map_or(Ok(()), |e| Err(Some(e)))
            }
            Role::Lead(done) => {
                let mut lead = Lead {
                    jwks: self,
                    _done: done,
                    finished: false,
                };
                let result = match tokio::time::timeout(FETCH_TIMEOUT, fetch(pool, &self.uri)).await
                {
                    Ok(result) => result,
                    Err(_) => Err(format!("no answer within {}s", FETCH_TIMEOUT.as_secs())),
                };
                let outcome = match result {
                    Ok(keys) => {
                        tracing::debug!(uri = %self.uri, keys = keys.len(), "fetched JWKS");
                        self.keys.store(Some(Arc::new(KeySet {
                            keys,
                            fetched_at: Instant::now(),
                        })));
                        Ok(())
                    }
                    Err(error) => {
                        tracing::warn!(uri = %self.uri, %error, "cannot fetch JWKS");
                        Err(Some(error))
                    }
                };
                lead.finish(outcome.clone().err().flatten());
                outcome
            }
        }
    }
}

/// The fetch under way; dropping it (also when the request that runs it
/// is cancelled) lets waiting requests go on.
struct Lead<'a> {
    jwks: &'a Jwks,
    _done: watch::Sender<()>,
    finished: bool,
}

impl Lead<'_> {
    fn finish(&mut self, error: Option<String>) {
        let mut state = self
            .jwks
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.last_error = error;
        state.running = None;
        self.finished = true;
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // Cancelled mid-fetch: the next request may try again at once.
            let mut state = self
                .jwks
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            state.running = None;
            state.last_attempt = None;
        }
    }
}

/// GETs and parses the set.
async fn fetch(pool: &Arc<Pool>, uri: &str) -> Result<Vec<SigningKey>, String> {
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri.parse().map_err(|e| format!("bad URL: {e}"))?;
    request.headers_mut().insert(
        http::header::ACCEPT,
        HeaderValue::from_static("application/jwk-set+json, application/json"),
    );
    let (response, conn) = pool.send(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let out = crate::upstream::read_body(response, conn, MAX_BODY).await?;
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    parse(&out)
}

/// The usable signing keys of a JWKS document; keys of other types or uses
/// are skipped, as RFC 7517 asks of keys a reader does not understand.
pub fn parse(body: &[u8]) -> Result<Vec<SigningKey>, String> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body)
        .map_err(|e| format!("not a JWK set ({{\"keys\": [...]}}): {e}"))?;
    let keys: Vec<SigningKey> = set
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| signing_key(&jwk))
        .collect();
    if keys.is_empty() {
        return Err("the set has no usable signing key (RSA, EC P-256 or P-384, Ed25519)".into());
    }
    Ok(keys)
}

fn signing_key(jwk: &Jwk) -> Option<SigningKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let mut algorithms = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        // A shared secret has no place in a published set: never accept one.
        AlgorithmParameters::OctetKeyPair(_) | AlgorithmParameters::OctetKey(_) => return None,
    };
    if let Some(declared) = jwk.common.key_algorithm {
        let declared = signature_algorithm(declared)?;
        algorithms.retain(|a| *a == declared);
    }
    if algorithms.is_empty() {
        return None;
    }
    Some(SigningKey {
        kid: jwk.common.key_id.clone(),
        key: DecodingKey::from_jwk(jwk).ok()?,
        algorithms,
    })
}

/// The asymmetric signature algorithm a JWK's `alg` names, if it is one.
fn signature_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        KeyAlgorithm::HS256
        | KeyAlgorithm::HS384
        | KeyAlgorithm::HS512
        | KeyAlgorithm::RSA1_5
        | KeyAlgorithm::RSA_OAEP
        | KeyAlgorithm::RSA_OAEP_256 => return None,
    })
}
