"""Vertex AI with the official SDKs: Claude models on a `VertexAI` backend for
the OpenAI Python SDK (translated: chat, streams, tool calls, errors) and the
Anthropic Python SDK (near passthrough: messages, streams, count_tokens),
Gemini on the same backend and token, and Vertex AI's express mode (an API
key). The backend is sluice-test-upstream playing Vertex AI: it issues OAuth
tokens for the test service account and refuses a Claude body with `model`
or without `anthropic_version: vertex-2023-10-16`, as Vertex does.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Iterator

import anthropic
import openai
import pytest

from conftest import CALL_TIMEOUT_S, Gateway, Upstream, start_gateway, start_upstream, unique

GATEWAY_KEY = "sk-vertex-" + secrets.token_hex(8)
EXPRESS_KEY = "vertex-express-" + secrets.token_hex(8)
SERVICE_ACCOUNT = Path(__file__).resolve().parents[1] / "upstream" / "src" / "gemini" / "test-service-account.json"
CLAUDE = "claude-sonnet-4@20250514"
CLAUDE_PATH = "/v1/projects/sluice-test/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514"

CONFIG = """\
apiVersion: sluice.dev/v1alpha1
kind: AIGateway
metadata: {name: default}
spec:
  listen: 127.0.0.1:${SLUICE_PORT}
  admin: 127.0.0.1:${SLUICE_ADMIN_PORT}
  auth:
    apiKeys:
      - {name: ci, tenant: team-a, valueFrom: {env: GATEWAY_KEY}}
  llm:
    routes:
      - models: ["claude-*", "gemini-*"]
        backends: [{backend: vertex}]
      - models: [express-flash]
        backends: [{backend: express, model: gemini-2.5-flash}]
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: vertex}
spec:
  provider: VertexAI
  endpoint: http://127.0.0.1:${VERTEX_PORT}
  auth:
    gcp:
      serviceAccountKey: {valueFrom: {env: VERTEX_SA_KEY}}
      location: us-east5
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: express}
spec:
  provider: VertexAI
  endpoint: http://127.0.0.1:${VERTEX_PORT}
  auth: {apiKey: {valueFrom: {env: EXPRESS_KEY}}}
"""

WEATHER_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


class Stack:
    def __init__(self, gateway: Gateway, vertex: Upstream) -> None:
        self.gateway, self.vertex = gateway, vertex

    def openai(self, **headers: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.gateway.url}/v1",
            api_key=GATEWAY_KEY,
            max_retries=0,
            timeout=CALL_TIMEOUT_S,
            default_headers=headers or None,
        )

    def anthropic(self, **headers: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=self.gateway.url,
            api_key=GATEWAY_KEY,
            max_retries=0,
            timeout=CALL_TIMEOUT_S,
            default_headers=headers or None,
        )

    def sent(self, marker: str) -> dict:
        """The one request to Vertex AI whose body carries `marker`."""
        [seen] = self.vertex.requests_with(marker)
        return seen


@pytest.fixture(scope="module")
def stack(sluice_bin: Path, upstream_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    vertex = start_upstream(upstream_bin, tmp_path_factory.mktemp("vertex"), "vertex")
    key = json.loads(SERVICE_ACCOUNT.read_text())
    key["token_uri"] = f"{vertex.url}/token"
    gateway = start_gateway(
        sluice_bin,
        tmp_path_factory.mktemp("providers-vertex"),
        CONFIG,
        env={
            "GATEWAY_KEY": GATEWAY_KEY,
            "EXPRESS_KEY": EXPRESS_KEY,
            "VERTEX_SA_KEY": json.dumps(key),
            "VERTEX_PORT": str(vertex.port),
        },
    )
    try:
        yield Stack(gateway, vertex)
    finally:
        gateway.process.stop()
        vertex.process.stop()


def assert_claude_request(seen: dict, method: str) -> None:
    assert seen["path"] == f"{CLAUDE_PATH}:{method}"
    assert seen["header_map"]["authorization"].startswith("Bearer ya29.mock-")
    assert "anthropic-version" not in seen["header_map"]
    assert "model" not in seen["json"]
    assert seen["json"]["anthropic_version"] == "vertex-2023-10-16"


# --------------------------------------------------------------------------
# OpenAI SDK -> gateway -> Claude on Vertex AI


def test_openai_sdk_chats_with_claude_on_vertex(stack: Stack) -> None:
    marker = unique("vx-chat")
    completion = stack.openai(**{"x-mock-prompt-tokens": "12"}).chat.completions.create(
        model=CLAUDE,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Hello ({marker})"},
        ],
        max_tokens=64,
    )
    assert completion.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 "
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 12
    assert completion.usage.completion_tokens == 5
    seen = stack.sent(marker)
    assert_claude_request(seen, "rawPredict")
    assert seen["json"]["system"] == "Be brief."
    assert seen["json"]["max_tokens"] == 64


def test_openai_sdk_streams_tool_calls_from_claude_on_vertex(stack: Stack) -> None:
    marker = unique("vx-tools")
    stream = stack.openai().chat.completions.create(
        model=CLAUDE,
        messages=[{"role": "user", "content": f"Weather in Paris? ({marker})"}],
        tools=[WEATHER_OPENAI],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    calls = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert calls[0].function.name == "get_weather"
    assert calls[0].id
    assert "".join(c.function.arguments or "" for c in calls) == '{"q":"mock"}'
    assert any(c.choices and c.choices[0].finish_reason == "tool_calls" for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 7
    seen = stack.sent(marker)
    assert_claude_request(seen, "streamRawPredict")
    assert seen["json"]["stream"] is True
    assert seen["json"]["tool_choice"] == {"type": "tool", "name": "get_weather"}


def test_openai_sdk_sees_claude_overload_as_503_and_bad_answers_as_502(stack: Stack) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        stack.openai(**{"x-mock-status": "529"}).chat.completions.create(
            model=CLAUDE, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 503
    with pytest.raises(openai.APIStatusError) as caught:
        stack.openai(**{"x-mock-malformed": "1"}).chat.completions.create(
            model=CLAUDE, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 502


# --------------------------------------------------------------------------
# Anthropic SDK -> gateway -> Claude on Vertex AI


def test_anthropic_sdk_messages_on_claude_on_vertex(stack: Stack) -> None:
    marker = unique("vx-msg")
    message = stack.anthropic(**{"x-mock-chunks": "3"}).messages.create(
        model=CLAUDE,
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": f"Hello ({marker})"}],
    )
    assert message.type == "message"
    assert message.model == CLAUDE
    assert message.content[0].text == "tok0 tok1 tok2 "
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 7
    seen = stack.sent(marker)
    assert_claude_request(seen, "rawPredict")
    assert seen["json"]["messages"] == [{"role": "user", "content": f"Hello ({marker})"}]
    log = stack.gateway.wait_for_log(lambda line: line.get("model") == CLAUDE and line.get("tokens_out") == 3)
    assert log["tokens_in"] == 7


def test_anthropic_sdk_streams_from_claude_on_vertex(stack: Stack) -> None:
    marker = unique("vx-stream")
    with stack.anthropic(**{"x-mock-chunks": "4"}).messages.stream(
        model=CLAUDE,
        max_tokens=100,
        messages=[{"role": "user", "content": f"Hello ({marker})"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "tok0 tok1 tok2 tok3 "
    assert final.usage.output_tokens == 4
    assert_claude_request(stack.sent(marker), "streamRawPredict")


def test_anthropic_sdk_counts_tokens_and_sees_errors_on_vertex(stack: Stack) -> None:
    marker = unique("vx-count")
    count = stack.anthropic(**{"x-mock-prompt-tokens": "42"}).messages.count_tokens(
        model=CLAUDE, messages=[{"role": "user", "content": f"Hello ({marker})"}]
    )
    assert count.input_tokens == 42
    seen = stack.sent(marker)
    assert seen["path"] == "/v1/projects/sluice-test/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict"
    assert seen["json"]["model"] == CLAUDE
    assert seen["json"]["anthropic_version"] == "vertex-2023-10-16"

    with pytest.raises(anthropic.APIStatusError) as caught:
        stack.anthropic(**{"x-mock-status": "529"}).messages.create(
            model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"


# --------------------------------------------------------------------------
# Gemini on the same backend, and express mode


def test_gemini_and_claude_share_the_backend_and_express_mode_uses_the_key(stack: Stack) -> None:
    marker = unique("vx-gemini")
    completion = stack.openai().chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": f"Hello ({marker})"}]
    )
    assert completion.choices[0].message.content
    seen = stack.sent(marker)
    assert seen["path"] == (
        "/v1/projects/sluice-test/locations/us-east5/publishers/google/models/gemini-2.5-flash:generateContent"
    )
    assert seen["header_map"]["authorization"].startswith("Bearer ya29.mock-")
    tokens = [r for r in stack.vertex.requests() if r["path"].startswith("/token")]
    assert len(tokens) == 1, "one token serves Gemini and Claude"

    marker = unique("vx-express")
    stream = stack.openai().chat.completions.create(
        model="express-flash", messages=[{"role": "user", "content": f"Hello ({marker})"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).startswith("tok0")
    seen = stack.sent(marker)
    assert seen["path"] == "/v1/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert seen["header_map"]["x-goog-api-key"] == EXPRESS_KEY
    assert "authorization" not in seen["header_map"]
