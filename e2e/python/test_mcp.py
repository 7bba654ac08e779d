"""The MCP gateway: many MCP servers behind one streamable-HTTP endpoint.

Two `@modelcontextprotocol/server-everything` processes (the reference MCP
server) sit behind `sluice run` as the MCP backends `alpha` (prefix `alpha`,
every tool) and `beta` (prefix `b`, tools `echo` and `get-sum` only). Clients:
the official MCP Python SDK, and plain httpx where the SDK will not send what
a test needs (see mcp_support.py).

The servers and the gateway are started once for the module; tests that need
another config (a backend that is down, a second gateway) start their own.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import mcp.types
import pytest
from mcp.shared.exceptions import McpError

from conftest import Gateway, Keys, Process, free_port, start_gateway, unique
from mcp_support import (
    EVERYTHING_PROMPTS,
    EVERYTHING_TOOLS,
    MCP_TIMEOUT_S,
    PROTOCOL_VERSION,
    EverythingServer,
    RawMcp,
    echo_text,
    everything_entry,
    jsonrpc_messages,
    mcp_client,
    mcp_node_modules,
    run_mcp,
    start_everything,
    sum_text,
    tool_text,
)

GATEWAY = """\
apiVersion: sluice.dev/v1alpha1
kind: AIGateway
metadata: {name: default}
spec:
  listen: 127.0.0.1:${SLUICE_PORT}
  admin: 127.0.0.1:${SLUICE_ADMIN_PORT}
  # The same key on two gateways: a session moves between them.
  sessionKey: {valueFrom: {env: SLUICE_SESSION_KEY}}
  auth:
    apiKeys:
      - {name: team-a-ci, tenant: team-a, valueFrom: {env: TEAM_A_KEY}}
  llm: {routes: []}
"""

BACKEND = """\
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec: {{provider: MCP, endpoint: "http://127.0.0.1:${{{port_var}}}/mcp"}}
"""

# alpha: every tool, prefix = the backend name; beta: prefix b, two tools.
MCP_CONFIG = (
    GATEWAY
    + BACKEND.format(name="alpha", port_var="ALPHA_PORT")
    + BACKEND.format(name="beta", port_var="BETA_PORT")
    + """\
---
apiVersion: sluice.dev/v1alpha1
kind: MCPRoute
metadata: {name: tools}
spec:
  path: /mcp
  prefixMode: Always
  backends:
    - {backend: alpha}
    - {backend: beta, prefix: b, tools: {include: ["echo", "get-sum"]}}
"""
)

# alpha, and `gone`, whose server is not running.
DOWN_BACKEND_CONFIG = (
    GATEWAY
    + BACKEND.format(name="alpha", port_var="ALPHA_PORT")
    + BACKEND.format(name="gone", port_var="GONE_PORT")
    + """\
---
apiVersion: sluice.dev/v1alpha1
kind: MCPRoute
metadata: {name: tools}
spec:
  path: /mcp
  prefixMode: Always
  backends:
    - {backend: gone}
    - {backend: alpha}
"""
)

BETA_TOOLS = {"b__echo", "b__get-sum"}


# --------------------------------------------------------------------------
# Fixtures


@dataclass
class Everything:
    alpha: EverythingServer
    beta: EverythingServer

    def processes(self) -> list[Process]:
        return [self.alpha.process, self.beta.process]


@dataclass
class McpStack:
    gateway: Gateway
    everything: Everything
    keys: Keys
    session_key: str
    env: dict[str, str]  # the gateway's: keys and backend ports (for another gateway)

    @property
    def url(self) -> str:
        return f"{self.gateway.url}/mcp"

    def auth(self, **extra: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys.team_a}", **extra}

    def raw(self, url: str | None = None, **headers: str) -> RawMcp:
        return RawMcp(url or self.url, self.auth(**headers))


@pytest.fixture(scope="module")
def _everything(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Everything]:
    node_modules = mcp_node_modules()
    workdir = tmp_path_factory.mktemp("everything")
    started: list[EverythingServer] = []
    try:
        for name in ("alpha", "beta"):
            started.append(start_everything(node_modules, workdir, name))
        yield Everything(*started)
    finally:
        for server in reversed(started):
            server.process.stop()


@pytest.fixture
def everything(_everything: Everything) -> Everything:
    for proc in _everything.processes():
        if not proc.alive():
            proc.fail(f"{proc.name} died during an earlier test")
    return _everything


@pytest.fixture(scope="module")
def _mcp_stack(
    sluice_bin: Path, _everything: Everything, keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[McpStack]:
    session_key = "sk-session-" + secrets.token_hex(32)
    env = {
        "TEAM_A_KEY": keys.team_a,
        "SLUICE_SESSION_KEY": session_key,
        "ALPHA_PORT": str(_everything.alpha.port),
        "BETA_PORT": str(_everything.beta.port),
    }
    gateway = start_gateway(sluice_bin, tmp_path_factory.mktemp("mcp-gateway"), MCP_CONFIG, env)
    try:
        yield McpStack(gateway, _everything, keys, session_key, env)
    finally:
        gateway.process.stop()


@pytest.fixture
def mcp_stack(_mcp_stack: McpStack, everything: Everything) -> McpStack:
    """The shared MCP stack, checked to be still running before each test."""
    if not _mcp_stack.gateway.process.alive():
        _mcp_stack.gateway.process.fail("the MCP gateway died during an earlier test")
    return _mcp_stack


@pytest.fixture
def second_gateway(sluice_bin: Path, mcp_stack: McpStack, tmp_path: Path) -> Iterator[Gateway]:
    """Another gateway process with the same config and the same session key."""
    gateway = start_gateway(sluice_bin, tmp_path / "second", MCP_CONFIG, mcp_stack.env)
    yield gateway
    gateway.process.stop()


def mcp_error_or_is_error(call) -> str:
    """Runs an async tool call that must fail: a JSON-RPC error or an isError result. Returns its text."""
    try:
        result = run_mcp(call)
    except McpError as e:
        return f"JSON-RPC error {e.error.code}: {e.error.message}"
    assert result.isError, f"the call succeeded: {result.content}"
    return tool_text(result)


# --------------------------------------------------------------------------
# The baseline: the SDK against server-everything, no gateway.


def test_server_everything_direct(everything: Everything) -> None:
    async def body():
        async with mcp_client(everything.alpha.url) as c:
            tools = {t.name: t for t in await c.tools()}
            echoed = await c.call_text("echo", {"message": "hello"})
            summed = await c.call_text("get-sum", {"a": 2, "b": 3})
            prompts = {p.name for p in await c.prompts()}
            prompt = await c.session.get_prompt("args-prompt", {"city": "Paris", "state": "Texas"})
            await c.session.send_ping()
            return c.init, c.session_id(), tools, echoed, summed, prompts, prompt

    init, session_id, tools, echoed, summed, prompts, prompt = run_mcp(body)
    assert init.protocolVersion == PROTOCOL_VERSION
    assert init.serverInfo.name == "mcp-servers/everything"
    assert session_id
    assert EVERYTHING_TOOLS <= set(tools), sorted(tools)
    assert set(tools["echo"].inputSchema["properties"]) == {"message"}
    assert set(tools["get-sum"].inputSchema["properties"]) == {"a", "b"}
    assert echoed == echo_text("hello") == "Echo: hello"
    assert summed == sum_text(2, 3) == "The sum of 2 and 3 is 5."
    assert prompts == EVERYTHING_PROMPTS
    assert prompt.messages[0].content.text == "What's weather in Paris, Texas?"


# --------------------------------------------------------------------------
# Through the gateway, with the SDK.


def test_initialize_advertises_tools_and_prompts(mcp_stack: McpStack) -> None:
    async def body():
        async with mcp_client(mcp_stack.url, mcp_stack.auth()) as c:
            pong = await c.session.send_ping()
            return c.init, c.session_id(), pong

    init, session_id, pong = run_mcp(body)
    assert init.protocolVersion == PROTOCOL_VERSION
    assert session_id
    assert init.capabilities.tools is not None
    assert init.capabilities.prompts is not None
    # Resources are aggregated, subscriptions routed (server-everything has them).
    assert init.capabilities.resources is not None
    assert init.capabilities.resources.subscribe
    assert init.capabilities.completions is not None
    assert isinstance(pong, mcp.types.EmptyResult)


def test_tools_are_prefixed_and_filtered(mcp_stack: McpStack) -> None:
    async def body():
        async with mcp_client(mcp_stack.url, mcp_stack.auth()) as c:
            return await c.tools()

    tools = {t.name: t for t in run_mcp(body)}
    names = set(tools)
    alpha = {n.removeprefix("alpha__") for n in names if n.startswith("alpha__")}
    beta = {n for n in names if n.startswith("b__")}
    assert EVERYTHING_TOOLS <= alpha, f"alpha's tools missing: {sorted(EVERYTHING_TOOLS - alpha)}"
    assert beta == BETA_TOOLS, "beta's include filter is echo and get-sum"
    assert names == {f"alpha__{n}" for n in alpha} | beta, f"unprefixed or unknown: {sorted(names)}"
    # The upstream's definitions come through: schema and description.
    assert set(tools["alpha__echo"].inputSchema["properties"]) == {"message"}
    assert set(tools["b__get-sum"].inputSchema["properties"]) == {"a", "b"}
    assert tools["b__echo"].description == "Echoes back the input string"


def test_tools_call_goes_to_the_owning_backend(mcp_stack: McpStack) -> None:
    marker = unique("echo")

    async def body():
        async with mcp_client(mcp_stack.url, mcp_stack.auth()) as c:
            return (
                await c.call_text("alpha__echo", {"message": marker}),
                await c.call_text("b__echo", {"message": marker + "-b"}),
                await c.call_text("alpha__get-sum", {"a": 2, "b": 3}),
                await c.call_text("b__get-sum", {"a": 40, "b": 2}),
                await c.call_text("alpha__get-env", {}),
            )

    alpha_echo, beta_echo, alpha_sum, beta_sum, alpha_env = run_mcp(body)
    assert alpha_echo == echo_text(marker)
    assert beta_echo == echo_text(marker + "-b")
    assert alpha_sum == sum_text(2, 3)
    assert beta_sum == sum_text(40, 2)
    # get-env prints the server's environment: alpha__ reached alpha.
    assert json.loads(alpha_env)["SLUICE_E2E_SERVER"] == "alpha"


@pytest.mark.parametrize("name", ["b__get-env", "alpha__no-such-tool", "nobody__echo", "echo"])
def test_a_tool_outside_the_catalogue_cannot_be_called(mcp_stack: McpStack, name: str) -> None:
    async def body():
        async with mcp_client(mcp_stack.url, mcp_stack.auth()) as c:
            return await c.session.call_tool(name, {"message": "x"} if "echo" in name else {})

    text = mcp_error_or_is_error(body)
    assert "SLUICE_E2E_SERVER" not in text, "a filtered-out tool ran"


def test_prompts_are_prefixed(mcp_stack: McpStack) -> None:
    async def body():
        async with mcp_client(mcp_stack.url, mcp_stack.auth()) as c:
            prompts = {p.name for p in await c.prompts()}
            with_args = await c.session.get_prompt("alpha__args-prompt", {"city": "Paris", "state": "Texas"})
            simple = await c.session.get_prompt("b__simple-prompt")
            return prompts, with_args, simple

    prompts, with_args, simple = run_mcp(body)
    # The include filter of beta is on tools only: all of its prompts show.
    assert prompts == {f"{prefix}__{p}" for prefix in ("alpha", "b") for p in EVERYTHING_PROMPTS}
    assert with_args.messages[0].content.text == "What's weather in Paris, Texas?"
    assert simple.messages[0].content.text == "This is a simple prompt without arguments."


def test_a_backend_down_at_initialize_is_skipped(sluice_bin: Path, mcp_stack: McpStack, tmp_path: Path) -> None:
    env = {**mcp_stack.env, "GONE_PORT": str(free_port())}  # nothing listens there
    gateway = start_gateway(sluice_bin, tmp_path, DOWN_BACKEND_CONFIG, env)
    try:

        async def body():
            async with mcp_client(f"{gateway.url}/mcp", mcp_stack.auth()) as c:
                tools = {t.name for t in await c.tools()}
                prompts = {p.name for p in await c.prompts()}
                echoed = await c.call_text("alpha__echo", {"message": "still here"})
                return tools, prompts, echoed

        tools, prompts, echoed = run_mcp(body)
        assert {f"alpha__{t}" for t in EVERYTHING_TOOLS} <= tools
        assert all(t.startswith("alpha__") for t in tools), sorted(tools)
        assert all(p.startswith("alpha__") for p in prompts), sorted(prompts)
        assert echoed == echo_text("still here")
    finally:
        gateway.process.stop()


# --------------------------------------------------------------------------
# The wire, with plain httpx.


def test_initialize_and_initialized_on_the_wire(mcp_stack: McpStack) -> None:
    raw = mcp_stack.raw()
    response = raw.initialize()
    assert response.status_code == 200, response.text
    session_id = response.headers.get("mcp-session-id")
    assert session_id, dict(response.headers)
    assert all(0x21 <= ord(ch) <= 0x7E for ch in session_id), "Mcp-Session-Id must be visible ASCII"
    result = raw.result_of(response)
    assert result["protocolVersion"] == PROTOCOL_VERSION
    assert {"tools", "prompts"} <= set(result["capabilities"])

    notified = raw.notify("notifications/initialized")
    assert notified.status_code == 202, notified.text
    assert not notified.content

    assert raw.call("ping") == {}
    listed = raw.call("tools/list")
    assert BETA_TOOLS <= {t["name"] for t in listed["tools"]}


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18"])
def test_an_older_protocol_version_is_negotiated(mcp_stack: McpStack, version: str) -> None:
    raw = mcp_stack.raw()
    response = raw.request(
        "initialize",
        {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "old", "version": "0"}},
        session=False,
    )
    assert response.status_code == 200, response.text
    assert raw.result_of(response)["protocolVersion"] == version
    raw.session_id, raw.protocol_version = response.headers["mcp-session-id"], version
    assert raw.notify("notifications/initialized").status_code == 202
    result = raw.call("tools/call", {"name": "b__echo", "arguments": {"message": version}})
    assert result["content"][0]["text"] == echo_text(version)


def test_a_session_moves_between_gateways(mcp_stack: McpStack, second_gateway: Gateway) -> None:
    first = mcp_stack.raw()
    first.open_session()
    assert first.protocol_version == PROTOCOL_VERSION

    # The same Mcp-Session-Id and MCP-Protocol-Version, on another process.
    second = mcp_stack.raw(f"{second_gateway.url}/mcp")
    second.session_id, second.protocol_version = first.session_id, first.protocol_version
    result = second.call("tools/call", {"name": "alpha__echo", "arguments": {"message": "moved"}})
    assert result["content"][0]["text"] == echo_text("moved")
    result = second.call("tools/call", {"name": "b__get-sum", "arguments": {"a": 1, "b": 2}})
    assert result["content"][0]["text"] == sum_text(1, 2)

    # And back: the first gateway still serves it.
    result = first.call("tools/call", {"name": "alpha__get-sum", "arguments": {"a": 5, "b": 6}})
    assert result["content"][0]["text"] == sum_text(5, 6)


def test_a_session_from_a_gateway_with_another_key_is_unknown(
    sluice_bin: Path, mcp_stack: McpStack, tmp_path: Path
) -> None:
    env = {**mcp_stack.env, "SLUICE_SESSION_KEY": "sk-session-" + secrets.token_hex(32)}
    other = start_gateway(sluice_bin, tmp_path, MCP_CONFIG, env)
    try:
        first = mcp_stack.raw()
        first.open_session()
        stranger = mcp_stack.raw(f"{other.url}/mcp")
        stranger.session_id, stranger.protocol_version = first.session_id, first.protocol_version
        response = stranger.request("tools/list")
        assert response.status_code == 404, response.text
    finally:
        other.process.stop()


def tampered(session_id: str) -> str:
    """The id with one character changed (in the middle, where a MAC or ciphertext is)."""
    i = len(session_id) // 2
    ch = session_id[i]
    return session_id[:i] + ("A" if ch != "A" else "B") + session_id[i + 1 :]


def assert_jsonrpc_error(response: httpx.Response) -> None:
    messages = jsonrpc_messages(response)
    assert len(messages) == 1, response.text
    assert messages[0].get("jsonrpc") == "2.0", messages[0]
    assert isinstance(messages[0].get("error", {}).get("code"), int), messages[0]


@pytest.mark.parametrize("how", ["tampered", "made-up"])
def test_an_unknown_session_id_is_404(mcp_stack: McpStack, how: str) -> None:
    raw = mcp_stack.raw()
    raw.open_session()
    raw.session_id = tampered(raw.session_id) if how == "tampered" else unique("no-such-session")
    response = raw.request("tools/list")
    assert response.status_code == 404, response.text
    assert_jsonrpc_error(response)


def test_a_missing_session_id_is_400(mcp_stack: McpStack) -> None:
    raw = mcp_stack.raw()
    raw.open_session()
    response = raw.request("tools/list", headers={"mcp-protocol-version": PROTOCOL_VERSION}, session=False)
    assert response.status_code == 400, response.text
    assert_jsonrpc_error(response)


def test_a_foreign_origin_is_403(mcp_stack: McpStack) -> None:
    port = mcp_stack.gateway.port
    for origin in ("http://evil.example", f"http://evil.example:{port}", "null"):
        response = mcp_stack.raw().initialize(headers={"origin": origin})
        assert response.status_code == 403, f"Origin {origin}: {response.status_code} {response.text}"

    # On an open session too.
    raw = mcp_stack.raw()
    raw.open_session()
    response = raw.request("tools/list", headers={"origin": "https://attacker.example"})
    assert response.status_code == 403, response.text

    # Local origins, and the host the client addressed, are fine.
    for origin in (f"http://127.0.0.1:{port}", "http://localhost", f"http://localhost:{port}", "http://[::1]:8080"):
        response = mcp_stack.raw().initialize(headers={"origin": origin})
        assert response.status_code == 200, f"Origin {origin}: {response.status_code} {response.text}"


def test_no_or_a_bad_key_is_401(mcp_stack: McpStack) -> None:
    assert RawMcp(mcp_stack.url).initialize().status_code == 401
    bad = RawMcp(mcp_stack.url, {"authorization": "Bearer sk-not-a-key"}).initialize()
    assert bad.status_code == 401, bad.text
    bad = RawMcp(mcp_stack.url, {"x-api-key": "sk-not-a-key"}).initialize()
    assert bad.status_code == 401, bad.text
    good = RawMcp(mcp_stack.url, {"x-api-key": mcp_stack.keys.team_a}).initialize()
    assert good.status_code == 200, good.text

    # Every request is checked, not just initialize.
    raw = mcp_stack.raw()
    raw.open_session()
    keyless = RawMcp(mcp_stack.url, {}, raw.session_id, raw.protocol_version)
    response = keyless.request("tools/list")
    assert response.status_code == 401, response.text


def test_the_sdk_reports_a_missing_key(mcp_stack: McpStack) -> None:
    async def body():
        async with mcp_client(mcp_stack.url) as c:
            return c.init

    with pytest.raises(AssertionError, match="401"):
        run_mcp(body, timeout=3 * MCP_TIMEOUT_S)


def test_delete_ends_the_upstream_sessions(mcp_stack: McpStack) -> None:
    alpha, beta = mcp_stack.everything.alpha, mcp_stack.everything.beta
    raw = mcp_stack.raw()
    raw.open_session()
    before = alpha.terminations(), beta.terminations()
    response = raw.delete()
    assert 200 <= response.status_code < 300, f"{response.status_code} {response.text}"
    deadline = time.monotonic() + MCP_TIMEOUT_S
    while alpha.terminations() == before[0] or beta.terminations() == before[1]:
        assert time.monotonic() < deadline, (
            f"the upstream sessions were not ended: DELETEs seen by alpha {alpha.terminations() - before[0]}, "
            f"by beta {beta.terminations() - before[1]}"
        )
        time.sleep(0.05)


def test_get_opens_the_session_stream(mcp_stack: McpStack) -> None:
    """GET with a session is the merged SSE stream of the servers; without a
    session it is refused like any other request."""
    raw = mcp_stack.raw()
    raw.open_session()
    headers = {
        **raw.headers,
        "accept": "text/event-stream",
        "mcp-protocol-version": raw.protocol_version,
    }
    with httpx.stream(
        "GET", raw.url, headers={**headers, "mcp-session-id": raw.session_id}, timeout=MCP_TIMEOUT_S
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
    assert httpx.get(raw.url, headers=headers, timeout=MCP_TIMEOUT_S).status_code == 400


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str | None, dict | None]]:
    """(event id, JSON-RPC message or None) per SSE event, as they arrive."""
    event_id, data = None, []
    for line in lines:
        if line == "":
            message = json.loads("\n".join(data)) if "".join(data).strip() else None
            yield event_id, message
            event_id, data = None, []
        elif line.startswith("id:"):
            event_id = line[3:].lstrip(" ")
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))


def test_a_call_answer_resumes_with_last_event_id(mcp_stack: McpStack) -> None:
    """The client loses a call's SSE answer after the first progress event;
    GET with that event's Last-Event-ID replays the rest of that answer from
    the server that holds it, up to the result, with the client's own id."""
    raw = mcp_stack.raw()
    raw.open_session()
    body = raw.request_body(
        "tools/call",
        {
            "name": "alpha__trigger-long-running-operation",
            "arguments": {"duration": 1.5, "steps": 3},
            "_meta": {"progressToken": "resume-me"},
        },
    )
    headers = {
        **raw.headers,
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-session-id": raw.session_id,
        "mcp-protocol-version": raw.protocol_version,
    }
    last_id = None
    with httpx.stream("POST", raw.url, content=json.dumps(body), headers=headers, timeout=MCP_TIMEOUT_S) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for event_id, message in sse_events(r.iter_lines()):
            if message and message.get("method") == "notifications/progress":
                assert event_id and event_id.startswith("c0."), f"event id {event_id!r}"
                assert message["params"]["progress"] == 1
                last_id = event_id
                break  # the connection drops here
    assert last_id, "no progress event with an id"
    # The server keeps what it sends meanwhile (server-everything's SDK routes
    # events to a resumed stream only once the tool is done; a client waits
    # the stream's `retry` first anyway).
    time.sleep(2.0)

    resumed: list[dict] = []
    get_headers = {**headers, "accept": "text/event-stream", "last-event-id": last_id}
    with httpx.stream("GET", raw.url, headers=get_headers, timeout=MCP_TIMEOUT_S) as r:
        assert r.status_code == 200, r.read()
        for event_id, message in sse_events(r.iter_lines()):
            if message is None:
                continue
            assert event_id and event_id.startswith("c0."), f"replayed event id {event_id!r}"
            resumed.append(message)
            if "result" in message or "error" in message:
                break
    progress = [m["params"]["progress"] for m in resumed if m.get("method") == "notifications/progress"]
    assert progress == [2, 3], resumed
    assert resumed[-1]["id"] == body["id"], resumed[-1]
    assert "Long running operation completed" in resumed[-1]["result"]["content"][0]["text"]


def test_the_session_stream_resumes_with_last_event_id(mcp_stack: McpStack) -> None:
    """Messages a server sends while the client's GET stream is down are
    replayed when the client comes back with Last-Event-ID."""
    raw = mcp_stack.raw()
    raw.open_session()
    headers = {
        **raw.headers,
        "accept": "text/event-stream",
        "mcp-session-id": raw.session_id,
        "mcp-protocol-version": raw.protocol_version,
    }
    last_id = None
    try:
        with httpx.stream("GET", raw.url, headers=headers, timeout=MCP_TIMEOUT_S) as r:
            assert r.status_code == 200
            # Logs now, then every 5 s, on the session's stream.
            raw.call("tools/call", {"name": "b__echo", "arguments": {"message": "warm"}})
            raw.call("tools/call", {"name": "alpha__toggle-simulated-logging", "arguments": {}})
            for event_id, message in sse_events(r.iter_lines()):
                if message and message.get("method") == "notifications/message":
                    last_id = event_id
                    break
        assert last_id and last_id.startswith("g0."), f"event id {last_id!r}"
        time.sleep(5.5)  # the next log message is sent while no stream is open
        with httpx.stream(
            "GET", raw.url, headers={**headers, "last-event-id": last_id}, timeout=MCP_TIMEOUT_S
        ) as r:
            assert r.status_code == 200
            replayed = None
            for event_id, message in sse_events(r.iter_lines()):
                if message and message.get("method") == "notifications/message":
                    replayed = event_id
                    break
        assert replayed and replayed.startswith("g0.") and replayed != last_id, replayed
    finally:
        raw.call("tools/call", {"name": "alpha__toggle-simulated-logging", "arguments": {}})

    bad = httpx.get(raw.url, headers={**headers, "last-event-id": "nonsense"}, timeout=MCP_TIMEOUT_S)
    assert bad.status_code == 400, bad.text


def test_resource_subscriptions_go_to_the_owning_server(mcp_stack: McpStack) -> None:
    """resources/subscribe reaches the server that owns the URI, with its own
    URI; its notifications/resources/updated reach the client on the GET
    stream under the prefixed URI; unsubscribe goes the same way."""
    updated: list[str] = []

    async def on_message(message) -> None:
        if isinstance(message, mcp.types.ServerNotification) and isinstance(
            message.root, mcp.types.ResourceUpdatedNotification
        ):
            updated.append(str(message.root.params.uri))

    async def body():
        async with mcp_client(mcp_stack.url, mcp_stack.auth(), message_handler=on_message) as c:
            assert c.init.capabilities.resources and c.init.capabilities.resources.subscribe
            resources = (await c.session.list_resources()).resources
            alpha_uri = next(str(r.uri) for r in resources if str(r.uri).startswith("alpha+"))
            await c.session.subscribe_resource(alpha_uri)
            # Sends an update for each subscribed URI now, then every 5 s.
            await c.call_text("alpha__toggle-subscriber-updates", {})
            try:
                for _ in range(100):
                    if alpha_uri in updated:
                        break
                    await asyncio.sleep(0.1)
            finally:
                await c.session.unsubscribe_resource(alpha_uri)
                await c.call_text("alpha__toggle-subscriber-updates", {})
            with pytest.raises(McpError, match="Unknown resource"):
                await c.session.subscribe_resource("nobody+demo://x")
            return alpha_uri

    alpha_uri = run_mcp(body)
    assert alpha_uri in updated, f"no update for {alpha_uri}: {updated}"
    assert all(u.startswith(("alpha+", "b+")) for u in updated), updated


# --------------------------------------------------------------------------
# The access log.


def test_access_log_names_method_tool_upstream_session_and_tenant(mcp_stack: McpStack) -> None:
    session_id = unique("e2e-mcp-session")

    async def body():
        async with mcp_client(mcp_stack.url, mcp_stack.auth(**{"x-session-id": session_id})) as c:
            await c.call_text("alpha__echo", {"message": "logged"})
            await c.call_text("b__get-sum", {"a": 1, "b": 1})

    run_mcp(body)
    gateway = mcp_stack.gateway

    def line_for(method: str, tool: str | None = None) -> dict:
        return gateway.wait_for_log(
            lambda line: (
                line.get("session_id") == session_id
                and line.get("mcp_method") == method
                and (tool is None or line.get("tool") == tool)
            )
        )

    echo = line_for("tools/call", "echo")
    assert echo["upstream"] == "alpha"
    summed = line_for("tools/call", "get-sum")
    assert summed["upstream"] == "beta", "upstream is the backend's name, not its prefix"
    for line in (echo, summed):
        assert line["path"] == "/mcp"
        assert line["method"] == "POST"
        assert line["tenant"] == "team-a"
        assert line["status"] == 200
        assert isinstance(line["latency_ms"], (int, float)) and line["latency_ms"] >= 0
    initialize = line_for("initialize")
    assert initialize["status"] == 200 and initialize["tenant"] == "team-a"

    text = gateway.log_text()
    assert mcp_stack.keys.team_a not in text, "the client's API key is in the gateway's output"
    assert mcp_stack.session_key not in text, "the session key is in the gateway's output"


def answering_client(seen: list[str]):
    """Sampling and elicitation callbacks that answer as a user would, noting
    each request in `seen`; passing them declares both capabilities."""

    async def sampling(context, params):
        seen.append("sampling")
        return mcp.types.CreateMessageResult(
            role="assistant",
            content=mcp.types.TextContent(type="text", text="sampled-by-the-e2e-client"),
            model="e2e-model",
            stopReason="endTurn",
        )

    async def elicitation(context, params):
        seen.append("elicitation")
        return mcp.types.ElicitResult(action="accept", content={"name": "Ada", "check": True, "color": "blue"})

    return sampling, elicitation


def test_sampling_and_elicitation_are_relayed_to_the_client(mcp_stack: McpStack) -> None:
    """server-everything asks the client (through the gateway) to sample and
    to elicit during a tools/call; the client's answers go back to the
    upstream that asked, and the tool's result carries them."""
    seen: list[str] = []

    sampling, elicitation = answering_client(seen)

    async def body():
        async with mcp_client(
            mcp_stack.url, mcp_stack.auth(), sampling_callback=sampling, elicitation_callback=elicitation
        ) as c:
            names = [t.name for t in (await c.session.list_tools()).tools]
            sampled = await c.call_text("alpha__trigger-sampling-request", {"prompt": "hi", "maxTokens": 20})
            elicited = await c.call_text("alpha__trigger-elicitation-request", {})
            return names, sampled, elicited

    names, sampled, elicited = run_mcp(body)
    assert "alpha__trigger-sampling-request" in names, "the client declared sampling, so the upstream offers it"
    assert "sampled-by-the-e2e-client" in sampled
    assert "Ada" in elicited
    assert seen == ["sampling", "elicitation"]


def test_an_expired_upstream_session_is_initialised_again(
    sluice_bin: Path, keys: Keys, tmp_path: Path
) -> None:
    """The upstream restarts and forgets its sessions: the client's session
    through the gateway carries on, tools/list and tools/call alike."""
    node_modules = mcp_node_modules()
    server = start_everything(node_modules, tmp_path / "restarting", "restarting")
    env = {
        "TEAM_A_KEY": keys.team_a,
        "SLUICE_SESSION_KEY": "sk-session-" + secrets.token_hex(16),
        "ALPHA_PORT": str(server.port),
        "BETA_PORT": str(server.port),
    }
    gateway = start_gateway(sluice_bin, tmp_path / "gateway", MCP_CONFIG, env)
    url = f"http://127.0.0.1:{gateway.port}/mcp"
    restarted: list[EverythingServer] = []

    async def body():
        async with mcp_client(url, {"authorization": f"Bearer {keys.team_a}"}) as c:
            before = await c.call_text("alpha__echo", {"message": "before"})
            server.process.stop()
            restarted.append(start_everything(node_modules, tmp_path / "restarted", "restarted", port=server.port))
            after = await c.call_text("alpha__echo", {"message": "after"})
            tools = [t.name for t in (await c.session.list_tools()).tools]
            env_text = await c.call_text("alpha__get-env", {})
            return before, after, tools, env_text

    try:
        before, after, tools, env_text = run_mcp(body)
    finally:
        gateway.process.stop()
        for s in restarted:
            s.process.stop()
        server.process.stop()
    assert before == echo_text("before")
    assert after == echo_text("after")
    assert "b__echo" in tools
    assert json.loads(env_text)["SLUICE_E2E_SERVER"] == "restarted"


def test_resources_are_prefixed_and_read_from_their_server(mcp_stack: McpStack) -> None:
    """Resource URIs carry their server's prefix (`alpha+demo://...`), in
    lists and inside answers (the contents of a read, resource links and
    embedded resources in tool results); reading one goes to that server
    with the original URI, so a link from a tool result reads back."""

    async def body():
        async with mcp_client(mcp_stack.url, mcp_stack.auth()) as c:
            resources = (await c.session.list_resources()).resources
            templates = (await c.session.list_resource_templates()).resourceTemplates
            first = next(r for r in resources if str(r.uri).startswith("b+"))
            read = await c.session.read_resource(first.uri)
            links = await c.session.call_tool("alpha__get-resource-links", {"count": 2})
            link = next(b for b in links.content if isinstance(b, mcp.types.ResourceLink))
            followed = await c.session.read_resource(link.uri)
            embedded = await c.session.call_tool("alpha__get-resource-reference", {})
            return resources, templates, first, read, link, followed, embedded

    resources, templates, first, read, link, followed, embedded = run_mcp(body)
    uris = [str(r.uri) for r in resources]
    assert any(u.startswith("alpha+demo://") for u in uris) and any(u.startswith("b+demo://") for u in uris)
    assert all(u.split("+", 1)[0] in ("alpha", "b") for u in uris)
    assert {t.uriTemplate.split("+", 1)[0] for t in templates} == {"alpha", "b"}
    assert str(read.contents[0].uri) == str(first.uri), "the read answers under the URI the client asked for"
    assert str(link.uri).startswith("alpha+demo://"), link
    assert str(followed.contents[0].uri) == str(link.uri)
    resource = next(b for b in embedded.content if isinstance(b, mcp.types.EmbeddedResource))
    assert str(resource.resource.uri).startswith("alpha+demo://"), resource


def test_the_session_stream_carries_server_messages(mcp_stack: McpStack) -> None:
    """Messages a server sends outside any call (here: simulated logging)
    reach the client on the session's GET stream, merged from the servers'
    own streams; logging/setLevel goes through."""
    received: list[str] = []

    async def on_log(params) -> None:
        received.append(str(params.data))

    async def body():
        async with mcp_client(mcp_stack.url, mcp_stack.auth(), logging_callback=on_log) as c:
            assert c.init.capabilities.logging is not None
            await c.session.set_logging_level("debug")
            await c.call_text("alpha__toggle-simulated-logging", {})
            try:
                for _ in range(100):  # the server logs every few seconds
                    if received:
                        break
                    await asyncio.sleep(0.1)
            finally:
                await c.call_text("alpha__toggle-simulated-logging", {})

    run_mcp(body)
    assert received, "no server message reached the client on the GET stream"
    assert "SessionId" in received[0]


def test_a_server_that_dies_mid_call_answers_with_an_error(
    sluice_bin: Path, keys: Keys, tmp_path: Path
) -> None:
    """The server dies while a long call streams progress: the client gets a
    JSON-RPC error for that call at once, not a hang, and the session still
    serves the other server."""
    node_modules = mcp_node_modules()
    doomed = start_everything(node_modules, tmp_path / "doomed", "doomed")
    other = start_everything(node_modules, tmp_path / "other", "other")
    env = {
        "TEAM_A_KEY": keys.team_a,
        "SLUICE_SESSION_KEY": "sk-session-" + secrets.token_hex(16),
        "ALPHA_PORT": str(doomed.port),
        "BETA_PORT": str(other.port),
    }
    gateway = start_gateway(sluice_bin, tmp_path / "gateway", MCP_CONFIG, env)
    url = f"http://127.0.0.1:{gateway.port}/mcp"

    async def body():
        async with mcp_client(url, {"authorization": f"Bearer {keys.team_a}"}) as c:
            call = asyncio.create_task(
                c.session.call_tool("alpha__trigger-long-running-operation", {"duration": 20, "steps": 20})
            )
            await asyncio.sleep(1.5)
            doomed.process.stop()
            started = time.monotonic()
            try:
                result = await asyncio.wait_for(call, timeout=15)
                outcome = "isError" if result.isError else "result"
            except McpError as e:
                outcome = f"error: {e.error.message}"
            waited = time.monotonic() - started
            still = await c.call_text("b__echo", {"message": "still here"})
            return outcome, waited, still

    try:
        outcome, waited, still = run_mcp(body)
    finally:
        gateway.process.stop()
        other.process.stop()
        doomed.process.stop()
    assert outcome.startswith("error") and "failed mid-answer" in outcome, outcome
    assert waited < 10, f"the error took {waited:.1f}s"
    assert still == echo_text("still here")


STDIO_CONFIG = (
    GATEWAY
    + BACKEND.format(name="alpha", port_var="ALPHA_PORT")
    + """\
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: local}
spec: {provider: MCP, command: [node, "${EVERYTHING_ENTRY}", stdio]}
---
apiVersion: sluice.dev/v1alpha1
kind: MCPRoute
metadata: {name: tools}
spec:
  path: /mcp
  backends:
    - {backend: local, prefix: std}
    - {backend: alpha}
"""
)


def stdio_processes(entry: Path) -> int:
    """How many stdio server-everything processes run from this entry point."""
    out = subprocess.run(["pgrep", "-f", f"{entry} stdio"], capture_output=True, text=True).stdout
    return len(out.split())


def test_a_stdio_server_runs_per_session_behind_the_route(
    sluice_bin: Path, keys: Keys, everything: Everything, tmp_path: Path
) -> None:
    """A `command` backend: the gateway starts one stdio server-everything
    per client session, lists and calls it next to an HTTP server, and stops
    it when the session is deleted."""
    entry = everything_entry(mcp_node_modules())
    env = {
        "TEAM_A_KEY": keys.team_a,
        "SLUICE_SESSION_KEY": "sk-session-" + secrets.token_hex(16),
        "ALPHA_PORT": str(everything.alpha.port),
        "EVERYTHING_ENTRY": str(entry),
    }
    gateway = start_gateway(sluice_bin, tmp_path / "gateway", STDIO_CONFIG, env)
    url = f"http://127.0.0.1:{gateway.port}/mcp"
    before = stdio_processes(entry)

    async def body():
        async with mcp_client(url, {"authorization": f"Bearer {keys.team_a}"}) as c:
            names = [t.name for t in (await c.session.list_tools()).tools]
            running = stdio_processes(entry)
            over_stdio = await c.call_text("std__echo", {"message": "over stdio"})
            over_http = await c.call_text("alpha__echo", {"message": "over http"})
            prompts = [p.name for p in (await c.session.list_prompts()).prompts]
            return names, running, over_stdio, over_http, prompts

    try:
        names, running, over_stdio, over_http, prompts = run_mcp(body)
        for _ in range(50):  # the DELETE at the end of the session stops the process
            if stdio_processes(entry) == before:
                break
            time.sleep(0.1)
        after = stdio_processes(entry)
    finally:
        gateway.process.stop()
    assert "std__echo" in names and "alpha__echo" in names
    assert running == before + 1, "one stdio process for the session"
    assert over_stdio == echo_text("over stdio")
    assert over_http == echo_text("over http")
    assert "std__simple-prompt" in prompts
    assert after == before, "the session's DELETE stopped its stdio server"


CHANNELS_CONFIG = (
    GATEWAY
    + """\
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: local}
spec: {provider: MCP, command: [node, "${EVERYTHING_ENTRY}", stdio]}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: legacy}
spec: {provider: MCP, endpoint: "http://127.0.0.1:${LEGACY_PORT}/sse", transport: SSE}
---
apiVersion: sluice.dev/v1alpha1
kind: MCPRoute
metadata: {name: tools}
spec:
  path: /mcp
  backends:
    - {backend: local, prefix: std}
    - {backend: legacy, prefix: old}
"""
)


@pytest.mark.parametrize("prefix", ["std", "old"])
def test_stdio_and_legacy_sse_servers_relay_their_own_messages(
    sluice_bin: Path, keys: Keys, tmp_path: Path, prefix: str
) -> None:
    """A stdio server and a legacy HTTP+SSE server (server-everything in
    `sse` mode) behind one route: listed and called like the others, their
    progress notifications and sampling/elicitation requests relayed on the
    call's stream, the client's answers sent back, log messages on the
    session's stream."""
    node_modules = mcp_node_modules()
    legacy = start_everything(node_modules, tmp_path / "legacy", "legacy", transport="sse")
    env = {
        "TEAM_A_KEY": keys.team_a,
        "SLUICE_SESSION_KEY": "sk-session-" + secrets.token_hex(16),
        "EVERYTHING_ENTRY": str(everything_entry(node_modules)),
        "LEGACY_PORT": str(legacy.port),
    }
    gateway = start_gateway(sluice_bin, tmp_path / "gateway", CHANNELS_CONFIG, env)
    url = f"http://127.0.0.1:{gateway.port}/mcp"
    seen: list[str] = []
    progress: list[float] = []
    logs: list[str] = []

    sampling, elicitation = answering_client(seen)

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    async def on_log(params) -> None:
        logs.append(str(params.data))

    async def body():
        async with mcp_client(
            url,
            {"authorization": f"Bearer {keys.team_a}"},
            sampling_callback=sampling,
            elicitation_callback=elicitation,
            logging_callback=on_log,
        ) as c:
            names = [t.name for t in (await c.session.list_tools()).tools]
            echoed = await c.call_text(f"{prefix}__echo", {"message": "hello"})
            long = await c.session.call_tool(
                f"{prefix}__trigger-long-running-operation",
                {"duration": 0.6, "steps": 3},
                progress_callback=on_progress,
            )
            sampled = await c.call_text(f"{prefix}__trigger-sampling-request", {"prompt": "hi", "maxTokens": 20})
            elicited = await c.call_text(f"{prefix}__trigger-elicitation-request", {})
            await c.session.set_logging_level("debug")
            await c.call_text(f"{prefix}__toggle-simulated-logging", {})
            try:
                for _ in range(100):
                    if logs:
                        break
                    await asyncio.sleep(0.1)
            finally:
                await c.call_text(f"{prefix}__toggle-simulated-logging", {})
            return names, echoed, tool_text(long), sampled, elicited

    try:
        names, echoed, long, sampled, elicited = run_mcp(body)
    finally:
        gateway.process.stop()
        legacy.process.stop()
    assert {"std__echo", "old__echo"} <= set(names), names
    assert echoed == echo_text("hello")
    assert "Long running operation completed" in long
    assert progress == [1, 2, 3], progress
    assert "sampled-by-the-e2e-client" in sampled
    assert "Ada" in elicited
    assert seen == ["sampling", "elicitation"]
    assert logs, "no log message from the server reached the session's stream"
