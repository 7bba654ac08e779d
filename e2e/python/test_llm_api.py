"""The OpenAI-compatible API through Sluice, as the official SDK sees it.

Each answer through the gateway is compared with the same request sent to the
upstream directly: the gateway must not change what the client gets.
"""

from __future__ import annotations

import json

import openai

from conftest import Stack, unique

MESSAGES = [{"role": "user", "content": "Say hello"}]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def collect_stream(stream) -> tuple[str, list]:
    """The assembled content of a chat stream, and its chunks."""
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return content, chunks


def test_plain_chat(stack: Stack, client: openai.OpenAI) -> None:
    marker = unique("plain")
    messages = [{"role": "user", "content": f"Say hello ({marker})"}]

    completion = client.chat.completions.create(model="gpt-4o", messages=messages)
    direct = stack.primary.client().chat.completions.create(model="gpt-4o", messages=messages)

    assert completion.object == "chat.completion"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == direct.choices[0].message.content
    assert choice.message.content  # not empty
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 7
    assert completion.usage.completion_tokens == 5
    assert completion.usage.total_tokens == 12


def test_upstream_sees_the_backend_key_not_the_client_key(stack: Stack, client: openai.OpenAI) -> None:
    marker = unique("one-token")
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": marker}])

    [received] = stack.primary.requests_with(marker)
    assert received["method"] == "POST"
    assert received["path"] == "/v1/chat/completions"
    assert received["header_map"].get("authorization") == f"Bearer {stack.keys.upstream}"
    assert stack.keys.team_a not in json.dumps(received)
    assert received["json"]["messages"] == [{"role": "user", "content": marker}]


def test_streaming_chat(stack: Stack, client: openai.OpenAI) -> None:
    headers = {"x-mock-chunks": "4"}
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=headers)
    content, chunks = collect_stream(stream)
    direct, _ = collect_stream(
        stack.primary.client().chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=headers
        )
    )

    assert content == direct
    assert content
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 4
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    # The client did not ask for usage, so it must not get a usage chunk, even
    # if the gateway asked the upstream for one to count tokens.
    assert all(c.usage is None for c in chunks), [c for c in chunks if c.usage]
    assert all(c.choices for c in chunks), "a chunk without choices (a usage chunk) reached the client"


def test_streaming_chat_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-mock-chunks": "3"},
    )
    content, chunks = collect_stream(stream)

    assert content
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1
    assert usage_chunks[0] is chunks[-1], "the usage chunk must come last"
    assert usage_chunks[0].choices == []
    assert usage_chunks[0].usage.prompt_tokens == 7
    assert usage_chunks[0].usage.completion_tokens == 3
    assert usage_chunks[0].usage.total_tokens == 10


def test_tool_call(stack: Stack, client: openai.OpenAI) -> None:
    headers = {"x-mock-tool-call": "get_weather"}
    completion = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL], extra_headers=headers
    )
    direct = stack.primary.client().chat.completions.create(
        model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL], extra_headers=headers
    )

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments), dict)
    assert call.function.arguments == direct.choices[0].message.tool_calls[0].function.arguments
    assert call.id


def test_tool_call_streaming(stack: Stack, client: openai.OpenAI) -> None:
    headers = {"x-mock-tool-call": "get_weather"}

    def assemble(stream) -> tuple[dict[int, dict], list]:
        calls: dict[int, dict] = {}
        finish = []
        for chunk in stream:
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            if choice.finish_reason:
                finish.append(choice.finish_reason)
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                if delta.function:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
        return calls, finish

    calls, finish = assemble(
        client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL], stream=True, extra_headers=headers
        )
    )
    direct_calls, _ = assemble(
        stack.primary.client().chat.completions.create(
            model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL], stream=True, extra_headers=headers
        )
    )

    assert finish == ["tool_calls"]
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather"
    assert calls[0]["id"]
    assert isinstance(json.loads(calls[0]["arguments"]), dict)
    assert calls[0]["arguments"] == direct_calls[0]["arguments"]


def test_legacy_completions(stack: Stack, client: openai.OpenAI) -> None:
    completion = client.completions.create(model="gpt-4o", prompt="Say hello", extra_headers={"x-mock-chunks": "3"})
    direct = stack.primary.client().completions.create(
        model="gpt-4o", prompt="Say hello", extra_headers={"x-mock-chunks": "3"}
    )

    assert completion.object == "text_completion"
    assert completion.choices[0].text
    assert completion.choices[0].text == direct.choices[0].text
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 7
    assert completion.usage.completion_tokens == 3


def test_legacy_completions_streaming(client: openai.OpenAI) -> None:
    stream = client.completions.create(
        model="gpt-4o", prompt="Say hello", stream=True, extra_headers={"x-mock-chunks": "3"}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)

    assert text
    assert sum(1 for c in chunks if c.choices and c.choices[0].text) == 3
    assert all(c.usage is None for c in chunks)


def test_embeddings_base64_default(stack: Stack, client: openai.OpenAI) -> None:
    # The SDK asks for base64 by default and decodes it to floats.
    marker = unique("embed")
    inputs = [f"first {marker}", "second"]
    response = client.embeddings.create(model="text-embedding-3-small", input=inputs)
    direct = stack.primary.client().embeddings.create(model="text-embedding-3-small", input=inputs)

    assert [e.index for e in response.data] == [0, 1]
    for got, want in zip(response.data, direct.data, strict=True):
        assert len(got.embedding) > 0
        assert all(isinstance(x, float) for x in got.embedding)
        assert got.embedding == want.embedding
    assert response.usage.prompt_tokens == 7

    # The direct call above carried the same marker; the gateway's carries the backend key.
    [received] = [
        r for r in stack.primary.requests_with(marker) if r["header_map"].get("authorization") != "Bearer direct"
    ]
    assert received["path"] == "/v1/embeddings"
    assert received["json"]["encoding_format"] == "base64"


def test_embeddings_float(client: openai.OpenAI) -> None:
    response = client.embeddings.create(model="text-embedding-3-small", input="hello", encoding_format="float")
    [item] = response.data
    assert len(item.embedding) > 0
    assert all(isinstance(x, float) for x in item.embedding)


def test_models_list_has_the_configured_models(client: openai.OpenAI) -> None:
    ids = {model.id for model in client.models.list()}
    # Advertised by the backends of the configured routes.
    assert {"gpt-4o", "gpt-4o-mini"} <= ids, ids
