"""The flow Sluice was conceived from, end to end: an agent with one MCP
extension at http://127.0.0.1:1975/mcp asks for flights; the LLM calls the
`search-flight` tool; the agent calls it through the gateway; the LLM answers
with the flights; and the gateway's access log holds the LLM lines and the
MCP lines of that run under one session id.

The demo was Goose running this recipe (see docs/mcp.md):

    extensions:
      - {name: mcp_gateway, type: streamable_http, uri: http://127.0.0.1:1975/mcp}

Goose cannot be installed here, so the agent loop is written below with the
official OpenAI Python SDK (the LLM side) and the official MCP Python SDK
(the tool side), both pointed at ONE gateway and both sending the same
`x-session-id` header, which is what Goose does with
OPENAI_CUSTOM_HEADERS and an extension's headers.

- test_the_default_config_runs_the_flight_search: `sluice run` with no
  config file: the demo model `sluice-demo` (which calls the first tool it is
  offered, then reports the tool's result) and the demo MCP server at /mcp.
- test_a_real_llm_api_and_an_mcp_route: an OpenAI-compatible provider (the
  fake `sluice-test-upstream`, told to call the tool) and an MCPRoute to a
  `provider: Demo` backend named `kiwi`, with API keys: the seed's log lines,
  upstream "openai" then upstream "kiwi".
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mcp.types
import openai
import pytest

from conftest import CALL_TIMEOUT_S, Gateway, Keys, start_gateway, start_upstream, unique
from mcp_support import McpClient, mcp_client, run_mcp, tool_text

USER_PROMPT = "Find flights from New York to Los Angeles on 31/12/2026"
# What the demo MCP server's search-flight answers (proxy/src/mcp/demo.rs).
FIRST_FLIGHT = "AF123 departs 08:05, arrives 11:20, nonstop, EUR 299"
DEMO_TOOLS = ["search-flight", "list-events", "create-event"]
# The agent gives up after this many LLM turns (the flow needs two).
MAX_TURNS = 4


# --------------------------------------------------------------------------
# The agent


def openai_tool(tool: mcp.types.Tool) -> dict[str, Any]:
    """An MCP tool as an OpenAI chat-completions `tools` entry (what Goose does)."""
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description or "",
            "parameters": tool.inputSchema,
        },
    }


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass
class Turn:
    """One chat completion: what the LLM said and which tools it called."""

    content: str | None
    tool_calls: list[ToolCall]
    finish_reason: str | None


@dataclass
class AgentRun:
    """What happened in one run of the agent loop."""

    tools: list[mcp.types.Tool] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    # (tool name, arguments, the tool's text result)
    tool_results: list[tuple[str, dict, str]] = field(default_factory=list)
    mcp_session_id: str | None = None

    @property
    def answer(self) -> str | None:
        return self.turns[-1].content if self.turns else None


async def complete(
    llm: openai.AsyncOpenAI,
    model: str,
    messages: list[dict],
    tools: list[dict],
    stream: bool,
    headers: dict[str, str],
) -> Turn:
    """One chat completion, streamed or not, read into a Turn."""
    if not stream:
        reply = await llm.chat.completions.create(
            model=model, messages=messages, tools=tools, extra_headers=headers
        )
        choice = reply.choices[0]
        calls = [
            ToolCall(c.id, c.function.name, c.function.arguments)
            for c in choice.message.tool_calls or []
            if c.type == "function"
        ]
        return Turn(choice.message.content, calls, choice.finish_reason)

    chunks = await llm.chat.completions.create(
        model=model, messages=messages, tools=tools, stream=True, extra_headers=headers
    )
    content: list[str] = []
    partial: dict[int, dict[str, str]] = {}
    finish = None
    async for chunk in chunks:
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content:
                content.append(delta.content)
            for call in delta.tool_calls or []:
                slot = partial.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] = call.id or slot["id"]
                if call.function is not None:
                    slot["name"] += call.function.name or ""
                    slot["arguments"] += call.function.arguments or ""
            finish = choice.finish_reason or finish
    calls = [ToolCall(c["id"], c["name"], c["arguments"]) for _, c in sorted(partial.items())]
    return Turn("".join(content) or None, calls, finish)


async def run_agent(
    gateway: Gateway,
    model: str,
    api_key: str | None,
    session_id: str,
    stream: bool = False,
    first_turn_headers: dict[str, str] | None = None,
) -> AgentRun:
    """The agent loop: list the MCP tools, offer them to the LLM, call the
    ones it asks for through MCP, give it the results, until it answers.

    Both clients talk to the same gateway and send the same x-session-id;
    `api_key` (if any) goes to both as `Authorization: Bearer`."""
    run = AgentRun()
    session_header = {"x-session-id": session_id}
    mcp_headers = dict(session_header)
    if api_key is not None:
        mcp_headers["authorization"] = f"Bearer {api_key}"
    llm = openai.AsyncOpenAI(
        base_url=f"{gateway.url}/v1",
        # The default config takes any key (anonymous tenant on loopback).
        api_key=api_key or "unused",
        default_headers=session_header,
        max_retries=0,
        timeout=CALL_TIMEOUT_S,
    )
    async with llm, mcp_client(f"{gateway.url}/mcp", mcp_headers) as tools_session:
        run.mcp_session_id = tools_session.session_id()
        run.tools = await tools_session.tools()
        offered = [openai_tool(t) for t in run.tools]
        messages: list[dict] = [{"role": "user", "content": USER_PROMPT}]
        for n in range(MAX_TURNS):
            headers = (first_turn_headers or {}) if n == 0 else {}
            turn = await complete(llm, model, messages, offered, stream, headers)
            run.turns.append(turn)
            if not turn.tool_calls:
                return run
            messages.append(
                {
                    "role": "assistant",
                    "content": turn.content,
                    "tool_calls": [
                        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                        for c in turn.tool_calls
                    ],
                }
            )
            for call in turn.tool_calls:
                text = await call_tool(tools_session, call)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": text})
                run.tool_results.append((call.name, json.loads(call.arguments or "{}"), text))
    raise AssertionError(f"the LLM still called tools after {MAX_TURNS} turns: {run.turns}")


async def call_tool(tools_session: McpClient, call: ToolCall) -> str:
    result = await tools_session.session.call_tool(call.name, json.loads(call.arguments or "{}"))
    assert not result.isError, f"{call.name} answered isError: {result.content}"
    return tool_text(result)


# --------------------------------------------------------------------------
# The access log and the metrics


@dataclass
class SessionLog:
    """The access-log lines of one agent session."""

    lines: list[dict]

    def llm(self) -> list[dict]:
        return [line for line in self.lines if line["path"] == "/v1/chat/completions"]

    def mcp(self, method: str | None = None) -> list[dict]:
        return [
            line
            for line in self.lines
            if line["path"] == "/mcp" and (method is None or line.get("mcp_method") == method)
        ]


def session_log(gateway: Gateway, session_id: str, timeout: float = 10.0) -> SessionLog:
    """The session's lines, once its two chat completions and its tools/call are logged
    (the access log is written off the request path, a moment after each response)."""
    deadline = time.monotonic() + timeout
    while True:
        log = SessionLog([line for line in gateway.access_log() if line.get("session_id") == session_id])
        if len(log.llm()) >= 2 and log.mcp("tools/call"):
            return log
        if time.monotonic() > deadline:
            gateway.process.fail(f"the run's access-log lines are missing after {timeout:.0f}s: {log.lines}")
        time.sleep(0.05)


def metric(gateway: Gateway, name: str, **labels: str) -> float | None:
    """A sample's value from the admin /metrics, or None if absent (label order as exported)."""
    text = gateway.admin("/metrics").raise_for_status().text
    rendered = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(rendered)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def assert_one_session(log: SessionLog, tenant: str) -> None:
    """Every line of the run: same tenant, success; LLM then tool then LLM."""
    assert log.lines, "no access-log line for the session"
    for line in log.lines:
        assert line["tenant"] == tenant, line
        assert line["status"] < 400 or line["method"] == "GET", line
    llm = log.llm()
    assert len(llm) == 2, f"want two chat completions, got {llm}"
    (call,) = log.mcp("tools/call")
    # Arrival order (ms resolution): first completion, the tool call, the answer.
    assert llm[0]["ts"] <= call["ts"] <= llm[1]["ts"], [llm[0]["ts"], call["ts"], llm[1]["ts"]]
    methods = [line.get("mcp_method") for line in log.mcp()]
    for method in ("initialize", "notifications/initialized", "tools/list", "tools/call"):
        assert method in methods, f"no MCP {method} line for the session: {methods}"


# --------------------------------------------------------------------------
# The tests


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_the_default_config_runs_the_flight_search(sluice_bin: Path, tmp_path: Path, stream: bool) -> None:
    """`sluice run` (no -f): the demo model and the demo MCP server at /mcp."""
    gateway = start_gateway(sluice_bin, tmp_path, None)
    session_id = unique("goose")
    try:
        run = run_mcp(lambda: run_agent(gateway, "sluice-demo", None, session_id, stream=stream))

        # The agent's side: the tools, the call, the answer.
        assert [t.name for t in run.tools] == DEMO_TOOLS
        first, last = run.turns[0], run.turns[-1]
        assert first.finish_reason == "tool_calls"
        assert [c.name for c in first.tool_calls] == ["search-flight"], "the demo LLM calls the first tool"
        assert json.loads(first.tool_calls[0].arguments) == {"query": "sluice-demo"}
        assert len(run.tool_results) == 1
        name, _, result = run.tool_results[0]
        assert name == "search-flight"
        assert "from New York to Los Angeles on 31/12/2026" in result and FIRST_FLIGHT in result, result
        assert last.finish_reason == "stop"
        assert run.answer is not None and "The tool returned:" in run.answer, run.answer
        assert result in run.answer, "the final answer carries the tool's result"
        assert "AF123" in run.answer and "EUR 299" in run.answer
        assert run.mcp_session_id and run.mcp_session_id.startswith("s1."), run.mcp_session_id

        # The gateway's side: one session id across the LLM and the MCP lines.
        log = session_log(gateway, session_id)
        assert_one_session(log, tenant="local")
        for line in log.llm():
            assert line["upstream"] == "demo" and line["model"] == "sluice-demo", line
            assert line["status"] == 200
            assert isinstance(line["tokens_in"], int) and line["tokens_in"] > 0, line
            assert isinstance(line["tokens_out"], int) and line["tokens_out"] > 0, line
        (call,) = log.mcp("tools/call")
        assert call["method"] == "POST" and call["status"] == 200
        assert call["upstream"] == "demo" and call["tool"] == "search-flight", call
        assert "model" not in call or call["model"] is None

        assert metric(gateway, "sluice_mcp_tool_calls_total", backend="demo", tool="search-flight") == 1
        assert (
            metric(gateway, "mcp_request_duration_count", mcp_method="tools/call", backend="demo", status="200") == 1
        )
    finally:
        gateway.process.stop()


# The seed's config: an OpenAI-compatible LLM (`openai`) and an MCP server
# (`kiwi`; here the built-in demo server, as a `provider: Demo` backend) behind
# one gateway, with API keys. The tool is offered as kiwi__search-flight.
SEED_CONFIG = """\
apiVersion: sluice.dev/v1alpha1
kind: AIGateway
metadata: {name: default}
spec:
  listen: 127.0.0.1:${SLUICE_PORT}
  admin: 127.0.0.1:${SLUICE_ADMIN_PORT}
  auth:
    apiKeys:
      - {name: goose-laptop, tenant: travel, valueFrom: {env: AGENT_KEY}}
  llm:
    routes:
      - models: ["gpt-4o"]
        backends: [{backend: openai}]
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: openai}
spec:
  provider: OpenAICompatible
  endpoint: http://127.0.0.1:${OPENAI_PORT}
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
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
  prefixMode: Always
  backends: [{backend: kiwi}]
"""


def test_a_real_llm_api_and_an_mcp_route(sluice_bin: Path, upstream_bin: Path, tmp_path: Path, keys: Keys) -> None:
    upstream = start_upstream(upstream_bin, tmp_path, "openai")
    agent_key = "sk-agent-" + keys.team_a
    env = {"AGENT_KEY": agent_key, "UPSTREAM_KEY": keys.upstream, "OPENAI_PORT": str(upstream.port)}
    gateway = start_gateway(sluice_bin, tmp_path, SEED_CONFIG, env)
    session_id = unique("goose")
    try:
        run = run_mcp(
            lambda: run_agent(
                gateway,
                "gpt-4o",
                agent_key,
                session_id,
                # The fake provider calls the tool the header names (its
                # `tool_choice: auto` answer is text otherwise).
                first_turn_headers={"x-mock-tool-call": "kiwi__search-flight"},
            )
        )

        assert [t.name for t in run.tools] == [f"kiwi__{t}" for t in DEMO_TOOLS]
        assert [c.name for c in run.turns[0].tool_calls] == ["kiwi__search-flight"]
        assert len(run.turns) == 2 and not run.turns[1].tool_calls
        name, arguments, result = run.tool_results[0]
        assert (name, arguments) == ("kiwi__search-flight", {"q": "mock"})
        assert FIRST_FLIGHT in result, result

        # The provider saw the tools under their prefixed names, then the
        # tool's result; with the gateway's key, never the agent's.
        first, second = [r for r in upstream.requests() if r["path"].endswith("/chat/completions")]
        assert [t["function"]["name"] for t in first["json"]["tools"]] == [f"kiwi__{t}" for t in DEMO_TOOLS]
        tool_message = second["json"]["messages"][-1]
        assert tool_message["role"] == "tool" and FIRST_FLIGHT in tool_message["content"], tool_message
        for request in (first, second):
            assert request["header_map"]["authorization"] == f"Bearer {keys.upstream}"
            assert request["header_map"].get("x-session-id") == session_id

        log = session_log(gateway, session_id)
        assert_one_session(log, tenant="travel")
        for line in log.llm():
            assert line["upstream"] == "openai" and line["model"] == "gpt-4o", line
            assert line["tokens_in"] == 7 and line["tokens_out"] is not None, line
        (call,) = log.mcp("tools/call")
        # The seed's line: upstream is the MCP backend, tool its own name.
        assert call["upstream"] == "kiwi" and call["tool"] == "search-flight", call
        assert call["status"] == 200

        assert agent_key not in gateway.log_text(), "the agent's key is in the gateway's output"
    finally:
        gateway.process.stop()
        upstream.process.stop()
