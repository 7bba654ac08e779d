"""The official MCP conformance suite against its own kind of server, as a
completeness check of the MCP gateway.

test_mcp_conformance.py runs the suite against server-everything, which has
few of the names the suite's server scenarios call (`test_simple_text`,
`test://static-text`, `test_prompt_with_arguments`, ...), so most scenarios
fail on both sides there and check nothing of the gateway. Here the server is
e2e/mcp/conformance-server.mjs, written with the official TypeScript SDK to
have every tool, resource, template, prompt, completion, subscription and
logging behaviour the scenarios expect. The suite (`--suite all`: the active
scenarios and the pending json-schema-2020-12 and server-sse-polling) runs
twice, each time against its own fixture:

- directly, at `http://127.0.0.1:PORT/mcp`;
- through `sluice run`, whose one MCPRoute has that fixture as its only
  backend with `prefixMode: Never`, so every name is the fixture's own.

Asserted, against e2e/mcp/conformance-fixture-baseline.yml:

- the fixture passes every scenario directly, except those in the baseline's
  `fixture` section (what the fixture or the suite cannot do);
- every other scenario passes through the gateway, except those in its
  `gateway` section (known gateway gaps and bugs), each with its reason;
- a listed scenario that passes (directly for `fixture`, through the gateway
  for `gateway`), or that the suite does not have, fails the test: remove it
  from the baseline, so the lists only shrink;
- `dns-rebinding-protection` passes through the gateway, listed or not.

A scenario passes when none of its checks is FAILURE or WARNING. Each run's
output, its results folder and a table of both runs (`results.md`) stay in
the test's tmp dir, under $SLUICE_CACHE/test-logs/ when e2e/test-all.sh runs
it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from conftest import Gateway, start_gateway
from mcp_support import (
    CONFORMANCE_SUITE_TIMEOUT_S,
    DNS_REBINDING,
    ConformanceServer,
    Scenario,
    SuiteRun,
    conformance_entry,
    conformance_version,
    mcp_node_modules,
    read_baseline,
    results_table,
    run_suite,
    start_conformance_server,
)

BASELINE = Path(__file__).resolve().parent.parent / "mcp" / "conformance-fixture-baseline.yml"
SUITE = "all"

CONFIG = """\
apiVersion: sluice.dev/v1alpha1
kind: AIGateway
metadata: {name: default}
spec:
  listen: 127.0.0.1:${SLUICE_PORT}
  admin: 127.0.0.1:${SLUICE_ADMIN_PORT}
  # The suite sends no credential.
  auth: {anonymousTenant: conformance}
  llm: {routes: []}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: fixture}
spec: {provider: MCP, endpoint: "http://127.0.0.1:${FIXTURE_PORT}/mcp"}
---
apiVersion: sluice.dev/v1alpha1
kind: MCPRoute
metadata: {name: conformance}
spec: {path: /mcp, prefixMode: Never, backends: [{backend: fixture}]}
"""

pytestmark = pytest.mark.timeout(2 * CONFORMANCE_SUITE_TIMEOUT_S + 120)


@dataclass
class Runs:
    version: str
    direct: SuiteRun
    gateway: SuiteRun
    fixture_baseline: dict[str, str]
    gateway_baseline: dict[str, str]
    behind: ConformanceServer
    workdir: Path

    def table(self) -> str:
        header = [
            f"@modelcontextprotocol/conformance {self.version}, server scenarios (--suite {SUITE}), "
            "against e2e/mcp/conformance-server.mjs",
            f"direct:  {self.direct.url}",
            f"gateway: {self.gateway.url} (one backend, prefixMode: Never)",
        ]
        notes: dict[str, list[str]] = {}
        for section, baseline in (("fixture", self.fixture_baseline), ("gateway", self.gateway_baseline)):
            for name, reason in baseline.items():
                notes.setdefault(name, []).append(f"baseline {section}: {reason}")
        return results_table(header, self.direct, self.gateway, notes)


@pytest.fixture(scope="module")
def runs(sluice_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    node_modules = mcp_node_modules()
    entry = conformance_entry(node_modules)
    baseline = read_baseline(node_modules, BASELINE, ("fixture", "gateway"))
    both = sorted(set(baseline["fixture"]) & set(baseline["gateway"]))
    if both:
        pytest.fail(f"{BASELINE}: {both} listed under both `fixture` and `gateway`; keep one", pytrace=False)
    workdir = tmp_path_factory.mktemp("conformance-fixture")
    servers: list[ConformanceServer] = []
    gateway: Gateway | None = None
    try:
        # One fixture per run: nothing one run leaves in a server (a log
        # level, a subscription) changes the other's answers.
        direct = start_conformance_server(node_modules, workdir, "direct")
        servers.append(direct)
        behind = start_conformance_server(node_modules, workdir, "behind")
        servers.append(behind)
        gateway = start_gateway(sluice_bin, workdir / "gateway", CONFIG, {"FIXTURE_PORT": str(behind.port)})

        direct_run = run_suite(entry, direct.url, workdir, "direct", SUITE)
        gateway_run = run_suite(entry, f"{gateway.url}/mcp", workdir, "gateway", SUITE)
        for proc in [gateway.process, *(s.process for s in servers)]:
            if not proc.alive():
                proc.fail(f"{proc.name} died during the conformance runs")

        result = Runs(
            conformance_version(node_modules),
            direct_run,
            gateway_run,
            baseline["fixture"],
            baseline["gateway"],
            behind,
            workdir,
        )
        (workdir / "results.md").write_text(result.table() + "\n")
        print("\n" + result.table())
        yield result
    finally:
        if gateway is not None:
            gateway.process.stop()
        for server in reversed(servers):
            server.process.stop()


MISSING = Scenario("", [])  # a scenario a run did not report fails


def test_both_runs_ran_the_same_scenarios(runs: Runs) -> None:
    assert list(runs.gateway.scenarios) == list(runs.direct.scenarios), (
        "the two runs ran different scenarios:\n"
        f"direct:  {list(runs.direct.scenarios)}\ngateway: {list(runs.gateway.scenarios)}"
    )
    # The gateway run really went through the gateway to its fixture.
    assert runs.behind.sessions() > 0, "the gateway opened no session with its conformance-server"


def test_the_fixture_passes_every_scenario_directly(runs: Runs) -> None:
    failing = [
        f"  {name}: {scenario.summary()}"
        for name, scenario in runs.direct.scenarios.items()
        if not scenario.passed and name not in runs.fixture_baseline
    ]
    assert not failing, (
        "e2e/mcp/conformance-server.mjs fails these scenarios directly (a fixture bug, or a limit to list "
        f"under `fixture` in {BASELINE.name} with its reason):\n" + "\n".join(failing) + f"\n\n{runs.table()}"
    )


def test_every_scenario_passes_through_the_gateway(runs: Runs) -> None:
    failing = [
        f"  {name}: {runs.gateway.scenarios.get(name, MISSING).summary()}"
        for name in runs.direct.scenarios
        if name not in runs.fixture_baseline
        and name not in runs.gateway_baseline
        and not runs.gateway.scenarios.get(name, MISSING).passed
    ]
    assert not failing, (
        "these conformance scenarios fail through the gateway (a gateway regression, or a known gap to list "
        f"under `gateway` in {BASELINE.name} with its reason):\n"
        + "\n".join(failing)
        + f"\n\n{runs.table()}\n\nlogs: {runs.workdir}"
    )


def test_baseline_only_lists_current_failures(runs: Runs) -> None:
    stale = []
    for section, baseline, run in (
        ("fixture", runs.fixture_baseline, runs.direct),
        ("gateway", runs.gateway_baseline, runs.gateway),
    ):
        for name, reason in baseline.items():
            if name not in runs.direct.scenarios:
                stale.append(
                    f"  {section}.{name}: not a server scenario of conformance {runs.version} (--suite {SUITE}); "
                    "remove it from the baseline"
                )
            elif run.scenarios.get(name, MISSING).passed:
                where = "directly" if section == "fixture" else "through the gateway"
                stale.append(
                    f"  {section}.{name}: now passes {where}; remove it from the baseline (it said: {reason})"
                )
    assert not stale, f"{BASELINE} is stale:\n" + "\n".join(stale) + f"\n\n{runs.table()}"


def test_dns_rebinding_protection_passes_through_the_gateway(runs: Runs) -> None:
    if DNS_REBINDING not in runs.gateway.scenarios:
        pytest.skip(f"conformance {runs.version} has no {DNS_REBINDING} scenario")
    scenario = runs.gateway.scenarios[DNS_REBINDING]
    assert scenario.passed, f"{DNS_REBINDING} fails through the gateway (it must pass): {scenario.summary()}"
