//! Test tokens: signs JWTs with the test-only keys of `tests/fixtures/jwt`
//! and serves their public halves as a JWKS from a small HTTP server on
//! 127.0.0.1 (a thread, so it serves gateways in other processes too).
//! Shared by `tests/mcp_oauth.rs` and the unit tests of `src/jwt`.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

pub const RSA_A: &str = include_str!("../fixtures/jwt/rsa-a.pem");
pub const RSA_B: &str = include_str!("../fixtures/jwt/rsa-b.pem");
pub const EC_P256: &str = include_str!("../fixtures/jwt/ec-p256.pem");

/// A signing key with its public JWK.
pub struct TestKey {
    pub kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    /// The public half, as a JWK.
    pub jwk: Value,
}

/// The DER inside a PEM file.
pub fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

impl TestKey {
    /// An RS256 key from a PKCS#1 PEM.
    pub fn rsa(pem: &str, kid: &str) -> Self {
        let der = pem_der(pem);
        let pair = RsaKeyPair::from_der(&der).unwrap();
        // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
        let (_, sequence, _) = der_item(pair.public().as_ref());
        let (_, n, rest) = der_item(sequence);
        let (_, e, _) = der_item(rest);
        let unsigned = |b: &[u8]| URL_SAFE_NO_PAD.encode(b.strip_prefix(&[0]).unwrap_or(b));
        let (n, e) = (unsigned(n), unsigned(e));
        Self {
            kid: kid.into(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(&der),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n, "e": e}),
        }
    }

    /// An ES256 key from a PKCS#8 PEM.
    pub fn ec(pem: &str, kid: &str) -> Self {
        let der = pem_der(pem);
        let rng = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng).unwrap();
        let point = pair.public_key().as_ref(); // 0x04 || x || y
        let (x, y) = point[1..].split_at(32);
        Self {
            kid: kid.into(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(&der),
            jwk: json!({"kty": "EC", "kid": kid, "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}),
        }
    }

    /// A token with these claims, signed with this key and naming its kid.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One DER item: its tag, its contents and what follows it.
fn der_item(der: &[u8]) -> (u8, &[u8], &[u8]) {
    let (tag, first) = (der[0], der[1]);
    let (len, start) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let count = (first & 0x7f) as usize;
        let len = der[2..2 + count]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, 2 + count)
    };
    (tag, &der[start..start + len], &der[start + len..])
}

/// A JWKS document of these keys' public halves.
pub fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// A JWKS server: answers every GET with the current document.
pub struct JwksServer {
    /// `http://127.0.0.1:PORT/jwks`.
    pub url: String,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    /// Accept connections but never answer.
    silent: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl JwksServer {
    /// Serves `body` until dropped.
    pub fn start(body: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = Self {
            url: format!("http://127.0.0.1:{port}/jwks"),
            body: Arc::new(Mutex::new(body)),
            hits: Arc::new(AtomicUsize::new(0)),
            silent: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            port,
        };
        let (body, hits, silent, stop) = (
            server.body.clone(),
            server.hits.clone(),
            server.silent.clone(),
            server.stop.clone(),
        );
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                if silent.load(Ordering::SeqCst) {
                    held.push(stream);
                    continue;
                }
                hits.fetch_add(1, Ordering::SeqCst);
                let body = body.lock().unwrap().clone();
                answer(&mut stream, &body);
            }
        });
        server
    }

    /// Replaces the document (key rotation).
    pub fn set(&self, body: String) {
        *self.body.lock().unwrap() = body;
    }

    /// How many requests it answered.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// From now on, accept connections and never answer.
    pub fn go_silent(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }
}

fn answer(stream: &mut TcpStream, body: &str) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
