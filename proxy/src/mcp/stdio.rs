//! MCP servers run as local processes speaking JSON-RPC over stdin/stdout
//! (standalone `sluice run` only). A stdio server serves one client, so each
//! downstream session gets its own process, kept in this gateway process
//! under a random token that the sealed session id carries; another replica
//! cannot continue such a session. Requests wait for their response by id;
//! messages the server sends on its own (notifications, server requests)
//! are not relayed yet.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

use super::client::McpClientError;

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// One running stdio server.
pub struct StdioProcess {
    name: String,
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Pending,
    next_id: AtomicU64,
    child: Mutex<Option<Child>>,
}

impl StdioProcess {
    /// Starts `command`; its stderr goes to the gateway's stderr.
    pub fn spawn(name: &str, command: &[String]) -> Result<Arc<Self>, McpClientError> {
        let unreachable = |e: String| McpClientError::Unreachable(name.to_owned(), e);
        let (program, args) = command
            .split_first()
            .ok_or_else(|| unreachable("empty command".into()))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| unreachable(format!("cannot start `{program}`: {e}")))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| unreachable("no stdin".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| unreachable("no stdout".into()))?;
        let pending: Pending = Arc::default();
        // Owned by the process: it ends when stdout closes (the process exits
        // or is killed), failing whatever still waits.
        let readers = pending.clone();
        let server = name.to_owned();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(message) = serde_json::from_str::<Value>(&line) else {
                    tracing::debug!(server, "stdio MCP server wrote a line that is not JSON");
                    continue;
                };
                let is_response = message.get("method").is_none();
                let id = message.get("id").map(Value::to_string);
                match (is_response, id) {
                    (true, Some(id)) => {
                        let waiter = readers.lock().ok().and_then(|mut p| p.remove(&id));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(message);
                        }
                    }
                    _ => tracing::debug!(server, "stdio MCP server message not relayed"),
                }
            }
            if let Ok(mut waiting) = readers.lock() {
                waiting.clear();
            }
        });
        Ok(Arc::new(Self {
            name: name.to_owned(),
            stdin: tokio::sync::Mutex::new(stdin),
            pending,
            next_id: AtomicU64::new(1),
            child: Mutex::new(Some(child)),
        }))
    }

    async fn write(&self, message: &Value) -> Result<(), McpClientError> {
        let mut line = message.to_string();
        line.push('\n');
        let mut stdin = self.stdin.lock().await;
        stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| McpClientError::Unreachable(self.name.clone(), format!("stdin: {e}")))?;
        stdin
            .flush()
            .await
            .map_err(|e| McpClientError::Unreachable(self.name.clone(), format!("stdin: {e}")))
    }

    /// Sends a request and waits for its response message (result or error).
    pub async fn request(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, McpClientError> {
        let id = format!("sluice-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let (sender, receiver) = oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(Value::String(id.clone()).to_string(), sender);
        }
        self.write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        match tokio::time::timeout(timeout, receiver).await {
            Ok(Ok(message)) => Ok(message),
            Ok(Err(_)) => Err(McpClientError::Unreachable(
                self.name.clone(),
                "the process exited".into(),
            )),
            Err(_) => {
                if let Ok(mut pending) = self.pending.lock() {
                    pending.remove(&Value::String(id).to_string());
                }
                Err(McpClientError::Timeout(self.name.clone()))
            }
        }
    }

    /// Like [`request`](Self::request), returning the `result` or the error.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, McpClientError> {
        let message = self.request(method, params, timeout).await?;
        match message.get("error") {
            Some(error) => Err(McpClientError::Rpc(self.name.clone(), error.clone())),
            None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    /// Sends a notification.
    pub async fn notify(&self, method: &str) -> Result<(), McpClientError> {
        self.write(&json!({"jsonrpc": "2.0", "method": method}))
            .await
    }

    /// Stops the process.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().ok().and_then(|mut c| c.take()) {
            let _ = child.start_kill();
        }
    }
}

/// A session's stdio server idle this long is stopped (when the next one
/// starts): clients that never send DELETE do not leak processes.
const IDLE_LIMIT: Duration = Duration::from_secs(30 * 60);

/// This gateway process's stdio servers, by session token, with when each
/// was last used.
#[derive(Default)]
pub struct StdioServers {
    running: Mutex<HashMap<String, (Arc<StdioProcess>, Instant)>>,
}

impl StdioServers {
    /// Keeps a started server; returns its token.
    pub fn keep(&self, process: Arc<StdioProcess>) -> String {
        let token = format!("stdio-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        if let Ok(mut running) = self.running.lock() {
            running.retain(|_, (idle, since)| {
                let keep = since.elapsed() < IDLE_LIMIT;
                if !keep {
                    idle.kill();
                }
                keep
            });
            running.insert(token.clone(), (process, Instant::now()));
        }
        token
    }

    /// The server behind a token.
    pub fn get(&self, token: &str) -> Option<Arc<StdioProcess>> {
        let mut running = self.running.lock().ok()?;
        let (process, used) = running.get_mut(token)?;
        *used = Instant::now();
        Some(process.clone())
    }

    /// Stops and forgets a server.
    pub fn end(&self, token: &str) {
        let process = self.running.lock().ok().and_then(|mut r| r.remove(token));
        if let Some((process, _)) = process {
            process.kill();
        }
    }
}
