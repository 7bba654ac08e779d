use std::time::{Duration, Instant};

use serde_json::json;
use sluice_crds::snapshot::JwtRules;

use super::jwks::{parse, Jwks};
use super::*;

#[path = "../../tests/support/jwt.rs"]
mod keys;
use keys::{jwks, now, JwksServer, TestKey, EC_P256, RSA_A, RSA_B};

const ISSUER: &str = "https://auth.example.com";

fn validator(uri: &str, refetch: Duration) -> Validator {
    let rules = JwtRules {
        issuer: ISSUER.into(),
        audiences: vec!["sluice".into(), "https://gw.example.com/mcp".into()],
        jwks_uri: uri.into(),
        tenant_claim: "org".into(),
        jwks_refetch_interval: refetch,
    };
    Validator::new(rules, Arc::new(Jwks::new(uri, refetch)))
}

fn claims() -> serde_json::Value {
    json!({"iss": ISSUER, "aud": "sluice", "sub": "alice", "org": "team-a",
        "exp": now() + 300, "iat": now(), "scope": "mcp:tools read", "scp": ["extra"]})
}

fn with(changes: serde_json::Value) -> serde_json::Value {
    let mut claims = claims();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/jwks")
}

#[tokio::test]
async fn valid_tokens_give_tenant_and_scopes() {
    let (rsa, ec) = (TestKey::rsa(RSA_A, "a"), TestKey::ec(EC_P256, "e"));
    let server = JwksServer::start(jwks(&[&rsa, &ec]));
    let v = validator(&server.url, Duration::from_secs(30));
    let pool = Pool::new();
    for key in [&rsa, &ec] {
        let verified = v.validate(&pool, &key.sign(&claims())).await.unwrap();
        assert_eq!(&*verified.tenant, "team-a");
        assert_eq!(verified.scopes, ["mcp:tools", "read", "extra"]);
        assert_eq!(
            verified.missing_scopes(&["read".into(), "write".into()]),
            ["write"]
        );
    }
    // An array audience with one accepted value, and a token inside the leeway.
    let token = rsa.sign(&with(
        json!({"aud": ["other", "https://gw.example.com/mcp"], "exp": now() - 10}),
    ));
    assert!(v.validate(&pool, &token).await.is_ok());
    assert_eq!(server.hits(), 1, "keys are fetched once and cached");
}

#[tokio::test]
async fn bad_tokens_are_refused_with_the_reason() {
    let rsa = TestKey::rsa(RSA_A, "a");
    let server = JwksServer::start(jwks(&[&rsa]));
    let v = validator(&server.url, Duration::from_secs(30));
    let pool = Pool::new();
    let check = |claims: serde_json::Value| rsa.sign(&claims);
    let cases = [
        (
            check(with(json!({"exp": now() - 120}))),
            TokenError::Expired,
        ),
        (
            check(with(json!({"nbf": now() + 120}))),
            TokenError::NotYetValid,
        ),
        (
            check(with(json!({"iss": "https://evil.example.com"}))),
            TokenError::Issuer(ISSUER.into()),
        ),
        (
            check(with(json!({"aud": "someone-else"}))),
            TokenError::Audience("sluice, https://gw.example.com/mcp".into()),
        ),
        (
            check(with(json!({"aud": null}))),
            TokenError::MissingClaim("aud".into()),
        ),
        (
            check(with(json!({"exp": null}))),
            TokenError::MissingClaim("exp".into()),
        ),
        (
            check(with(json!({"org": null}))),
            TokenError::MissingClaim("org".into()),
        ),
        (
            check(with(json!({"org": 7}))),
            TokenError::Tenant("org".into()),
        ),
        (
            check(with(json!({"org": ""}))),
            TokenError::Tenant("org".into()),
        ),
        // Signed by another key under the published kid.
        (
            TestKey::rsa(RSA_B, "a").sign(&claims()),
            TokenError::Signature,
        ),
        (
            TestKey::rsa(RSA_B, "b").sign(&claims()),
            TokenError::UnknownKey("b".into()),
        ),
    ];
    for (token, want) in cases {
        assert_eq!(v.validate(&pool, &token).await, Err(want));
    }
    // A shared-secret token, even one "signed" with the public key's bytes.
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    assert_eq!(
        v.validate(&pool, &hs).await,
        Err(TokenError::Algorithm("HS256".into()))
    );
    let mut tampered = rsa.sign(&claims());
    tampered.insert_str(tampered.find('.').unwrap() + 1, "eyJ");
    assert!(v.validate(&pool, &tampered).await.is_err());
    assert!(matches!(
        v.validate(&pool, "not-a-jwt").await,
        Err(TokenError::Malformed(_))
    ));
}

#[tokio::test]
async fn an_unknown_kid_refetches_at_most_once_per_interval() {
    let (a, b) = (TestKey::rsa(RSA_A, "a"), TestKey::rsa(RSA_B, "b"));
    let server = JwksServer::start(jwks(&[&a]));
    let v = validator(&server.url, Duration::from_millis(500));
    let pool = Pool::new();
    assert!(v.validate(&pool, &a.sign(&claims())).await.is_ok());
    // Rotation: b appears, a goes.
    server.set(jwks(&[&b]));
    let token_b = b.sign(&claims());
    assert_eq!(
        v.validate(&pool, &token_b).await,
        Err(TokenError::UnknownKey("b".into())),
        "too soon after the last fetch"
    );
    assert_eq!(server.hits(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(v.validate(&pool, &token_b).await.is_ok());
    assert_eq!(server.hits(), 2);
    assert_eq!(
        v.validate(&pool, &a.sign(&claims())).await,
        Err(TokenError::UnknownKey("a".into())),
        "a key the set no longer has is refused"
    );
    assert_eq!(server.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_fetch() {
    let a = TestKey::rsa(RSA_A, "a");
    let server = JwksServer::start(jwks(&[&a]));
    let v = Arc::new(validator(&server.url, Duration::from_secs(30)));
    let pool = Pool::new();
    let token = a.sign(&claims());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (v, pool, token) = (v.clone(), pool.clone(), token.clone());
            tokio::spawn(async move { v.validate(&pool, &token).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_ok());
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn unreachable_keys_fail_fast_and_clearly() {
    let a = TestKey::rsa(RSA_A, "a");
    let uri = dead_url();
    let v = validator(&uri, Duration::from_secs(30));
    let pool = Pool::new();
    let error = v.validate(&pool, &a.sign(&claims())).await.unwrap_err();
    assert!(
        matches!(&error, TokenError::KeysUnavailable { uri: u, .. } if *u == uri),
        "{error}"
    );
    assert!(
        error.to_string().contains("could not be fetched"),
        "{error}"
    );
    // The next request does not hammer the dead server: same answer, no wait.
    let started = Instant::now();
    assert!(matches!(
        v.validate(&pool, &a.sign(&claims())).await,
        Err(TokenError::KeysUnavailable { .. })
    ));
    assert!(started.elapsed() < Duration::from_secs(1));

    // A server that accepts and never answers: cut off after the fetch timeout.
    let silent = JwksServer::start(jwks(&[&a]));
    silent.go_silent();
    let v = validator(&silent.url, Duration::from_secs(30));
    let started = Instant::now();
    let error = v.validate(&pool, &a.sign(&claims())).await.unwrap_err();
    assert!(error.to_string().contains("no answer within 5s"), "{error}");
    assert!(started.elapsed() < jwks::FETCH_TIMEOUT + Duration::from_secs(2));
}

#[test]
fn key_sets_keep_only_usable_signing_keys() {
    let (rsa, ec) = (TestKey::rsa(RSA_A, "a"), TestKey::ec(EC_P256, "e"));
    let mut enc = rsa.jwk.clone();
    enc["use"] = json!("enc");
    enc["kid"] = json!("enc");
    let mut oaep = rsa.jwk.clone();
    oaep["alg"] = json!("RSA-OAEP");
    let body = json!({"keys": [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "weird", "kid": "w"},
        enc, oaep, rsa.jwk, ec.jwk,
    ]})
    .to_string();
    let Ok(keys) = parse(body.as_bytes()) else {
        panic!("the set parses")
    };
    let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref().unwrap()).collect();
    assert_eq!(kids, ["a", "e"]);
    assert_eq!(
        keys[0].algorithms,
        [Algorithm::RS256],
        "its declared alg only"
    );
    assert_eq!(keys[1].algorithms, [Algorithm::ES256]);
    let error = |body: &[u8]| parse(body).err().unwrap_or_default();
    assert!(
        error(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).contains("no usable signing key")
    );
    assert!(error(b"<html>").contains("not a JWK set"));
}

#[test]
fn jwt_shapes() {
    assert!(looks_like_jwt(
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_"
    ));
    assert!(!looks_like_jwt("sk-team-a"));
    assert!(!looks_like_jwt("a.b"));
    assert!(!looks_like_jwt("a..c"));
    assert!(!looks_like_jwt("a.b.c.d"));
    assert!(!looks_like_jwt("a.b c.d"));
}
