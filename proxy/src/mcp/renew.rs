//! What this process remembers about sessions whose ids cannot change:
//! sessions a client ended with DELETE (their ids must then get 404), and
//! upstream sessions that expired and were re-initialised. The sealed
//! downstream session id keeps naming the first upstream session, so each
//! process remembers which fresh session replaced it; another replica that
//! meets the same expired session re-initialises once on its own. Consulted
//! without a lock while nothing has expired.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use sha2::Digest;

/// Entries kept before the table is cleared (clients then re-initialise
/// upstreams once more; nothing is lost).
const MAX_ENTRIES: usize = 100_000;

/// Sealed upstream session id -> the session that replaced it; and the
/// downstream sessions ended here.
#[derive(Default)]
pub struct Renewals {
    any: AtomicBool,
    map: RwLock<HashMap<String, String>>,
    any_ended: AtomicBool,
    ended: RwLock<HashSet<[u8; 32]>>,
}

impl Renewals {
    /// The session to use for an upstream session named in a sealed id.
    pub fn current(&self, sealed: Option<&str>) -> Option<String> {
        let sealed = sealed?;
        if self.any.load(Ordering::Relaxed) {
            if let Some(fresh) = self
                .map
                .read()
                .ok()
                .and_then(|map| map.get(sealed).cloned())
            {
                return Some(fresh);
            }
        }
        Some(sealed.to_owned())
    }

    /// Remembers that a downstream session was ended (DELETE).
    pub fn end(&self, downstream_id: &str) {
        if let Ok(mut ended) = self.ended.write() {
            if ended.len() >= MAX_ENTRIES {
                ended.clear();
            }
            ended.insert(sha2::Sha256::digest(downstream_id.as_bytes()).into());
            self.any_ended.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a downstream session was ended here.
    pub fn is_ended(&self, downstream_id: &str) -> bool {
        self.any_ended.load(Ordering::Relaxed)
            && self.ended.read().is_ok_and(|ended| {
                ended.contains::<[u8; 32]>(&sha2::Sha256::digest(downstream_id.as_bytes()).into())
            })
    }

    /// Records that `sealed` is now served by `fresh`.
    pub fn record(&self, sealed: &str, fresh: String) {
        if let Ok(mut map) = self.map.write() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(sealed.to_owned(), fresh);
            self.any.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_expired_sessions() {
        let renewals = Renewals::default();
        assert_eq!(renewals.current(Some("a")), Some("a".to_owned()));
        assert_eq!(renewals.current(None), None);
        renewals.record("a", "b".to_owned());
        assert_eq!(renewals.current(Some("a")), Some("b".to_owned()));
        renewals.record("a", "c".to_owned());
        assert_eq!(renewals.current(Some("a")), Some("c".to_owned()));
        assert_eq!(renewals.current(Some("x")), Some("x".to_owned()));
        assert!(!renewals.is_ended("s1.abc"));
        renewals.end("s1.abc");
        assert!(renewals.is_ended("s1.abc") && !renewals.is_ended("s1.abd"));
    }
}
