"""The gateway as an operator meets it: the built-in demo config, the admin
listener, and `sluice validate`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import openai
import pytest

from conftest import CALL_TIMEOUT_S, STANDARD_CONFIG, Stack, start_gateway

MESSAGES = [{"role": "user", "content": "Say hello"}]


# --------------------------------------------------------------------------
# `sluice run` with no config file: the built-in demo model.


@pytest.fixture
def demo_gateway(sluice_bin: Path, tmp_path: Path):
    gateway = start_gateway(sluice_bin, tmp_path, config=None)
    yield gateway
    gateway.process.stop()


def test_default_config_serves_the_demo_model(demo_gateway) -> None:
    # Anonymous on loopback: whatever key the SDK insists on is fine.
    client = demo_gateway.client("sk-anything")
    completion = client.chat.completions.create(model="sluice-demo", messages=MESSAGES)
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert "sluice-demo" in {m.id for m in client.models.list()}


def test_default_config_streams_the_demo_model(demo_gateway) -> None:
    client = demo_gateway.client("sk-anything")
    chunks = list(client.chat.completions.create(model="sluice-demo", messages=MESSAGES, stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1, "the answer came in one piece"
    assert all(c.usage is None for c in chunks)


def test_default_config_without_any_key(demo_gateway) -> None:
    response = demo_gateway.post("/v1/chat/completions", json={"model": "sluice-demo", "messages": MESSAGES})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]


# --------------------------------------------------------------------------
# The admin listener.


def test_health_and_readiness(stack: Stack) -> None:
    assert stack.gateway.admin("/healthz").status_code == 200
    assert stack.gateway.admin("/readyz").status_code == 200


def test_config_endpoint_names_the_running_snapshot(stack: Stack) -> None:
    response = stack.gateway.admin("/config")
    assert response.status_code == 200
    body = response.json()
    assert body["version"] is not None
    assert isinstance(body["hash"], str) and body["hash"]
    assert stack.keys.team_a not in response.text
    assert stack.keys.upstream not in response.text


def test_metrics_count_tokens(stack: Stack, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    response = stack.gateway.admin("/metrics")
    assert response.status_code == 200
    assert response.headers.get("content-type", "").startswith(("text/plain", "application/openmetrics-text"))
    assert "# TYPE" in response.text
    # OpenTelemetry GenAI semantic conventions, in Prometheus spelling.
    assert "gen_ai_client_token_usage" in response.text


def test_admin_is_not_on_the_data_port(stack: Stack) -> None:
    # Whether it says 401 (no key) or 404 (no such path), it must not serve metrics.
    response = httpx.get(f"{stack.gateway.url}/metrics", timeout=CALL_TIMEOUT_S)
    assert response.status_code in (401, 404), response.status_code
    assert "# TYPE" not in response.text


# --------------------------------------------------------------------------
# `sluice validate`.


def validate(sluice_bin: Path, path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(sluice_bin), "validate", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def standard_env(**overrides: str) -> dict[str, str]:
    env = {
        "SLUICE_PORT": "1975",
        "SLUICE_ADMIN_PORT": "1976",
        "TEAM_A_KEY": "sk-a",
        "TEAM_B_KEY": "sk-b",
        "UPSTREAM_KEY": "sk-up",
        **{name: "9" for name in ("PRIMARY_PORT", "BACKUP_PORT", "BROKEN_PORT", "THROTTLED_PORT", "DEAD_PORT")},
    }
    env.update(overrides)
    return env


def test_validate_accepts_a_good_config(sluice_bin: Path, tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(STANDARD_CONFIG)
    result = validate(sluice_bin, path, standard_env())
    assert result.returncode == 0, result.stdout + result.stderr


def test_validate_names_an_unknown_backend(sluice_bin: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(STANDARD_CONFIG.replace("{backend: dead}", "{backend: nowhere}"))
    result = validate(sluice_bin, path, standard_env())
    assert result.returncode == 1, result.stdout + result.stderr
    assert "nowhere" in result.stdout + result.stderr


def test_validate_names_an_unset_variable(sluice_bin: Path, tmp_path: Path) -> None:
    path = tmp_path / "unset.yaml"
    path.write_text(STANDARD_CONFIG)
    env = standard_env()
    del env["PRIMARY_PORT"]
    result = validate(sluice_bin, path, env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PRIMARY_PORT" in result.stdout + result.stderr
