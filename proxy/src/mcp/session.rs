//! MCP session ids that need no shared store: the id *is* the session's
//! state (route, tenant, protocol version, and each upstream's own session
//! id), sealed with AES-256-GCM under a key derived once from the gateway's
//! `sessionKey`. Any replica with the same key can continue any session; a
//! tampered or foreign id fails to open. Knows nothing of HTTP.

use std::sync::OnceLock;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Versioned prefix of every id, and the associated data it is sealed with.
const PREFIX: &str = "s1.";
const AAD: &[u8] = b"sluice mcp session v1";
const NONCE_LEN: usize = 12;

/// How a session is named in logs when the agent sent no session header:
/// a digest of the id (the id itself continues the session, so it is not
/// written down).
pub fn log_name(session_id: &str) -> String {
    let digest = Sha256::digest(session_id.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("mcp-{hex}")
}

/// What a session id carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// The MCPRoute's name.
    #[serde(rename = "r")]
    pub route: String,
    /// The tenant that opened it (a session cannot change hands).
    #[serde(rename = "t")]
    pub tenant: String,
    /// The protocol version agreed with the client.
    #[serde(rename = "v")]
    pub version: String,
    /// The upstream sessions, one per backend that initialised.
    #[serde(rename = "u")]
    pub upstreams: Vec<UpstreamSession>,
    /// The client's `capabilities` and `clientInfo`, to initialise an
    /// upstream again when its session expires.
    #[serde(rename = "c", default)]
    pub client: serde_json::Value,
}

/// One upstream's part of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamSession {
    /// Backend name.
    #[serde(rename = "b")]
    pub backend: String,
    /// The upstream's `Mcp-Session-Id`, if it issued one.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The protocol version the upstream agreed to.
    #[serde(rename = "v")]
    pub version: String,
}

/// Seals and opens session ids.
pub struct SessionCodec {
    cipher: Aes256Gcm,
}

impl SessionCodec {
    /// A codec keyed from a configured secret (one SHA-256, at start-up).
    pub fn from_secret(secret: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(AAD);
        hasher.update(secret);
        let key: [u8; 32] = hasher.finalize().into();
        Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
        }
    }

    /// A codec with this process's random key: sessions then stay on one
    /// process (but survive config reloads).
    pub fn process_local() -> Self {
        static KEY: OnceLock<[u8; 32]> = OnceLock::new();
        let key = KEY.get_or_init(|| Aes256Gcm::generate_key(&mut OsRng).into());
        Self::from_secret(key)
    }

    /// The id for a session.
    pub fn seal(&self, state: &SessionState) -> String {
        let plain = serde_json::to_vec(state).unwrap_or_default();
        format!("{PREFIX}{}", self.seal_bytes(AAD, &plain))
    }

    /// The session behind an id, or `None` for anything not sealed by this key.
    pub fn open(&self, id: &str) -> Option<SessionState> {
        let plain = self.open_bytes(AAD, id.strip_prefix(PREFIX)?)?;
        serde_json::from_slice(&plain).ok()
    }

    /// Seals any value for one purpose, named by `label` (the associated
    /// data): a value sealed under one label never opens under another, so
    /// an MRTR `requestState` cannot pass for a session id.
    pub fn seal_as<T: Serialize>(&self, label: &[u8], value: &T) -> String {
        let plain = serde_json::to_vec(value).unwrap_or_default();
        self.seal_bytes(label, &plain)
    }

    /// A value sealed by [`seal_as`](Self::seal_as) with the same label and key.
    pub fn open_as<T: serde::de::DeserializeOwned>(&self, label: &[u8], sealed: &str) -> Option<T> {
        serde_json::from_slice(&self.open_bytes(label, sealed)?).ok()
    }

    /// base64url of a random nonce and the ciphertext.
    fn seal_bytes(&self, aad: &[u8], plain: &[u8]) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        // Encryption with a fresh nonce and a valid key cannot fail.
        let sealed = self
            .cipher
            .encrypt(&nonce, Payload { msg: plain, aad })
            .unwrap_or_default();
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn open_bytes(&self, aad: &[u8], sealed: &str) -> Option<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> SessionState {
        SessionState {
            route: "tools".into(),
            tenant: "team-a".into(),
            version: "2025-06-18".into(),
            upstreams: vec![UpstreamSession {
                backend: "kiwi".into(),
                session: Some("abc".into()),
                version: "2025-06-18".into(),
            }],
            client: serde_json::json!({"capabilities": {}}),
        }
    }

    #[test]
    fn round_trips_and_rejects_tampering() {
        let codec = SessionCodec::from_secret(b"a long random secret");
        let id = codec.seal(&state());
        assert!(id.starts_with("s1.") && id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        assert_eq!(codec.open(&id), Some(state()));
        assert_ne!(codec.seal(&state()), id, "fresh nonce per id");

        let mut tampered = id.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(codec.open(&String::from_utf8(tampered).unwrap()), None);
        assert_eq!(codec.open("s1."), None);
        assert_eq!(codec.open("nonsense"), None);
        assert_eq!(
            SessionCodec::from_secret(b"another secret").open(&id),
            None,
            "other keys cannot open it"
        );
        assert_eq!(
            SessionCodec::from_secret(b"a long random secret").open(&id),
            Some(state()),
            "same key, other replica"
        );
    }

    #[test]
    fn labels_keep_purposes_apart() {
        let codec = SessionCodec::from_secret(b"a long random secret");
        let sealed = codec.seal_as(b"request state", &vec![1, 2, 3]);
        assert_eq!(
            codec.open_as::<Vec<u8>>(b"request state", &sealed),
            Some(vec![1, 2, 3])
        );
        assert_eq!(codec.open_as::<Vec<u8>>(b"other", &sealed), None);
        assert_eq!(
            codec.open(&format!("s1.{sealed}")),
            None,
            "not a session id"
        );
        let id = codec.seal(&state());
        assert_eq!(
            codec.open_as::<SessionState>(b"request state", &id[3..]),
            None
        );
    }
}
