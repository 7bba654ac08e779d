"""MCP peers and clients for the MCP gateway's e2e tests (test_mcp.py).

- The peer: `@modelcontextprotocol/server-everything`, the reference MCP
  server, pinned in e2e/mcp/package-lock.json and installed by e2e/lib.sh's
  `ensure_mcp_node_modules` into $SLUICE_CACHE/node-mcp-<hash>, outside the
  clone. e2e/test-all.sh passes that folder in $SLUICE_MCP_NODE_MODULES; when it
  is unset (pytest run by hand) the helper is called from here.
- The clients: the official MCP Python SDK (`mcp`, pinned in requirements.txt)
  for what an agent does, and `RawMcp`, plain httpx JSON-RPC, for what the SDK
  will not send (a tampered session id, a foreign Origin, no key) and for
  moving a session between gateways.

Every wait is bounded: MCP_TIMEOUT_S per call, MCP_SESSION_TIMEOUT_S for a
whole SDK session, STARTUP_TIMEOUT_S for a process to listen.
"""

from __future__ import annotations

import json
import os
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


def start_everything(node_modules: Path, workdir: Path, name: str, port: int | None = None) -> EverythingServer:
    """Starts server-everything on `port` (a free one by default)."""
    port = port or free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "PORT": str(port),
        # Shows up in the get-env tool's answer: tells which server answered.
        "SLUICE_E2E_SERVER": name,
    }
    proc = Process.start(
        f"everything-{name}", ["node", str(everything_entry(node_modules)), "streamableHttp"], workdir, env
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
