"""The official MCP conformance suite, as a fidelity check of the MCP gateway.

`@modelcontextprotocol/conformance` (pinned in e2e/mcp/package-lock.json) is
an MCP client that runs scenarios against a server (`conformance server
--url URL`) and writes each scenario's checks to `checks.json`. It runs here
twice, each time against its own `server-everything` (streamableHttp):

- directly, at `http://127.0.0.1:PORT/mcp`;
- through `sluice run`, whose one MCPRoute has that server as its only
  backend with `prefixMode: Never`, so every name is the server's own.

The gateway must be transparent: every scenario that passes directly passes
through it too, except those listed in e2e/mcp/conformance-baseline.yml,
each with its reason. A listed scenario that passes through the gateway (or
no longer passes directly) fails the test, so the list only shrinks. And
`dns-rebinding-protection` must pass through the gateway whatever the server
does (server-everything does not check Host or Origin; the gateway does).

Many scenarios fail on both sides: they call the fixture names of the
suite's own test server (`test_simple_text`, `test://static-text`, ...),
which server-everything does not have. They are reported, not asserted;
test_mcp_conformance_fixture.py runs them against a server that has them
(e2e/mcp/conformance-server.mjs).

A scenario passes when none of its checks is FAILURE or WARNING (the suite's
own rule for its baselines). Each run's output, its results folder and a
table of both runs (`results.md`) stay in the test's tmp dir, under
$SLUICE_CACHE/test-logs/ when e2e/test-all.sh runs it.
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
    EverythingServer,
    Scenario,
    SuiteRun,
    conformance_entry,
    conformance_version,
    mcp_node_modules,
    read_baseline,
    results_table,
    run_suite,
    start_everything,
)

BASELINE = Path(__file__).resolve().parent.parent / "mcp" / "conformance-baseline.yml"

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
metadata: {name: everything}
spec: {provider: MCP, endpoint: "http://127.0.0.1:${EV_PORT}/mcp"}
---
apiVersion: sluice.dev/v1alpha1
kind: MCPRoute
metadata: {name: conformance}
spec: {path: /mcp, prefixMode: Never, backends: [{backend: everything}]}
"""

pytestmark = pytest.mark.timeout(2 * CONFORMANCE_SUITE_TIMEOUT_S + 120)


# --------------------------------------------------------------------------
# Fixtures


@dataclass
class Runs:
    version: str
    direct: SuiteRun
    gateway: SuiteRun
    baseline: dict[str, str]
    behind: EverythingServer
    workdir: Path

    def names(self) -> list[str]:
        return list(self.direct.scenarios)

    def table(self) -> str:
        """Both runs side by side, one row per scenario."""
        header = [
            f"@modelcontextprotocol/conformance {self.version}, server scenarios (active suite)",
            f"direct:  {self.direct.url}",
            f"gateway: {self.gateway.url} (one backend, prefixMode: Never)",
        ]
        notes = {name: [f"baseline: {reason}"] for name, reason in self.baseline.items()}
        return results_table(header, self.direct, self.gateway, notes)


@pytest.fixture(scope="module")
def runs(sluice_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    node_modules = mcp_node_modules()
    entry = conformance_entry(node_modules)
    baseline = read_baseline(node_modules, BASELINE, ("gateway",))["gateway"]
    workdir = tmp_path_factory.mktemp("conformance")
    servers: list[EverythingServer] = []
    gateway: Gateway | None = None
    try:
        # One server per run: nothing one run leaves in a server (a log level,
        # a subscription) changes the other's answers.
        direct = start_everything(node_modules, workdir, "direct")
        servers.append(direct)
        behind = start_everything(node_modules, workdir, "behind")
        servers.append(behind)
        gateway = start_gateway(sluice_bin, workdir / "gateway", CONFIG, {"EV_PORT": str(behind.port)})

        direct_run = run_suite(entry, direct.url, workdir, "direct")
        gateway_run = run_suite(entry, f"{gateway.url}/mcp", workdir, "gateway")
        for proc in [gateway.process, *(s.process for s in servers)]:
            if not proc.alive():
                proc.fail(f"{proc.name} died during the conformance runs")

        result = Runs(conformance_version(node_modules), direct_run, gateway_run, baseline, behind, workdir)
        (workdir / "results.md").write_text(result.table() + "\n")
        print("\n" + result.table())
        yield result
    finally:
        if gateway is not None:
            gateway.process.stop()
        for server in reversed(servers):
            server.process.stop()


# --------------------------------------------------------------------------
# Tests


def test_both_runs_ran_the_same_scenarios(runs: Runs) -> None:
    assert list(runs.gateway.scenarios) == runs.names(), (
        f"the two runs ran different scenarios:\ndirect:  {runs.names()}\ngateway: {list(runs.gateway.scenarios)}"
    )
    # Guards against a vacuous comparison: the peer works, and the gateway
    # run really went through the gateway to its server.
    init = runs.direct.scenarios.get("server-initialize")
    assert init is not None and init.passed, (
        f"server-initialize fails against server-everything directly ({init and init.summary()}): "
        f"the peer is broken, so the comparison means nothing; see {runs.direct.log}"
    )
    assert runs.behind.sessions() > 0, "the gateway opened no session with its server-everything"


def test_scenarios_that_pass_directly_pass_through_the_gateway(runs: Runs) -> None:
    missing = Scenario("", [])  # a scenario the gateway run did not report fails
    regressions = [
        f"  {name}: {runs.gateway.scenarios.get(name, missing).summary()}"
        for name, direct in runs.direct.scenarios.items()
        if direct.passed and name not in runs.baseline and not runs.gateway.scenarios.get(name, missing).passed
    ]
    assert not regressions, (
        "these conformance scenarios pass against server-everything directly but fail through the gateway "
        f"(a gateway regression, or a known gap to list in {BASELINE.name} with its reason):\n"
        + "\n".join(regressions)
        + f"\n\n{runs.table()}\n\nlogs: {runs.workdir}"
    )


def test_baseline_only_lists_current_differences(runs: Runs) -> None:
    stale = []
    for name, reason in runs.baseline.items():
        if name not in runs.direct.scenarios:
            stale.append(f"  {name}: not a server scenario of conformance {runs.version}; remove it from the baseline")
        elif name in runs.gateway.scenarios and runs.gateway.scenarios[name].passed:
            stale.append(f"  {name}: now passes through the gateway; remove it from the baseline (it said: {reason})")
        elif not runs.direct.scenarios[name].passed:
            stale.append(
                f"  {name}: does not pass against server-everything directly, so there is nothing to compare; "
                f"remove it from the baseline ({runs.direct.scenarios[name].summary()})"
            )
    assert not stale, f"{BASELINE} is stale:\n" + "\n".join(stale) + f"\n\n{runs.table()}"


def test_dns_rebinding_protection_passes_through_the_gateway(runs: Runs) -> None:
    if DNS_REBINDING not in runs.gateway.scenarios:
        pytest.skip(f"conformance {runs.version} has no {DNS_REBINDING} scenario")
    scenario = runs.gateway.scenarios[DNS_REBINDING]
    assert scenario.passed, (
        f"{DNS_REBINDING} fails through the gateway (it must pass whatever the server does): {scenario.summary()}"
    )
