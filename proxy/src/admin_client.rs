//! Reads a running gateway's admin listener for the CLI (`sluice budgets`,
//! `sluice cluster status`): plain HTTP/1.1 over one connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The JSON of `GET {path}` at `admin`.
pub fn fetch(admin: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&admin, timeout).map_err(|e| {
        anyhow::anyhow!("cannot reach the admin listener at {admin} ({e}); is `sluice run` running? (--admin ADDR)")
    })?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nAccept: application/json\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("the admin listener sent no HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or_default();
        anyhow::bail!("GET {path} answered {status}");
    }
    serde_json::from_str(body).map_err(|e| anyhow::anyhow!("GET {path}: not JSON: {e}"))
}
