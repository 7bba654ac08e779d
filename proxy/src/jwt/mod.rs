//! Bearer JWTs: a token's signature is checked against its issuer's JWKS
//! (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA; never a shared
//! secret, never `none`), then its `iss`, `aud`, `exp` and `nbf`; the tenant
//! and the scopes are read from its claims. Used by client auth (AIGateway
//! `auth.jwt`) and by the OAuth resource server of MCP routes. Knows nothing
//! of HTTP responses, routes or limits.

pub mod jwks;

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, Validation};
use serde_json::{Map, Value};
use sluice_crds::snapshot::JwtRules;

use crate::upstream::Pool;
use jwks::{Jwks, KeyError};

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Longest tenant name taken from a claim.
const MAX_TENANT_LEN: usize = 256;

/// Algorithms a token may be signed with.
const ACCEPTED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or one that cannot be decoded.
    #[error("the token is not a valid JWT ({0})")]
    Malformed(String),
    /// Signed with an algorithm that is not accepted.
    #[error("the token's algorithm {0} is not accepted (RS*, PS*, ES256, ES384 or EdDSA)")]
    Algorithm(String),
    /// Its `kid` is not in the issuer's key set.
    #[error("the token is signed with a key the issuer does not publish (kid {0})")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    Signature,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is still to come.
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    /// `iss` is another issuer.
    #[error("the token's issuer is not {0}")]
    Issuer(String),
    /// `aud` names none of the accepted audiences.
    #[error("the token's audience is none of {0}")]
    Audience(String),
    /// A required claim is missing.
    #[error("the token has no `{0}` claim")]
    MissingClaim(String),
    /// The tenant claim is not a usable name.
    #[error(
        "the token's `{0}` claim is not a tenant name (a non-empty string of at most 256 bytes)"
    )]
    Tenant(String),
    /// The issuer's keys could not be fetched, so no token can be checked.
    #[error("cannot check the token: the signing keys at {uri} could not be fetched ({reason})")]
    KeysUnavailable {
        /// The JWKS URL.
        uri: String,
        /// What went wrong.
        reason: String,
    },
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The tenant, from the tenant claim.
    pub tenant: Arc<str>,
    /// Its scopes (`scope` and `scp`, as a space-separated string or an array).
    pub scopes: Vec<String>,
}

impl Verified {
    /// The `required` scopes the token lacks.
    pub fn missing_scopes<'a>(&self, required: &'a [String]) -> Vec<&'a str> {
        required
            .iter()
            .filter(|s| !self.scopes.contains(s))
            .map(String::as_str)
            .collect()
    }
}

/// Checks tokens of one issuer.
pub struct Validator {
    rules: JwtRules,
    jwks: Arc<Jwks>,
    validation: Validation,
}

impl Validator {
    /// A validator for `rules`, with the key cache of its JWKS URL.
    pub fn new(rules: JwtRules, jwks: Arc<Jwks>) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&rules.issuer]);
        validation.set_audience(&rules.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        Self {
            rules,
            jwks,
            validation,
        }
    }

    /// Its settings.
    pub fn rules(&self) -> &JwtRules {
        &self.rules
    }

    /// Checks `token`; fetches the issuer's keys when they are not cached.
    pub async fn validate(&self, pool: &Arc<Pool>, token: &str) -> Result<Verified, TokenError> {
        let header = decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.as_deref();
        let set = self
            .jwks
            .keys_for(pool, kid, header.alg)
            .await
            .map_err(|e| match e {
                KeyError::Unknown => TokenError::UnknownKey(kid.unwrap_or("none").to_owned()),
                KeyError::Unavailable(reason) => TokenError::KeysUnavailable {
                    uri: self.jwks.uri().to_owned(),
                    reason,
                },
            })?;
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let mut refused = TokenError::Signature;
        for key in set.matching(kid, header.alg) {
            match decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return self.read_claims(&data.claims),
                // Another key of the same kid (or of none) may still verify it.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {}
                Err(e) => {
                    refused = self.refusal(e.into_kind());
                    break;
                }
            }
        }
        Err(refused)
    }

    fn refusal(&self, kind: ErrorKind) -> TokenError {
        match kind {
            ErrorKind::InvalidSignature => TokenError::Signature,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidIssuer => TokenError::Issuer(self.rules.issuer.clone()),
            ErrorKind::InvalidAudience => TokenError::Audience(self.rules.audiences.join(", ")),
            ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim),
            ErrorKind::InvalidAlgorithm => TokenError::Algorithm("for this key".into()),
            other => TokenError::Malformed(format!("{other:?}")),
        }
    }

    fn read_claims(&self, claims: &Map<String, Value>) -> Result<Verified, TokenError> {
        let claim = &self.rules.tenant_claim;
        let tenant = match claims.get(claim) {
            None | Some(Value::Null) => return Err(TokenError::MissingClaim(claim.clone())),
            Some(Value::String(t)) if !t.is_empty() && t.len() <= MAX_TENANT_LEN => t,
            Some(_) => return Err(TokenError::Tenant(claim.clone())),
        };
        let mut scopes = Vec::new();
        for name in ["scope", "scp"] {
            match claims.get(name) {
                Some(Value::String(list)) => {
                    scopes.extend(list.split_whitespace().map(str::to_owned));
                }
                Some(Value::Array(items)) => {
                    scopes.extend(items.iter().filter_map(Value::as_str).map(str::to_owned));
                }
                _ => {}
            }
        }
        Ok(Verified {
            tenant: tenant.as_str().into(),
            scopes,
        })
    }
}

/// Whether a presented credential has the shape of a JWT (three base64url
/// parts), so it is worth checking as one.
pub fn looks_like_jwt(credential: &str) -> bool {
    let mut parts = 0;
    for part in credential.split('.') {
        parts += 1;
        if part.is_empty()
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    parts == 3
}

#[cfg(test)]
mod tests;
