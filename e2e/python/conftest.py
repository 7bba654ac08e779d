"""Fixtures for Sluice's end-to-end tests.

Every test talks to real processes: `sluice-test-upstream` (a fake
OpenAI-compatible provider) and `sluice run` (the gateway), each started on
free loopback ports, with the official OpenAI Python SDK as the client.
Processes write their output to files under pytest's tmp dir; when a test
fails, the tail of every running process's logs is added to its report.
Every process is stopped at teardown, also when a test fails.

Binaries come from $SLUICE_BIN and $SLUICE_UPSTREAM_BIN (e2e/test-all.sh sets
them), else from the debug build in the default cargo target dir.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import openai
import pytest

# Two lines of the official MCP Python SDK, in two virtualenvs: 1.x
# (requirements.txt) speaks the session-based revisions and runs every module
# but the 2026-07-28 ones; 2.x (requirements-mcp2.txt) runs only those.
MCP2_ONLY = ["test_mcp_stateless.py"]
if importlib.metadata.version("mcp").startswith("1."):
    collect_ignore = MCP2_ONLY
else:
    collect_ignore = [p.name for p in Path(__file__).parent.glob("test_*.py") if p.name not in MCP2_ONLY]

# How long a process may take to start listening / become ready. Generous:
# debug builds on a loaded 2-core CI machine.
STARTUP_TIMEOUT_S = 30.0
# Client-side timeout for a single API call.
CALL_TIMEOUT_S = 20.0

# Processes started by this test session and not yet stopped, oldest first.
_LIVE: list["Process"] = []


# --------------------------------------------------------------------------
# Binaries


def _default_target_dir() -> Path:
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"])
    rustc = subprocess.run(["rustc", "-V"], capture_output=True, text=True, timeout=30, check=True)
    version = rustc.stdout.split()[1]
    return Path.home() / ".cache" / "sluice" / f"target-{version}"


def _binary(env_var: str, name: str) -> Path:
    path = Path(os.environ[env_var]) if os.environ.get(env_var) else _default_target_dir() / "debug" / name
    if not path.is_file():
        pytest.fail(
            f"binary {name} not found at {path}: run e2e/test-all.sh, or build it with "
            f"`cargo build --workspace --bins` and/or set ${env_var}",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def sluice_bin() -> Path:
    return _binary("SLUICE_BIN", "sluice")


@pytest.fixture(scope="session")
def upstream_bin() -> Path:
    return _binary("SLUICE_UPSTREAM_BIN", "sluice-test-upstream")


# --------------------------------------------------------------------------
# Processes


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str) -> str:
    """A value no other test uses: session ids, prompt markers."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


@dataclass
class Process:
    """A child process whose stdout and stderr go to files."""

    name: str
    argv: list[str]
    popen: subprocess.Popen
    stdout: Path
    stderr: Path

    @classmethod
    def start(cls, name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> "Process":
        workdir.mkdir(parents=True, exist_ok=True)
        stdout = workdir / f"{name}.stdout.log"
        stderr = workdir / f"{name}.stderr.log"
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=workdir,
                env=env,
                # Same process group as pytest: when e2e/test-all.sh's
                # `timeout` ends a hung run, it ends these processes too.
            )
        proc = cls(name, argv, popen, stdout, stderr)
        _LIVE.append(proc)
        return proc

    def alive(self) -> bool:
        return self.popen.poll() is None

    def describe(self) -> str:
        state = "running" if self.alive() else f"exited with code {self.popen.returncode}"
        return f"{self.name} (pid {self.popen.pid}, {state}): {' '.join(self.argv)}"

    def logs(self, lines: int = 40) -> str:
        return (
            f"--- {self.describe()}\n"
            f"--- stderr ({self.stderr}):\n{_tail(self.stderr, lines)}\n"
            f"--- stdout ({self.stdout}):\n{_tail(self.stdout, lines)}"
        )

    def fail(self, message: str) -> None:
        pytest.fail(f"{message}\n{self.logs()}", pytrace=False)

    def wait_for_stdout(self, pattern: str, timeout: float = STARTUP_TIMEOUT_S) -> re.Match:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = regex.search(self.stdout.read_text(errors="replace"))
            if match:
                return match
            if not self.alive():
                self.fail(f"{self.name} exited before printing /{pattern}/")
            time.sleep(0.02)
        self.fail(f"{self.name} printed no /{pattern}/ within {timeout:.0f}s")
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self in _LIVE:
            _LIVE.remove(self)
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[Any]:
    """On failure, show the tail of every running process's logs."""
    report = yield
    if report.failed:
        # Process.fail() already put its own process's logs in the message.
        shown = str(report.longrepr)
        logs = [p.logs() for p in _LIVE if str(p.stderr) not in shown]
        if logs:
            report.sections.append(("sluice processes", "\n\n".join(logs)))
    return report


@atexit.register
def _stop_all() -> None:
    """Belt and braces: no process outlives the test run."""
    for proc in list(_LIVE):
        proc.stop()


# --------------------------------------------------------------------------
# The fake provider


@dataclass
class Upstream:
    """A running sluice-test-upstream."""

    name: str
    port: int
    process: Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[dict]:
        """Requests it received (oldest first), bodies parsed as JSON when they are."""
        recorded = httpx.get(f"{self.url}/_mock/requests", timeout=5).raise_for_status().json()
        for r in recorded:
            try:
                r["json"] = json.loads(r["body"]) if isinstance(r["body"], str) else r["body"]
            except ValueError:
                r["json"] = None
            r["header_map"] = {k.lower(): v for k, v in r["headers"]}
        return recorded

    def requests_with(self, marker: str) -> list[dict]:
        """Received requests whose body contains `marker`."""
        return [
            r for r in self.requests() if marker in (r["body"] if isinstance(r["body"], str) else json.dumps(r["body"]))
        ]

    def client(self) -> openai.OpenAI:
        """An SDK client talking to this upstream directly (the reference)."""
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="direct", max_retries=0, timeout=CALL_TIMEOUT_S)


def start_upstream(binary: Path, workdir: Path, name: str, *args: str) -> Upstream:
    proc = Process.start(
        f"upstream-{name}",
        [str(binary), "--listen", "127.0.0.1:0", "--name", name, *args],
        workdir,
    )
    match = proc.wait_for_stdout(r"listening on 127\.0\.0\.1:(\d+)")
    return Upstream(name, int(match.group(1)), proc)


# --------------------------------------------------------------------------
# The gateway


@dataclass
class Gateway:
    """A running `sluice run`; its stdout is the access log unless the config says otherwise."""

    port: int
    admin_port: int
    process: Process
    env: dict[str, str] = field(default_factory=dict)
    access_log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def client(self, api_key: str, **kwargs: Any) -> openai.OpenAI:
        """An SDK client pointed at the gateway, with SDK retries off so each call is one request."""
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", CALL_TIMEOUT_S)
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, **kwargs)

    def admin(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.admin_url}{path}", timeout=5)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """A raw request, for what the SDK will not send (bad JSON, no key)."""
        kwargs.setdefault("timeout", CALL_TIMEOUT_S)
        return httpx.post(f"{self.url}{path}", **kwargs)

    def log_text(self) -> str:
        """All the gateway has written: access log, stdout and stderr."""
        parts = [self.process.stdout, self.process.stderr]
        if self.access_log_path:
            parts.append(self.access_log_path)
        return "\n".join(p.read_text(errors="replace") for p in parts if p.exists())

    def access_log(self) -> list[dict]:
        """Access-log lines so far, each parsed as JSON (a non-JSON line fails the test)."""
        path = self.access_log_path or self.process.stdout
        lines = []
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                lines.append(json.loads(line))
            except ValueError:
                pytest.fail(f"access log line {n} of {path} is not JSON: {line!r}", pytrace=False)
        return lines

    def wait_for_log(self, predicate: Callable[[dict], bool], timeout: float = 10.0) -> dict:
        """The first access-log line matching `predicate`, waiting for it to be written."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.access_log():
                if predicate(line):
                    return line
            if time.monotonic() > deadline:
                self.process.fail(f"no matching access-log line within {timeout:.0f}s")
            time.sleep(0.05)

    def log_for_session(self, session_id: str, timeout: float = 10.0) -> dict:
        return self.wait_for_log(lambda line: line.get("session_id") == session_id, timeout)

    def logs_for_session(self, session_id: str, count: int, timeout: float = 10.0) -> list[dict]:
        """The access-log lines of a session, once there are at least `count` of them."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.access_log() if line.get("session_id") == session_id]
            if len(lines) >= count:
                return lines
            if time.monotonic() > deadline:
                self.process.fail(
                    f"{len(lines)} access-log lines for session {session_id} after {timeout:.0f}s, want {count}"
                )
            time.sleep(0.05)


def start_gateway(
    binary: Path,
    workdir: Path,
    config: str | None,
    env: dict[str, str] | None = None,
    access_log_path: Path | None = None,
) -> Gateway:
    """Starts `sluice run` on free ports and waits for /readyz.

    `config` is written to workdir/sluice.yaml as is: its `${VAR}`s are
    substituted by sluice from the environment, where SLUICE_PORT and
    SLUICE_ADMIN_PORT are the chosen ports. With config None the gateway runs
    its built-in default config, with the ports given by --listen/--admin.
    """
    port, admin_port = free_port(), free_port()
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "RUST_BACKTRACE": "1",
        "SLUICE_PORT": str(port),
        "SLUICE_ADMIN_PORT": str(admin_port),
        **(env or {}),
    }
    argv = [str(binary), "run"]
    if config is None:
        argv += ["--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin_port}"]
    else:
        config_path = workdir / "sluice.yaml"
        workdir.mkdir(parents=True, exist_ok=True)
        config_path.write_text(config)
        argv += ["-f", str(config_path)]
    proc = Process.start("sluice", argv, workdir, env=full_env)
    gateway = Gateway(port, admin_port, proc, full_env, access_log_path)
    wait_ready(gateway)
    return gateway


def wait_ready(gateway: Gateway, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not gateway.process.alive():
            gateway.process.fail("sluice exited before /readyz answered 200")
        try:
            response = gateway.admin("/readyz")
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as e:
            last = repr(e)
        time.sleep(0.05)
    gateway.process.fail(f"sluice /readyz not 200 within {timeout:.0f}s (last: {last})")


# --------------------------------------------------------------------------
# The standard stack: four upstreams and one gateway, shared by most tests.

STANDARD_CONFIG = """\
apiVersion: sluice.dev/v1alpha1
kind: AIGateway
metadata: {name: default}
spec:
  listen: 127.0.0.1:${SLUICE_PORT}
  admin: 127.0.0.1:${SLUICE_ADMIN_PORT}
  auth:
    apiKeys:
      - {name: team-a-ci, tenant: team-a, valueFrom: {env: TEAM_A_KEY}}
      - {name: team-b-ci, tenant: team-b, valueFrom: {env: TEAM_B_KEY}}
  llm:
    routes:
      - models: ["gpt-4o", "gpt-4o-*"]
        backends:
          - {backend: primary, priority: 0}
          - {backend: backup, priority: 1}
        retry: {attempts: 2, on: [connect, timeout, "429", "5xx"]}
        timeout: 30s
      - models: ["text-embedding-*"]
        backends: [{backend: primary}]
      # One backend and no retry: upstream errors reach the client as they are.
      - models: ["solo-model"]
        backends: [{backend: primary}]
      - models: ["slow-model"]
        backends: [{backend: primary}]
        timeout: 1s
      - models: ["dead-model"]
        backends: [{backend: dead}]
      # Fallback: the priority-0 backend always fails, the backup answers.
      - models: ["failover-503"]
        backends:
          - {backend: broken, priority: 0}
          - {backend: backup, priority: 1}
        retry: {attempts: 2, on: [connect, timeout, "429", "5xx"]}
      - models: ["failover-429"]
        backends:
          - {backend: throttled, priority: 0}
          - {backend: backup, priority: 1}
        retry: {attempts: 2, on: [connect, timeout, "429", "5xx"]}
      - models: ["failover-dead"]
        backends:
          - {backend: dead, priority: 0}
          - {backend: backup, priority: 1}
        retry: {attempts: 2, on: [connect, timeout, "429", "5xx"]}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: primary}
spec:
  provider: OpenAICompatible
  endpoint: http://127.0.0.1:${PRIMARY_PORT}
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
  models: ["gpt-4o"]
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: backup}
spec:
  provider: OpenAICompatible
  endpoint: http://127.0.0.1:${BACKUP_PORT}
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
  models: ["gpt-4o", "gpt-4o-mini"]
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: broken}
spec:
  provider: OpenAICompatible
  endpoint: http://127.0.0.1:${BROKEN_PORT}
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: throttled}
spec:
  provider: OpenAICompatible
  endpoint: http://127.0.0.1:${THROTTLED_PORT}
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: dead}
spec:
  provider: OpenAICompatible
  endpoint: http://127.0.0.1:${DEAD_PORT}
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
"""


@dataclass
class Keys:
    """Secrets of one test session: random, so a leak into a log is unmistakable."""

    team_a: str = field(default_factory=lambda: "sk-team-a-" + secrets.token_hex(16))
    team_b: str = field(default_factory=lambda: "sk-team-b-" + secrets.token_hex(16))
    upstream: str = field(default_factory=lambda: "sk-upstream-" + secrets.token_hex(16))

    def env(self) -> dict[str, str]:
        return {"TEAM_A_KEY": self.team_a, "TEAM_B_KEY": self.team_b, "UPSTREAM_KEY": self.upstream}


@dataclass
class Stack:
    gateway: Gateway
    primary: Upstream
    backup: Upstream
    broken: Upstream
    throttled: Upstream
    keys: Keys

    def processes(self) -> list[Process]:
        return [self.gateway.process] + [u.process for u in (self.primary, self.backup, self.broken, self.throttled)]


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="session")
def _standard_stack(
    sluice_bin: Path, upstream_bin: Path, tmp_path_factory: pytest.TempPathFactory, keys: Keys
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("standard")
    started: list[Process] = []
    try:
        upstreams = {}
        for name, args in {
            "primary": (),
            "backup": (),
            "broken": ("--always-status", "503"),
            "throttled": ("--always-status", "429"),
        }.items():
            upstreams[name] = start_upstream(upstream_bin, workdir, name, *args)
            started.append(upstreams[name].process)
        env = {
            **keys.env(),
            "PRIMARY_PORT": str(upstreams["primary"].port),
            "BACKUP_PORT": str(upstreams["backup"].port),
            "BROKEN_PORT": str(upstreams["broken"].port),
            "THROTTLED_PORT": str(upstreams["throttled"].port),
            "DEAD_PORT": str(free_port()),  # nothing listens there
        }
        gateway = start_gateway(sluice_bin, workdir, STANDARD_CONFIG, env)
        started.append(gateway.process)
        yield Stack(
            gateway, upstreams["primary"], upstreams["backup"], upstreams["broken"], upstreams["throttled"], keys
        )
    finally:
        for proc in reversed(started):
            proc.stop()


@pytest.fixture
def stack(_standard_stack: Stack) -> Stack:
    """The shared stack, checked to be still running before each test."""
    for proc in _standard_stack.processes():
        if not proc.alive():
            proc.fail(f"{proc.name} of the shared stack died during an earlier test")
    return _standard_stack


@pytest.fixture
def gateway(stack: Stack) -> Gateway:
    return stack.gateway


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    """An SDK client of tenant team-a."""
    return stack.gateway.client(stack.keys.team_a)


@pytest.fixture
def session_id() -> str:
    return unique("e2e-session")
