"""Network faults between Sluice replicas on loopback, with nftables.

Every replica has a loopback address of its own (replica i is 127.0.0.i) and
talks to the shared counter store from it:

- `raft`: replica i listens for Raft traffic on 127.0.0.i:RAFT_BASE+i and
  makes its outgoing Raft connections from 127.0.0.i;
- `redis`: one redis-server listens on 127.0.0.1..N (and on HARNESS_IP for
  the harness's own reads); replica i connects to 127.0.0.i:REDIS_PORT.

Cutting replica i off is then a few `drop` rules on source/destination address
and the store's ports, in one table (`inet sluice_harness`) of the network
namespace the harness runs in (`unshare -n`): they never leak to the host, and
clients still reach every replica's HTTP listener (other ports). `heal()`
flushes the rules.

Functions raise `NftError` with nft's message when a command fails.
"""

from __future__ import annotations

import shutil
import subprocess

TABLE = "sluice_harness"
CHAIN = "out"


class NftError(RuntimeError):
    pass


def _nft(*args: str, stdin: str | None = None) -> str:
    nft = shutil.which("nft") or "/usr/sbin/nft"
    result = subprocess.run(
        [nft, *args], input=stdin, capture_output=True, text=True, timeout=10
    )
    if result.returncode != 0:
        raise NftError(f"nft {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def setup() -> None:
    """Creates the (empty) table and its output chain. Loopback packets pass
    the output hook once, so one chain sees both directions of every flow."""
    _nft("-f", "-", stdin=(
        f"table inet {TABLE} {{\n"
        f"  chain {CHAIN} {{ type filter hook output priority 0; policy accept; }}\n"
        f"}}\n"
    ))


def _add(rule: str) -> None:
    _nft("add", "rule", "inet", TABLE, CHAIN, *rule.split())


def cut_raft(replica_ip: str, own_port: int, other_ports: list[int]) -> None:
    """Drops all Raft traffic of the replica at `replica_ip`: to and from its
    own Raft port, and from its address to and from the others' Raft ports."""
    others = "{ " + ", ".join(str(p) for p in other_ports) + " }"
    _add(f"ip daddr {replica_ip} tcp dport {own_port} drop")
    _add(f"ip saddr {replica_ip} tcp sport {own_port} drop")
    _add(f"ip saddr {replica_ip} tcp dport {others} drop")
    _add(f"ip daddr {replica_ip} tcp sport {others} drop")


def cut_redis(replica_ip: str, redis_port: int) -> None:
    """Drops the traffic between a replica and the Redis address it uses
    (`replica_ip:redis_port`): both directions, so calls time out (as with a
    real partition), they are not refused."""
    _add(f"ip daddr {replica_ip} tcp dport {redis_port} drop")
    _add(f"ip saddr {replica_ip} tcp sport {redis_port} drop")


def heal() -> None:
    """Removes every rule (the table stays)."""
    _nft("flush", "chain", "inet", TABLE, CHAIN)


def rules() -> str:
    """The table as nft lists it, for logs."""
    try:
        return _nft("list", "table", "inet", TABLE)
    except NftError as e:
        return str(e)
