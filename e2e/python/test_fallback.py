"""Priorities and fallback: the priority-0 backend answers while it is healthy;
when it fails before the first byte (5xx, 429, connection refused) the
priority-1 backend answers, and the client never sees the failure.

Which upstream answered is told by its `x-upstream-name` response header,
which the gateway passes on.
"""

from __future__ import annotations

import openai
import pytest

from conftest import Stack, unique


def ask(client: openai.OpenAI, model: str, marker: str, **kwargs):
    """A chat call returning (parsed completion, raw response)."""
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": f"Say hello ({marker})"}], **kwargs
    )
    return raw.parse(), raw


def test_healthy_primary_answers(stack: Stack, client: openai.OpenAI) -> None:
    for _ in range(5):
        completion, raw = ask(client, "gpt-4o", unique("healthy"))
        assert raw.headers.get("x-upstream-name") == "primary"
        assert completion.choices[0].message.content


@pytest.mark.parametrize(
    ("model", "failing"),
    [("failover-503", "broken"), ("failover-429", "throttled")],
)
def test_failing_primary_falls_back(stack: Stack, client: openai.OpenAI, model: str, failing: str) -> None:
    marker = unique(model)
    completion, raw = ask(client, model, marker)

    assert raw.status_code == 200
    assert raw.headers.get("x-upstream-name") == "backup"
    assert completion.choices[0].message.content
    assert completion.usage.completion_tokens == 5
    # The priority-0 backend was tried first, and the backup answered once.
    assert len(getattr(stack, failing).requests_with(marker)) >= 1
    assert len(stack.backup.requests_with(marker)) == 1


def test_dead_primary_falls_back(stack: Stack, client: openai.OpenAI) -> None:
    marker = unique("dead")
    completion, raw = ask(client, "failover-dead", marker)

    assert raw.headers.get("x-upstream-name") == "backup"
    assert completion.choices[0].message.content
    assert len(stack.backup.requests_with(marker)) == 1


def test_streaming_falls_back(stack: Stack, client: openai.OpenAI) -> None:
    marker = unique("stream-fallback")
    raw = client.chat.completions.with_raw_response.create(
        model="failover-503",
        messages=[{"role": "user", "content": marker}],
        stream=True,
        extra_headers={"x-mock-chunks": "3"},
    )
    assert raw.headers.get("x-upstream-name") == "backup"
    chunks = list(raw.parse())
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 3
    assert len(stack.backup.requests_with(marker)) == 1
