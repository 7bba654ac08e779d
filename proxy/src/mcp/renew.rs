//! Upstream sessions that expired and were re-initialised. The sealed
//! downstream session id keeps naming the first upstream session, so each
//! process remembers which fresh session replaced it; another replica that
//! meets the same expired session re-initialises once on its own. Consulted
//! without a lock while nothing has expired.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

/// Entries kept before the table is cleared (clients then re-initialise
/// upstreams once more; nothing is lost).
const MAX_ENTRIES: usize = 100_000;

/// Sealed upstream session id -> the session that replaced it.
#[derive(Default)]
pub struct Renewals {
    any: AtomicBool,
    map: RwLock<HashMap<String, String>>,
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
    }
}
