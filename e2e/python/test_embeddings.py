"""Embeddings and rerank on native APIs with the official OpenAI SDK:
`client.embeddings.create` through the gateway to Gemini (batchEmbedContents),
Bedrock (InvokeModel: Amazon Titan Text Embeddings v2, Cohere Embed; every
SigV4 signature recomputed by the test upstream) and Cohere (/v2/embed), as
base64 (the SDK's default) and as floats; errors as the SDK's exceptions;
`/v1/rerank` with httpx to Cohere (/v2/rerank) and to an OpenAI-compatible
backend (/rerank). One sluice-test-upstream serves every face: each refuses
what the real API would refuse, so a wrong translation fails here.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Iterator

import openai
import pytest

from conftest import CALL_TIMEOUT_S, Gateway, Upstream, start_gateway, start_upstream, unique

GATEWAY_KEY = "sk-embed-" + secrets.token_hex(8)
UPSTREAM_KEY = "sk-upstream-" + secrets.token_hex(8)
AWS_ACCESS_KEY_ID = "AKIDSLUICETEST"  # sluice_test_upstream::TEST_ACCESS_KEY_ID
AWS_SECRET_ACCESS_KEY = "sluice/test+SECRET/key0123456789abcdefghij"  # ::TEST_SECRET_ACCESS_KEY
TITAN = "amazon.titan-embed-text-v2:0"

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
      - models: ["gemini-*"]
        backends: [{backend: gemini}]
      - models: ["amazon.*", "cohere.*"]
        backends: [{backend: bedrock}]
      - models: ["embed-*", "rerank-*"]
        backends: [{backend: cohere}]
      - models: ["jina-*"]
        backends: [{backend: compat}]
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: gemini}
spec:
  provider: Gemini
  endpoint: http://127.0.0.1:${UP_PORT}/v1beta
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: bedrock}
spec:
  provider: Bedrock
  endpoint: http://127.0.0.1:${UP_PORT}
  auth:
    aws:
      region: us-east-1
      accessKeyId: {valueFrom: {env: AWS_ACCESS_KEY_ID}}
      secretAccessKey: {valueFrom: {env: AWS_SECRET_ACCESS_KEY}}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: cohere}
spec:
  provider: Cohere
  endpoint: http://127.0.0.1:${UP_PORT}
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: compat}
spec:
  provider: OpenAICompatible
  endpoint: http://127.0.0.1:${UP_PORT}/v1
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
"""


class Stack:
    def __init__(self, gateway: Gateway, up: Upstream) -> None:
        self.gateway, self.up = gateway, up

    def openai(self, **headers: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.gateway.url}/v1",
            api_key=GATEWAY_KEY,
            max_retries=0,
            timeout=CALL_TIMEOUT_S,
            default_headers=headers or None,
        )

    def rerank(self, body: dict, **headers: str):
        return self.gateway.post(
            "/v1/rerank",
            json=body,
            headers={"authorization": f"Bearer {GATEWAY_KEY}", **headers},
        )


@pytest.fixture(scope="module")
def stack(sluice_bin: Path, upstream_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    up = start_upstream(upstream_bin, tmp_path_factory.mktemp("embed-up"), "up")
    gateway = start_gateway(
        sluice_bin,
        tmp_path_factory.mktemp("embeddings"),
        CONFIG,
        env={
            "GATEWAY_KEY": GATEWAY_KEY,
            "UPSTREAM_KEY": UPSTREAM_KEY,
            "AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET_ACCESS_KEY,
            "UP_PORT": str(up.port),
        },
    )
    try:
        yield Stack(gateway, up)
    finally:
        gateway.process.stop()
        up.process.stop()


def test_gemini_embeddings_as_base64_and_floats(stack: Stack) -> None:
    session, marker = unique("emb-gemini"), unique("text")
    client = stack.openai(**{"x-session-id": session})
    packed = client.embeddings.create(model="gemini-embedding-001", input=[marker, "second"], dimensions=8)
    floats = client.embeddings.create(
        model="gemini-embedding-001", input=[marker, "second"], dimensions=8, encoding_format="float"
    )
    assert [d.index for d in packed.data] == [0, 1]
    assert len(packed.data[0].embedding) == 8
    # The SDK decodes base64 (little-endian f32) back to the same numbers.
    assert packed.data[0].embedding == floats.data[0].embedding
    assert packed.data[0].embedding != packed.data[1].embedding
    assert packed.model == "gemini-embedding-001"
    assert packed.usage.prompt_tokens > 0
    seen = stack.up.requests_with(marker)[-1]
    assert seen["path"] == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert seen["header_map"]["x-goog-api-key"] == UPSTREAM_KEY
    assert seen["json"]["requests"][0] == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": marker}]},
        "outputDimensionality": 8,
    }
    lines = stack.gateway.logs_for_session(session, 2)
    assert all(line["tokens_in"] == packed.usage.prompt_tokens for line in lines), lines
    assert all(line.get("tokens_estimated") for line in lines), lines


def test_bedrock_titan_embeds_one_text(stack: Stack) -> None:
    session, marker = unique("emb-titan"), unique("text")
    client = stack.openai(**{"x-session-id": session, "x-mock-prompt-tokens": "4"})
    result = client.embeddings.create(model=TITAN, input=marker, dimensions=256)
    assert len(result.data) == 1
    assert len(result.data[0].embedding) == 256
    assert result.usage.prompt_tokens == 4
    [seen] = stack.up.requests_with(marker)
    assert seen["path"] == "/model/amazon.titan-embed-text-v2%3A0/invoke"
    assert seen["header_map"]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDSLUICETEST/")
    assert seen["json"] == {"inputText": marker, "dimensions": 256}
    line = stack.gateway.log_for_session(session)
    assert (line["tokens_in"], line["upstream"]) == (4, "bedrock")

    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model=TITAN, input=["a", "b"])
    assert "one text per request" in refused.value.message


def test_bedrock_cohere_and_cohere_embed_batches(stack: Stack) -> None:
    marker = unique("emb-cohere")
    client = stack.openai(**{"x-mock-prompt-tokens": "6"})
    on_bedrock = client.embeddings.create(model="cohere.embed-english-v3", input=[marker, "b", "c"])
    assert len(on_bedrock.data) == 3
    assert len(on_bedrock.data[2].embedding) == 1024
    assert on_bedrock.usage.prompt_tokens == 6
    on_cohere = client.embeddings.create(model="embed-v4.0", input=[marker, "b"], dimensions=256)
    assert [len(d.embedding) for d in on_cohere.data] == [256, 256]
    assert on_cohere.usage.prompt_tokens == 6
    assert on_cohere.data[0].embedding != on_cohere.data[1].embedding
    paths = [r["path"] for r in stack.up.requests_with(marker)]
    assert paths == ["/model/cohere.embed-english-v3/invoke", "/v2/embed"]
    sent = stack.up.requests_with(marker)[-1]
    assert sent["header_map"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent["json"] == {
        "model": "embed-v4.0",
        "texts": [marker, "b"],
        "input_type": "search_document",
        "embedding_types": ["float"],
        "output_dimension": 256,
    }


def test_errors_reach_the_sdk_with_their_status(stack: Stack) -> None:
    for model in ("gemini-embedding-001", TITAN, "embed-v4.0"):
        with pytest.raises(openai.RateLimitError):
            stack.openai(**{"x-mock-status": "429"}).embeddings.create(model=model, input="a")
        with pytest.raises(openai.InternalServerError) as broken:
            stack.openai(**{"x-mock-malformed": "1"}).embeddings.create(model=model, input="a")
        assert broken.value.status_code == 502
        with pytest.raises(openai.BadRequestError) as refused:
            stack.openai().embeddings.create(model=model, input=[[1, 2, 3]])
        assert "token ids" in refused.value.message


def test_rerank_on_cohere_and_an_openai_compatible_backend(stack: Stack) -> None:
    session = unique("rerank")
    documents = [
        "Carson City is the capital city of the American state of Nevada.",
        "Washington, D.C. is the capital of the United States.",
        "Bananas are yellow.",
    ]
    response = stack.rerank(
        {"model": "rerank-v3.5", "query": "capital of the United States", "documents": documents, "top_n": 2},
        **{"x-session-id": session},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["index"] for r in body["results"]][0] == 1
    assert len(body["results"]) == 2
    assert body["meta"]["billed_units"]["search_units"] == 1
    line = stack.gateway.log_for_session(session)
    assert line["path"] == "/v1/rerank" and line["upstream"] == "cohere"
    assert line["tokens_in"] > 10 and line.get("tokens_estimated"), line

    session = unique("rerank-compat")
    response = stack.rerank(
        {"model": "jina-reranker-v2", "query": "red fox", "documents": ["a red fox", "blue sky"], "return_documents": True},
        **{"x-session-id": session},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["results"][0]["document"]["text"] == "a red fox"
    line = stack.gateway.log_for_session(session)
    assert line["tokens_in"] == body["usage"]["total_tokens"]

    refused = stack.rerank({"model": "gemini-2.5-flash", "query": "q", "documents": ["a"]})
    assert refused.status_code == 400
    assert "does not serve /v1/rerank" in refused.json()["error"]["message"]
    throttled = stack.rerank({"model": "rerank-v3.5", "query": "q", "documents": ["a"]}, **{"x-mock-status": "429"})
    assert throttled.status_code == 429
    assert throttled.json()["error"]["message"]
