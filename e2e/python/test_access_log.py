"""The JSON access log: one line per request, tagged with the agent's session
id and the tenant, with the token counts the client was billed, and never a
secret."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from conftest import STANDARD_CONFIG, Keys, Stack, start_gateway, start_upstream, unique

FIELDS = {
    "ts", "session_id", "request_id", "tenant", "method", "path", "status",
    "upstream", "model", "tokens_in", "tokens_out", "latency_ms", "ttft_ms",
}  # fmt: skip
MESSAGES = [{"role": "user", "content": "Say hello"}]


def test_chat_is_logged_with_session_tenant_and_usage(stack: Stack, client: openai.OpenAI, session_id: str) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        extra_headers={"x-session-id": session_id, "x-mock-prompt-tokens": "11", "x-mock-chunks": "6"},
    )

    line = stack.gateway.log_for_session(session_id)
    assert FIELDS <= set(line), FIELDS - set(line)
    assert line["tenant"] == "team-a"
    assert line["method"] == "POST"
    assert line["path"] == "/v1/chat/completions"
    assert line["status"] == 200
    assert line["model"] == "gpt-4o"
    assert line["upstream"] == "primary"
    assert line["tokens_in"] == completion.usage.prompt_tokens == 11
    assert line["tokens_out"] == completion.usage.completion_tokens == 6
    assert isinstance(line["latency_ms"], (int, float)) and line["latency_ms"] >= 0
    assert line["request_id"]
    assert "error" not in line


def test_each_request_is_one_line(stack: Stack, client: openai.OpenAI, session_id: str) -> None:
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={"x-session-id": session_id})
    stack.gateway.logs_for_session(session_id, 3)
    time.sleep(0.2)  # room for a wrong fourth line to show up
    lines = [entry for entry in stack.gateway.access_log() if entry.get("session_id") == session_id]
    assert len(lines) == 3
    assert len({entry["request_id"] for entry in lines}) == 3


def test_stream_tokens_are_counted_without_client_usage(stack: Stack, client: openai.OpenAI, session_id: str) -> None:
    # The client does not ask for usage; the gateway still logs real counts.
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-session-id": session_id, "x-mock-chunks": "9"},
    )
    chunks = list(stream)
    assert all(c.usage is None for c in chunks)

    line = stack.gateway.log_for_session(session_id)
    assert line["status"] == 200
    assert line["tokens_in"] == 7
    assert line["tokens_out"] == 9
    assert isinstance(line["ttft_ms"], (int, float))
    assert line["ttft_ms"] <= line["latency_ms"]


def test_stream_with_client_usage_matches_log(stack: Stack, client: openai.OpenAI, session_id: str) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-session-id": session_id, "x-mock-chunks": "4"},
    )
    usage = [c.usage for c in stream if c.usage is not None][-1]

    line = stack.gateway.log_for_session(session_id)
    assert line["tokens_in"] == usage.prompt_tokens
    assert line["tokens_out"] == usage.completion_tokens == 4


def test_agent_session_id_header(stack: Stack, client: openai.OpenAI, session_id: str) -> None:
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={"agent-session-id": session_id})
    assert stack.gateway.log_for_session(session_id)["status"] == 200


def test_tenant_follows_the_key(stack: Stack, session_id: str) -> None:
    stack.gateway.client(stack.keys.team_b).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"x-session-id": session_id}
    )
    assert stack.gateway.log_for_session(session_id)["tenant"] == "team-b"


def test_fallback_is_logged_with_the_answering_upstream(stack: Stack, client: openai.OpenAI, session_id: str) -> None:
    client.chat.completions.create(model="failover-503", messages=MESSAGES, extra_headers={"x-session-id": session_id})
    line = stack.gateway.wait_for_log(
        lambda entry: entry.get("session_id") == session_id and entry.get("status") == 200
    )
    assert line["upstream"] == "backup"


def test_errors_are_logged(stack: Stack, client: openai.OpenAI, session_id: str) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="no-such-model", messages=MESSAGES, extra_headers={"x-session-id": session_id}
        )
    line = stack.gateway.log_for_session(session_id)
    assert line["status"] == 404
    assert line.get("error")


def test_no_secret_in_any_log(stack: Stack, client: openai.OpenAI, session_id: str) -> None:
    wrong_key = "sk-wrong-" + unique("key")
    headers = {"x-session-id": session_id}
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=headers)
    stack.gateway.client(stack.keys.team_b).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_headers=headers
    )
    with pytest.raises(openai.AuthenticationError):
        stack.gateway.client(wrong_key).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers=headers
        )
    stack.gateway.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": MESSAGES},
        headers={"x-api-key": wrong_key, **headers},
    )
    lines = stack.gateway.logs_for_session(session_id, 4)
    assert sorted(line["status"] for line in lines) == [200, 200, 401, 401]

    text = stack.gateway.log_text()
    for secret in (stack.keys.team_a, stack.keys.team_b, stack.keys.upstream, wrong_key):
        assert secret not in text
        # Nor a recognisable piece of it.
        assert secret[-16:] not in text


def test_access_log_to_a_file(sluice_bin: Path, upstream_bin: Path, tmp_path: Path) -> None:
    keys = Keys()
    upstream = start_upstream(upstream_bin, tmp_path, "primary")
    log_path = tmp_path / "access.log"
    config = STANDARD_CONFIG.replace(
        "  llm:\n",
        f"  telemetry:\n    accessLog: {{to: {log_path}}}\n  llm:\n",
        1,
    )
    env = {**keys.env(), "DEAD_PORT": "1"}
    for name in ("PRIMARY_PORT", "BACKUP_PORT", "BROKEN_PORT", "THROTTLED_PORT"):
        env[name] = str(upstream.port)
    gateway = start_gateway(sluice_bin, tmp_path, config, env, access_log_path=log_path)
    try:
        session_id = unique("file-log")
        gateway.client(keys.team_a).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"x-session-id": session_id}
        )
        line = gateway.log_for_session(session_id)
        assert line["status"] == 200
        assert session_id not in gateway.process.stdout.read_text()
    finally:
        gateway.process.stop()
        upstream.process.stop()
