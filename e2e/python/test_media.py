"""Images and audio with the official SDKs, through the gateway to translated
backends: the OpenAI SDK sending an image (a data URL of a real PNG) and audio
to Gemini, and an image to Anthropic and Bedrock; the Anthropic SDK sending an
image block to OpenAI, Gemini and Bedrock backends, streaming and not. Also the
Anthropic SDK's plain text and tool-call round trips on Gemini and Bedrock
backends (test_providers.py covers it on OpenAI backends).

One sluice-test-upstream plays every provider (each face has its own paths);
its faces check media as the providers do (media types, base64, the bytes'
signature, Bedrock's format enum), so a translation bug fails here as the
upstream's 400.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import struct
import wave
import zlib
from pathlib import Path
from typing import Iterator

import anthropic
import openai
import pytest

from conftest import CALL_TIMEOUT_S, Gateway, Upstream, start_gateway, start_upstream, unique

GATEWAY_KEY = "sk-media-" + secrets.token_hex(8)
UPSTREAM_KEY = "sk-upstream-" + secrets.token_hex(8)
AWS_ACCESS_KEY_ID = "AKIDSLUICETEST"  # sluice_test_upstream::TEST_ACCESS_KEY_ID
AWS_SECRET_ACCESS_KEY = "sluice/test+SECRET/key0123456789abcdefghij"  # ::TEST_SECRET_ACCESS_KEY
BEDROCK_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
MOCK_TEXT = "tok0 tok1 tok2 tok3 tok4 "

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
      - models: ["gemini-*"]
        backends: [{backend: gemini}]
      - models: ["anthropic.*"]
        backends: [{backend: bedrock}]
      - models: ["gpt-*"]
        backends: [{backend: gpt}]
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: claude}
spec:
  provider: Anthropic
  endpoint: http://127.0.0.1:${UPSTREAM_PORT}
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: gemini}
spec:
  provider: Gemini
  endpoint: http://127.0.0.1:${UPSTREAM_PORT}
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: bedrock}
spec:
  provider: Bedrock
  endpoint: http://127.0.0.1:${UPSTREAM_PORT}
  auth:
    aws:
      region: us-east-1
      accessKeyId: {valueFrom: {env: AWS_ACCESS_KEY_ID}}
      secretAccessKey: {valueFrom: {env: AWS_SECRET_ACCESS_KEY}}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: gpt}
spec:
  provider: OpenAICompatible
  endpoint: http://127.0.0.1:${UPSTREAM_PORT}/v1
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
"""


def _png() -> bytes:
    """A real 1x1 red PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


def _wav() -> bytes:
    """A real WAV: 80 silent samples, 8 kHz mono 16-bit."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * 80)
    return buffer.getvalue()


PNG_B64 = base64.b64encode(_png()).decode()
PNG_URL = f"data:image/png;base64,{PNG_B64}"
WAV_B64 = base64.b64encode(_wav()).decode()

WEATHER_ANTHROPIC = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


class Stack:
    def __init__(self, gateway: Gateway, upstream: Upstream) -> None:
        self.gateway, self.upstream = gateway, upstream

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=CALL_TIMEOUT_S
        )

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=self.gateway.url, api_key=GATEWAY_KEY, max_retries=0, timeout=CALL_TIMEOUT_S
        )

    def sent(self, marker: str) -> dict:
        """The body the upstream received for the one request holding `marker`."""
        [seen] = self.upstream.requests_with(marker)
        return seen


@pytest.fixture(scope="module")
def stack(sluice_bin: Path, upstream_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    upstream = start_upstream(upstream_bin, tmp_path_factory.mktemp("media-upstream"), "media")
    gateway = start_gateway(
        sluice_bin,
        tmp_path_factory.mktemp("media"),
        CONFIG,
        env={
            "GATEWAY_KEY": GATEWAY_KEY,
            "UPSTREAM_KEY": UPSTREAM_KEY,
            "AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET_ACCESS_KEY,
            "UPSTREAM_PORT": str(upstream.port),
        },
    )
    try:
        yield Stack(gateway, upstream)
    finally:
        gateway.process.stop()
        upstream.process.stop()


def _openai_text(stack: Stack, model: str, content: list[dict], stream: bool) -> str:
    client = stack.openai()
    messages = [{"role": "user", "content": content}]
    if not stream:
        completion = client.chat.completions.create(model=model, messages=messages, max_tokens=32)
        assert completion.choices[0].finish_reason == "stop"
        return completion.choices[0].message.content or ""
    chunks = client.chat.completions.create(model=model, messages=messages, max_tokens=32, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


# --------------------------------------------------------------------------
# OpenAI SDK: images and audio


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("model", "where", "expected"),
    [
        ("gemini-2.5-flash", ("contents", 0, "parts", 1), {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}),
        (
            "claude-sonnet-4-5",
            ("messages", 0, "content", 1),
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        ),
        (BEDROCK_MODEL, ("messages", 0, "content", 1), {"image": {"format": "png", "source": {"bytes": PNG_B64}}}),
    ],
)
def test_openai_sdk_sends_an_image(stack: Stack, model: str, where: tuple, expected: dict, stream: bool) -> None:
    marker = unique("img")
    content = [
        {"type": "text", "text": f"What is in this picture? ({marker})"},
        {"type": "image_url", "image_url": {"url": PNG_URL}},
    ]
    assert _openai_text(stack, model, content, stream) == MOCK_TEXT
    sent = stack.sent(marker)["json"]
    for key in where:
        sent = sent[key]
    assert sent == expected


@pytest.mark.parametrize("stream", [False, True])
def test_openai_sdk_sends_audio_to_gemini(stack: Stack, stream: bool) -> None:
    marker = unique("audio")
    content = [
        {"type": "text", "text": f"Transcribe this. ({marker})"},
        {"type": "input_audio", "input_audio": {"data": WAV_B64, "format": "wav"}},
    ]
    assert _openai_text(stack, "gemini-2.5-flash", content, stream) == MOCK_TEXT
    parts = stack.sent(marker)["json"]["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "audio/wav", "data": WAV_B64}}


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", BEDROCK_MODEL])
def test_openai_sdk_audio_is_a_clear_400_where_the_api_has_none(stack: Stack, model: str) -> None:
    marker = unique("no-audio")
    with pytest.raises(openai.BadRequestError) as caught:
        stack.openai().chat.completions.create(
            model=model,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": marker},
                        {"type": "input_audio", "input_audio": {"data": WAV_B64, "format": "wav"}},
                    ],
                }
            ],
        )
    assert "messages[0].content[1] (input_audio)" in caught.value.message
    assert "no audio input" in caught.value.message
    assert stack.upstream.requests_with(marker) == []


def test_openai_sdk_broken_images_are_a_clear_400(stack: Stack) -> None:
    for model, url, needle in [
        ("gemini-2.5-flash", "data:image/png;base64,not*base64", "not valid base64"),
        ("claude-sonnet-4-5", "data:image/tiff;base64,AAAA", "`image/tiff`"),
        (BEDROCK_MODEL, "https://example.com/cat.png", "does not fetch images by http(s) URL"),
    ]:
        with pytest.raises(openai.BadRequestError) as caught:
            stack.openai().chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],
            )
        assert "messages[0].content[0] (image_url)" in caught.value.message, model
        assert needle in caught.value.message, model


# --------------------------------------------------------------------------
# Anthropic SDK: image blocks


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("model", "where", "expected"),
    [
        ("gpt-4o", ("messages", 0, "content", 0), {"type": "image_url", "image_url": {"url": PNG_URL}}),
        ("gemini-2.5-flash", ("contents", 0, "parts", 0), {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}),
        (BEDROCK_MODEL, ("messages", 0, "content", 0), {"image": {"format": "png", "source": {"bytes": PNG_B64}}}),
    ],
)
def test_anthropic_sdk_sends_an_image_block(stack: Stack, model: str, where: tuple, expected: dict, stream: bool) -> None:
    marker = unique("an-img")
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                {"type": "text", "text": f"What is this? ({marker})"},
            ],
        }
    ]
    client = stack.anthropic()
    if stream:
        with client.messages.stream(model=model, max_tokens=32, messages=messages) as events:
            text = "".join(events.text_stream)
            final = events.get_final_message()
    else:
        final = client.messages.create(model=model, max_tokens=32, messages=messages)
        text = final.content[0].text
    assert text == MOCK_TEXT
    assert final.stop_reason == "end_turn"
    sent = stack.sent(marker)["json"]
    for key in where:
        sent = sent[key]
    assert sent == expected


# --------------------------------------------------------------------------
# Anthropic SDK on Gemini and Bedrock: text and tool calls


@pytest.mark.parametrize("model", ["gemini-2.5-flash", BEDROCK_MODEL])
def test_anthropic_sdk_chats_on_gemini_and_bedrock(stack: Stack, model: str) -> None:
    marker = unique("an-text")
    message = stack.anthropic().messages.create(
        model=model,
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": f"Hello ({marker})"}],
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.content[0].text == MOCK_TEXT
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 7
    assert message.usage.output_tokens == 5
    sent = stack.sent(marker)["json"]
    if model.startswith("gemini"):
        assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    else:
        assert sent["system"] == [{"text": "Be brief."}]

    with stack.anthropic().messages.stream(
        model=model, max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == MOCK_TEXT
    assert final.usage.output_tokens == 5


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["gemini-2.5-flash", BEDROCK_MODEL])
def test_anthropic_sdk_tool_round_trip_on_gemini_and_bedrock(stack: Stack, model: str, stream: bool) -> None:
    marker = unique("an-tools")
    messages: list[dict] = [{"role": "user", "content": f"Weather in Paris? ({marker})"}]
    client = stack.anthropic()
    ask = {"model": model, "max_tokens": 64, "tools": [WEATHER_ANTHROPIC], "tool_choice": {"type": "any"}}
    if stream:
        with client.messages.stream(messages=messages, **ask) as events:
            first = events.get_final_message()
    else:
        first = client.messages.create(messages=messages, **ask)
    assert first.stop_reason == "tool_use"
    [tool_use] = [b for b in first.content if b.type == "tool_use"]
    assert tool_use.name == "get_weather"
    assert tool_use.input == {"q": "mock"}
    assert tool_use.id

    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "21 degrees, sunny"}],
        },
    ]
    second = client.messages.create(model=model, max_tokens=64, tools=[WEATHER_ANTHROPIC], messages=messages)
    assert second.content[0].text == MOCK_TEXT
    assert second.stop_reason == "end_turn"

    sent = stack.upstream.requests_with(marker)[-1]["json"]
    if model.startswith("gemini"):
        assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]
        assert sent["contents"][1]["parts"][-1]["functionCall"] == {"name": "get_weather", "args": {"q": "mock"}}
        assert sent["contents"][2]["parts"] == [
            {"functionResponse": {"name": "get_weather", "response": {"content": "21 degrees, sunny"}}}
        ]
    else:
        assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
        [call] = [b["toolUse"] for b in sent["messages"][1]["content"] if "toolUse" in b]
        assert call == {"toolUseId": tool_use.id, "name": "get_weather", "input": {"q": "mock"}}
        assert sent["messages"][2]["content"] == [
            {"toolResult": {"toolUseId": tool_use.id, "content": [{"text": "21 degrees, sunny"}]}}
        ]
    assert json.dumps(sent).count(marker) == 1
