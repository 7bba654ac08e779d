//! MCP servers run as local processes speaking JSON-RPC over stdin/stdout
//! (standalone `sluice run` only). A stdio server serves one client, so each
//! downstream session gets its own process, reached through a
//! [`Channel`](super::channel::Channel): one line per message each way.

use std::process::Stdio;
use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::channel::Channel;
use super::client::McpClientError;

/// Starts `command` (its stderr goes to the gateway's stderr) and returns
/// its channel. The process is killed when the channel is closed, or when
/// its stdout ends the channel closes.
pub fn spawn(name: &str, command: &[String]) -> Result<Arc<Channel>, McpClientError> {
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
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| unreachable("no stdin".into()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| unreachable("no stdout".into()))?;
    let (kill, killed) = tokio::sync::oneshot::channel::<()>();
    let (channel, mut outbound) = Channel::new(
        name,
        Box::new(move || {
            let _ = kill.send(());
        }),
    );
    // Owns the process: kills it when the channel is closed.
    tokio::spawn(async move {
        let _ = killed.await;
        let _ = child.start_kill();
        let _ = child.wait().await;
    });
    let writer = Arc::downgrade(&channel);
    tokio::spawn(async move {
        while let Some(message) = outbound.recv().await {
            let mut line = message.to_string();
            line.push('\n');
            let written = async {
                stdin.write_all(line.as_bytes()).await?;
                stdin.flush().await
            };
            if let Err(error) = written.await {
                if let Some(channel) = writer.upgrade() {
                    channel.undeliverable(&message, &format!("stdin: {error}"));
                }
            }
        }
    });
    let reader = Arc::downgrade(&channel);
    let server = name.to_owned();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Some(channel) = reader.upgrade() else {
                return;
            };
            match serde_json::from_str::<Value>(&line) {
                Ok(message) => channel.dispatch(message),
                Err(_) => tracing::debug!(server, "stdio MCP server wrote a line that is not JSON"),
            }
        }
        if let Some(channel) = reader.upgrade() {
            channel.close();
        }
    });
    Ok(channel)
}
