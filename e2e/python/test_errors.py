"""What a client sees when something is wrong: the SDK's typed errors, and
OpenAI-shaped error bodies with the documented status codes."""

from __future__ import annotations

import time

import openai
import pytest

from conftest import Gateway, Stack

MESSAGES = [{"role": "user", "content": "Say hello"}]


def assert_openai_error_body(response, status: int) -> dict:
    """The raw response is `{"error": {"message", "type", "code"}}` with `status`."""
    assert response.status_code == status, response.text
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"message", "type", "code"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"]
    return error


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert caught.value.status_code == 404
    assert "no-such-model" in caught.value.message


def test_bad_key_is_unauthorized(gateway: Gateway) -> None:
    client = gateway.client("sk-not-a-valid-key")
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == 401


def test_missing_key_is_unauthorized(gateway: Gateway) -> None:
    response = gateway.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES})
    assert_openai_error_body(response, 401)


def test_x_api_key_header_is_accepted(stack: Stack) -> None:
    response = stack.gateway.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": MESSAGES},
        headers={"x-api-key": stack.keys.team_a},
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]


def test_error_bodies_are_openai_shaped(stack: Stack) -> None:
    auth = {"authorization": f"Bearer {stack.keys.team_a}"}
    error = assert_openai_error_body(
        stack.gateway.post("/v1/chat/completions", json={"model": "no-such-model", "messages": MESSAGES}, headers=auth),
        404,
    )
    assert "no-such-model" in error["message"]
    assert_openai_error_body(
        stack.gateway.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": MESSAGES},
            headers={"authorization": "Bearer sk-wrong"},
        ),
        401,
    )


def test_malformed_json_is_bad_request(stack: Stack) -> None:
    # The SDK only sends valid JSON, so this one goes out raw.
    response = stack.gateway.post(
        "/v1/chat/completions",
        content=b'{"model": "gpt-4o", "messages": [',
        headers={"authorization": f"Bearer {stack.keys.team_a}", "content-type": "application/json"},
    )
    assert_openai_error_body(response, 400)


def test_upstream_429_without_fallback_is_a_rate_limit_error(stack: Stack, client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="solo-model",
            messages=MESSAGES,
            extra_headers={"x-mock-status": "429", "x-mock-retry-after": "7"},
        )
    assert caught.value.status_code == 429
    assert caught.value.response.headers.get("retry-after") == "7"


def test_dead_backend_without_fallback_is_bad_gateway(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="dead-model", messages=MESSAGES)
    assert caught.value.status_code == 502


def test_slow_backend_times_out(client: openai.OpenAI) -> None:
    # The route's timeout is 1s; the upstream would answer after 8s.
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="slow-model", messages=MESSAGES, extra_headers={"x-mock-delay-ms": "8000"})
    elapsed = time.monotonic() - started
    assert caught.value.status_code == 504
    assert elapsed < 7, f"the gateway waited {elapsed:.1f}s for a route with a 1s timeout"
