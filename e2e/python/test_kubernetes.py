"""The controller end to end, against a real kube-apiserver.

e2e/kube/cluster.sh runs etcd and kube-apiserver on loopback (building them
the first time, ~9 min cold). The CRDs are applied, `sluice-controller` runs
here as a local process with that KUBECONFIG, and two `sluice run
--controller` replicas follow it. Every check reads what the controller
wrote through kubectl (`-o json`) and what the proxies serve over HTTP.

The proxies reach the controllers through a small TCP forwarder standing in
for the controller's Service: each new connection goes to a controller whose
/readyz answers 200, as a Service's endpoints follow readiness.

Tests run in file order and build on each other (one namespace, one set of
processes); the module takes about a minute when the binaries are built.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from conftest import Gateway, Process, Upstream, _binary, free_port, start_upstream, wait_ready

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = ROOT / "e2e" / "kube" / "cluster.sh"
CRDS = ROOT / "charts" / "sluice" / "crds"
CHART = ROOT / "charts" / "sluice"
NS = "sluice-e2e"
TOKEN = "e2e-stream-token-0123456789"
CLIENT_KEY = "sk-kube-team-a"
GROUP = "sluice.dev/v1alpha1"
KINDS = "aigateways.sluice.dev,backends.sluice.dev,mcproutes.sluice.dev,budgets.sluice.dev"
# Faster failover than the default 15 s, so the module stays short.
LEASE = "6s"

# Each test gets 2 minutes; the first one also sets the cluster up, which
# builds the API server when it is missing (about 9 minutes cold).
pytestmark = pytest.mark.timeout(120)


# pytest's capture manager, to show progress and timings as they happen.
_CAPTURE: Any = None


def log(message: str) -> None:
    """Progress and timings, on the terminal past pytest's capture."""
    if _CAPTURE is None:
        print(f"[kube] {message}", file=sys.stderr, flush=True)
        return
    with _CAPTURE.global_and_fixture_disabled():
        print(f"\n[kube] {message}", file=sys.stderr, flush=True)


def eventually(what: str, check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.1) -> Any:
    """Polls `check` until it returns something truthy; fails with its last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, httpx.HTTPError, subprocess.CalledProcessError, KeyError) as e:
            last = repr(e)
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for: {what} (last: {last!r:.1500})", pytrace=False)
        time.sleep(interval)


# --------------------------------------------------------------------------
# The Service stand-in


class Service:
    """A TCP forwarder to whichever controller answers /readyz with 200."""

    def __init__(self) -> None:
        self.targets: list[tuple[int, int]] = []  # (listen port, admin port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready_target(self) -> int | None:
        for listen, admin in list(self.targets):
            try:
                if httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=1).status_code == 200:
                    return listen
            except httpx.HTTPError:
                pass
        return None

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        port = self._ready_target()
        if port is None:
            conn.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            conn.close()
            return
        upstream.settimeout(None)
        done = threading.Event()

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                if done.is_set():
                    src.close()
                    dst.close()
                done.set()

        threading.Thread(target=pipe, args=(conn, upstream), daemon=True).start()
        threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------
# The environment


@dataclass
class Controller:
    name: str
    listen: int
    admin: int
    process: Process

    def readyz(self) -> int:
        try:
            return httpx.get(f"http://127.0.0.1:{self.admin}/readyz", timeout=2).status_code
        except httpx.HTTPError:
            return 0


@dataclass
class Kube:
    dir: Path
    env: dict[str, str]
    controller_bin: Path
    sluice_bin: Path
    token_file: Path
    service: Service
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    controllers: list[Controller] = field(default_factory=list)
    proxies: list[Gateway] = field(default_factory=list)
    proxy_ports: list[tuple[int, int]] = field(default_factory=list)
    # Chat completions answered 200 with CLIENT_KEY (the Budget counts them).
    requests_ok: int = 0

    # -- kubectl
    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["kubectl", *args], env=self.env, input=input, capture_output=True, text=True, timeout=60
        )
        if check and result.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}", pytrace=False)
        return result

    def apply(self, *objects: dict) -> subprocess.CompletedProcess:
        doc = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        return self.kubectl(
            "apply", "--server-side", "--force-conflicts", "--field-manager=e2e", "-n", NS, "-f", "-",
            input=json.dumps(doc),
        )

    def get(self, what: str, name: str | None = None) -> Any:
        args = ["get", what] + ([name] if name else []) + ["-n", NS, "-o", "json"]
        return json.loads(self.kubectl(*args).stdout)

    # -- processes
    def start_controller(self, name: str) -> Controller:
        listen, admin = free_port(), free_port()
        proc = Process.start(
            f"controller-{name}",
            [
                str(self.controller_bin),
                "--namespace", NS,
                "--listen", f"127.0.0.1:{listen}",
                "--admin", f"127.0.0.1:{admin}",
                "--token-file", str(self.token_file),
                "--identity", name,
                "--lease-duration", LEASE,
            ],
            self.dir / name,
            env={**self.env, "SLUICE_LOG": "info"},
        )
        controller = Controller(name, listen, admin, proc)
        self.controllers.append(controller)
        self.service.targets.append((listen, admin))
        return controller

    def start_proxy(self, index: int) -> Gateway:
        port, admin = self.proxy_ports[index]
        name = f"r{index + 1}"
        argv = [
            str(self.sluice_bin), "run",
            "--controller", self.service.url,
            "--controller-token-file", str(self.token_file),
            "--state-dir", str(self.dir / name),
            "--replica", name,
            "--listen", f"127.0.0.1:{port}",
            "--admin", f"127.0.0.1:{admin}",
        ]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir / name), "RUST_BACKTRACE": "1"}
        gateway = Gateway(port, admin, Process.start(f"proxy-{name}", argv, self.dir / name, env=env), env)
        if index < len(self.proxies):
            self.proxies[index] = gateway
        else:
            self.proxies.append(gateway)
        return gateway

    # -- HTTP
    def chat(self, proxy: Gateway, model: str, key: str = CLIENT_KEY) -> httpx.Response:
        response = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": model, "messages": [{"role": "user", "content": "hello from kube e2e"}]},
            timeout=20,
        )
        if response.status_code == 200 and key == CLIENT_KEY:
            self.requests_ok += 1
        return response


def _cluster_env(dir: Path) -> dict[str, str]:
    """The environment env.sh sets up (PATH with kubectl and helm, KUBECONFIG)."""
    out = subprocess.run(
        ["bash", "-c", f"source '{dir}/env.sh' && env -0"], capture_output=True, check=True, timeout=30
    ).stdout.decode()
    env = dict(line.split("=", 1) for line in out.split("\0") if "=" in line)
    return {k: env[k] for k in ("PATH", "KUBECONFIG", "HOME") if k in env}


@pytest.fixture(scope="module")
def kube(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sluice_bin: Path, upstream_bin: Path):
    controller_bin = _binary("SLUICE_CONTROLLER_BIN", "sluice-controller")
    for tool in ("go", "openssl", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found: e2e/kube/cluster.sh needs it")
    global _CAPTURE
    _CAPTURE = request.config.pluginmanager.getplugin("capturemanager")
    logs = tmp_path_factory.mktemp("kube")
    # The API server's state (pids, etcd data) in a folder of its own, not in
    # pytest's basetemp, which another run with the same --basetemp would
    # wipe under a running server. Process logs stay in basetemp.
    cluster_dir = Path(tempfile.mkdtemp(prefix="sluice-kube-e2e."))
    started = time.monotonic()
    log(f"e2e/kube/cluster.sh up --dir {cluster_dir} (builds kube-apiserver, etcd, kubectl, helm when missing: ~9 min cold)")
    # The build's progress goes to stderr: show it as it happens (pytest
    # would hold it back until the end).
    with _CAPTURE.global_and_fixture_disabled():
        up = subprocess.run([str(CLUSTER_SH), "up", "--dir", str(cluster_dir)], stdout=subprocess.PIPE, text=True, timeout=1800)
    if up.returncode != 0:
        pytest.fail(f"cluster.sh up failed (exit {up.returncode}); logs in {cluster_dir}\n{up.stdout}", pytrace=False)
    log(f"API server up in {time.monotonic() - started:.1f}s")
    service = Service()
    dir = logs
    token_file = dir / "token"
    token_file.write_text(TOKEN + "\n")
    env = _cluster_env(cluster_dir)
    k = Kube(dir, env, controller_bin, sluice_bin, token_file, service)
    try:
        k.kubectl("apply", "--server-side", "-f", str(CRDS))
        k.kubectl("wait", "--for", "condition=established", "--timeout=30s", "-f", str(CRDS))
        k.kubectl("create", "namespace", NS)
        # The stream token as the chart keeps it (the local processes read
        # the same value from a file, as pods mount it).
        k.kubectl("create", "secret", "generic", "stream-token", "-n", NS, f"--from-file=token={token_file}")
        k.upstreams["a"] = start_upstream(upstream_bin, dir / "upstream-a", "a")
        k.upstreams["b"] = start_upstream(upstream_bin, dir / "upstream-b", "b")
        k.start_controller("controller-1")
        k.proxy_ports = [(free_port(), free_port()), (free_port(), free_port())]
        # No config yet: the proxies wait for the first version before they
        # listen (test 1 applies it).
        k.start_proxy(0)
        k.start_proxy(1)
        yield k
    finally:
        for p in list(k.proxies):
            p.process.stop()
        for c in k.controllers:
            c.process.stop()
        for u in k.upstreams.values():
            u.process.stop()
        service.close()
        down = subprocess.run([str(CLUSTER_SH), "down", "--dir", str(cluster_dir)], capture_output=True, timeout=60)
        if down.returncode == 0:
            shutil.rmtree(cluster_dir, ignore_errors=True)
        log(f"module done in {time.monotonic() - started:.1f}s")


# --------------------------------------------------------------------------
# Objects


def obj(kind: str, name: str, spec: dict) -> dict:
    return {"apiVersion": GROUP, "kind": kind, "metadata": {"name": name, "namespace": NS}, "spec": spec}


def secret(name: str, data: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "stringData": data}


def gateway_obj(extra_routes: list[dict] | None = None) -> dict:
    return obj(
        "AIGateway",
        "gw",
        {
            "auth": {
                "apiKeys": [
                    {"name": "team-a-ci", "tenant": "team-a", "valueFrom": {"secretKeyRef": {"name": "client-keys", "key": "team-a"}}}
                ]
            },
            "llm": {
                "routes": [
                    {"models": ["gpt-4o"], "backends": [{"backend": "upstream"}]},
                    {"models": ["demo-*"], "backends": [{"backend": "demo"}]},
                    *(extra_routes or []),
                ]
            },
        },
    )


def upstream_backend(k: Kube, which: str) -> dict:
    return obj(
        "Backend",
        "upstream",
        {
            "provider": "OpenAICompatible",
            "endpoint": k.upstreams[which].url,
            "auth": {"apiKey": {"valueFrom": {"secretKeyRef": {"name": "upstream", "key": "key"}}}},
            "models": ["gpt-4o"],
        },
    )


def base_objects(k: Kube) -> list[dict]:
    return [
        secret("client-keys", {"team-a": CLIENT_KEY}),
        secret("upstream", {"key": "sk-upstream"}),
        gateway_obj(),
        upstream_backend(k, "a"),
        obj("Backend", "demo", {"provider": "Demo", "models": ["sluice-demo"]}),
        # An MCP server nobody listens on: compiled and routed, never called.
        obj("Backend", "tools", {"provider": "MCP", "endpoint": f"http://127.0.0.1:{free_port()}/mcp"}),
        obj("MCPRoute", "tools", {"path": "/mcp", "backends": [{"backend": "tools"}]}),
        obj("Budget", "team-a", {"tenant": "team-a", "limits": [{"requests": 100000, "period": "Monthly"}]}),
    ]


def conditions(item: dict) -> dict[str, dict]:
    return {c["type"]: c for c in item.get("status", {}).get("conditions", [])}


def all_programmed(k: Kube, replicas: int = 2) -> list[str] | bool:
    """True when every object is Accepted, ResolvedRefs and Programmed on
    `replicas` replicas at its current generation; else what is not."""
    wrong = []
    items = k.get(KINDS)["items"]
    for item in items:
        name = f"{item['kind']}/{item['metadata']['name']}"
        generation = item["metadata"].get("generation")
        status = item.get("status", {})
        if status.get("observedGeneration") != generation:
            wrong.append(f"{name}: observedGeneration {status.get('observedGeneration')} != {generation}")
        conds = conditions(item)
        for t in ("Accepted", "ResolvedRefs", "Programmed"):
            c = conds.get(t)
            if not c or c["status"] != "True" or c.get("observedGeneration") != generation:
                wrong.append(f"{name}: {t} {c}")
        programmed = conds.get("Programmed", {}).get("message", "")
        if f"{replicas}/{replicas} replicas" not in programmed:
            wrong.append(f"{name}: Programmed message {programmed!r}")
    if len(items) < 6:
        wrong.append(f"only {len(items)} objects")
    return wrong or True


def check_all_programmed(k: Kube, timeout: float = 20.0) -> None:
    def check():
        result = all_programmed(k)
        assert result is True, result
        return True

    eventually("every object Accepted, ResolvedRefs and Programmed on 2/2 replicas", check, timeout)


def served_by(k: Kube, proxy: Gateway, model: str = "gpt-4o") -> str | None:
    r = k.chat(proxy, model)
    return r.headers.get("x-upstream-name") if r.status_code == 200 else None


# --------------------------------------------------------------------------
# Tests


@pytest.mark.timeout(1800)  # sets the module up: may build the API server
def test_objects_are_accepted_programmed_and_served(kube: Kube) -> None:
    k = kube
    started = time.monotonic()
    k.apply(*base_objects(k))
    for proxy in k.proxies:
        wait_ready(proxy)
    log(f"both replicas ready {time.monotonic() - started:.2f}s after the first apply")
    check_all_programmed(k)
    for proxy in k.proxies:
        r = k.chat(proxy, "gpt-4o")
        assert r.status_code == 200, r.text
        assert r.headers.get("x-upstream-name") == "a"
        assert k.chat(proxy, "demo-1").status_code == 200
        # A key that is not in the Secret is refused.
        assert k.chat(proxy, "gpt-4o", key="sk-wrong").status_code == 401
    # The upstream got the key from the "upstream" Secret.
    last = k.upstreams["a"].requests()[-1]
    assert last["header_map"].get("authorization") == "Bearer sk-upstream"


def test_a_changed_backend_reaches_both_replicas(kube: Kube) -> None:
    k = kube
    started = time.monotonic()
    k.apply(upstream_backend(k, "b"))
    applied = time.monotonic() - started
    for proxy in k.proxies:
        eventually(f"{proxy.process.name} serves gpt-4o from upstream b", lambda: served_by(k, proxy) == "b", 10, 0.02)
    took = time.monotonic() - started
    log(f"Backend change: both replicas serve it {took:.2f}s after kubectl apply started ({applied:.2f}s in kubectl)")
    check_all_programmed(k)


def test_an_invalid_object_is_reported_and_the_old_config_serves(kube: Kube) -> None:
    k = kube
    k.apply(obj("Backend", "bogus", {"provider": "NoSuchProvider", "endpoint": "http://127.0.0.1:9/v1"}))

    def rejected():
        c = conditions(k.get("backends.sluice.dev", "bogus")).get("Accepted")
        assert c and c["status"] == "False", c
        return c

    accepted = eventually("Backend/bogus Accepted=False", rejected)
    assert accepted["reason"] == "Invalid"
    assert "NoSuchProvider" in accepted["message"] or "provider" in accepted["message"], accepted
    log(f"Backend/bogus: {accepted['message']!r}")

    def event():
        items = k.get("events")["items"]
        return [e for e in items if e["involvedObject"].get("name") == "bogus" and e["type"] == "Warning"]

    events = eventually("a Warning Event on Backend/bogus", event)
    assert events[0]["reason"] == "Invalid", events[0]
    # The others are held back, and say by whom.
    gw = conditions(k.get("aigateways.sluice.dev", "gw"))
    assert gw["Accepted"]["status"] == "True"
    assert gw["Programmed"]["status"] == "False" and "bogus" in gw["Programmed"]["message"], gw["Programmed"]
    log(f"AIGateway/gw meanwhile: Programmed {gw['Programmed']['reason']}: {gw['Programmed']['message']!r}")
    # The old config still serves.
    for proxy in k.proxies:
        assert served_by(k, proxy) == "b"
    k.kubectl("delete", "backends.sluice.dev", "bogus", "-n", NS)
    check_all_programmed(k)


def test_a_missing_secret_is_reported_and_the_old_config_serves(kube: Kube) -> None:
    k = kube
    k.kubectl("delete", "secret", "client-keys", "-n", NS)

    def not_resolved():
        c = conditions(k.get("aigateways.sluice.dev", "gw")).get("ResolvedRefs")
        assert c and c["status"] == "False", c
        return c

    c = eventually("AIGateway/gw ResolvedRefs=False", not_resolved)
    assert c["reason"] == "SecretNotFound", c
    assert "client-keys" in c["message"], c
    for proxy in k.proxies:
        assert served_by(k, proxy) == "b"
    k.apply(secret("client-keys", {"team-a": CLIENT_KEY}))
    check_all_programmed(k)


def test_budget_status_shows_the_spend(kube: Kube) -> None:
    k = kube
    for proxy in k.proxies:
        assert k.chat(proxy, "gpt-4o").status_code == 200
    want = k.requests_ok
    started = time.monotonic()

    def spent():
        status = k.get("budgets.sluice.dev", "team-a").get("status", {})
        got = status.get("spent", {}).get("requests")
        assert got is not None and int(got) >= want and status.get("reportedBy") == 2, status
        return status

    status = eventually(f"Budget/team-a status spent.requests >= {want}", spent, timeout=25, interval=0.5)
    log(f"Budget status after {time.monotonic() - started:.1f}s: spent {status['spent']}, reportedBy {status['reportedBy']}")
    assert int(status["spent"]["requests"]) == want, (status, want)
    limit = status["limits"][0]
    assert int(limit["remaining"]) == 100000 - want, limit


def test_convergence_of_1000_routes(kube: Kube) -> None:
    k = kube
    n = 1000
    routes = [{"models": [f"bulk-{i:04d}"], "backends": [{"backend": "demo"}]} for i in range(n)]
    gw = gateway_obj(routes)
    size = len(json.dumps(gw))
    last = f"bulk-{n - 1:04d}"
    assert k.chat(k.proxies[0], last).status_code != 200
    started = time.monotonic()
    k.apply(gw)
    applied = time.monotonic() - started
    pending = list(k.proxies)
    seen = {}
    while pending:
        for proxy in list(pending):
            if k.chat(proxy, last).status_code == 200:
                seen[proxy.process.name] = time.monotonic() - started
                pending.remove(proxy)
        assert time.monotonic() - started < 30, f"not converged after 30s: {pending}"
        time.sleep(0.01)
    took = max(seen.values())
    log(
        f"CONVERGENCE {n} routes (AIGateway of {size / 1024:.0f} KiB): both replicas serve the last route "
        f"{took:.2f}s after kubectl apply started (kubectl apply itself: {applied:.2f}s; per replica: "
        + ", ".join(f"{name} {t:.2f}s" for name, t in seen.items())
        + ")"
    )
    check_all_programmed(k, timeout=30)
    assert k.chat(k.proxies[1], "bulk-0000").status_code == 200


def test_leader_election_fails_over(kube: Kube) -> None:
    k = kube
    leader = k.controllers[0]
    standby = k.start_controller("controller-2")
    eventually("controller-2 is up (/healthz)", lambda: httpx.get(f"http://127.0.0.1:{standby.admin}/healthz", timeout=2).status_code == 200)
    time.sleep(1)
    assert leader.readyz() == 200
    assert standby.readyz() == 503
    lease = json.loads(k.kubectl("get", "lease", "sluice-controller", "-n", NS, "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] == "controller-1"
    started = time.monotonic()
    leader.process.popen.send_signal(signal.SIGKILL)
    leader.process.popen.wait(timeout=5)
    eventually("controller-2 leads (/readyz 200)", lambda: standby.readyz() == 200, timeout=20)
    took_leader = time.monotonic() - started
    # The proxies reconnect (through the Service stand-in) and are Programmed
    # again by the new leader; a change made now reaches them.
    k.apply(upstream_backend(k, "a"))
    for proxy in k.proxies:
        eventually(f"{proxy.process.name} serves the new leader's config", lambda: served_by(k, proxy) == "a", 20, 0.05)
    check_all_programmed(k, timeout=20)
    took = time.monotonic() - started
    lease = json.loads(k.kubectl("get", "lease", "sluice-controller", "-n", NS, "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] == "controller-2"
    log(f"failover (lease {LEASE}): controller-2 ready {took_leader:.1f}s after kill -9, proxies Programmed after {took:.1f}s")
    assert took < 20


def test_proxies_outlive_the_controller(kube: Kube) -> None:
    k = kube
    for c in k.controllers:
        c.process.stop()
    for proxy in k.proxies:
        assert served_by(k, proxy) == "a"
    # A replica restarted while the controller is away serves its saved config.
    assert (k.dir / "r1" / "controller-config.json").is_file()
    k.proxies[0].process.stop()
    proxy = k.start_proxy(0)
    wait_ready(proxy)
    assert served_by(k, proxy) == "a"
    assert k.chat(proxy, "bulk-0999").status_code == 200
    assert "serving the config saved from the controller" in proxy.process.stderr.read_text()


def _chart_objects(k: Kube, release: str) -> set[str]:
    kinds = (
        "deployments,statefulsets,services,poddisruptionbudgets,secrets,serviceaccounts,configmaps,"
        "roles,rolebindings,clusterroles,clusterrolebindings"
    )
    out = k.kubectl(
        "get", kinds, "-A", "-l", f"app.kubernetes.io/instance={release}", "-o",
        "jsonpath={range .items[*]}{.kind}/{.metadata.namespace}/{.metadata.name}{\"\\n\"}{end}",
    ).stdout
    return {line for line in out.splitlines() if line}


def _manifest_objects(k: Kube, release: str, ns: str) -> set[str]:
    out = k.kubectl("get", "-f", "-", "-o", "jsonpath={range .items[*]}{.kind}/{.metadata.namespace}/{.metadata.name}{\"\\n\"}{end}",
                    input=subprocess.run(["helm", "get", "manifest", release, "-n", ns], env=k.env, capture_output=True,
                                         text=True, check=True, timeout=60).stdout).stdout
    return {line for line in out.splitlines() if line}


def test_helm_install_upgrade_uninstall(kube: Kube) -> None:
    k = kube
    ns, release = "sluice-helm", "e2e"
    k.kubectl("create", "namespace", ns)

    def helm(*args: str) -> str:
        r = subprocess.run(["helm", *args, "-n", ns], env=k.env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"helm {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
        return r.stdout

    helm("install", release, str(CHART), "--wait=false")
    installed = _chart_objects(k, release)
    assert installed == _manifest_objects(k, release, ns), installed
    kinds = {o.split("/")[0] for o in installed}
    assert {"Deployment", "StatefulSet", "Service", "ServiceAccount", "Role", "RoleBinding"} <= kinds, kinds
    assert any(o.startswith("PodDisruptionBudget/") for o in installed)
    log(f"helm install: {len(installed)} objects")
    # Changed values: no PDBs, one proxy replica.
    helm("upgrade", release, str(CHART), "--wait=false", "--set", "controller.pdb.enabled=false",
         "--set", "proxy.pdb.enabled=false", "--set", "proxy.replicas=1")
    upgraded = _chart_objects(k, release)
    assert upgraded == _manifest_objects(k, release, ns), (upgraded, installed)
    assert not any(o.startswith("PodDisruptionBudget/") for o in upgraded), upgraded
    sts = json.loads(k.kubectl("get", "statefulsets", "-n", ns, "-l", f"app.kubernetes.io/instance={release}", "-o", "json").stdout)
    assert [s["spec"]["replicas"] for s in sts["items"]] == [1]
    helm("uninstall", release, "--wait")
    left = _chart_objects(k, release)
    assert left == set(), f"orphans after helm uninstall: {left}"
    # The CRDs (from crds/) stay, as Helm leaves them.
    assert k.kubectl("get", "crd", "aigateways.sluice.dev", check=False).returncode == 0
