"""MCP peers and clients for the MCP gateway's e2e tests (test_mcp*.py).

- The peer: `@modelcontextprotocol/server-everything`, the reference MCP
  server, pinned in e2e/mcp/package-lock.json and installed by e2e/lib.sh's
  `ensure_mcp_node_modules` into $SLUICE_CACHE/node-mcp-<hash>, outside the
  clone. e2e/test-all.sh passes that folder in $SLUICE_MCP_NODE_MODULES; when it
  is unset (pytest run by hand) the helper is called from here.
- The clients: the official MCP Python SDK (`mcp`, pinned in requirements.txt)
  for what an agent does, and `RawMcp`, plain httpx JSON-RPC, for what the SDK
  will not send (a tampered session id, a foreign Origin, no key) and for
  moving a session between gateways.
- The conformance suite (`@modelcontextprotocol/conformance`, `server`
  mode): running it and reading its results, its baselines, and its fixture
  server e2e/mcp/conformance-server.mjs; shared by test_mcp_conformance.py
  and test_mcp_conformance_fixture.py.

Every wait is bounded: MCP_TIMEOUT_S per call, MCP_SESSION_TIMEOUT_S for a
whole SDK session, STARTUP_TIMEOUT_S for a process to listen.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import anyio
import httpx
import mcp.types
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
try:
    from mcp.shared.exceptions import McpError
except ImportError:  # the SDK's 2.x line (requirements-mcp2.txt) names it MCPError
    from mcp.shared.exceptions import MCPError as McpError

from conftest import STARTUP_TIMEOUT_S, Process, free_port

# One MCP request/response, client side.
MCP_TIMEOUT_S = 10.0
# One whole SDK session (connect, initialize, the test's calls, DELETE).
MCP_SESSION_TIMEOUT_S = 40.0

# The revision the gateway speaks to its clients (and the SDK's latest).
PROTOCOL_VERSION = mcp.types.LATEST_PROTOCOL_VERSION  # "2025-11-25"
ACCEPT = "application/json, text/event-stream"

# What the pinned server-everything (2026.8.31) registers for every session.
# After `notifications/initialized` it adds `simulate-research-query`, and, when
# the client declared roots / sampling / elicitation, `get-roots-list`,
# `trigger-sampling-request(-async)`, `trigger-elicitation-request(-async)` and
# `trigger-url-elicitation`; so these are a lower bound of tools/list.
EVERYTHING_TOOLS = frozenset(
    {
        "echo",  # {message: string} -> text "Echo: <message>"
        "get-annotated-message",
        "get-env",  # {} -> text JSON.stringify(process.env)
        "get-resource-links",
        "get-resource-reference",
        "get-structured-content",
        "get-sum",  # {a: number, b: number} -> text "The sum of <a> and <b> is <a+b>."
        "get-tiny-image",
        "gzip-file-as-resource",
        "toggle-simulated-logging",
        "toggle-subscriber-updates",
        "trigger-long-running-operation",
    }
)
EVERYTHING_PROMPTS = frozenset(
    {
        "simple-prompt",  # no arguments -> "This is a simple prompt without arguments."
        "args-prompt",  # {city, state?} -> "What's weather in <city>[, <state>]?"
        "completable-prompt",  # {department, name}
        "resource-prompt",  # {resourceType, resourceId}
    }
)


def echo_text(message: str) -> str:
    return f"Echo: {message}"


def sum_text(a: int, b: int) -> str:
    return f"The sum of {a} and {b} is {a + b}."


# --------------------------------------------------------------------------
# server-everything


def mcp_node_modules() -> Path:
    """The folder holding node_modules/ with server-everything, installed on first use."""
    if os.environ.get("SLUICE_MCP_NODE_MODULES"):
        folder = Path(os.environ["SLUICE_MCP_NODE_MODULES"])
    else:
        lib = Path(__file__).resolve().parent.parent / "lib.sh"
        result = subprocess.run(
            ["bash", "-c", 'source "$1" && ensure_mcp_node_modules', "bash", str(lib)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            pytest.fail(
                f"installing e2e/mcp's node modules failed (e2e/lib.sh ensure_mcp_node_modules):\n{result.stderr}",
                pytrace=False,
            )
        folder = Path(result.stdout.strip().splitlines()[-1])
    if not everything_entry(folder).is_file():
        pytest.fail(
            f"no server-everything under {folder}: run e2e/test-all.sh, or unset $SLUICE_MCP_NODE_MODULES",
            pytrace=False,
        )
    return folder


def everything_entry(node_modules: Path) -> Path:
    return node_modules / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"


def wait_accepting(port: int, process: Process, timeout: float = STARTUP_TIMEOUT_S) -> float:
    """Waits until 127.0.0.1:port accepts a connection; returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if not process.alive():
            process.fail(f"{process.name} exited before it listened on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return time.monotonic() - start
        except OSError:
            time.sleep(0.02)
    process.fail(f"{process.name} did not accept connections on port {port} within {timeout:.0f}s")
    raise AssertionError("unreachable")


@dataclass
class EverythingServer:
    """A running server-everything in streamableHttp mode (it listens on all interfaces)."""

    name: str
    port: int
    process: Process
    startup_s: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def terminations(self) -> int:
        """How many sessions were ended by DELETE so far (it logs each one on stdout)."""
        return self.process.stdout.read_text(errors="replace").count("Received session termination request")

    def sessions(self) -> int:
        """How many sessions were initialised so far."""
        return self.process.stdout.read_text(errors="replace").count("Session initialized with ID")


def start_everything(
    node_modules: Path, workdir: Path, name: str, port: int | None = None, transport: str = "streamableHttp"
) -> EverythingServer:
    """Starts server-everything on `port` (a free one by default): streamable
    HTTP at /mcp, or with transport="sse" the legacy HTTP+SSE transport
    (GET /sse, POST /message)."""
    port = port or free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "PORT": str(port),
        # Shows up in the get-env tool's answer: tells which server answered.
        "SLUICE_E2E_SERVER": name,
    }
    proc = Process.start(
        f"everything-{name}", ["node", str(everything_entry(node_modules)), transport], workdir, env
    )
    startup_s = wait_accepting(port, proc)
    return EverythingServer(name, port, proc, startup_s)


# --------------------------------------------------------------------------
# The SDK client

T = TypeVar("T")


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for e in error.exceptions for leaf in _leaves(e)]
    return [error]


def run_mcp(body: Callable[[], Awaitable[T]], timeout: float = MCP_SESSION_TIMEOUT_S) -> T:
    """Runs an async test body with a deadline. The SDK's task groups wrap a
    failure (an HTTP 401 from the server, say) in exception groups; they are
    unwrapped here so the report names the cause."""

    async def bounded() -> T:
        with anyio.fail_after(timeout):
            return await body()

    try:
        return anyio.run(bounded)
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], (AssertionError, pytest.fail.Exception, McpError)):
            # The test's own assertion, or a JSON-RPC error the test may expect.
            raise leaves[0] from None
        causes = "\n".join(f"  {type(e).__name__}: {describe_error(e)}" for e in leaves)
        raise AssertionError(f"the MCP client failed:\n{causes}") from leaves[0]
    except TimeoutError as e:
        raise AssertionError(f"the MCP session did not finish within {timeout:.0f}s") from e


def describe_error(error: BaseException) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        r = error.response
        try:
            body = r.text[:300]
        except httpx.ResponseNotRead:
            body = "(body not read)"
        return f"{r.request.method} {r.request.url} -> {r.status_code} {body}"
    return str(error)


@dataclass
class McpClient:
    """An initialised SDK session and what initialize returned."""

    session: ClientSession
    init: mcp.types.InitializeResult
    session_id: Callable[[], str | None]

    async def tools(self) -> list[mcp.types.Tool]:
        """All tools, following nextCursor."""
        tools, cursor = [], None
        for _ in range(100):
            page = await self.session.list_tools(cursor)
            tools += page.tools
            cursor = page.nextCursor
            if not cursor:
                return tools
        raise AssertionError("tools/list: more than 100 pages")

    async def prompts(self) -> list[mcp.types.Prompt]:
        prompts, cursor = [], None
        for _ in range(100):
            page = await self.session.list_prompts(cursor)
            prompts += page.prompts
            cursor = page.nextCursor
            if not cursor:
                return prompts
        raise AssertionError("prompts/list: more than 100 pages")

    async def call_text(self, name: str, arguments: dict[str, Any]) -> str:
        """Calls a tool that must succeed; returns its text content, joined."""
        result = await self.session.call_tool(name, arguments)
        assert not result.isError, f"{name} answered isError: {result.content}"
        return "".join(c.text for c in result.content if isinstance(c, mcp.types.TextContent))


@asynccontextmanager
async def mcp_client(
    url: str, headers: dict[str, str] | None = None, **callbacks: Any
) -> AsyncIterator[McpClient]:
    """An SDK session against `url`, initialised; ended with DELETE on exit.
    `callbacks` go to `ClientSession` (e.g. `sampling_callback`, which also
    declares the capability)."""
    timeout = httpx.Timeout(MCP_TIMEOUT_S)
    async with httpx.AsyncClient(headers=headers or {}, timeout=timeout) as http:
        async with streamable_http_client(url, http_client=http) as (read, write, get_session_id):
            async with ClientSession(
                read, write, read_timeout_seconds=timedelta(seconds=MCP_TIMEOUT_S), **callbacks
            ) as session:
                try:
                    init = await session.initialize()
                except McpError as e:
                    hint = " (the SDK reports an HTTP 404 so)" if e.error.message == "Session terminated" else ""
                    raise AssertionError(f"initialize at {url}: {e.error.message}{hint}") from e
                yield McpClient(session, init, get_session_id)


def tool_text(result: mcp.types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, mcp.types.TextContent))


# --------------------------------------------------------------------------
# The raw client


def jsonrpc_messages(response: httpx.Response) -> list[dict]:
    """The JSON-RPC messages of a response, whether it is JSON or an SSE stream."""
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        messages = []
        for event in response.text.replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(line[5:].lstrip(" ") for line in event.split("\n") if line.startswith("data:"))
            if data.strip():
                messages.append(json.loads(data))
        return messages
    if not response.content:
        return []
    body = response.json()
    return body if isinstance(body, list) else [body]


@dataclass
class RawMcp:
    """JSON-RPC over plain httpx, one request per call, no retries."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    session_id: str | None = None
    protocol_version: str | None = None
    next_id: int = 1

    def post(self, body: Any, headers: dict[str, str] | None = None, session: bool = True) -> httpx.Response:
        """POSTs `body`; adds Mcp-Session-Id and MCP-Protocol-Version once known (unless session=False)."""
        h = {"accept": ACCEPT, "content-type": "application/json", **self.headers}
        if session and self.session_id is not None:
            h["mcp-session-id"] = self.session_id
        if session and self.protocol_version is not None:
            h["mcp-protocol-version"] = self.protocol_version
        h.update(headers or {})
        return httpx.post(self.url, content=json.dumps(body), headers=h, timeout=MCP_TIMEOUT_S)

    def request_body(self, method: str, params: dict | None = None) -> dict:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        self.next_id += 1
        if params is not None:
            body["params"] = params
        return body

    def request(self, method: str, params: dict | None = None, **kwargs: Any) -> httpx.Response:
        return self.post(self.request_body(method, params), **kwargs)

    def initialize(self, **kwargs: Any) -> httpx.Response:
        """Sends initialize; on 200 keeps the session id and the negotiated version."""
        response = self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "sluice-e2e-raw", "version": "0"},
            },
            session=False,
            **kwargs,
        )
        if response.status_code == 200:
            self.session_id = response.headers.get("mcp-session-id")
            result = self.result_of(response)
            self.protocol_version = result.get("protocolVersion")
        return response

    def notify(self, method: str, params: dict | None = None, **kwargs: Any) -> httpx.Response:
        body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            body["params"] = params
        return self.post(body, **kwargs)

    def open_session(self) -> None:
        """initialize + notifications/initialized, both checked."""
        response = self.initialize()
        assert response.status_code == 200, f"initialize: {response.status_code} {response.text[:500]}"
        assert self.session_id, f"initialize answered no Mcp-Session-Id: {dict(response.headers)}"
        notified = self.notify("notifications/initialized")
        assert notified.status_code == 202, f"notifications/initialized: {notified.status_code} {notified.text[:300]}"

    def call(self, method: str, params: dict | None = None, **kwargs: Any) -> dict:
        """A request that must succeed; returns its JSON-RPC result."""
        response = self.request(method, params, **kwargs)
        assert response.status_code == 200, f"{method}: {response.status_code} {response.text[:500]}"
        return self.result_of(response)

    @staticmethod
    def result_of(response: httpx.Response) -> dict:
        replies = [m for m in jsonrpc_messages(response) if "id" in m and ("result" in m or "error" in m)]
        assert len(replies) == 1, f"want one JSON-RPC response, got {jsonrpc_messages(response)}"
        assert "error" not in replies[0], f"JSON-RPC error: {replies[0]['error']}"
        return replies[0]["result"]

    def delete(self, **kwargs: Any) -> httpx.Response:
        h = {**self.headers, **kwargs.pop("headers", {})}
        if self.session_id is not None:
            h["mcp-session-id"] = self.session_id
        if self.protocol_version is not None:
            h["mcp-protocol-version"] = self.protocol_version
        return httpx.delete(self.url, headers=h, timeout=MCP_TIMEOUT_S)


# --------------------------------------------------------------------------
# The conformance suite (test_mcp_conformance*.py)
#
# `@modelcontextprotocol/conformance` (pinned in e2e/mcp/package-lock.json) is
# an MCP client that runs scenarios against a server (`conformance server
# --url URL`) and writes each scenario's checks to `checks.json`.

# One whole suite run (30-odd scenarios; about 2 s against a healthy server,
# but a hung request waits for the SDK's own 60 s timeout).
CONFORMANCE_SUITE_TIMEOUT_S = 240.0
DNS_REBINDING = "dns-rebinding-protection"


def package_dir(node_modules: Path, name: str) -> Path:
    return node_modules / "node_modules" / Path(*name.split("/"))


def conformance_entry(node_modules: Path) -> Path:
    entry = package_dir(node_modules, "@modelcontextprotocol/conformance") / "dist" / "index.js"
    if not entry.is_file():
        pytest.fail(
            f"no @modelcontextprotocol/conformance under {node_modules}: run e2e/test-all.sh, "
            "or unset $SLUICE_MCP_NODE_MODULES",
            pytrace=False,
        )
    return entry


def conformance_version(node_modules: Path) -> str:
    package = package_dir(node_modules, "@modelcontextprotocol/conformance") / "package.json"
    return json.loads(package.read_text())["version"]


@dataclass
class Scenario:
    """One scenario's checks from one run."""

    name: str
    checks: list[dict]

    @property
    def passed(self) -> bool:
        """No check is FAILURE or WARNING (the suite's own rule for its baselines)."""
        return bool(self.checks) and not any(c.get("status") in ("FAILURE", "WARNING") for c in self.checks)

    def failures(self) -> list[str]:
        """The failing checks, `id [STATUS] message`."""
        return [
            f"{c.get('id')} [{c.get('status')}] {c.get('errorMessage') or c.get('description') or ''}".strip()
            for c in self.checks
            if c.get("status") in ("FAILURE", "WARNING")
        ] or (["no checks"] if not self.checks else [])

    def summary(self) -> str:
        return "PASS" if self.passed else "FAIL: " + "; ".join(self.failures())


@dataclass
class SuiteRun:
    """A whole `conformance server` run: its scenarios in suite order."""

    label: str
    url: str
    scenarios: dict[str, Scenario]
    log: Path


# Result folders are `server-<scenario>-<ISO timestamp with - for : and .>`.
RESULT_DIR = re.compile(r"^server-(?P<name>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")
SCENARIO_LINE = re.compile(r"^=== Running scenario: (?P<name>\S+) ===$", re.M)


def run_suite(entry: Path, url: str, workdir: Path, label: str, suite: str = "active") -> SuiteRun:
    """Runs the suite's `suite` scenarios (active, all or pending) against `url` and reads their checks."""
    workdir.mkdir(parents=True, exist_ok=True)
    out_dir = workdir / f"results-{label}"
    log = workdir / f"conformance-{label}.log"
    argv = ["node", str(entry), "server", "--url", url, "--suite", suite, "--output-dir", str(out_dir)]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), "NO_COLOR": "1"}
    with open(log, "wb") as output:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, cwd=workdir, env=env
        )
        try:
            code = proc.wait(timeout=CONFORMANCE_SUITE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    text = log.read_text(errors="replace")
    tail = "\n".join(text.splitlines()[-40:])
    if code is None:
        pytest.fail(
            f"the conformance suite ({label}) did not finish within {CONFORMANCE_SUITE_TIMEOUT_S:.0f}s; "
            f"{log}:\n{tail}",
            pytrace=False,
        )
    # 0: every scenario passed; 1: some failed. Anything else: it did not run.
    if code not in (0, 1) or "=== SUMMARY ===" not in text:
        pytest.fail(f"the conformance suite ({label}) exited with {code} and no summary; {log}:\n{tail}", pytrace=False)

    names = SCENARIO_LINE.findall(text)
    if not names:
        pytest.fail(f"the conformance suite ({label}) ran no scenario; {log}:\n{tail}", pytrace=False)
    found: dict[str, list[dict]] = {}
    for folder in sorted(out_dir.iterdir()) if out_dir.is_dir() else []:
        match = RESULT_DIR.match(folder.name)
        if match and (folder / "checks.json").is_file():
            found[match.group("name")] = json.loads((folder / "checks.json").read_text())
    scenarios = {}
    for name in names:
        # A scenario that threw writes no folder; the suite counts it failed.
        checks = found.get(name) or [
            {"id": name, "status": "FAILURE", "errorMessage": f"no checks.json (the scenario could not run; see {log})"}
        ]
        scenarios[name] = Scenario(name, checks)
    return SuiteRun(label, url, scenarios, log)


def read_baseline(node_modules: Path, path: Path, sections: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """A baseline file's `sections`, each a map scenario -> one-line reason
    (a missing or empty section is an empty map; any other key is an error).
    Parsed by the `yaml` package the suite itself depends on."""
    candidates = [
        package_dir(node_modules, "yaml"),
        package_dir(node_modules, "@modelcontextprotocol/conformance") / "node_modules" / "yaml",
    ]
    yaml_package = next((c for c in candidates if (c / "package.json").is_file()), candidates[0])
    script = (
        "const Y = require(process.argv[1]);"
        "const doc = Y.parse(require('fs').readFileSync(process.argv[2], 'utf8'));"
        "process.stdout.write(JSON.stringify(doc === undefined ? null : doc));"
    )
    result = subprocess.run(
        ["node", "-e", script, str(yaml_package), str(path)], capture_output=True, text=True, timeout=30
    )
    if result.returncode != 0:
        pytest.fail(f"cannot read {path}:\n{result.stderr}", pytrace=False)
    doc = json.loads(result.stdout)
    if doc is not None and not isinstance(doc, dict):
        pytest.fail(f"{path}: want a map with the keys {', '.join(sections)}, got {doc!r}", pytrace=False)
    unknown = sorted(set(doc or {}) - set(sections))
    if unknown:
        pytest.fail(f"{path}: unknown keys {unknown} (want {', '.join(sections)})", pytrace=False)
    baseline = {}
    for section in sections:
        entries = (doc or {}).get(section) or {}
        if not isinstance(entries, dict):
            pytest.fail(f"{path}: `{section}` must map scenario names to reasons", pytrace=False)
        for name, reason in entries.items():
            if not isinstance(reason, str) or not reason.strip() or "\n" in reason.strip():
                pytest.fail(f"{path}: {section}.{name} needs a one-line reason, got {reason!r}", pytrace=False)
        baseline[section] = {str(name): reason.strip() for name, reason in entries.items()}
    return baseline


def results_table(header: list[str], direct: SuiteRun, gateway: SuiteRun, notes: dict[str, list[str]]) -> str:
    """Both runs side by side, one row per scenario of the direct run; `notes`
    (e.g. baseline reasons) go first in a scenario's note column."""
    rows = [*header, "", "| scenario | direct | gateway | note |", "| --- | --- | --- | --- |"]
    for name, here in direct.scenarios.items():
        through = gateway.scenarios.get(name)
        row_notes = list(notes.get(name, []))
        if through is not None and not through.passed:
            if not here.passed and through.failures() == here.failures():
                row_notes.append("both: " + "; ".join(here.failures())[:300])
            else:
                row_notes.append("gateway: " + "; ".join(through.failures())[:300])
                if not here.passed:
                    row_notes.append("direct: " + "; ".join(here.failures())[:300])
        elif not here.passed:
            row_notes.append("direct: " + "; ".join(here.failures())[:300])
        note = " / ".join(row_notes).replace("|", "\\|")
        rows.append(
            f"| {name} | {'pass' if here.passed else 'FAIL'} | "
            f"{'-' if through is None else 'pass' if through.passed else 'FAIL'} | {note} |"
        )
    return "\n".join(rows)


# --------------------------------------------------------------------------
# The conformance fixture: e2e/mcp/conformance-server.mjs

CONFORMANCE_SERVER = Path(__file__).resolve().parent.parent / "mcp" / "conformance-server.mjs"


@dataclass
class ConformanceServer:
    """A running e2e/mcp/conformance-server.mjs (it listens on 127.0.0.1 only)."""

    name: str
    port: int
    process: Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def sessions(self) -> int:
        """How many sessions were opened so far (it logs each one on stdout)."""
        return self.process.stdout.read_text(errors="replace").count("session opened:")


def start_conformance_server(node_modules: Path, workdir: Path, name: str) -> ConformanceServer:
    """Starts the fixture on a free port. ES modules resolve imports from the
    script's own folder up (not NODE_PATH), so it runs from a copy in
    workdir/conformance-<name>/ beside a symlink to the installed node_modules."""
    folder = workdir / f"conformance-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / CONFORMANCE_SERVER.name
    shutil.copyfile(CONFORMANCE_SERVER, script)
    link = folder / "node_modules"
    if not link.is_symlink():
        link.symlink_to(node_modules / "node_modules", target_is_directory=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder), "PORT": "0"}
    proc = Process.start(f"conformance-server-{name}", ["node", str(script)], folder, env)
    match = proc.wait_for_stdout(r"conformance-server listening on 127\.0\.0\.1:(\d+)")
    return ConformanceServer(name, int(match.group(1)), proc)
