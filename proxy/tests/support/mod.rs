//! Starts a real `sluice run` process on free ports for a test, with its
//! access log captured to a file, and stops it when the test ends (also
//! when it fails).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running gateway.
pub struct Sluice {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `http://127.0.0.1:PORT` of the admin listener.
    pub admin: String,
    /// Where the config file lives (rewrite it to test reloads).
    pub config_path: PathBuf,
    log_path: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Sluice {
    /// Starts `sluice run -f CONFIG` with extra environment variables.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Sluice {
        Self::start_with(Some(config), env, &[])
    }

    /// Starts with optional config and extra arguments.
    pub fn start_with(config: Option<&str>, env: &[(&str, &str)], args: &[&str]) -> Sluice {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("sluice.yaml");
        let log_path = dir.path().join("access.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command.arg("run");
        if let Some(config) = config {
            std::fs::write(&config_path, config).unwrap();
            command.arg("-f").arg(&config_path);
        }
        command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--drain-timeout",
                "10s",
            ])
            .args(args)
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .envs(env.iter().copied())
            .stdout(Stdio::from(std::fs::File::create(&log_path).unwrap()))
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let reader = BufReader::new(child.stderr.take().unwrap());
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let started = Instant::now();
        loop {
            let (url, admin) = {
                let lines = stderr.lock().unwrap();
                let find = |prefix: &str| {
                    lines.iter().find_map(|l| {
                        l.trim_start()
                            .strip_prefix(prefix)
                            .and_then(|rest| rest.split_whitespace().next())
                            .map(|u| u.trim_end_matches("/v1").to_owned())
                    })
                };
                (find("LLM API"), find("admin"))
            };
            if let (Some(url), Some(admin)) = (url, admin) {
                return Sluice {
                    child,
                    url,
                    admin,
                    config_path,
                    log_path,
                    stderr,
                    _dir: dir,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "sluice exited with {status}: {}",
                    stderr.lock().unwrap().join("\n")
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "sluice did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn v1(&self, path: &str) -> String {
        format!("{}/v1{path}", self.url)
    }

    /// `POST /v1/chat/completions` as tenant team-a, with extra headers.
    pub async fn chat(
        &self,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = client()
            .post(self.v1("/chat/completions"))
            .bearer_auth("sk-team-a")
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The raw access log.
    pub fn access_log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Access-log lines, waiting until at least `count` are there.
    pub fn access_log(&self, count: usize) -> Vec<serde_json::Value> {
        let started = Instant::now();
        loop {
            let lines: Vec<serde_json::Value> = self
                .access_log_text()
                .lines()
                .map(|l| serde_json::from_str(l).expect("access log lines are JSON"))
                .collect();
            if lines.len() >= count || started.elapsed() > Duration::from_secs(5) {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last access-log line once there are `count`.
    pub fn last_log(&self, count: usize) -> serde_json::Value {
        let lines = self.access_log(count);
        assert!(
            lines.len() >= count,
            "expected {count} access-log lines, got {lines:#?}"
        );
        lines[count - 1].clone()
    }

    /// Sends a signal (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits until stderr contains `needle`.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self.stderr().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config with one gateway (key `sk-team-a` for tenant team-a) and the
/// given routes and backends, in YAML.
pub fn config(routes: &str, backends: &str) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: AIGateway\nmetadata: {{name: default}}\nspec:\n  auth:\n    apiKeys:\n      - {{name: team-a-ci, tenant: team-a, valueFrom: {{env: TEAM_A_KEY}}}}\n  llm:\n    routes:\n{routes}\n{backends}"
    )
}

/// A Backend document for an OpenAI-compatible upstream.
pub fn backend(name: &str, url: &str) -> String {
    format!(
        "---\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  provider: OpenAICompatible\n  endpoint: {url}\n  auth: {{apiKey: {{valueFrom: {{env: UPSTREAM_KEY}}}}}}\n  timeout: 2s\n"
    )
}

/// The environment the configs above need.
pub const ENV: &[(&str, &str)] = &[
    ("TEAM_A_KEY", "sk-team-a"),
    ("UPSTREAM_KEY", "sk-upstream-secret"),
];

/// A reqwest client with a sane timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A closed local port (connections are refused).
pub fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// `POST /v1{path}` with team-a's key (as a bearer token), a JSON body and
/// extra headers.
pub async fn post_json(
    sluice: &Sluice,
    path: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client()
        .post(sluice.v1(path))
        .bearer_auth("sk-team-a")
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// The JSON data of every event of an SSE body, with its `event:` name
/// (`"[DONE]"` as a JSON string).
pub fn sse_events(text: &str) -> Vec<(Option<String>, serde_json::Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .filter_map(|event| {
            let name = event
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .map(str::to_owned);
            let data = event.lines().find_map(|l| l.strip_prefix("data: "))?;
            if data == "[DONE]" {
                return Some((name, serde_json::json!("[DONE]")));
            }
            Some((name, serde_json::from_str(data).unwrap()))
        })
        .collect()
}

/// A test upstream named `name` (its requests are recorded).
pub async fn upstream(name: &str) -> sluice_test_upstream::Upstream {
    upstream_with(name, None).await
}

/// A test upstream named `name` that answers every request with
/// `always_status` when set.
pub async fn upstream_with(
    name: &str,
    always_status: Option<u16>,
) -> sluice_test_upstream::Upstream {
    sluice_test_upstream::Upstream::start(sluice_test_upstream::Options {
        name: name.into(),
        always_status,
        ..sluice_test_upstream::Options::default()
    })
    .await
    .unwrap()
}
