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
which server-everything does not have. They are reported, not asserted.

A scenario passes when none of its checks is FAILURE or WARNING (the suite's
own rule for its baselines). Each run's output, its results folder and a
table of both runs (`results.md`) stay in the test's tmp dir, under
$SLUICE_CACHE/test-logs/ when e2e/test-all.sh runs it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from conftest import Gateway, start_gateway
from mcp_support import EverythingServer, mcp_node_modules, start_everything

BASELINE = Path(__file__).resolve().parent.parent / "mcp" / "conformance-baseline.yml"
# One whole suite run (30 scenarios; about 2 s against a healthy server, but
# a hung request waits for the SDK's own 60 s timeout).
SUITE_TIMEOUT_S = 240.0
DNS_REBINDING = "dns-rebinding-protection"

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

pytestmark = pytest.mark.timeout(2 * SUITE_TIMEOUT_S + 120)


# --------------------------------------------------------------------------
# The suite


def package_dir(node_modules: Path, name: str) -> Path:
    return node_modules / "node_modules" / Path(*name.split("/"))


def conformance_entry(node_modules: Path) -> Path:
    entry = package_dir(node_modules, "@modelcontextprotocol/conformance") / "dist" / "index.js"
    if not entry.is_file():
        pytest.fail(
            f"no @modelcontextprotocol/conformance under {node_modules}: run e2e/test-all.sh, "
            "or unset $SLUICE_MCP_NODE_MODULES",
            pytrace=False,
        )
    return entry


def conformance_version(node_modules: Path) -> str:
    package = package_dir(node_modules, "@modelcontextprotocol/conformance") / "package.json"
    return json.loads(package.read_text())["version"]


@dataclass
class Scenario:
    """One scenario's checks from one run."""

    name: str
    checks: list[dict]

    @property
    def passed(self) -> bool:
        return bool(self.checks) and not any(c.get("status") in ("FAILURE", "WARNING") for c in self.checks)

    def failures(self) -> list[str]:
        """The failing checks, `id [STATUS] message`."""
        return [
            f"{c.get('id')} [{c.get('status')}] {c.get('errorMessage') or c.get('description') or ''}".strip()
            for c in self.checks
            if c.get("status") in ("FAILURE", "WARNING")
        ] or (["no checks"] if not self.checks else [])

    def summary(self) -> str:
        return "PASS" if self.passed else "FAIL: " + "; ".join(self.failures())


@dataclass
class SuiteRun:
    """A whole `conformance server` run: its scenarios in suite order."""

    label: str
    url: str
    scenarios: dict[str, Scenario]
    log: Path


# Result folders are `server-<scenario>-<ISO timestamp with - for : and .>`.
RESULT_DIR = re.compile(r"^server-(?P<name>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")
SCENARIO_LINE = re.compile(r"^=== Running scenario: (?P<name>\S+) ===$", re.M)


def run_suite(entry: Path, url: str, workdir: Path, label: str) -> SuiteRun:
    """Runs the suite's active scenarios against `url` and reads their checks."""
    workdir.mkdir(parents=True, exist_ok=True)
    out_dir = workdir / f"results-{label}"
    log = workdir / f"conformance-{label}.log"
    argv = ["node", str(entry), "server", "--url", url, "--output-dir", str(out_dir)]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), "NO_COLOR": "1"}
    with open(log, "wb") as output:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, cwd=workdir, env=env
        )
        try:
            code = proc.wait(timeout=SUITE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    text = log.read_text(errors="replace")
    tail = "\n".join(text.splitlines()[-40:])
    if code is None:
        pytest.fail(
            f"the conformance suite ({label}) did not finish within {SUITE_TIMEOUT_S:.0f}s; {log}:\n{tail}",
            pytrace=False,
        )
    # 0: every scenario passed; 1: some failed. Anything else: it did not run.
    if code not in (0, 1) or "=== SUMMARY ===" not in text:
        pytest.fail(f"the conformance suite ({label}) exited with {code} and no summary; {log}:\n{tail}", pytrace=False)

    names = SCENARIO_LINE.findall(text)
    if not names:
        pytest.fail(f"the conformance suite ({label}) ran no scenario; {log}:\n{tail}", pytrace=False)
    found: dict[str, list[dict]] = {}
    for folder in sorted(out_dir.iterdir()) if out_dir.is_dir() else []:
        match = RESULT_DIR.match(folder.name)
        if match and (folder / "checks.json").is_file():
            found[match.group("name")] = json.loads((folder / "checks.json").read_text())
    scenarios = {}
    for name in names:
        # A scenario that threw writes no folder; the suite counts it failed.
        checks = found.get(name) or [
            {"id": name, "status": "FAILURE", "errorMessage": f"no checks.json (the scenario could not run; see {log})"}
        ]
        scenarios[name] = Scenario(name, checks)
    return SuiteRun(label, url, scenarios, log)


# --------------------------------------------------------------------------
# The baseline


def read_baseline(node_modules: Path) -> dict[str, str]:
    """e2e/mcp/conformance-baseline.yml's `gateway` map: scenario -> reason.
    Parsed by the `yaml` package the suite itself depends on."""
    candidates = [
        package_dir(node_modules, "yaml"),
        package_dir(node_modules, "@modelcontextprotocol/conformance") / "node_modules" / "yaml",
    ]
    yaml_package = next((c for c in candidates if (c / "package.json").is_file()), candidates[0])
    script = (
        "const Y = require(process.argv[1]);"
        "const doc = Y.parse(require('fs').readFileSync(process.argv[2], 'utf8'));"
        "process.stdout.write(JSON.stringify(doc === undefined ? null : doc));"
    )
    result = subprocess.run(
        ["node", "-e", script, str(yaml_package), str(BASELINE)], capture_output=True, text=True, timeout=30
    )
    if result.returncode != 0:
        pytest.fail(f"cannot read {BASELINE}:\n{result.stderr}", pytrace=False)
    doc = json.loads(result.stdout)
    if doc is not None and not isinstance(doc, dict):
        pytest.fail(f"{BASELINE}: want a map with a `gateway` key, got {doc!r}", pytrace=False)
    entries = (doc or {}).get("gateway") or {}
    if not isinstance(entries, dict):
        pytest.fail(f"{BASELINE}: `gateway` must map scenario names to reasons", pytrace=False)
    for name, reason in entries.items():
        if not isinstance(reason, str) or not reason.strip() or "\n" in reason.strip():
            pytest.fail(f"{BASELINE}: {name} needs a one-line reason, got {reason!r}", pytrace=False)
    return {str(name): reason.strip() for name, reason in entries.items()}


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
        rows = [
            f"@modelcontextprotocol/conformance {self.version}, server scenarios (active suite)",
            f"direct:  {self.direct.url}",
            f"gateway: {self.gateway.url} (one backend, prefixMode: Never)",
            "",
            "| scenario | direct | gateway | note |",
            "| --- | --- | --- | --- |",
        ]
        for name in self.names():
            direct = self.direct.scenarios[name]
            through = self.gateway.scenarios.get(name)
            notes = []
            if name in self.baseline:
                notes.append(f"baseline: {self.baseline[name]}")
            if through is not None and not through.passed:
                if not direct.passed and through.failures() == direct.failures():
                    notes.append("both: " + "; ".join(direct.failures())[:300])
                else:
                    notes.append("gateway: " + "; ".join(through.failures())[:300])
                    if not direct.passed:
                        notes.append("direct: " + "; ".join(direct.failures())[:300])
            elif not direct.passed:
                notes.append("direct: " + "; ".join(direct.failures())[:300])
            note = " / ".join(notes).replace("|", "\\|")
            rows.append(
                f"| {name} | {'pass' if direct.passed else 'FAIL'} | "
                f"{'-' if through is None else 'pass' if through.passed else 'FAIL'} | {note} |"
            )
        return "\n".join(rows)


@pytest.fixture(scope="module")
def runs(sluice_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    node_modules = mcp_node_modules()
    entry = conformance_entry(node_modules)
    baseline = read_baseline(node_modules)
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
