"""Fault harness for Sluice replicas sharing budgets (issue 6).

    harness.py run --store redis|raft --replicas N --fault FAULT --out FILE
                   [--sluice BIN] [--upstream BIN] [--workdir DIR] [--rate RPS]
        Starts the test upstream, the store (a redis-server, or nothing for
        raft: the replicas are the store) and N `sluice run` replicas on
        loopback, drives load through all of them against one shared Budget,
        injects FAULT, measures, and writes a JSON result to FILE (and a
        summary line to stdout). Runs itself inside a private network
        namespace (`unshare -n`, root only), so its nftables rules and ports
        never touch the host. Installs nftables (apt) when `nft` is missing.
    harness.py table FILE [FILE ...]
        Prints the markdown table of results (docs/consistency.md).
    harness.py check-partition
        Checks the nftables partition rules on bare sockets (root): prints
        which connections open while replica 2 of 3 is cut off, as JSON.
    harness.py raft-supported [--sluice BIN]
        Exit 0 when `sluice validate` accepts `state.type: raft`, else 1 with
        the reason on stdout.

Faults (FAULT), each injected FAULT_AT seconds into the load:
    none              no fault: the reference run
    kill-leader       kill -9 the Raft leader (as GET /cluster names it; with
                      Redis, which has no leader, replica 1); it stays down
    restart-follower  kill -9 a follower, start it again 2 s later, same data
    wipe-follower     kill -9 a follower, delete its data dir, start it again
    partition         cut a follower off the store (nft drops its Raft or
                      Redis traffic) for PARTITION_S seconds, then heal
    rolling-restart   SIGTERM, start and wait for /readyz, one replica at a
                      time (followers first), under load

Layout (inside the namespace): replica i (1-based) is 127.0.0.i, with its LLM
listener on :8000+i, admin on :9000+i and Raft on :7100+i; the upstream is
127.0.0.250:8080; redis-server listens on 127.0.0.1..N:6379 (replica i uses
127.0.0.i) and on 127.0.0.254:6379 (the harness's own reads).

Workload: clients spread evenly over the replicas (client k always uses
replica k mod N), paced to RATE requests/s in all, each a non-streaming chat
completion with max_tokens 96 that the upstream answers with 96 completion
and 4 prompt tokens: 100 tokens per admitted request, known in advance. The
Budget (tenant `load`, Strict, FailClosed) has two limits: `tokens`, a daily
token limit sized so the load exhausts it a few seconds after the fault is
over, and `rpm`, a requestsPerMinute limit four times the load's rate (it
must never refuse).

Measurements (see docs/consistency.md for their definitions): overshoot,
wrongly rejected requests, spend lost, time to recover, and per fault the
leader election time (raft), the minority's spend during a partition, and the
spend the killed replica had not settled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import netfault  # noqa: E402

FAULTS = ["none", "kill-leader", "restart-follower", "wipe-follower", "partition", "rolling-restart"]
STORES = ["redis", "raft"]

FAULT_AT = 3.0          # s into the load
RESTART_AFTER = 2.0     # s between a kill and the restart
PARTITION_S = 5.0       # s a partition lasts
TOKENS_PER_REQUEST = 100
PROMPT_TOKENS = 4
MAX_TOKENS = TOKENS_PER_REQUEST - PROMPT_TOKENS
CLIENTS_PER_REPLICA = 8
UPSTREAM_DELAY_MS = 150  # each answer takes this long: requests are in flight at every fault
MAX_LEASE_SHARE = 0.10  # a lease is at most a tenth of a limit (docs/limits.md)
HARD_DEADLINE_S = 40.0  # load never runs longer
REDIS_PORT = 6379
HARNESS_IP = "127.0.0.254"
UPSTREAM = ("127.0.0.250", 8080)
BUDGET = "cluster"


def ip(i: int) -> str:
    return f"127.0.0.{i}"


def http_port(i: int) -> int:
    return 8000 + i


def admin_port(i: int) -> int:
    return 9000 + i


def raft_port(i: int) -> int:
    return 7100 + i


def log(msg: str) -> None:
    print(f"[harness {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Configuration


def state_yaml(store: str, i: int, n: int, data_dir: Path) -> str:
    if store == "redis":
        return f'  state: {{type: redis, redis: {{url: "redis://{ip(i)}:{REDIS_PORT}"}}}}\n'
    peers = ", ".join(f'"{j}={ip(j)}:{raft_port(j)}"' for j in range(1, n + 1))
    return (
        "  state:\n"
        "    type: raft\n"
        "    raft:\n"
        f"      id: {i}\n"
        f"      peers: [{peers}]\n"
        f'      dataDir: "{data_dir}"\n'
    )


def replica_config(store: str, i: int, n: int, data_dir: Path, access_log: Path,
                   tokens_limit: int, rpm_limit: int, failure_mode: str) -> str:
    return f"""\
apiVersion: sluice.dev/v1alpha1
kind: AIGateway
metadata: {{name: cluster}}
spec:
  listen: {ip(i)}:{http_port(i)}
  admin: {ip(i)}:{admin_port(i)}
  auth:
    apiKeys:
      - {{name: load, tenant: load, valueFrom: {{env: LOAD_API_KEY}}}}
  llm:
    routes:
      - models: ["cluster-model"]
        backends: [{{backend: upstream}}]
  telemetry:
    accessLog: {{to: "{access_log}"}}
{state_yaml(store, i, n, data_dir)}---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {{name: upstream}}
spec:
  provider: OpenAICompatible
  endpoint: http://{UPSTREAM[0]}:{UPSTREAM[1]}
  auth: {{apiKey: {{valueFrom: {{env: UPSTREAM_KEY}}}}}}
  models: ["cluster-model"]
---
apiVersion: sluice.dev/v1alpha1
kind: Budget
metadata: {{name: {BUDGET}}}
spec:
  tenant: load
  limits:
    - {{tokens: {tokens_limit}, period: Daily, name: tokens}}
    - {{requestsPerMinute: {rpm_limit}, name: rpm}}
  enforcement: Strict
  failureMode: {failure_mode}
"""


def raft_supported(sluice: Path) -> tuple[bool, str]:
    """Whether this sluice accepts `state.type: raft` (asks `sluice validate`)."""
    with tempfile.TemporaryDirectory(prefix="sluice-raft-check-") as d:
        cfg = Path(d) / "sluice.yaml"
        cfg.write_text(replica_config("raft", 1, 3, Path(d) / "data", Path(d) / "access.log", 1000, 100, "FailClosed"))
        try:
            out = subprocess.run([str(sluice), "validate", "-f", str(cfg)], capture_output=True, text=True,
                                 timeout=30, env={**os.environ, "LOAD_API_KEY": "k", "UPSTREAM_KEY": "k"})
        except (OSError, subprocess.TimeoutExpired) as e:
            return False, f"cannot run {sluice}: {e}"
        text = (out.stdout + out.stderr).strip()
        if "not supported yet" in text:
            return False, f"sluice does not support state.type raft yet ({text.splitlines()[-1].strip()})"
        if out.returncode != 0:
            return False, f"sluice validate refused the raft config: {text[-400:]}"
        return True, "supported"


# --------------------------------------------------------------------------
# Processes


@dataclass
class Replica:
    i: int
    data_dir: Path
    config: Path
    logs: Path
    env: dict
    sluice: Path
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://{ip(self.i)}:{http_port(self.i)}"

    @property
    def admin(self) -> str:
        return f"http://{ip(self.i)}:{admin_port(self.i)}"

    def start(self) -> None:
        self.starts += 1
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.logs / f"sluice-{self.i}.{self.starts}.stdout", "wb")
        err = open(self.logs / f"sluice-{self.i}.{self.starts}.stderr", "wb")
        self.proc = subprocess.Popen([str(self.sluice), "run", "-f", str(self.config)], stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=err, env=self.env, cwd=self.data_dir.parent)
        out.close()
        err.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stderr_tail(self, lines: int = 20) -> str:
        path = self.logs / f"sluice-{self.i}.{self.starts}.stderr"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


async def wait_exit(proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return True
        await asyncio.sleep(0.02)
    return False


class Run:
    """One scenario: processes, load, faults, measurements."""

    def __init__(self, args):
        import httpx  # the e2e venv's

        self.httpx = httpx
        self.args = args
        self.store = args.store
        self.n = args.replicas
        self.fault = args.fault
        self.work = Path(args.workdir)
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.rate = args.rate or 20.0 * self.n
        # When the budget should run out at the planned rate: a few seconds
        # after the fault is over (a rolling restart takes longest).
        fault_end = {
            "none": FAULT_AT, "kill-leader": FAULT_AT, "restart-follower": FAULT_AT + RESTART_AFTER + 2,
            "wipe-follower": FAULT_AT + RESTART_AFTER + 2, "partition": FAULT_AT + PARTITION_S,
            "rolling-restart": FAULT_AT + 2.5 * self.n,
        }[self.fault]
        self.exhaust_at = fault_end + 6.0
        self.tokens_limit = int(self.rate * TOKENS_PER_REQUEST * self.exhaust_at)
        self.rpm_limit = int(self.rate * 60 * 4)
        self.key = "sk-load-" + os.urandom(12).hex()
        self.events: list[dict] = []   # {t, replica, kind}
        self.records: list[dict] = []  # one per request
        self.samples: list[dict] = []  # GET /budgets during the run
        self.cluster_samples: list[dict] = []  # GET /cluster during the run
        self.redis_proc = None
        self.upstream_proc = None
        self.replicas: dict[int, Replica] = {}
        self.t0 = 0.0
        self.stop_load = False
        self.cluster_api = None  # True/False once known
        self.notes: list[str] = []
        self.minority_lease = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def event(self, replica: int | None, kind: str, **extra) -> float:
        t = self.now()
        self.events.append({"t": t, "replica": replica, "kind": kind, **extra})
        log(f"t={t:6.2f}s {kind} {'replica ' + str(replica) if replica else ''} {extra or ''}")
        return t

    # ---------------------------------------------------------------- setup

    def start_upstream(self) -> None:
        out = open(self.logs / "upstream.stdout", "wb")
        self.upstream_proc = subprocess.Popen(
            [self.args.upstream, "--listen", f"{UPSTREAM[0]}:{UPSTREAM[1]}", "--name", "cluster",
             "--threads", "2", "--no-record"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()

    def start_redis(self) -> None:
        redis_server = shutil.which("redis-server")
        if not redis_server:
            raise SystemExit("redis-server not found (apt-get install redis-server)")
        d = self.work / "redis"
        d.mkdir(parents=True, exist_ok=True)
        binds = " ".join([ip(i) for i in range(1, self.n + 1)] + [HARNESS_IP])
        out = open(self.logs / "redis.log", "wb")
        self.redis_proc = subprocess.Popen(
            [redis_server, "--port", str(REDIS_PORT), "--bind", *binds.split(), "--dir", str(d),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        for _ in range(100):
            if self.redis("PING").strip() == "PONG":
                return
            time.sleep(0.1)
        raise SystemExit("redis-server did not answer")

    def redis(self, *cmd: str) -> str:
        try:
            return subprocess.run(["redis-cli", "-h", HARNESS_IP, "-p", str(REDIS_PORT), *cmd],
                                  capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    def redis_ledger(self) -> dict:
        """The tokens limit's hash in Redis: settled, and leases by holder."""
        keys = [k for k in self.redis("--scan", "--pattern", "sluice:*").split() if "/tokens/" in k]
        settled, leases = 0, {}
        for key in keys:
            flat = self.redis("HGETALL", key).split("\n")
            fields = dict(zip(flat[0::2], flat[1::2]))
            settled += int(fields.get("settled", "0") or 0)
            for f, v in fields.items():
                if f.startswith("l:"):
                    leases[f[2:]] = leases.get(f[2:], 0) + int(v or 0)
        return {"keys": len(keys), "settled": settled, "leases": leases}

    def make_replicas(self) -> None:
        env_base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_BACKTRACE": "1",
                    "LOAD_API_KEY": self.key, "UPSTREAM_KEY": "sk-upstream-cluster"}
        for i in range(1, self.n + 1):
            data = self.work / f"data-{i}"
            cfg = self.work / f"sluice-{i}.yaml"
            cfg.write_text(replica_config(self.store, i, self.n, data, self.logs / f"access-{i}.log",
                                          self.tokens_limit, self.rpm_limit, self.args.failure_mode))
            # HOSTNAME names the replica's leases in the store (replica-i-PID-...).
            # HOME is the data dir: a memory journal or anything else the
            # process keeps goes where a wipe deletes it.
            env = {**env_base, "HOSTNAME": f"replica-{i}", "HOME": str(data)}
            self.replicas[i] = Replica(i, data, cfg, self.logs, env, Path(self.args.sluice))

    async def wait_ready(self, r: Replica, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        async with self.httpx.AsyncClient(timeout=1.0) as http:
            while time.monotonic() < deadline:
                if not r.alive():
                    log(f"replica {r.i} exited:\n{r.stderr_tail()}")
                    return False
                try:
                    if (await http.get(r.admin + "/readyz")).status_code == 200:
                        return True
                except self.httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        log(f"replica {r.i} not ready after {timeout}s:\n{r.stderr_tail()}")
        return False

    async def start_all(self) -> None:
        self.start_upstream()
        if self.store == "redis":
            self.start_redis()
        self.make_replicas()
        for r in self.replicas.values():
            r.start()
        oks = await asyncio.gather(*(self.wait_ready(r) for r in self.replicas.values()))
        if not all(oks):
            raise SystemExit("replicas did not become ready")
        if self.store == "raft":
            await self.wait_leader(set(), timeout=30)

    # ---------------------------------------------------------------- cluster view

    async def cluster_info(self, r: Replica, http) -> dict | None:
        try:
            resp = await http.get(r.admin + "/cluster")
        except self.httpx.HTTPError:
            return None
        if resp.status_code == 404:
            if self.cluster_api is None:
                self.cluster_api = False
            return None
        try:
            data = resp.json()
        except ValueError:
            return None
        self.cluster_api = True
        return data

    async def leader(self) -> int | None:
        """The leader as the live replicas' GET /cluster name it (None without
        /cluster: Redis, or a raft store without the endpoint yet)."""
        async with self.httpx.AsyncClient(timeout=1.0) as http:
            for r in self.replicas.values():
                if r.alive():
                    info = await self.cluster_info(r, http)
                    if info and info.get("leader"):
                        return int(info["leader"])
        return None

    async def wait_leader(self, exclude: set, timeout: float) -> float | None:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            leader = await self.leader()
            if self.cluster_api is False:
                return None
            if leader is not None and leader not in exclude:
                return time.monotonic() - start
            await asyncio.sleep(0.1)
        return None

    async def pick(self, role: str) -> int:
        leader = await self.leader()
        if leader is None:
            if self.store == "raft" and self.cluster_api is False:
                self.notes.append("GET /cluster answered 404: the leader is not known, replica 1 was taken")
            leader = 1
        if role == "leader":
            return leader
        return next(i for i in sorted(self.replicas) if i != leader and i != 1) if self.n > 2 else \
            next(i for i in sorted(self.replicas) if i != leader)

    # ---------------------------------------------------------------- load

    async def client(self, k: int, r: Replica, http, interval: float) -> None:
        body = {"model": "cluster-model", "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"authorization": f"Bearer {self.key}", "x-mock-chunks": str(MAX_TOKENS),
                   "x-mock-prompt-tokens": str(PROMPT_TOKENS), "x-mock-delay-ms": str(UPSTREAM_DELAY_MS)}
        next_t = self.now() + random.Random(k).random() * interval
        while not self.stop_load:
            delay = next_t - self.now()
            if delay > 0:
                await asyncio.sleep(delay)
            next_t = max(next_t + interval, self.now())
            rec = {"client": k, "replica": r.i, "start": self.now()}
            try:
                resp = await http.post(r.url + "/v1/chat/completions", json=body, headers=headers)
                rec["status"] = resp.status_code
                if resp.status_code == 200:
                    rec["tokens"] = int(resp.json()["usage"]["total_tokens"])
                else:
                    try:
                        err = resp.json().get("error", {})
                        rec["code"] = err.get("code")
                        rec["message"] = (err.get("message") or "")[:300]
                    except ValueError:
                        rec["message"] = resp.text[:300]
            except self.httpx.HTTPError as e:
                rec["status"] = None
                rec["error"] = type(e).__name__
                rec["message"] = str(e)[:200]
            except (ValueError, KeyError, TypeError) as e:
                rec["status"] = None
                rec["error"] = "BadBody"
                rec["message"] = str(e)[:200]
            rec["end"] = self.now()
            self.records.append(rec)

    async def sampler(self) -> None:
        """GET /budgets (and /cluster) on every running replica, twice a second."""
        async with self.httpx.AsyncClient(timeout=1.0) as http:
            while not self.stop_load:
                for r in list(self.replicas.values()):
                    if not r.alive():
                        continue
                    t = self.now()
                    spent = await self.budget_spent(r, http)
                    if spent is not None:
                        self.samples.append({"t": t, "replica": r.i, "pid": r.proc.pid, **spent})
                    if self.store == "raft" and self.cluster_api is not False:
                        info = await self.cluster_info(r, http)
                        if info:
                            self.cluster_samples.append({"t": t, "replica": r.i, "leader": info.get("leader"),
                                                         "term": info.get("term"), "leases": info.get("leases")})
                await asyncio.sleep(0.5)

    async def budget_spent(self, r: Replica, http) -> dict | None:
        try:
            resp = await http.get(r.admin + "/budgets")
            data = resp.json()
        except (self.httpx.HTTPError, ValueError):
            return None
        out = {}
        for b in data.get("budgets", []):
            if b.get("name") != BUDGET:
                continue
            for lim in b.get("limits", []):
                if lim.get("error"):
                    out[lim["name"] + "_error"] = lim["error"][:200]
                else:
                    out[lim["name"]] = int(lim["spent"])
        return out

    def exhausted(self) -> bool:
        """The budget is spent: no 200 for 1.5 s, and refusals seen since."""
        last_ok = max((x["end"] for x in self.records if x.get("status") == 200), default=None)
        if last_ok is None:
            return False
        refused = any(x.get("status") == 429 and x["start"] > last_ok for x in self.records)
        return refused and self.now() - last_ok > 1.5

    # ---------------------------------------------------------------- faults

    async def kill(self, i: int) -> None:
        self.event(i, "kill")
        self.replicas[i].kill()

    async def restart(self, i: int, wipe: bool = False) -> None:
        r = self.replicas[i]
        if wipe:
            shutil.rmtree(r.data_dir, ignore_errors=True)
            self.event(i, "wipe")
        r.start()
        self.event(i, "start")
        if await self.wait_ready(r):
            self.event(i, "ready")
        else:
            self.event(i, "failed-to-start")

    async def stop(self, i: int) -> None:
        r = self.replicas[i]
        self.event(i, "stop")
        r.proc.send_signal(signal.SIGTERM)
        if not await wait_exit(r.proc, 15):
            self.notes.append(f"replica {i} did not exit within 15 s of SIGTERM: killed")
            r.kill()
        self.event(i, "exited", code=r.proc.returncode)

    async def partition(self, i: int) -> None:
        if self.store == "redis":
            netfault.cut_redis(ip(i), REDIS_PORT)
            self.event(i, "cut")
            # What Redis holds for the cut replica once its last calls are
            # lost: its lease, all it may spend until the heal.
            await asyncio.sleep(0.2)
            ledger = self.redis_ledger()
            self.minority_lease = sum(v for h, v in ledger["leases"].items() if h.startswith(f"replica-{i}-"))
            return
        else:
            netfault.cut_raft(ip(i), raft_port(i), [raft_port(j) for j in self.replicas if j != i])
            async with self.httpx.AsyncClient(timeout=1.0) as http:
                info = await self.cluster_info(self.replicas[i], http)
            if info:
                self.notes.append(f"replica {i} at the cut: {json.dumps(info)[:300]}")
        self.event(i, "cut")

    async def heal(self, i: int) -> None:
        netfault.heal()
        self.event(i, "heal")

    async def inject(self) -> None:
        await asyncio.sleep(max(0.0, FAULT_AT - self.now()))
        f = self.fault
        if f == "none":
            return
        if f == "kill-leader":
            leader = await self.pick("leader")
            await self.kill(leader)
            if self.store == "raft":
                took = await self.wait_leader({leader}, timeout=20)
                self.event(None, "leader-elected" if took is not None else "no-new-leader",
                           leader=await self.leader())
        elif f in ("restart-follower", "wipe-follower"):
            i = await self.pick("follower")
            await self.kill(i)
            await asyncio.sleep(RESTART_AFTER)
            await self.restart(i, wipe=f == "wipe-follower")
        elif f == "partition":
            i = await self.pick("follower")
            await self.partition(i)
            await asyncio.sleep(PARTITION_S)
            await self.heal(i)
        elif f == "rolling-restart":
            leader = await self.pick("leader")
            order = [i for i in sorted(self.replicas) if i != leader] + [leader]
            for i in order:
                await self.stop(i)
                await self.restart(i)
                await asyncio.sleep(1.0)

    # ---------------------------------------------------------------- the run

    async def main(self) -> dict:
        netfault.setup()
        await self.start_all()
        log(f"{self.n} replicas ready ({self.store}); budget {self.tokens_limit} tokens, "
            f"{self.rpm_limit} requests/min; load {self.rate:.0f} requests/s; fault {self.fault}")
        self.t0 = time.monotonic()
        n_clients = CLIENTS_PER_REPLICA * self.n
        interval = n_clients / self.rate
        limits = self.httpx.Limits(max_connections=CLIENTS_PER_REPLICA * 2,
                                   max_keepalive_connections=CLIENTS_PER_REPLICA * 2)
        timeout = self.httpx.Timeout(10.0, connect=1.0)
        https = {i: self.httpx.AsyncClient(limits=limits, timeout=timeout) for i in self.replicas}
        clients = [asyncio.create_task(self.client(k, self.replicas[k % self.n + 1], https[k % self.n + 1], interval))
                   for k in range(n_clients)]
        sampler = asyncio.create_task(self.sampler())
        injector = asyncio.create_task(self.inject())
        while True:
            await asyncio.sleep(0.1)
            if self.now() > HARD_DEADLINE_S:
                self.notes.append(f"load stopped at the {HARD_DEADLINE_S:.0f} s deadline, before the budget ran out")
                break
            if injector.done() and self.now() > FAULT_AT + 1 and self.exhausted():
                break
        if not injector.done():
            self.notes.append("the fault had not finished when the load stopped")
            await asyncio.wait_for(injector, 60)
        injector.result()
        self.stop_load = True
        self.event(None, "load-stopped")
        await asyncio.gather(*clients)
        await sampler
        for h in https.values():
            await h.aclose()
        # Settlement runs every 100 ms: give it time, then read the store.
        await asyncio.sleep(1.5)
        final = {}
        async with self.httpx.AsyncClient(timeout=2.0) as http:
            for r in self.replicas.values():
                if r.alive():
                    final[r.i] = await self.budget_spent(r, http)
                    if self.store == "raft":
                        final[r.i]["cluster"] = await self.cluster_info(r, http)
        store_live = self.redis_ledger() if self.store == "redis" else None
        # Stop the survivors (SIGTERM: settle, hand leases back).
        for r in self.replicas.values():
            if r.alive():
                r.proc.send_signal(signal.SIGTERM)
        for r in self.replicas.values():
            if r.proc is not None and not await wait_exit(r.proc, 15):
                self.notes.append(f"replica {r.i} did not exit within 15 s of the final SIGTERM")
                r.kill()
        store_after = self.redis_ledger() if self.store == "redis" else None
        return self.measure(final, store_live, store_after)

    # ---------------------------------------------------------------- measurements

    def state_at(self, i: int, t: float) -> str:
        """up, down (killed/stopped, not ready again) or cut, at time t."""
        state = "up"
        for e in self.events:
            if e["t"] > t:
                break
            if e["replica"] != i:
                continue
            if e["kind"] in ("kill", "stop"):
                state = "down"
            elif e["kind"] == "ready":
                state = "up"
            elif e["kind"] == "cut":
                state = "cut"
            elif e["kind"] == "heal":
                state = "up"
        return state

    def events_of(self, i: int, a: float, b: float, kinds: tuple) -> list:
        return [e for e in self.events if e["replica"] == i and e["kind"] in kinds and a <= e["t"] <= b]

    def measure(self, final: dict, store_live: dict | None, store_after: dict | None) -> dict:
        recs = sorted(self.records, key=lambda x: x["end"])
        limit = self.tokens_limit
        ok = [x for x in recs if x.get("status") == 200]
        client_spend = sum(x["tokens"] for x in ok)
        kills = [e for e in self.events if e["kind"] == "kill"]
        cuts = [e for e in self.events if e["kind"] == "cut"]

        # Client-observed spend at each moment (200s completed by then).
        ends = [(x["end"], x["tokens"]) for x in ok]

        def spent_by(t: float) -> int:
            return sum(tok for end, tok in ends if end <= t)

        wrong: list[dict] = []
        unavailable = 0
        failclosed = 0
        for x in recs:
            if x.get("status") == 200:
                continue
            i, s, e = x["replica"], x["start"], x["end"]
            state = self.state_at(i, s)
            killed = self.events_of(i, s, e + 0.05, ("kill",))
            stopped = self.events_of(i, s, e + 0.05, ("stop",))
            if state == "down" or killed:
                unavailable += 1            # the replica was not there: expected
                continue
            if stopped:
                # In flight when SIGTERM came: a graceful stop must finish it.
                if s < stopped[0]["t"] - 0.02:
                    wrong.append({**x, "why": "in flight at SIGTERM"})
                else:
                    unavailable += 1
                continue
            cut_now = state == "cut" or self.events_of(i, s, e, ("cut",))
            if x.get("status") == 503 and cut_now:
                failclosed += 1             # cut off the store: failureMode decides
                continue
            if x.get("status") == 429:
                if x.get("code") == "rate_limited":
                    wrong.append({**x, "why": "the rpm limit is never reached by this load"})
                    continue
                stranded = sum(1 for k in kills if k["t"] <= s) + sum(1 for c in cuts if c["t"] <= s)
                threshold = limit * (0.8 - MAX_LEASE_SHARE * stranded)
                seen = spent_by(s)
                if seen < threshold and not cut_now:
                    wrong.append({**x, "why": f"refused with {seen} of {limit} spent ({100 * seen / limit:.1f}%)"})
                continue
            wrong.append({**x, "why": "error from a live replica"})

        refusals = [x for x in recs if x.get("status") == 429]
        first_refusal = min((x["end"] for x in refusals), default=None)

        # Spend as the store reports it after the load (max over the live
        # replicas' GET /budgets: settled + what each has not settled yet).
        budgets_spent = max((v.get("tokens", 0) for v in final.values() if v), default=None)
        spend_lost = None if budgets_spent is None else max(0, client_spend - budgets_spent)

        # Spend the killed replicas served in the last 0.5 s before dying:
        # settled every 100 ms, so some of it may never reach the store; its
        # lease (counted as spent when it expires) covers it.
        unsettled_window = 0
        for k in kills:
            unsettled_window += sum(x["tokens"] for x in ok if x["replica"] == k["replica"]
                                    and k["t"] - 0.5 <= x["end"] <= k["t"])

        # Settled spend never goes back: per replica process, /budgets spent
        # does not decrease from one sample to the next.
        drops = []
        last: dict = {}
        for smp in self.samples:
            key = (smp["replica"], smp["pid"])
            if "tokens" not in smp:
                continue
            if key in last and smp["tokens"] < last[key]["tokens"]:
                drops.append({"replica": smp["replica"], "t": smp["t"], "from": last[key]["tokens"],
                              "to": smp["tokens"]})
            last[key] = smp

        # Time to recover, from the fault's last step to service again.
        recover = None
        detail = {}

        def first_ok(i: int, after: float):
            return min((x["end"] for x in ok if x["replica"] == i and x["start"] >= after), default=None)

        if self.fault == "kill-leader" and kills:
            k = kills[0]
            firsts = [first_ok(i, k["t"]) for i in self.replicas if i != k["replica"]]
            if all(f is not None for f in firsts):
                recover = max(firsts) - k["t"]
            elected = [e for e in self.events if e["kind"] == "leader-elected"]
            if elected:
                detail["leader_elected_s"] = round(elected[0]["t"] - k["t"], 3)
            if self.store == "raft" and self.cluster_api is False:
                detail["leader_elected_s"] = "no /cluster"
        elif self.fault in ("restart-follower", "wipe-follower"):
            starts = [e for e in self.events if e["kind"] == "start"]
            readies = [e for e in self.events if e["kind"] == "ready"]
            if starts and kills:
                f = first_ok(starts[0]["replica"], starts[0]["t"])
                recover = None if f is None else f - starts[0]["t"]
                if readies:
                    detail["down_s"] = round(readies[0]["t"] - kills[0]["t"], 3)
        elif self.fault == "partition":
            heals = [e for e in self.events if e["kind"] == "heal"]
            if cuts and heals:
                i = cuts[0]["replica"]
                f = first_ok(i, heals[0]["t"])
                recover = None if f is None else f - heals[0]["t"]
                # Admitted while cut off: started after the cut, answered before the heal.
                during = [x for x in recs if x["replica"] == i and cuts[0]["t"] <= x["start"] and x["end"] <= heals[0]["t"]]
                detail["minority_spend"] = sum(x["tokens"] for x in during if x.get("status") == 200)
                detail["minority_admitted"] = sum(1 for x in during if x.get("status") == 200)
                detail["minority_503"] = sum(1 for x in during if x.get("status") == 503)
                first_503 = min((x["end"] for x in during if x.get("status") == 503), default=None)
                detail["minority_first_503_s"] = None if first_503 is None else round(first_503 - cuts[0]["t"], 3)
                detail["minority_lease"] = self.minority_lease
                majority = [x for x in recs if x["replica"] != i and cuts[0]["t"] <= x["start"] <= heals[0]["t"]]
                detail["majority_admitted"] = sum(1 for x in majority if x.get("status") == 200)
                detail["majority_other"] = sum(1 for x in majority if x.get("status") not in (200, 429))
        elif self.fault == "rolling-restart":
            starts = [e for e in self.events if e["kind"] == "start"]
            gaps = []
            for s in starts:
                f = first_ok(s["replica"], s["t"])
                gaps.append(None if f is None else f - s["t"])
            if gaps and all(g is not None for g in gaps):
                recover = max(gaps)
            stops = [e for e in self.events if e["kind"] == "stop"]
            readies = [e["t"] for e in self.events if e["kind"] == "ready"]
            if stops and readies:
                detail["rolling_s"] = round(max(readies) - stops[0]["t"], 3)
        elif self.fault == "none":
            recover = 0.0

        stranded = None
        if store_after is not None:
            stranded = sum(store_after["leases"].values())
        statuses: dict = {}
        for x in recs:
            key = str(x.get("status") or x.get("error"))
            statuses[key] = statuses.get(key, 0) + 1
        rpm_spent = max((v.get("rpm", 0) for v in final.values() if v), default=None)
        result = {
            "store": self.store,
            "replicas": self.n,
            "fault": self.fault,
            "failure_mode": self.args.failure_mode,
            "rate": self.rate,
            "tokens_limit": limit,
            "rpm_limit": self.rpm_limit,
            "duration_s": round(max((x["end"] for x in recs), default=0), 2),
            "requests": len(recs),
            "statuses": statuses,
            "admitted": len(ok),
            "client_spend": client_spend,
            "used_pct": round(100 * client_spend / limit, 3),
            "overshoot": max(0, client_spend - limit),
            "overshoot_pct": round(100 * max(0, client_spend - limit) / limit, 3),
            "refused": len(refusals),
            "spent_pct_at_first_refusal": None if first_refusal is None
            else round(100 * spent_by(first_refusal) / limit, 2),
            "wrongly_rejected": len(wrong),
            "wrongly_rejected_samples": wrong[:8],
            "unavailable": unavailable,
            "failclosed_503": failclosed,
            "budgets_spent_final": budgets_spent,
            "budgets_final": final,
            "rpm_spent_final": rpm_spent,
            "spend_lost": spend_lost,
            "spend_lost_pct": None if spend_lost is None else round(100 * spend_lost / limit, 3),
            # Counted but never served (a settlement applied twice): the
            # fleet then refuses that much early.
            "overcounted": None if budgets_spent is None else max(0, budgets_spent - client_spend),
            "killed_last_0_5s_spend": unsettled_window,
            "settled_drops": drops[:8],
            "store_live": store_live,
            "store_after_stop": store_after,
            "stranded_leases": stranded,
            "recover_s": None if recover is None else round(recover, 3),
            **detail,
            "events": self.events,
            "notes": self.notes,
        }
        if store_after is not None:
            # What the store will count in the end: settled, plus the killed
            # replicas' leases (they count as spent when they expire).
            result["store_accounted"] = store_after["settled"] + stranded
            result["unaccounted"] = max(0, client_spend - result["store_accounted"])
        return result

    def cleanup(self) -> None:
        for r in self.replicas.values():
            r.kill()
        for p in (self.redis_proc, self.upstream_proc):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        try:
            netfault.heal()
        except netfault.NftError:
            pass


# --------------------------------------------------------------------------
# CLI


def ensure_nft() -> None:
    if shutil.which("nft") or Path("/usr/sbin/nft").exists():
        return
    log("installing nftables (apt)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "nftables"]
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=True)
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)


def default_bin(name: str) -> str:
    target = os.environ.get("CARGO_TARGET_DIR") or str(Path.home() / ".cache/sluice/target-1.95.0")
    return str(Path(target) / "debug" / name)


def cmd_run(args) -> int:
    if not args.in_netns:
        if os.geteuid() != 0:
            print("harness: needs root (network namespace, nftables)", file=sys.stderr)
            return 2
        ensure_nft()
        argv = [sys.executable, str(Path(__file__).resolve()), "run", *args.raw, "--in-netns"]
        return subprocess.run(["unshare", "--net", "--", *argv]).returncode
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    own_workdir = args.workdir is None
    if own_workdir:
        args.workdir = tempfile.mkdtemp(prefix=f"sluice-cluster-{args.store}-{args.replicas}-{args.fault}-")
    run = Run(args)
    try:
        result = asyncio.run(run.main())
    finally:
        run.cleanup()
    result["workdir"] = args.workdir
    (Path(args.workdir) / "records.json").write_text(json.dumps(run.records))
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(summary(result))
    return 0


def summary(r: dict) -> str:
    return (f"{r['store']} x{r['replicas']} {r['fault']}: overshoot {r['overshoot_pct']}% "
            f"(spent {r['client_spend']} of {r['tokens_limit']}), wrongly rejected {r['wrongly_rejected']}, "
            f"spend lost {r['spend_lost']}, recover {r['recover_s']} s, statuses {r['statuses']}")


def fmt_s(v) -> str:
    return "-" if v is None else (f"{v:.2f} s" if isinstance(v, (int, float)) else str(v))


def cmd_table(args) -> int:
    rows = [json.loads(Path(p).read_text()) for p in args.files]
    print("| store | replicas | fault | overshoot (% of budget) | spent / budget | wrongly rejected "
          "| spend lost | time to recover | leader elected | notes |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        fault = r["fault"] + (" (FailOpen)" if r.get("failure_mode") == "FailOpen" else "")
        if r.get("pending"):
            print(f"| {r['store']} | {r['replicas']} | {fault} | {r['pending']} | | | | | | |")
            continue
        notes = []
        if r["fault"] == "partition":
            notes.append(f"minority spent {r.get('minority_spend')} tokens in {r.get('minority_admitted')} requests "
                         f"(its lease at the cut: {r.get('minority_lease', '?')}), then {r.get('minority_503')} x 503; "
                         f"majority admitted {r.get('majority_admitted')}")
        over = r.get("overcounted", max(0, (r.get("budgets_spent_final") or 0) - r["client_spend"]))
        if over:
            notes.append(f"store counts {over} tokens ({100 * over / r['tokens_limit']:.1f}%) more than was served")
        if r.get("killed_last_0_5s_spend"):
            notes.append(f"killed replica served {r['killed_last_0_5s_spend']} tokens in its last 0.5 s")
        if r.get("stranded_leases"):
            notes.append(f"{r['stranded_leases']} tokens in orphaned leases")
        if r.get("unavailable"):
            notes.append(f"{r['unavailable']} requests to a down replica")
        if r.get("down_s") is not None:
            notes.append(f"down {r['down_s']:.2f} s")
        if r.get("settled_drops"):
            notes.append(f"settled spend went back {len(r['settled_drops'])} times")
        lost = "-" if r["spend_lost"] is None else f"{r['spend_lost']} ({r['spend_lost_pct']}%)"
        print(f"| {r['store']} | {r['replicas']} | {fault} | {r['overshoot_pct']:.3f}% "
              f"| {r['used_pct']:.2f}% | {r['wrongly_rejected']} | {lost} | {fmt_s(r['recover_s'])} "
              f"| {fmt_s(r.get('leader_elected_s')) if r['store'] == 'raft' else 'n/a'} | {'; '.join(notes)} |")
    return 0


def cmd_check_partition(args) -> int:
    """Cuts replica 2 of 3 off with the Raft and Redis rules and prints which
    connections still open, as JSON: {"raft": {"1->2": false, ...}, "redis": {...}}."""
    if not args.in_netns:
        if os.geteuid() != 0:
            print("harness: needs root (network namespace, nftables)", file=sys.stderr)
            return 2
        ensure_nft()
        return subprocess.run(["unshare", "--net", "--", sys.executable, str(Path(__file__).resolve()),
                               "check-partition", "--in-netns"]).returncode
    import socket

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    netfault.setup()
    listeners = []
    for i in (1, 2, 3):
        for port in (raft_port(i), REDIS_PORT):
            s = socket.socket()
            s.bind((ip(i), port))
            s.listen()
            listeners.append(s)

    def opens(src: int, dst: int, port: int) -> bool:
        c = socket.socket()
        c.settimeout(0.3)
        try:
            c.bind((ip(src), 0))
            c.connect((ip(dst), port))
            return True
        except OSError:
            return False
        finally:
            c.close()

    out = {}
    netfault.cut_raft(ip(2), raft_port(2), [raft_port(1), raft_port(3)])
    out["raft"] = {f"{a}->{b}": opens(a, b, raft_port(b)) for a in (1, 2, 3) for b in (1, 2, 3) if a != b}
    netfault.heal()
    out["raft_healed"] = all(opens(a, b, raft_port(b)) for a in (1, 2, 3) for b in (1, 2, 3) if a != b)
    netfault.cut_redis(ip(2), REDIS_PORT)
    # Replica i reaches Redis at 127.0.0.i (from any source address).
    out["redis"] = {f"{i}": opens(1, i, REDIS_PORT) for i in (1, 2, 3)}
    netfault.heal()
    out["redis_healed"] = all(opens(1, i, REDIS_PORT) for i in (1, 2, 3))
    print(json.dumps(out))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--store", choices=STORES, required=True)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--fault", choices=FAULTS, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--sluice", default=os.environ.get("SLUICE_BIN") or default_bin("sluice"))
    p.add_argument("--upstream", default=os.environ.get("SLUICE_UPSTREAM_BIN") or default_bin("sluice-test-upstream"))
    p.add_argument("--workdir")
    p.add_argument("--rate", type=float, help="requests/s over all replicas (default 20 per replica)")
    p.add_argument("--failure-mode", default="FailClosed", choices=["FailClosed", "FailOpen"])
    p.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    p = sub.add_parser("table")
    p.add_argument("files", nargs="+")
    p = sub.add_parser("check-partition", help="check the nft partition rules (root)")
    p.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    p = sub.add_parser("raft-supported")
    p.add_argument("--sluice", default=os.environ.get("SLUICE_BIN") or default_bin("sluice"))
    args = parser.parse_args()
    if args.command == "run":
        args.raw = [a for a in sys.argv[2:] if a != "--in-netns"]
        if not 1 <= args.replicas <= 9:
            parser.error("--replicas: 1 to 9")
        for flag in ("out", "sluice", "upstream"):
            setattr(args, flag, str(Path(getattr(args, flag)).resolve()))
        return cmd_run(args)
    if args.command == "table":
        return cmd_table(args)
    if args.command == "check-partition":
        return cmd_check_partition(args)
    ok, why = raft_supported(Path(args.sluice))
    print(why)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
