//! The upstream sessions this process keeps for stateless (2026-07-28)
//! clients. Such a client has no session, but the servers behind a route
//! speak the session-based revisions, so the gateway opens their sessions
//! itself, once per route, tenant, config version and set of client
//! capabilities (servers such as `server-everything` offer different tools
//! to a client that can answer elicitation or sampling), and shares them
//! between every stateless request with that key. They are opened lazily by
//! the session path's own `initialize` (so every kind of server it knows
//! joins the same way), renewed by the same renew logic when a server forgot
//! one, and dropped when idle. Knows nothing of HTTP requests or answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sluice_crds::snapshot::McpRoute;

use super::listen::Feed;
use super::servers::{initialize, server, upstream_of, Upstream};
use super::*;

/// Entries kept at most; past it the least recently used go.
const MAX_ENTRIES: usize = 1024;
/// An entry unused this long is dropped (when a new one is made).
const IDLE_LIMIT: Duration = Duration::from_secs(30 * 60);
/// The protocol revision the gateway speaks to servers for stateless clients.
const UPSTREAM_VERSION: &str = "2025-11-25";

/// What identifies a set of upstream sessions.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    route: String,
    tenant: String,
    /// Config version: a reload that changes a route's servers opens new
    /// sessions instead of using ones made for the old servers.
    config: u64,
    /// SHA-256 of the client capabilities, serialised with sorted keys.
    capabilities: [u8; 32],
}

/// The upstream sessions for one key.
pub(super) struct Entry {
    ready: tokio::sync::OnceCell<Ready>,
    /// Milliseconds since the process started, at the last use.
    used: AtomicU64,
    /// The change feed of these sessions while any `subscriptions/listen`
    /// stream uses it.
    pub(super) feed: Mutex<Weak<Feed>>,
}

/// Opened sessions.
pub(super) struct Ready {
    /// The servers that joined, as a session id would carry them.
    pub(super) session: SessionState,
    /// The merged server capabilities (as `initialize` answered them).
    pub(super) capabilities: Value,
}

impl Entry {
    /// The opened sessions (an entry handed out is always opened).
    pub(super) fn ready(&self) -> Option<&Ready> {
        self.ready.get()
    }
}

/// The cache, one per process.
#[derive(Default)]
pub struct UpstreamCache {
    entries: RwLock<HashMap<Key, Arc<Entry>>>,
}

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl UpstreamCache {
    /// The upstream sessions for a stateless request, opened on first use.
    pub(super) async fn get(
        &self,
        gateway: &Gateway,
        runtime: &Runtime,
        route: &McpRoute,
        tenant: &str,
        capabilities: &Value,
    ) -> Result<Arc<Entry>, McpError> {
        let key = Key {
            route: route.name.to_string(),
            tenant: tenant.to_owned(),
            config: runtime.version,
            capabilities: Sha256::digest(capabilities.to_string().as_bytes()).into(),
        };
        let found = self
            .entries
            .read()
            .ok()
            .and_then(|entries| entries.get(&key).cloned());
        let entry = match found {
            Some(entry) => entry,
            None => self.insert(gateway, runtime, route, key),
        };
        entry.used.store(now_ms(), Ordering::Relaxed);
        entry
            .ready
            .get_or_try_init(|| open(gateway, runtime, route, tenant, capabilities))
            .await?;
        Ok(entry)
    }

    /// Adds an entry (or finds the one a concurrent request added), making
    /// room first.
    fn insert(
        &self,
        gateway: &Gateway,
        runtime: &Runtime,
        route: &McpRoute,
        key: Key,
    ) -> Arc<Entry> {
        let mut evicted = Vec::new();
        let entry = {
            let Ok(mut entries) = self.entries.write() else {
                return Arc::new(Entry::new());
            };
            if let Some(entry) = entries.get(&key) {
                return entry.clone();
            }
            if entries.len() >= MAX_ENTRIES {
                let now = now_ms();
                let idle = u64::try_from(IDLE_LIMIT.as_millis()).unwrap_or(u64::MAX);
                entries.retain(|_, e| {
                    let keep = now.saturating_sub(e.used.load(Ordering::Relaxed)) < idle;
                    if !keep {
                        evicted.push(e.clone());
                    }
                    keep
                });
                if entries.len() >= MAX_ENTRIES {
                    let oldest = entries
                        .iter()
                        .min_by_key(|(_, e)| e.used.load(Ordering::Relaxed))
                        .map(|(k, _)| k.clone());
                    if let Some(e) = oldest.and_then(|k| entries.remove(&k)) {
                        evicted.push(e);
                    }
                }
            }
            let entry = Arc::new(Entry::new());
            entries.insert(key, entry.clone());
            entry
        };
        // Stdio servers are processes of this gateway: stop those of dropped
        // entries. Sessions on remote servers are left for them to expire.
        for old in evicted {
            if let Some(ready) = old.ready() {
                for position in 0..route.backends.len() {
                    if let (Some(Upstream::Stdio { .. } | Upstream::LegacySse(_)), Some(upstream)) = (
                        server(runtime, route, position),
                        upstream_of(&ready.session, runtime, route, position),
                    ) {
                        if let Some(token) = &upstream.session {
                            gateway.mcp_channels.end(token);
                        }
                    }
                }
            }
        }
        entry
    }
}

impl Entry {
    fn new() -> Self {
        Self {
            ready: tokio::sync::OnceCell::new(),
            used: AtomicU64::new(now_ms()),
            feed: Mutex::new(Weak::new()),
        }
    }
}

/// Initialises every server of the route as a session-based client would,
/// with the stateless client's capabilities and the gateway's own identity
/// (the sessions are shared by every client with this key).
async fn open(
    gateway: &Gateway,
    runtime: &Runtime,
    route: &McpRoute,
    tenant: &str,
    capabilities: &Value,
) -> Result<Ready, McpError> {
    let params = json!({
        "protocolVersion": UPSTREAM_VERSION,
        "capabilities": capabilities,
        "clientInfo": {"name": "sluice", "title": "Sluice MCP gateway, for stateless clients", "version": env!("CARGO_PKG_VERSION")},
    });
    let id = RawValue::from_string("0".to_owned()).map_err(|e| {
        McpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            -32603,
            "internal",
            e.to_string(),
        )
    })?;
    let response = initialize(gateway, runtime, route, tenant, params, Some(&id)).await?;
    let broken = || {
        McpError::new(
            StatusCode::BAD_GATEWAY,
            -32603,
            "upstream_failed",
            "the upstream sessions could not be opened",
        )
    };
    let session = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|sealed| runtime.session_codec.open(sealed))
        .ok_or_else(broken)?;
    let capabilities = match response.into_body() {
        ResponseBody::Full(Some(body)) => serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|mut v| v.get_mut("result").map(|r| r["capabilities"].take()))
            .ok_or_else(broken)?,
        _ => return Err(broken()),
    };
    tracing::info!(route = %route.name, tenant, "opened upstream MCP sessions for stateless clients");
    Ok(Ready {
        session,
        capabilities,
    })
}
