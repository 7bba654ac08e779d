//! The binary: its listen line, flags, help and signal handling.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed assumption is a failed test"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{get, post};
use http::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_sluice-test-upstream");

/// Kills the child if a test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> (Running, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .trim_end()
        .parse()
        .unwrap();
    (running, addr)
}

fn terminate(running: &mut Running) -> std::process::ExitStatus {
    let pid = running.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit within 5s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn serves_until_sigterm() {
    let (mut running, addr) = spawn(&["--name", "bin", "--threads", "2"]);
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let reply = post(
        addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"m","messages":[]}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-upstream-name"), Some("bin"));
    assert_eq!(
        get(addr, "/_mock/requests")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(terminate(&mut running).success());
}

#[tokio::test]
async fn flags_always_status_and_no_record() {
    let (mut running, addr) = spawn(&["--always-status", "503", "--no-record"]);
    let reply = post(
        addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"m","messages":[]}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["error"]["type"], "server_error");
    assert_eq!(
        get(addr, "/_mock/requests").await.json(),
        serde_json::json!([])
    );
    assert!(terminate(&mut running).success());
}

#[test]
fn help_documents_every_flag_and_control_header() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for word in [
        "--listen",
        "--name",
        "--always-status",
        "--threads",
        "--no-record",
        "x-mock-status",
        "x-mock-retry-after",
        "x-mock-delay-ms",
        "x-mock-chunks",
        "x-mock-chunk-delay-ms",
        "x-mock-error-after",
        "x-mock-close",
        "x-mock-prompt-tokens",
        "x-mock-tool-call",
        "x-upstream-name",
        "/_mock/requests",
    ] {
        assert!(
            help.contains(word),
            "--help does not mention {word}:\n{help}"
        );
    }
}

#[test]
fn rejects_a_non_error_always_status() {
    let output = Command::new(BIN)
        .args(["--always-status", "200"])
        .output()
        .unwrap();
    assert!(!output.status.success());
}
