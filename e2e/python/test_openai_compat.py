"""Provider presets through the gateway, driven by the official OpenAI SDK:
the Responses API (`client.responses.create`, streamed and not) with its
usage in the access log, an Azure OpenAI backend reached with the plain
OpenAI client (the gateway builds Azure's deployment URLs and `api-key`
header), Mistral's refused fields, and prompt-cache hits priced at the cached
rate. One recording test upstream plays every provider.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import openai
import pytest

from conftest import Gateway, Keys, Process, Upstream, start_gateway, start_upstream, unique

CONFIG = """\
apiVersion: sluice.dev/v1alpha1
kind: AIGateway
metadata: {name: default}
spec:
  listen: 127.0.0.1:${SLUICE_PORT}
  admin: 127.0.0.1:${SLUICE_ADMIN_PORT}
  auth:
    apiKeys:
      - {name: team-a-ci, tenant: team-a, valueFrom: {env: TEAM_A_KEY}}
  sessionHeaders: [x-session-id]
  llm:
    routes:
      - models: ["gpt-4o", "gpt-4o-mini"]
        backends: [{backend: openai}]
      - models: ["azure-gpt-4o"]
        backends: [{backend: azure, model: gpt-4o-prod}]
      - models: ["azure-embeddings"]
        backends: [{backend: azure, model: embeddings-prod}]
      - models: ["mistral-small-latest"]
        backends: [{backend: mistral}]
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: openai}
spec:
  provider: OpenAI
  endpoint: http://127.0.0.1:${PROVIDER_PORT}/v1
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
  pricing:
    gpt-4o: {input: "2.00", output: "10.00", cachedInput: "1.00"}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: azure}
spec:
  provider: AzureOpenAI
  endpoint: http://127.0.0.1:${PROVIDER_PORT}
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: mistral}
spec:
  provider: Mistral
  endpoint: http://127.0.0.1:${PROVIDER_PORT}/v1
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
"""


class Compat:
    def __init__(self, gateway: Gateway, provider: Upstream, keys: Keys) -> None:
        self.gateway = gateway
        self.provider = provider
        self.keys = keys

    def client(self) -> openai.OpenAI:
        return self.gateway.client(self.keys.team_a)

    def request_with(self, marker: str) -> dict:
        [request] = self.provider.requests_with(marker)
        return request


@pytest.fixture(scope="module")
def compat(sluice_bin: Path, upstream_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compat]:
    workdir = tmp_path_factory.mktemp("openai-compat")
    keys = Keys()
    started: list[Process] = []
    try:
        provider = start_upstream(upstream_bin, workdir, "provider")
        started.append(provider.process)
        env = {**keys.env(), "PROVIDER_PORT": str(provider.port)}
        gateway = start_gateway(sluice_bin, workdir, CONFIG, env)
        started.append(gateway.process)
        yield Compat(gateway, provider, keys)
    finally:
        for proc in reversed(started):
            proc.stop()


def test_responses_create(compat: Compat) -> None:
    session = unique("responses")
    response = compat.client().responses.create(
        model="gpt-4o",
        input=f"Say hello ({session})",
        instructions="Be brief.",
        max_output_tokens=64,
        extra_headers={"x-session-id": session, "x-mock-prompt-tokens": "1000", "x-mock-cached-tokens": "400"},
    )
    assert response.object == "response"
    assert response.status == "completed"
    assert response.output_text == "tok0 tok1 tok2 tok3 tok4 "
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (1000, 5)
    assert response.usage.input_tokens_details.cached_tokens == 400

    request = compat.request_with(session)
    assert request["path"] == "/v1/responses"
    assert request["header_map"]["authorization"] == f"Bearer {compat.keys.upstream}"
    assert request["json"]["max_output_tokens"] == 64

    line = compat.gateway.log_for_session(session)
    assert line["path"] == "/v1/responses"
    assert line["status"] == 200
    assert (line["tokens_in"], line["tokens_out"], line["tokens_cached"]) == (1000, 5, 400)
    # 600 fresh x $2 + 400 cached x $1 + 5 out x $10, per million tokens.
    assert line["cost_usd"] == pytest.approx(0.00165)


def test_responses_stream(compat: Compat) -> None:
    session = unique("responses-stream")
    stream = compat.client().responses.create(
        model="gpt-4o",
        input=[{"role": "user", "content": f"Stream please ({session})"}],
        stream=True,
        extra_headers={"x-session-id": session, "x-mock-chunks": "3"},
    )
    events = list(stream)
    types = [event.type for event in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == "tok0 tok1 tok2 "
    completed = events[-1].response
    assert completed.usage is not None and completed.usage.output_tokens == 3

    request = compat.request_with(session)
    assert request["json"]["stream"] is True
    assert "stream_options" not in request["json"], "Responses streams report usage on their own"

    line = compat.gateway.log_for_session(session)
    assert (line["tokens_in"], line["tokens_out"]) == (7, 3)
    assert "tokens_estimated" not in line
    assert line["cost_usd"] == pytest.approx((7 * 2 + 3 * 10) / 1e6)


def test_responses_stream_helper(compat: Compat) -> None:
    """The SDK's `responses.stream` helper accumulates the final response."""
    session = unique("responses-helper")
    with compat.client().responses.stream(
        model="gpt-4o", input=f"Hi ({session})", extra_headers={"x-session-id": session}
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == "tok0 tok1 tok2 tok3 tok4 "
    assert compat.gateway.log_for_session(session)["tokens_out"] == 5


def test_azure_backend_with_the_plain_openai_client(compat: Compat) -> None:
    client = compat.client()
    session = unique("azure")
    completion = client.chat.completions.create(
        model="azure-gpt-4o",
        messages=[{"role": "user", "content": f"Hello Azure ({session})"}],
        extra_headers={"x-session-id": session},
    )
    assert completion.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 "
    request = compat.request_with(session)
    assert request["path"] == "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
    assert request["header_map"]["api-key"] == compat.keys.upstream
    assert "authorization" not in request["header_map"]
    assert request["json"]["model"] == "gpt-4o-prod"
    assert compat.gateway.log_for_session(session)["upstream"] == "azure"

    marker = unique("azure-stream")
    chunks = list(
        client.chat.completions.create(
            model="azure-gpt-4o",
            messages=[{"role": "user", "content": marker}],
            stream=True,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok0 tok1 tok2 tok3 tok4 "
    assert all(c.usage is None for c in chunks), "usage the client did not ask for is hidden"
    request = compat.request_with(marker)
    assert request["path"].startswith("/openai/deployments/gpt-4o-prod/chat/completions?")
    assert request["json"]["stream_options"] == {"include_usage": True}

    marker = unique("azure-embed")
    embeddings = client.embeddings.create(model="azure-embeddings", input=marker)
    assert len(embeddings.data[0].embedding) > 0
    request = compat.request_with(marker)
    assert request["path"] == "/openai/deployments/embeddings-prod/embeddings?api-version=2024-10-21"

    marker = unique("azure-responses")
    response = client.responses.create(model="azure-gpt-4o", input=marker)
    assert response.output_text
    assert compat.request_with(marker)["path"] == "/openai/responses?api-version=2024-10-21"


def test_mistral_gets_only_fields_it_accepts(compat: Compat) -> None:
    marker = unique("mistral")
    chunks = list(
        compat.client().chat.completions.create(
            model="mistral-small-latest",
            messages=[{"role": "user", "content": marker}],
            stream=True,
            stream_options={"include_usage": True},
            max_completion_tokens=32,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok0 tok1 tok2 tok3 tok4 "
    sent = compat.request_with(marker)["json"]
    assert "stream_options" not in sent
    assert "max_completion_tokens" not in sent
    assert sent["max_tokens"] == 32


def test_chat_cache_hits_are_priced_at_the_cached_rate(compat: Compat) -> None:
    session = unique("cached")
    completion = compat.client().chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hello"}],
        extra_headers={"x-session-id": session, "x-mock-prompt-tokens": "2000", "x-mock-cached-tokens": "1500"},
    )
    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 1500
    line = compat.gateway.log_for_session(session)
    assert line["tokens_cached"] == 1500
    # 500 fresh x $2 + 1500 cached x $1 + 5 out x $10, per million tokens.
    assert line["cost_usd"] == pytest.approx(0.00255)


def test_responses_for_an_unknown_model_is_404(compat: Compat) -> None:
    response = compat.gateway.post(
        "/v1/responses",
        headers={"authorization": f"Bearer {compat.keys.team_a}"},
        json={"model": "no-such-model", "input": "hi"},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
