"""The MCP gateway's stateless revision 2026-07-28, driven by a real
2026-07-28 client: the official MCP Python SDK's 2.x line, which probes
`server/discover` and then speaks the revision (no initialize, no session).

Behind `sluice run`: one `@modelcontextprotocol/server-everything` (the
reference server, session-based, backend `everything`) and the built-in demo
server (backend `kiwi`, prefix `flights`). The gateway keeps upstream
sessions for stateless clients; server requests during a call come back as
`input_required` results (MRTR); `subscriptions/listen` carries the
server's list changes.

This module runs in the venv of requirements-mcp2.txt (conftest.py skips it
under the SDK's 1.x line, and the other modules under 2.x).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import anyio
import httpx
import pytest

pytest.importorskip("mcp_types", reason="needs the MCP SDK's 2.x line: the venv of requirements-mcp2.txt")

import httpx2  # noqa: E402 (after the skip: the 1.x venv has none of these)
import mcp_types as types  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

from conftest import Gateway, Keys, start_gateway, unique  # noqa: E402
from mcp_support import (  # noqa: E402
    EverythingServer,
    jsonrpc_messages,
    mcp_node_modules,
    run_mcp,
    start_everything,
)

VERSION = "2026-07-28"
TIMEOUT_S = 20.0

CONFIG = """\
apiVersion: sluice.dev/v1alpha1
kind: AIGateway
metadata: {name: default}
spec:
  listen: 127.0.0.1:${SLUICE_PORT}
  admin: 127.0.0.1:${SLUICE_ADMIN_PORT}
  sessionKey: {valueFrom: {env: SLUICE_SESSION_KEY}}
  auth:
    apiKeys:
      - {name: team-a-ci, tenant: team-a, valueFrom: {env: TEAM_A_KEY}}
  llm: {routes: []}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: everything}
spec: {provider: MCP, endpoint: "http://127.0.0.1:${EVERYTHING_PORT}/mcp", timeout: 20s}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: kiwi}
spec: {provider: Demo}
---
apiVersion: sluice.dev/v1alpha1
kind: MCPRoute
metadata: {name: tools}
spec:
  path: /mcp
  backends:
    - {backend: everything}
    - {backend: kiwi, prefix: flights}
"""


@dataclass
class StatelessStack:
    gateway: Gateway
    everything: EverythingServer
    keys: Keys
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"{self.gateway.url}/mcp"

    def headers(self, session_id: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys.team_a}", "x-session-id": session_id}


@pytest.fixture(scope="module")
def _stack(sluice_bin: Path, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StatelessStack]:
    workdir = tmp_path_factory.mktemp("stateless")
    everything = start_everything(mcp_node_modules(), workdir, "everything")
    try:
        env = {
            "TEAM_A_KEY": keys.team_a,
            "SLUICE_SESSION_KEY": "sk-session-" + secrets.token_hex(32),
            "EVERYTHING_PORT": str(everything.port),
        }
        gateway = start_gateway(sluice_bin, workdir / "gateway", CONFIG, env)
        try:
            yield StatelessStack(gateway, everything, keys, env)
        finally:
            gateway.process.stop()
    finally:
        everything.process.stop()


@pytest.fixture
def stack(_stack: StatelessStack) -> StatelessStack:
    for proc in (_stack.gateway.process, _stack.everything.process):
        if not proc.alive():
            proc.fail(f"{proc.name} died during an earlier test")
    return _stack


async def answer_elicitation(_ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"name": "Ada Lovelace", "check": True})


async def answer_sampling(_ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text="sampled by the e2e client"),
        model="e2e-model",
        stop_reason="endTurn",
    )


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def test_a_2026_client_discovers_lists_and_calls(stack: StatelessStack) -> None:
    session_id = unique("stateless")

    async def body():
        async with httpx2.AsyncClient(headers=stack.headers(session_id), timeout=TIMEOUT_S) as http:
            async with Client(streamable_http_client(stack.url, http_client=http)) as client:
                tools = {t.name for t in (await client.list_tools()).tools}
                echoed = text_of(await client.call_tool("everything__echo", {"message": "stateless hello"}))
                flights = text_of(
                    await client.call_tool(
                        "flights__search-flight", {"origin": "Paris", "destination": "Rome", "date": "01/02/2027"}
                    )
                )
                prompt = await client.get_prompt("everything__args-prompt", {"city": "Paris"})
                resources = (await client.list_resources()).resources
                read = await client.read_resource(resources[0].uri)
                completed = await client.complete(
                    types.PromptReference(type="ref/prompt", name="everything__completable-prompt"),
                    {"name": "department", "value": "Eng"},
                )
                return (
                    client.session.protocol_version,
                    client.session.server_info,
                    tools,
                    echoed,
                    flights,
                    prompt,
                    resources,
                    read,
                    completed,
                )

    version, info, tools, echoed, flights, prompt, resources, read, completed = run_mcp(body)
    assert version == VERSION, "the SDK's discover probe chose the stateless revision"
    assert info is not None and info.name == "sluice"
    assert {"everything__echo", "everything__get-sum", "flights__search-flight"} <= tools, sorted(tools)
    assert "everything__trigger-elicitation-request" not in tools, "no elicitation capability declared"
    assert echoed == "Echo: stateless hello"
    assert "from Paris to Rome" in flights
    assert "Paris" in prompt.messages[0].content.text
    assert resources[0].uri.startswith("everything+")
    assert read.contents
    assert completed.completion.values == ["Engineering"], completed

    lines = stack.gateway.logs_for_session(session_id, 8)
    echo = next(l for l in lines if l.get("tool") == "echo")
    assert echo["mcp_method"] == "tools/call" and echo["upstream"] == "everything" and echo["status"] == 200
    assert {l["mcp_method"] for l in lines} >= {"server/discover", "tools/list", "tools/call", "prompts/get"}
    assert all(l["tenant"] == "team-a" for l in lines)
    metrics = stack.gateway.admin("/metrics").text
    assert 'mcp_request_duration_count{mcp_method="server/discover"' in metrics


def test_elicitation_and_sampling_come_back_as_input_required(stack: StatelessStack) -> None:
    seen: list[str] = []

    async def elicit(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        seen.append(params.message)
        return await answer_elicitation(ctx, params)

    async def body():
        async with httpx2.AsyncClient(headers=stack.headers(unique("mrtr")), timeout=TIMEOUT_S) as http:
            async with Client(
                streamable_http_client(stack.url, http_client=http),
                elicitation_callback=elicit,
                sampling_callback=answer_sampling,
            ) as client:
                tools = {t.name for t in (await client.list_tools()).tools}
                elicited = text_of(await client.call_tool("everything__trigger-elicitation-request", {}))
                sampled = text_of(
                    await client.call_tool("everything__trigger-sampling-request", {"prompt": "hi", "maxTokens": 20})
                )
                return tools, elicited, sampled

    tools, elicited, sampled = run_mcp(body)
    assert "everything__trigger-elicitation-request" in tools, "the capabilities reach the upstream session"
    assert seen and seen[0].startswith("Please provide inputs")
    assert "Ada Lovelace" in elicited, elicited
    assert "sampled by the e2e client" in sampled, sampled


def post(url: str, headers: dict[str, str], id: int, method: str, params: dict, capabilities: dict) -> httpx.Response:
    params = {
        **params,
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": VERSION,
            "io.modelcontextprotocol/clientCapabilities": capabilities,
            "io.modelcontextprotocol/clientInfo": {"name": "e2e-raw", "version": "0"},
        },
    }
    wire = {
        **headers,
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": VERSION,
        "mcp-method": method,
    }
    if "name" in params:
        wire["mcp-name"] = params["name"]
    body = {"jsonrpc": "2.0", "id": id, "method": method, "params": params}
    return httpx.post(url, content=json.dumps(body), headers=wire, timeout=TIMEOUT_S)


def response_of(response: httpx.Response) -> dict:
    replies = [m for m in jsonrpc_messages(response) if "id" in m and ("result" in m or "error" in m)]
    assert len(replies) == 1, f"{response.status_code} {response.text[:500]}"
    return replies[0]


def test_request_state_is_sealed_and_held_by_one_process(
    stack: StatelessStack, sluice_bin: Path, tmp_path: Path
) -> None:
    caps = {"elicitation": {}}
    headers = stack.headers(unique("raw-mrtr"))
    call = {"name": "everything__trigger-elicitation-request", "arguments": {}}
    first = response_of(post(stack.url, headers, 1, "tools/call", call, caps))
    result = first["result"]
    assert first["id"] == 1 and result["resultType"] == "input_required", first
    [(key, asked)] = result["inputRequests"].items()
    assert asked["method"] == "elicitation/create"
    state = result["requestState"]

    # A forged state, or one for another tool, is refused.
    forged = response_of(post(stack.url, headers, 2, "tools/call", {**call, "requestState": state[:-4] + "AAAA"}, caps))
    assert forged["error"]["code"] == -32602, forged
    other = response_of(
        post(stack.url, headers, 3, "tools/call", {"name": "everything__echo", "requestState": state}, caps)
    )
    assert other["error"]["code"] == -32602, other

    # Another replica (same sessionKey) opens the state but does not hold the call.
    second = start_gateway(sluice_bin, tmp_path / "second", CONFIG, stack.env)
    try:
        elsewhere = response_of(
            post(f"{second.url}/mcp", headers, 4, "tools/call", {**call, "requestState": state, "inputResponses": {}}, caps)
        )
    finally:
        second.process.stop()
    assert elsewhere["error"]["code"] == -32602
    assert "another replica" in elsewhere["error"]["message"], elsewhere

    # The retry, with a new id, continues the call the server holds open.
    answer = {key: {"action": "accept", "content": {"name": "Grace Hopper", "check": False}}}
    done = response_of(
        post(stack.url, headers, 5, "tools/call", {**call, "requestState": state, "inputResponses": answer}, caps)
    )
    assert done["id"] == 5 and done["result"]["resultType"] == "complete", done
    assert "Grace Hopper" in json.dumps(done["result"]["content"])
    # Once answered, the state is spent.
    again = response_of(
        post(stack.url, headers, 6, "tools/call", {**call, "requestState": state, "inputResponses": answer}, caps)
    )
    assert again["error"]["code"] == -32602


def test_listen_carries_a_list_change(stack: StatelessStack) -> None:
    async def body():
        async with httpx2.AsyncClient(headers=stack.headers(unique("listen")), timeout=TIMEOUT_S) as http:
            async with Client(streamable_http_client(stack.url, http_client=http)) as client:
                async with client.listen(resources_list_changed=True, tools_list_changed=True) as subscription:
                    honored = subscription.honored
                    # Registers a session resource on the upstream session: resources/list_changed.
                    made = await client.call_tool(
                        "everything__gzip-file-as-resource",
                        {"name": "e2e.txt.gz", "data": "data:text/plain;base64,aGVsbG8=", "outputType": "resourceLink"},
                    )
                    with anyio.fail_after(10):
                        async for event in subscription:
                            return honored, made, event
        raise AssertionError("the listen stream ended without an event")

    honored, made, event = run_mcp(body)
    assert honored.resources_list_changed and honored.tools_list_changed, honored
    assert not made.is_error, made.content
    assert type(event).__name__ == "ResourcesListChanged", event


def test_an_unknown_version_is_answered_with_the_versions_served(stack: StatelessStack) -> None:
    response = httpx.post(
        stack.url,
        content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2099-01-01",
            "io.modelcontextprotocol/clientCapabilities": {},
        }}}),
        headers={
            **stack.headers(unique("version")),
            "accept": "application/json, text/event-stream",
            "mcp-protocol-version": "2099-01-01",
            "mcp-method": "server/discover",
        },
        timeout=TIMEOUT_S,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == -32022
    assert VERSION in error["data"]["supported"] and "2025-11-25" in error["data"]["supported"]

    async def body():
        async with httpx2.AsyncClient(headers=stack.headers(unique("pinned")), timeout=TIMEOUT_S) as http:
            async with Client(streamable_http_client(stack.url, http_client=http), mode=VERSION) as client:
                try:
                    await client.session.send_request(types.PingRequest(), types.EmptyResult)
                except MCPError as e:
                    return e.error.code
        return None

    assert run_mcp(body) == -32601, "ping is not part of the revision"
