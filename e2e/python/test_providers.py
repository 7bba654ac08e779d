"""Provider translation with the official SDKs: the OpenAI Python SDK through
the gateway to an Anthropic backend, and the Anthropic Python SDK through the
gateway to an OpenAI-compatible backend, streaming and not, with tool calls;
plus what a client sees when the upstream's answer is malformed or its stream
breaks. The backends are sluice-test-upstream's OpenAI and Anthropic faces;
the Anthropic face refuses requests the real API would refuse.
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

GATEWAY_KEY = "sk-providers-" + secrets.token_hex(8)
UPSTREAM_KEY = "sk-upstream-" + secrets.token_hex(8)

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
      - models: ["claude-*"]
        backends: [{backend: claude}]
      - models: ["gpt-*"]
        backends: [{backend: gpt}]
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: claude}
spec:
  provider: Anthropic
  endpoint: http://127.0.0.1:${CLAUDE_PORT}
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: gpt}
spec:
  provider: OpenAICompatible
  endpoint: http://127.0.0.1:${GPT_PORT}/v1
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
"""

WEATHER_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
WEATHER_ANTHROPIC = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


class Stack:
    def __init__(self, gateway: Gateway, claude: Upstream, gpt: Upstream) -> None:
        self.gateway, self.claude, self.gpt = gateway, claude, gpt

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


@pytest.fixture(scope="module")
def stack(sluice_bin: Path, upstream_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    claude = start_upstream(upstream_bin, tmp_path_factory.mktemp("claude"), "claude")
    gpt = start_upstream(upstream_bin, tmp_path_factory.mktemp("gpt"), "gpt")
    gateway = start_gateway(
        sluice_bin,
        tmp_path_factory.mktemp("providers"),
        CONFIG,
        env={
            "GATEWAY_KEY": GATEWAY_KEY,
            "UPSTREAM_KEY": UPSTREAM_KEY,
            "CLAUDE_PORT": str(claude.port),
            "GPT_PORT": str(gpt.port),
        },
    )
    try:
        yield Stack(gateway, claude, gpt)
    finally:
        gateway.process.stop()
        claude.process.stop()
        gpt.process.stop()


# --------------------------------------------------------------------------
# OpenAI SDK -> gateway -> Anthropic backend


def test_openai_sdk_chats_with_an_anthropic_backend(stack: Stack) -> None:
    marker = unique("oa-chat")
    completion = stack.openai().chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Hello ({marker})"},
        ],
    )
    assert completion.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 "
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 7
    assert completion.usage.completion_tokens == 5

    [seen] = stack.claude.requests_with(marker)
    assert seen["path"] == "/v1/messages"
    assert seen["header_map"]["x-api-key"] == UPSTREAM_KEY
    assert seen["header_map"]["anthropic-version"] == "2023-06-01"
    assert seen["json"]["system"] == "Be brief."
    assert seen["json"]["max_tokens"] == 4096


def test_openai_sdk_text_completions_on_an_anthropic_backend(stack: Stack) -> None:
    marker = unique("oa-text")
    completion = stack.openai().completions.create(
        model="claude-sonnet-4-5", prompt=f"Say hi ({marker})", max_tokens=32
    )
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "tok0 tok1 tok2 tok3 tok4 "
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 5
    [seen] = stack.claude.requests_with(marker)
    assert seen["path"] == "/v1/messages"
    assert seen["json"]["max_tokens"] == 32
    assert seen["json"]["messages"] == [{"role": "user", "content": [{"type": "text", "text": f"Say hi ({marker})"}]}]

    with pytest.raises(openai.BadRequestError, match="echo"):
        stack.openai().completions.create(model="claude-sonnet-4-5", prompt="x", echo=True)


def test_openai_sdk_streams_tool_calls_from_an_anthropic_backend(stack: Stack) -> None:
    marker = unique("oa-tools")
    messages = [{"role": "user", "content": f"Weather in Paris? ({marker})"}]
    stream = stack.openai().chat.completions.create(
        model="claude-sonnet-4-5",
        messages=messages,
        tools=[WEATHER_OPENAI],
        tool_choice="required",
        stream=True,
        stream_options={"include_usage": True},
    )
    calls: dict[int, dict] = {}
    finish = None
    usage = None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
                entry["id"] = call.id or entry["id"]
                if call.function and call.function.name:
                    entry["name"] = call.function.name
                if call.function and call.function.arguments:
                    entry["arguments"] += call.function.arguments
    assert finish == "tool_calls"
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"q": "mock"}
    assert usage is not None and usage.prompt_tokens == 7

    # The tool result goes back; the Anthropic face checks the turns alternate.
    followup = stack.openai().chat.completions.create(
        model="claude-sonnet-4-5",
        messages=messages
        + [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": calls[0]["id"],
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": calls[0]["arguments"]},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": "18 degrees"},
        ],
        tools=[WEATHER_OPENAI],
    )
    assert followup.choices[0].message.content
    seen = stack.claude.requests_with(marker)[-1]["json"]
    assert [m["role"] for m in seen["messages"]] == ["user", "assistant", "user"]
    assert seen["messages"][2]["content"][0]["type"] == "tool_result"


def test_openai_sdk_sees_anthropic_overload_as_503(stack: Stack) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        stack.openai(**{"x-mock-status": "529"}).chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 503


# --------------------------------------------------------------------------
# Anthropic SDK -> gateway -> OpenAI-compatible backend


def test_anthropic_sdk_messages_on_an_openai_backend(stack: Stack) -> None:
    marker = unique("an-chat")
    message = stack.anthropic().messages.create(
        model="gpt-4o",
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": f"Hello ({marker})"}],
    )
    assert message.type == "message"
    assert message.content[0].type == "text"
    assert message.content[0].text == "tok0 tok1 tok2 tok3 tok4 "
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 7
    assert message.usage.output_tokens == 5
    [seen] = stack.gpt.requests_with(marker)
    assert seen["path"] == "/v1/chat/completions"
    assert seen["json"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert seen["header_map"]["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_anthropic_sdk_streams_tool_use_from_an_openai_backend(stack: Stack) -> None:
    marker = unique("an-tools")
    with stack.anthropic().messages.stream(
        model="gpt-4o",
        max_tokens=100,
        messages=[{"role": "user", "content": f"Weather in Paris? ({marker})"}],
        tools=[WEATHER_ANTHROPIC],
        tool_choice={"type": "any"},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    [tool_use] = [b for b in final.content if b.type == "tool_use"]
    assert tool_use.name == "get_weather"
    assert tool_use.input == {"q": "mock"}
    assert final.usage.output_tokens == 5

    # Text streaming, event by event.
    with stack.anthropic().messages.stream(
        model="gpt-4o", max_tokens=100, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == "tok0 tok1 tok2 tok3 tok4 "


def test_anthropic_sdk_tool_result_round_trip(stack: Stack) -> None:
    marker = unique("an-result")
    message = stack.anthropic().messages.create(
        model="gpt-4o",
        max_tokens=100,
        tools=[WEATHER_ANTHROPIC],
        messages=[
            {"role": "user", "content": f"Weather? ({marker})"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 degrees"}]},
        ],
    )
    assert message.content[0].text
    [seen] = stack.gpt.requests_with(marker)
    roles = [m["role"] for m in seen["json"]["messages"]]
    assert roles == ["user", "assistant", "tool"]
    assert json.loads(seen["json"]["messages"][1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}


def test_anthropic_sdk_count_tokens_and_errors(stack: Stack) -> None:
    count = stack.anthropic().messages.count_tokens(
        model="gpt-4o", messages=[{"role": "user", "content": "hello there"}]
    )
    assert count.input_tokens > 0
    count = stack.anthropic(**{"x-mock-prompt-tokens": "42"}).messages.count_tokens(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hello there"}]
    )
    assert count.input_tokens == 42

    with pytest.raises(anthropic.RateLimitError) as caught:
        stack.anthropic(**{"x-mock-status": "429"}).messages.create(
            model="gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.NotFoundError) as caught:
        stack.anthropic().messages.create(
            model="nope", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.body["type"] == "error"
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=stack.gateway.url, api_key="wrong", max_retries=0).messages.create(
            model="gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )


# --------------------------------------------------------------------------
# Broken upstream answers


def test_malformed_upstream_json_is_a_502(stack: Stack) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        stack.openai(**{"x-mock-malformed": "1"}).chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 502
    with pytest.raises(anthropic.APIStatusError) as caught:
        stack.anthropic(**{"x-mock-malformed": "1"}).messages.create(
            model="gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 502


def test_broken_streams_raise_in_the_sdks(stack: Stack) -> None:
    with pytest.raises(openai.APIError):
        for _ in stack.openai(**{"x-mock-error-after": "2"}).chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass
    with pytest.raises(openai.APIError):
        for _ in stack.openai(**{"x-mock-malformed": "1"}).chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass
    for header in ["x-mock-error-after", "x-mock-malformed"]:
        with pytest.raises(anthropic.APIError):
            with stack.anthropic(**{header: "1"}).messages.stream(
                model="gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                stream.get_final_message()


# --------------------------------------------------------------------------
# OpenAI SDK -> gateway -> Gemini backend (the test upstream's Gemini face,
# which refuses bodies Google would refuse)

GEMINI_CONFIG = """\
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
      - models: ["gemini-*"]
        backends: [{backend: gemini}]
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: gemini}
spec:
  provider: Gemini
  endpoint: http://127.0.0.1:${GEMINI_PORT}
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
"""


@pytest.fixture(scope="module")
def gemini_stack(sluice_bin: Path, upstream_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    gemini = start_upstream(upstream_bin, tmp_path_factory.mktemp("gemini"), "gemini")
    gateway = start_gateway(
        sluice_bin,
        tmp_path_factory.mktemp("providers-gemini"),
        GEMINI_CONFIG,
        env={"GATEWAY_KEY": GATEWAY_KEY, "UPSTREAM_KEY": UPSTREAM_KEY, "GEMINI_PORT": str(gemini.port)},
    )
    try:
        # `claude` and `gpt` hold the Gemini upstream here.
        yield Stack(gateway, gemini, gemini)
    finally:
        gateway.process.stop()
        gemini.process.stop()


def test_openai_sdk_chats_with_a_gemini_backend(gemini_stack: Stack) -> None:
    marker = unique("gm-chat")
    completion = gemini_stack.openai(**{"x-mock-cached-tokens": "3"}).chat.completions.create(
        model="gemini-2.5-flash",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Hello ({marker})"},
        ],
        max_tokens=64,
    )
    assert completion.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 "
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 7
    assert completion.usage.completion_tokens == 5
    assert completion.usage.prompt_tokens_details.cached_tokens == 3

    [seen] = gemini_stack.gpt.requests_with(marker)
    assert seen["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert seen["header_map"]["x-goog-api-key"] == UPSTREAM_KEY
    assert seen["json"]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert seen["json"]["generationConfig"] == {"maxOutputTokens": 64}


def test_openai_sdk_streams_from_a_gemini_backend(gemini_stack: Stack) -> None:
    marker = unique("gm-stream")
    stream = gemini_stack.openai().chat.completions.create(
        model="gemini-2.5-flash",
        messages=[{"role": "user", "content": f"Hi ({marker})"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == "tok0 tok1 tok2 tok3 tok4 "
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 5
    [seen] = gemini_stack.gpt.requests_with(marker)
    assert seen["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"


def test_openai_sdk_tool_calls_round_trip_through_gemini(gemini_stack: Stack) -> None:
    marker = unique("gm-tools")
    messages: list[dict] = [{"role": "user", "content": f"Weather in Paris? ({marker})"}]
    stream = gemini_stack.openai().chat.completions.create(
        model="gemini-2.5-flash",
        messages=messages,
        tools=[WEATHER_OPENAI],
        tool_choice="required",
        stream=True,
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": call.id, "name": "", "arguments": ""})
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
    assert finish == "tool_calls"
    [call] = calls.values()
    assert call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"q": "mock"}
    assert call["id"].startswith("call_")

    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}
            ],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": "21 degrees, sunny"},
    ]
    completion = gemini_stack.openai().chat.completions.create(
        model="gemini-2.5-flash", messages=messages, tools=[WEATHER_OPENAI]
    )
    assert completion.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 "
    sent = gemini_stack.gpt.requests_with(marker)[-1]["json"]
    assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]
    assert sent["contents"][1]["parts"] == [{"functionCall": {"name": "get_weather", "args": {"q": "mock"}}}]
    assert sent["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"content": "21 degrees, sunny"}}}
    ]


def test_openai_sdk_sees_gemini_quota_errors_as_429(gemini_stack: Stack) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        gemini_stack.openai(**{"x-mock-status": "429"}).chat.completions.create(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.status_code == 429
    assert raised.value.body["code"] == "RESOURCE_EXHAUSTED"


# OpenAI SDK -> gateway -> AWS Bedrock (Converse), on the test upstream's
# Bedrock face: it recomputes each SigV4 signature with the test keys and
# answers ConverseStream in the binary event stream.

AWS_ACCESS_KEY_ID = "AKIDSLUICETEST"  # sluice_test_upstream::TEST_ACCESS_KEY_ID
AWS_SECRET_ACCESS_KEY = "sluice/test+SECRET/key0123456789abcdefghij"  # ::TEST_SECRET_ACCESS_KEY
BEDROCK_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"

BEDROCK_CONFIG = """\
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
      - models: ["anthropic.*"]
        backends: [{backend: bedrock}]
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: bedrock}
spec:
  provider: Bedrock
  endpoint: http://127.0.0.1:${BEDROCK_PORT}
  auth:
    aws:
      region: eu-west-1
      accessKeyId: {valueFrom: {env: AWS_ACCESS_KEY_ID}}
      secretAccessKey: {valueFrom: {env: AWS_SECRET_ACCESS_KEY}}
"""


class BedrockStack:
    def __init__(self, gateway: Gateway, bedrock: Upstream) -> None:
        self.gateway, self.bedrock = gateway, bedrock

    def openai(self, **headers: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.gateway.url}/v1",
            api_key=GATEWAY_KEY,
            max_retries=0,
            timeout=CALL_TIMEOUT_S,
            default_headers=headers or None,
        )


@pytest.fixture(scope="module")
def bedrock_stack(
    sluice_bin: Path, upstream_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BedrockStack]:
    bedrock = start_upstream(upstream_bin, tmp_path_factory.mktemp("bedrock"), "bedrock")
    gateway = start_gateway(
        sluice_bin,
        tmp_path_factory.mktemp("providers-bedrock"),
        BEDROCK_CONFIG,
        env={
            "GATEWAY_KEY": GATEWAY_KEY,
            "AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET_ACCESS_KEY,
            "BEDROCK_PORT": str(bedrock.port),
        },
    )
    try:
        yield BedrockStack(gateway, bedrock)
    finally:
        gateway.process.stop()
        bedrock.process.stop()


def test_openai_sdk_chats_with_a_bedrock_backend(bedrock_stack: BedrockStack) -> None:
    marker = unique("br-chat")
    completion = bedrock_stack.openai(**{"x-mock-cached-tokens": "3"}).chat.completions.create(
        model=BEDROCK_MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Hello ({marker})"},
        ],
        max_tokens=64,
    )
    assert completion.model == BEDROCK_MODEL
    assert completion.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 "
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 7
    assert completion.usage.prompt_tokens_details.cached_tokens == 3
    assert completion.usage.completion_tokens == 5

    [seen] = bedrock_stack.bedrock.requests_with(marker)
    assert seen["path"] == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    authorization = seen["header_map"]["authorization"]
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={AWS_ACCESS_KEY_ID}/")
    assert "/eu-west-1/bedrock/aws4_request" in authorization
    assert GATEWAY_KEY not in json.dumps(seen)
    assert seen["json"]["system"] == [{"text": "Be brief."}]
    assert seen["json"]["inferenceConfig"] == {"maxTokens": 64}
    assert "model" not in seen["json"]


def test_openai_sdk_streams_text_completions_from_a_bedrock_backend(bedrock_stack: BedrockStack) -> None:
    marker = unique("br-text")
    stream = bedrock_stack.openai().completions.create(
        model=BEDROCK_MODEL,
        prompt=f"Say hi ({marker})",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "tok0 tok1 tok2 tok3 tok4 "
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.completion_tokens == 5
    [seen] = bedrock_stack.bedrock.requests_with(marker)
    assert seen["path"] == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"


def test_openai_sdk_streams_tool_calls_from_a_bedrock_backend(bedrock_stack: BedrockStack) -> None:
    marker = unique("br-tools")
    messages = [{"role": "user", "content": f"Weather in Paris? ({marker})"}]
    stream = bedrock_stack.openai().chat.completions.create(
        model=BEDROCK_MODEL,
        messages=messages,
        tools=[WEATHER_OPENAI],
        tool_choice="required",
        stream=True,
        stream_options={"include_usage": True},
    )
    calls: dict[int, dict] = {}
    finish = None
    usage = None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
                entry["id"] = call.id or entry["id"]
                if call.function and call.function.name:
                    entry["name"] = call.function.name
                if call.function and call.function.arguments:
                    entry["arguments"] += call.function.arguments
    assert finish == "tool_calls"
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"q": "mock"}
    assert usage is not None and usage.prompt_tokens == 7 and usage.completion_tokens == 5
    [seen] = bedrock_stack.bedrock.requests_with(marker)
    assert seen["path"].endswith("/converse-stream")
    assert seen["json"]["toolConfig"]["toolChoice"] == {"any": {}}

    # The tool result goes back; the Bedrock face checks the turns and blocks.
    followup = bedrock_stack.openai().chat.completions.create(
        model=BEDROCK_MODEL,
        messages=messages
        + [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": calls[0]["id"],
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": calls[0]["arguments"]},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": "18 degrees"},
        ],
        tools=[WEATHER_OPENAI],
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in followup if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4 "
    seen = bedrock_stack.bedrock.requests_with(marker)[-1]["json"]
    assert [m["role"] for m in seen["messages"]] == ["user", "assistant", "user"]
    assert seen["messages"][1]["content"][0]["toolUse"]["toolUseId"] == calls[0]["id"]
    assert seen["messages"][2]["content"][0]["toolResult"]["content"] == [{"text": "18 degrees"}]


def test_openai_sdk_sees_bedrock_throttling_as_429(bedrock_stack: BedrockStack) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        bedrock_stack.openai(**{"x-mock-status": "429"}).chat.completions.create(
            model=BEDROCK_MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 429
    assert caught.value.code == "ThrottlingException"
    with pytest.raises(openai.APIError):
        for _ in bedrock_stack.openai(**{"x-mock-stream-error": "1"}).chat.completions.create(
            model=BEDROCK_MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass


# --------------------------------------------------------------------------
# OpenAI SDK -> gateway -> Cohere (v2 Chat), on the test upstream's Cohere
# face: it refuses unknown (OpenAI-only) fields as Cohere does.

COHERE_CONFIG = """\
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
      - models: ["command-*"]
        backends: [{backend: cohere}]
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: cohere}
spec:
  provider: Cohere
  endpoint: http://127.0.0.1:${COHERE_PORT}
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
"""


@pytest.fixture(scope="module")
def cohere_stack(sluice_bin: Path, upstream_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cohere = start_upstream(upstream_bin, tmp_path_factory.mktemp("cohere"), "cohere")
    gateway = start_gateway(
        sluice_bin,
        tmp_path_factory.mktemp("providers-cohere"),
        COHERE_CONFIG,
        env={"GATEWAY_KEY": GATEWAY_KEY, "UPSTREAM_KEY": UPSTREAM_KEY, "COHERE_PORT": str(cohere.port)},
    )
    try:
        # `claude` and `gpt` hold the Cohere upstream here.
        yield Stack(gateway, cohere, cohere)
    finally:
        gateway.process.stop()
        cohere.process.stop()


def test_openai_sdk_chats_with_a_cohere_backend(cohere_stack: Stack) -> None:
    marker = unique("co-chat")
    completion = cohere_stack.openai().chat.completions.create(
        model="command-a-03-2025",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Hello ({marker})"},
        ],
        max_tokens=64,
        top_p=0.5,
        stop=["END"],
        user="someone",
    )
    assert completion.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 "
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "command-a-03-2025"
    assert completion.usage.prompt_tokens == 7
    assert completion.usage.completion_tokens == 5

    [seen] = cohere_stack.gpt.requests_with(marker)
    assert seen["path"] == "/v2/chat"
    assert seen["header_map"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert seen["json"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert seen["json"]["max_tokens"] == 64
    assert seen["json"]["p"] == 0.5
    assert seen["json"]["stop_sequences"] == ["END"]
    assert "user" not in seen["json"] and "top_p" not in seen["json"]


def test_openai_sdk_streams_tool_calls_round_trip_through_cohere(cohere_stack: Stack) -> None:
    marker = unique("co-tools")
    messages: list[dict] = [{"role": "user", "content": f"Weather in Paris? ({marker})"}]
    stream = cohere_stack.openai().chat.completions.create(
        model="command-a-03-2025",
        messages=messages,
        tools=[WEATHER_OPENAI],
        tool_choice="required",
        stream=True,
        stream_options={"include_usage": True},
    )
    calls: dict[int, dict] = {}
    finish, usage = None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": call.id, "name": "", "arguments": ""})
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
    assert finish == "tool_calls"
    assert usage is not None and usage.prompt_tokens == 7
    [call] = calls.values()
    assert call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"q": "mock"}
    assert call["id"]
    assert cohere_stack.gpt.requests_with(marker)[-1]["json"]["tool_choice"] == "REQUIRED"

    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}
            ],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": "21 degrees, sunny"},
    ]
    completion = cohere_stack.openai().chat.completions.create(
        model="command-a-03-2025", messages=messages, tools=[WEATHER_OPENAI]
    )
    assert completion.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 "
    sent = cohere_stack.gpt.requests_with(marker)[-1]["json"]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
    assert sent["messages"][1]["tool_calls"][0]["id"] == call["id"]
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": call["id"], "content": "21 degrees, sunny"}


def test_openai_sdk_sees_cohere_rate_limits_as_429(cohere_stack: Stack) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        cohere_stack.openai(**{"x-mock-status": "429"}).chat.completions.create(
            model="command-a-03-2025", messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.status_code == 429
    assert "429" in str(raised.value)
