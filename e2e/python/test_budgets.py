"""Budgets and rate limits (`kind: Budget`) as a user of the OpenAI SDK meets
them: 429s at the right request, OpenAI-shaped bodies the SDK turns into
`RateLimitError`, `x-ratelimit-*` and `retry-after` headers, Strict streams
cut with an error event, scoping by model and key, spend that survives a
restart, and `sluice validate` naming every mistake in a Budget.

Each test starts its own gateway (with its own counter journal) in front of
one test upstream, priced per model: the gateway reserves the prompt
estimate (a heuristic, read back from the headers) plus `max_tokens`
(1024 when unset) at the route's
price before forwarding, and settles what the upstream reports.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import signal
import subprocess
import textwrap
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest

from conftest import CALL_TIMEOUT_S, Gateway, Upstream, start_gateway, start_upstream, unique

# USD per million tokens, i.e. micro-USD per token: (input, output).
PRICES = {
    "gpt-4o": (Decimal("2.50"), Decimal("10.00")),
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.60")),
}
DEFAULT_OUTPUT_RESERVATION = 1024

CONFIG = """\
apiVersion: sluice.dev/v1alpha1
kind: AIGateway
metadata: {name: default}
spec:
  listen: 127.0.0.1:${SLUICE_PORT}
  admin: 127.0.0.1:${SLUICE_ADMIN_PORT}
  auth:
    anonymousTenant: anon
    apiKeys:
      - {name: team-a-ci, tenant: team-a, valueFrom: {env: TEAM_A_KEY}}
      - {name: team-a-dev, tenant: team-a, valueFrom: {env: TEAM_A_DEV_KEY}}
      - {name: team-b-ci, tenant: team-b, valueFrom: {env: TEAM_B_KEY}}
  state: {type: memory, path: "${STATE_PATH}"}
  llm:
    routes:
      - models: ["gpt-4o", "gpt-4o-mini"]
        backends: [{backend: primary}]
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: primary}
spec:
  provider: OpenAICompatible
  endpoint: http://127.0.0.1:${PRIMARY_PORT}
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
  models: ["gpt-4o", "gpt-4o-mini"]
  pricing:
    gpt-4o: {input: "2.50", output: "10.00"}
    gpt-4o-mini: {input: "0.15", output: "0.60"}
"""


def budget(name: str, spec: str) -> str:
    """A Budget document; `spec` is the YAML under `spec:`."""
    body = textwrap.indent(textwrap.dedent(spec).strip(), "  ")
    return f"---\napiVersion: sluice.dev/v1alpha1\nkind: Budget\nmetadata: {{name: {name}}}\nspec:\n{body}\n"


@dataclass
class BudgetKeys:
    team_a: str = field(default_factory=lambda: "sk-team-a-" + secrets.token_hex(16))
    team_a_dev: str = field(default_factory=lambda: "sk-team-a-dev-" + secrets.token_hex(16))
    team_b: str = field(default_factory=lambda: "sk-team-b-" + secrets.token_hex(16))
    upstream: str = field(default_factory=lambda: "sk-upstream-" + secrets.token_hex(16))


KEYS = BudgetKeys()


@pytest.fixture(scope="module")
def upstream(upstream_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    up = start_upstream(upstream_bin, tmp_path_factory.mktemp("budgets-upstream"), "primary")
    try:
        yield up
    finally:
        up.process.stop()


@dataclass
class Limited:
    """A gateway with Budgets, and how to start it again on the same journal."""

    gateway: Gateway
    sluice_bin: Path
    upstream: Upstream
    budgets: str
    state: Path
    workdir: Path
    restarts: int = 0

    def client(self, key: str | None = None, **kwargs) -> openai.OpenAI:
        return self.gateway.client(key or KEYS.team_a, **kwargs)

    def budgets_report(self) -> dict[str, dict[str, dict]]:
        """GET /budgets as {budget: {limit name: limit report}}."""
        report = self.gateway.admin("/budgets").raise_for_status().json()
        return {b["name"]: {limit["name"]: limit for limit in b["limits"]} for b in report["budgets"]}

    def restart(self, sig: signal.Signals) -> None:
        """Stops the gateway with `sig` and starts it again on the same counter journal."""
        process = self.gateway.process
        process.popen.send_signal(sig)
        process.popen.wait(timeout=10)
        process.stop()  # forget it
        self.restarts += 1
        self.gateway = _start(self.sluice_bin, self.workdir / f"run{self.restarts}", self.upstream, self.budgets, self.state)


def _start(sluice_bin: Path, workdir: Path, upstream: Upstream, budgets: str, state: Path) -> Gateway:
    env = {
        "PRIMARY_PORT": str(upstream.port),
        "STATE_PATH": str(state),
        "TEAM_A_KEY": KEYS.team_a,
        "TEAM_A_DEV_KEY": KEYS.team_a_dev,
        "TEAM_B_KEY": KEYS.team_b,
        "UPSTREAM_KEY": KEYS.upstream,
    }
    return start_gateway(sluice_bin, workdir, CONFIG + budgets, env)


@pytest.fixture
def limited(sluice_bin: Path, upstream: Upstream, tmp_path: Path):
    """Starts a gateway with the given Budget documents; stops it at teardown."""
    started: list[Limited] = []

    def start(budgets: str) -> Limited:
        run = Limited(
            _start(sluice_bin, tmp_path / "run0", upstream, budgets, tmp_path / "counters.log"),
            sluice_bin,
            upstream,
            budgets,
            tmp_path / "counters.log",
            tmp_path,
        )
        started.append(run)
        return run

    yield start
    for run in started:
        run.gateway.process.stop()


# --------------------------------------------------------------------------
# What requests cost, as the gateway computes it (integer micro-USD).


def micro_usd(text: str) -> int:
    """An amount the gateway wrote in USD (six decimals) as micro-USD."""
    return int(Decimal(text) * 1_000_000)


def cost_micro_usd(model: str, usage) -> int:
    price_in, price_out = PRICES[model]
    return math.ceil(usage.prompt_tokens * price_in + usage.completion_tokens * price_out)


def usd(micro: int) -> str:
    """How the gateway writes an amount of USD: six decimals."""
    return f"{Decimal(micro) / 1_000_000:.6f}"


def recording_client(gateway: Gateway, key: str, bodies: list[bytes], **kwargs) -> openai.OpenAI:
    """An SDK client that records the exact bytes of each request body it sends."""
    http_client = httpx.Client(event_hooks={"request": [lambda request: bodies.append(request.read())]})
    kwargs.setdefault("max_retries", 0)
    return openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key=key, timeout=CALL_TIMEOUT_S, http_client=http_client, **kwargs
    )


def wait_for_minute_room(seconds: float) -> None:
    """Per-minute limits count in wall-clock minute slots (the previous one
    weighted in): a sequence of requests that must land in one slot starts
    with at least `seconds` left in it."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.05)


def seconds_to_next_month() -> float:
    now = datetime.now(timezone.utc)
    start = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=timezone.utc)
    return (start - now).total_seconds()


def ratelimit_headers(headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("x-ratelimit-") or k == "retry-after"}


def session_lines(gateway: Gateway, session: str, count: int) -> list[dict]:
    lines = gateway.logs_for_session(session, count)
    time.sleep(0.2)  # room for a wrong extra line to show up
    lines = [line for line in gateway.access_log() if line.get("session_id") == session]
    assert len(lines) == count, lines
    return lines


# --------------------------------------------------------------------------
# 1. A cost budget: the scenario.

COST_BUDGET = budget(
    "team-a",
    """
    tenant: team-a
    limits:
      - {cost: "0.01", period: Monthly}
    """,
)
LIMIT_MICRO = 10_000  # $0.01


def test_a_cost_budget_refuses_the_request_that_would_overspend_it(limited, upstream: Upstream) -> None:
    run = limited(COST_BUDGET)
    bodies: list[bytes] = []
    client = recording_client(run.gateway, KEYS.team_a, bodies)
    session, marker = unique("cost"), unique("prompt")
    # A prompt of ~3900 tokens (body bytes / 4) for which the upstream
    # reports 3900, and 200 completion tokens; no max_tokens, as most SDK
    # users write it: 1024 output tokens are reserved.
    messages = [{"role": "user", "content": f"{marker} " + "lorem ipsum " * 1300}]
    headers = {"x-session-id": session, "x-mock-prompt-tokens": "3900", "x-mock-chunks": "200"}

    spent = admitted = 0
    reserve: int | None = None  # what admission takes for this request, as the gateway says
    refusal: openai.RateLimitError | None = None
    for _ in range(40):
        remaining = LIMIT_MICRO - spent
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=messages, extra_headers=headers
            )
        except openai.RateLimitError as e:
            refusal = e
            needs = micro_usd(re.search(r"this request needs ([0-9.]+) USD", e.message).group(1))
            assert reserve is None or needs == reserve, (needs, reserve)
            assert remaining < needs, f"refused with {remaining} micro-USD left, the request reserves {needs}"
            break
        completion = raw.parse()
        taken = remaining - micro_usd(raw.headers["x-ratelimit-remaining-cost"])
        assert reserve is None or taken == reserve, (taken, reserve)
        reserve = taken
        assert 0 < reserve <= remaining, f"admitted with {remaining} micro-USD left, the request reserves {reserve}"
        # The estimate covers the 1024 output tokens reserved without max_tokens.
        assert reserve >= math.ceil(DEFAULT_OUTPUT_RESERVATION * PRICES["gpt-4o-mini"][1])
        assert completion.usage.prompt_tokens == 3900 and completion.usage.completion_tokens == 200
        spent += cost_micro_usd("gpt-4o-mini", completion.usage)
        admitted += 1
    assert refusal is not None, f"the $0.01 budget never ran out ({usd(spent)} spent)"
    assert admitted >= 5, admitted  # the scenario is a loop, not a single call
    remaining = LIMIT_MICRO - spent

    # What the SDK raised: the body names the budget, the limit and what is left.
    assert refusal.status_code == 429
    assert refusal.type == "insufficient_quota"
    assert refusal.code == "budget_exceeded"
    assert "budget team-a" in refusal.message and "cost-monthly" in refusal.message, refusal.message
    assert f"{usd(remaining)} USD left" in refusal.message, refusal.message
    assert "0.010000 USD per period" in refusal.message, refusal.message
    refused_headers = refusal.response.headers
    assert refused_headers["x-ratelimit-limit-cost"] == "0.010000"
    assert refused_headers["x-ratelimit-remaining-cost"] == usd(remaining)
    # A calendar budget: retry when the month ends (UTC).
    assert abs(int(refused_headers["retry-after"]) - seconds_to_next_month()) < 5, ratelimit_headers(refused_headers)

    # The refused request never reached the upstream.
    assert len(upstream.requests_with(marker)) == admitted

    # The access log: cost of each answer, never more than the budget in all.
    lines = session_lines(run.gateway, session, admitted + 1)
    answered, [refused] = lines[:-1], lines[-1:]
    assert all(line["status"] == 200 for line in answered), answered
    assert all(line["cost_usd"] == float(usd(spent // admitted)) for line in answered), answered
    total = sum(Decimal(str(line["cost_usd"])) for line in answered)
    assert total == Decimal(spent) / 1_000_000
    assert total <= Decimal("0.01")
    assert refused["status"] == 429
    assert refused["limit"] == "team-a/cost-monthly"
    assert refused["error"] == "budget_exceeded"
    assert not refused.get("cost_usd")

    # The admin port agrees.
    cost = run.budgets_report()["team-a"]["cost-monthly"]
    assert cost["metric"] == "cost"
    assert cost["limit"] == "0.010000"
    assert cost["spent"] == usd(spent)
    assert cost["remaining"] == usd(remaining)
    assert cost["percent"] == spent * 100 // LIMIT_MICRO


def test_the_sdk_does_not_retry_an_exhausted_monthly_budget(limited) -> None:
    # retry-after of a monthly budget is days: more than the SDK's 120 s
    # maximum, so a client with default retries gives up at once.
    run = limited(COST_BUDGET)
    session = unique("no-retry")
    headers = {"x-session-id": session, "x-mock-prompt-tokens": "1", "x-mock-chunks": "10000"}
    messages = [{"role": "user", "content": "hi"}]
    # 10k output tokens at $0.60/M cost $0.006: a second such request does not fit.
    run.client().chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=10_000, extra_headers=headers)
    patient = run.client(max_retries=2)
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as caught:
        patient.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=10_000, extra_headers=headers)
    assert time.monotonic() - started < 2
    assert int(caught.value.response.headers["retry-after"]) > 3600
    assert [line["status"] for line in session_lines(run.gateway, session, 2)] == [200, 429]


def test_concurrent_clients_never_overspend_a_cost_budget(limited) -> None:
    run = limited(COST_BUDGET)
    session = unique("concurrent")
    headers = {"x-session-id": session, "x-mock-prompt-tokens": "100", "x-mock-chunks": "300"}
    messages = [{"role": "user", "content": "x" * 400}]
    outcomes: list[int] = []

    def worker() -> None:
        client = run.client()
        for _ in range(12):
            try:
                client.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=300, extra_headers=headers)
                outcomes.append(200)
            except openai.RateLimitError:
                outcomes.append(429)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # Each answer costs 100 * 2.50 + 300 * 10 = 3250 micro-USD: three fit in $0.01.
    assert outcomes.count(200) == 3, outcomes
    lines = session_lines(run.gateway, session, len(outcomes))
    total = sum(Decimal(str(line.get("cost_usd") or 0)) for line in lines)
    assert total == Decimal("0.00975")
    assert run.budgets_report()["team-a"]["cost-monthly"]["spent"] == "0.009750"


def test_remaining_cost_header_follows_the_spend(limited) -> None:
    run = limited(COST_BUDGET)
    bodies: list[bytes] = []
    client = recording_client(run.gateway, KEYS.team_a, bodies)
    headers = {"x-mock-prompt-tokens": "300", "x-mock-chunks": "80"}
    messages = [{"role": "user", "content": "y" * 1200}]
    spent, seen, want = 0, [], []
    reserve = None
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=messages, max_tokens=100, extra_headers=headers
        )
        seen.append(raw.headers["x-ratelimit-remaining-cost"])
        if reserve is None:
            # The same request each time: its reservation, from the first answer.
            reserve = LIMIT_MICRO - micro_usd(seen[0])
            assert reserve >= math.ceil(100 * PRICES["gpt-4o"][1]), reserve
        # Computed at admission: the limit less what was spent before and
        # this request's reservation.
        want.append(usd(LIMIT_MICRO - spent - reserve))
        spent += cost_micro_usd("gpt-4o", raw.parse().usage)
    assert seen == want


# --------------------------------------------------------------------------
# 2. Request rate limits: headers on every limited answer, retry-after.

RPM_BUDGET = budget(
    "team-a",
    """
    tenant: team-a
    limits:
      - {requestsPerMinute: 5}
    """,
)
MESSAGES = [{"role": "user", "content": "hi"}]


def test_requests_per_minute_headers_and_retry_after(limited) -> None:
    run = limited(RPM_BUDGET)
    client = run.client()
    wait_for_minute_room(5)
    remaining = []
    for i in range(5):
        stream = i == 2  # a streamed answer carries the headers too
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=10, stream=stream
        )
        assert raw.status_code == 200
        h = raw.headers
        assert h["x-ratelimit-limit-requests"] == "5", ratelimit_headers(h)
        assert re.fullmatch(r"\d+s", h["x-ratelimit-reset-requests"]), ratelimit_headers(h)
        assert 1 <= int(h["x-ratelimit-reset-requests"][:-1]) <= 60
        remaining.append(int(h["x-ratelimit-remaining-requests"]))
        if stream:
            assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        else:
            assert raw.parse().choices[0].message.content
    assert remaining[0] == 4
    assert remaining == sorted(remaining, reverse=True), remaining  # never goes up
    assert remaining[-1] == 0

    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=10)
    refused = caught.value
    assert refused.status_code == 429
    assert refused.type == "rate_limit_exceeded"
    assert refused.code == "rate_limited"
    assert "team-a/requests-per-minute" in refused.message, refused.message
    h = refused.response.headers
    retry_after = int(h["retry-after"])  # an integer number of seconds
    assert 1 <= retry_after <= 6, ratelimit_headers(h)  # a tenth of the window at most
    assert f"retry in {retry_after}s" in refused.message
    assert h["x-ratelimit-limit-requests"] == "5"
    assert h["x-ratelimit-remaining-requests"] == "0"
    assert h["x-ratelimit-reset-requests"] == f"{retry_after}s"
    line = run.gateway.wait_for_log(lambda entry: entry["status"] == 429)
    assert line["limit"] == "team-a/requests-per-minute" and line["error"] == "rate_limited"


def test_sdk_retries_honour_retry_after(limited) -> None:
    run = limited(RPM_BUDGET)
    wait_for_minute_room(10)
    session = unique("retry")
    headers = {"x-session-id": session}
    for _ in range(5):
        run.client().chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=10, extra_headers=headers)
    with pytest.raises(openai.RateLimitError) as first:
        run.client().chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=10, extra_headers=headers)
    retry_after = int(first.value.response.headers["retry-after"])

    patient = run.client(max_retries=1)
    started = time.monotonic()
    try:
        patient.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=10, extra_headers=headers)
    except openai.RateLimitError:
        pass  # still limited after the wait (the window had not moved on): fine
    elapsed = time.monotonic() - started
    assert retry_after - 0.5 <= elapsed <= retry_after + 3, (retry_after, elapsed)
    statuses = [line["status"] for line in session_lines(run.gateway, session, 8)]
    assert statuses[:7] == [200] * 5 + [429, 429], statuses  # the SDK's first try, then its retry


def test_remaining_requests_header_counts_down_one_by_one(limited) -> None:
    run = limited(RPM_BUDGET)
    wait_for_minute_room(5)
    remaining = []
    for _ in range(5):
        raw = run.client().chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, max_tokens=10)
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["4", "3", "2", "1", "0"]


# --------------------------------------------------------------------------
# 3. Strict and Lenient streams.


def output_budget(enforcement: str) -> str:
    return budget(
        "team-a",
        f"""
        tenant: team-a
        enforcement: {enforcement}
        limits:
          - {{tokens: 200, tokenType: output, period: Monthly}}
        """,
    )


def read_stream(stream) -> tuple[list[str], Exception | None]:
    pieces: list[str] = []
    try:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
    except openai.APIError as e:
        return pieces, e
    return pieces, None


def test_a_strict_budget_cuts_a_stream_with_an_error_the_sdk_raises(limited) -> None:
    run = limited(output_budget("Strict"))
    session = unique("strict")
    stream = run.client().chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        max_tokens=10,
        stream=True,
        extra_headers={"x-session-id": session, "x-mock-chunks": "400"},
    )
    pieces, error = read_stream(stream)

    assert error is not None, f"the stream of {len(pieces)} tokens completed past a 200-token Strict budget"
    # An in-stream error event: APIError, not an HTTP status error (the status was 200).
    assert type(error) is openai.APIError
    assert "team-a/output-tokens-monthly" in error.message, error.message
    assert "Strict" in error.message
    assert error.code == "budget_exceeded" and error.type == "insufficient_quota", error.body
    assert 0 < len(pieces) <= 200, len(pieces)

    line = session_lines(run.gateway, session, 1)[0]
    assert line["status"] == 200
    assert line["error"] == "budget_exceeded"
    assert line["tokens_out"] <= 200
    output = run.budgets_report()["team-a"]["output-tokens-monthly"]
    assert output["spent"] == line["tokens_out"] and output["spent"] <= 200


def test_a_lenient_budget_lets_the_stream_finish_and_refuses_the_next_request(limited) -> None:
    run = limited(output_budget("Lenient"))
    session = unique("lenient")
    headers = {"x-session-id": session, "x-mock-chunks": "400"}
    stream = run.client().chat.completions.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=10, stream=True, extra_headers=headers
    )
    pieces, error = read_stream(stream)
    assert error is None, error
    assert len(pieces) == 400

    line = session_lines(run.gateway, session, 1)[0]
    assert "error" not in line, line
    assert line["tokens_out"] == 400
    output = run.budgets_report()["team-a"]["output-tokens-monthly"]
    assert (output["spent"], output["remaining"], output["percent"]) == (400, 0, 200)
    with pytest.raises(openai.RateLimitError) as caught:
        run.client().chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=10)
    assert caught.value.code == "budget_exceeded"


def test_a_strict_stream_may_use_the_whole_limit(limited) -> None:
    run = limited(output_budget("Strict"))
    stream = run.client().chat.completions.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=10, stream=True, extra_headers={"x-mock-chunks": "400"}
    )
    pieces, error = read_stream(stream)
    assert error is not None
    time.sleep(0.2)
    output = run.budgets_report()["team-a"]["output-tokens-monthly"]
    # Cut when the 200 tokens are used, not with a third of them left.
    assert output["remaining"] <= 5, (len(pieces), output)


# --------------------------------------------------------------------------
# 4. Token rate limits.


def test_output_tokens_per_minute(limited) -> None:
    run = limited(
        budget(
            "team-a",
            """
            tenant: team-a
            limits:
              - {tokensPerMinute: 100, tokenType: output}
            """,
        )
    )
    client = run.client()
    wait_for_minute_room(5)

    def ask(max_tokens: int, chunks: int):
        # 5000 prompt tokens each: input does not count against an output limit.
        return client.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=MESSAGES,
            max_completion_tokens=max_tokens,
            extra_headers={"x-mock-chunks": str(chunks), "x-mock-prompt-tokens": "5000"},
        )

    first = ask(30, 30)
    assert first.headers["x-ratelimit-limit-tokens"] == "100"
    assert first.headers["x-ratelimit-remaining-tokens"] == "70"
    ask(30, 10)  # reserves 30, uses 10: 20 handed back
    ask(50, 50)  # 90 used
    with pytest.raises(openai.RateLimitError) as caught:
        ask(20, 20)  # 10 left
    refused = caught.value
    assert refused.code == "rate_limited" and refused.type == "rate_limit_exceeded"
    assert "team-a/output-tokens-per-minute" in refused.message, refused.message
    assert "10 output tokens left, this request needs 20 output tokens" in refused.message, refused.message
    assert refused.response.headers["x-ratelimit-remaining-tokens"] == "10"
    assert 1 <= int(refused.response.headers["retry-after"]) <= 6
    ask(10, 10)  # exactly what is left
    with pytest.raises(openai.RateLimitError):
        ask(1, 1)
    time.sleep(0.2)
    output = run.budgets_report()["team-a"]["output-tokens-per-minute"]
    assert (output["spent"], output["remaining"]) == (100, 0)


# --------------------------------------------------------------------------
# 5. Scope: models, API key, tenant.


def test_a_budget_scoped_to_a_model_and_key_leaves_the_rest_alone(limited) -> None:
    run = limited(
        budget(
            "mini-ci",
            """
            tenant: team-a
            models: ["gpt-4o-mini"]
            apiKey: team-a-ci
            limits:
              - {requests: 2, period: Monthly}
            """,
        )
        + budget(
            "anon",
            """
            tenant: anon
            limits:
              - {requests: 1, period: Monthly}
            """,
        )
    )
    ci, dev, team_b = run.client(KEYS.team_a), run.client(KEYS.team_a_dev), run.client(KEYS.team_b)

    for _ in range(2):
        raw = ci.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
    with pytest.raises(openai.RateLimitError) as caught:
        ci.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)
    assert "budget mini-ci" in caught.value.message

    # Another model with the same key, the same model with another key of
    # the same tenant, another tenant: not limited, no headers.
    for client, model in [(ci, "gpt-4o"), (dev, "gpt-4o-mini"), (team_b, "gpt-4o-mini")]:
        for _ in range(3):
            raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, max_tokens=5)
            assert raw.status_code == 200
            assert not ratelimit_headers(raw.headers), (model, ratelimit_headers(raw.headers))

    # Requests without a key run as the anonymous tenant, with its own budget.
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 5}
    assert run.gateway.post("/v1/chat/completions", json=body).status_code == 200
    anon_refused = run.gateway.post("/v1/chat/completions", json=body)
    assert anon_refused.status_code == 429, anon_refused.text
    assert "budget anon" in anon_refused.json()["error"]["message"]

    report = run.budgets_report()
    assert report["mini-ci"]["requests-monthly"]["spent"] == 2
    assert report["anon"]["requests-monthly"]["spent"] == 1


# --------------------------------------------------------------------------
# 6. Spend survives a restart.


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_spend_survives_a_restart(limited, sig: signal.Signals) -> None:
    run = limited(
        budget(
            "team-a",
            """
            tenant: team-a
            limits:
              - {requests: 4, period: Monthly}
              - {cost: "1.00", period: Monthly}
            """,
        )
    )
    headers = {"x-mock-prompt-tokens": "1000", "x-mock-chunks": "100"}
    for _ in range(3):
        run.client().chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=100, extra_headers=headers)
    if sig == signal.SIGKILL:
        time.sleep(0.3)  # settled (every 100 ms) and journaled; SIGTERM settles on the way out
    before = run.budgets_report()["team-a"]
    assert before["requests-monthly"]["spent"] == 3
    assert before["cost-monthly"]["spent"] == usd(3 * 3500)  # 1000 * $2.50/M + 100 * $10/M each

    run.restart(sig)

    after = run.budgets_report()["team-a"]
    assert after["requests-monthly"]["spent"] == 3, after
    assert after["cost-monthly"]["spent"] == before["cost-monthly"]["spent"], after
    run.client().chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=100, extra_headers=headers)
    with pytest.raises(openai.RateLimitError) as caught:
        run.client().chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=100, extra_headers=headers)
    assert caught.value.code == "budget_exceeded"
    assert "requests-monthly" in caught.value.message


# --------------------------------------------------------------------------
# 7. `sluice validate` names every mistake in a Budget.

BAD_BUDGETS = budget(
    "team-a",
    """
    tenant: team-a
    apiKey: team-a-nope
    enforcement: Soft
    failureMode: Open
    alertsAt: [0, 50]
    limits:
      - {cost: "10", period: Fortnightly}
      - {cost: "10", requests: 5, period: Daily}
      - {cost: "0.0000001", period: Monthly}
      - {requests: 5, period: Daily, timeZone: Mars/Olympus}
      - {requestsPerMinute: 5, period: Daily}
      - {requests: 5, tokenType: output, period: Daily}
      - {tokens: 5}
      - {tokens: 0, period: Daily}
      - {requests: 5, window: 24h, period: Daily}
      - {requests: 5, window: 1.5s}
      - {requests: 5, period: Daily, name: "bad name"}
      - {tokensPerMinute: 5, tokenType: both}
    """,
) + budget("nobody", "tenant: ''")

WANTED_ERRORS = [
    "Budget/team-a: spec.apiKey: no API key named `team-a-nope`",
    "Budget/team-a: spec.enforcement: `Soft` is not one of Strict, Lenient",
    "Budget/team-a: spec.failureMode: `Open` is not one of FailClosed, FailOpen",
    "Budget/team-a: spec.alertsAt[0]: 0 is not a percentage",
    "Budget/team-a: spec.limits[0].period: `Fortnightly` is not one of Hourly, Daily, Weekly, Monthly",
    "Budget/team-a: spec.limits[1]: one metric per limit, not cost and requests",
    "Budget/team-a: spec.limits[2].cost: `0.0000001`: at most 6 decimal places",
    "Budget/team-a: spec.limits[3].timeZone: `Mars/Olympus` is not an IANA time zone",
    "Budget/team-a: spec.limits[4].period: a requestsPerMinute limit is per minute already",
    "Budget/team-a: spec.limits[5].tokenType: only a tokens or tokensPerMinute limit has a token type",
    "Budget/team-a: spec.limits[6]: a tokens limit needs a `period`",
    "Budget/team-a: spec.limits[7].tokens: must be more than 0",
    "Budget/team-a: spec.limits[8]: set either `period` (calendar) or `window` (rolling), not both",
    "Budget/team-a: spec.limits[9].window: a whole number of seconds",
    "Budget/team-a: spec.limits[10].name: `bad name`: letters, digits",
    "Budget/team-a: spec.limits[11].tokenType: `both` is not one of total, input, output",
    "Budget/nobody: spec.tenant: required",
    "Budget/nobody: spec.limits: list at least one limit",
]


def test_validate_names_every_budget_error_with_its_object_and_field(sluice_bin: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad-budgets.yaml"
    path.write_text(CONFIG + BAD_BUDGETS)
    env = {
        "PATH": "/usr/bin:/bin",
        "SLUICE_PORT": "1975",
        "SLUICE_ADMIN_PORT": "1976",
        "PRIMARY_PORT": "9",
        "STATE_PATH": str(tmp_path / "c.log"),
        "TEAM_A_KEY": "sk-a",
        "TEAM_A_DEV_KEY": "sk-a-dev",
        "TEAM_B_KEY": "sk-b",
        "UPSTREAM_KEY": "sk-up",
    }
    result = subprocess.run(
        [str(sluice_bin), "validate", "-f", str(path)], capture_output=True, text=True, timeout=30, env=env
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    missing = [wanted for wanted in WANTED_ERRORS if wanted not in output]
    assert not missing, f"not reported: {json.dumps(missing, indent=1)}\n--- output:\n{output}"
    assert f"{len(WANTED_ERRORS)} config errors" in output, output

    # The same config without the mistakes is valid.
    path.write_text(CONFIG + COST_BUDGET + RPM_BUDGET.replace("name: team-a", "name: team-a-rpm"))
    result = subprocess.run(
        [str(sluice_bin), "validate", "-f", str(path)], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
