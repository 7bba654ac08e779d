#!/usr/bin/env python3
"""MCP client side of e2e/bench/mcp.sh: opens sessions and times them.

Standard library only (http.client on one keep-alive connection, TCP_NODELAY),
so it runs with any python3 and adds little of its own time to what it
measures. Every answer is checked; anything unexpected exits 1 with the
status and body, so a broken setup fails loudly.

    mcp_bench.py open URL --call JSON [--key KEY]
        initialize + notifications/initialized, then the JSON-RPC request
        JSON once on that session; each must answer 200 (202 for the
        notification) with a JSON-RPC result, and the call's result must not
        be a tool error (isError). Prints the session id and the protocol
        version, one per line (for wrk's mcp.lua).

    mcp_bench.py check URL --session ID --call JSON [--key KEY]
        the request JSON once on an existing session, checked as above.

    mcp_bench.py sessions URL [URL...] --count N [--warmup W] [--key KEY]
        W untimed, then N timed session set-ups per URL, one after another,
        taking the URLs in turn (so a drift of the upstream, e.g. its garbage
        collector, hits every URL alike): time the initialize round trip, and
        initialize + notifications/initialized together; then DELETE the
        session (untimed). Prints one line per URL, in order:
        "BENCH_SESSIONS target=I count=N init_p50_us=.. init_p99_us=..
        pair_p50_us=.. pair_p99_us=..". The key goes to every URL (an MCP
        server without auth, like server-everything, ignores it).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import time
from urllib.parse import urlsplit

PROTOCOL_VERSION = "2025-11-25"
ACCEPT = "application/json, text/event-stream"
TIMEOUT_S = 10.0

INITIALIZE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "sluice-bench", "version": "1"},
        },
    },
    separators=(",", ":"),
).encode()
INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'


def fail(message: str) -> None:
    print(f"mcp_bench: {message}", file=sys.stderr)
    sys.exit(1)


class Client:
    """One keep-alive HTTP/1.1 connection to an MCP endpoint."""

    def __init__(self, url: str, key: str | None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            fail(f"expected http://HOST:PORT/PATH, got {url}")
        self.url = url
        self.path = parts.path or "/"
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_S)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.base = {"content-type": "application/json", "accept": ACCEPT}
        if key:
            self.base["authorization"] = f"Bearer {key}"

    def send(self, method: str, body: bytes | None, session: str | None) -> tuple[int, str | None, bytes]:
        """Returns (status, the Mcp-Session-Id header, the body)."""
        headers = dict(self.base)
        if session:
            headers["mcp-session-id"] = session
            headers["mcp-protocol-version"] = PROTOCOL_VERSION
        self.conn.request(method, self.path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, response.getheader("mcp-session-id"), data

    def initialize(self) -> str:
        status, session, body = self.send("POST", INITIALIZE, None)
        result = expect_result("initialize", status, body)
        if not session:
            fail(f"initialize at {self.url}: no Mcp-Session-Id in the answer")
        version = result.get("protocolVersion")
        if version != PROTOCOL_VERSION:
            fail(f"initialize at {self.url}: protocol version {version!r}, expected {PROTOCOL_VERSION}")
        return session

    def initialized(self, session: str) -> None:
        status, _, body = self.send("POST", INITIALIZED, session)
        if status != 202:
            fail(f"notifications/initialized at {self.url} answered {status}: {body[:500]!r}")

    def call(self, session: str, request: bytes) -> dict:
        status, _, body = self.send("POST", request, session)
        result = expect_result("the call", status, body)
        if result.get("isError") is True:
            fail(f"the call at {self.url} answered a tool error: {body[:800]!r}")
        return result

    def delete(self, session: str) -> None:
        status, _, body = self.send("DELETE", None, session)
        if status not in (200, 202, 204):
            fail(f"DELETE at {self.url} answered {status}: {body[:500]!r}")


def jsonrpc_message(body: bytes) -> dict | None:
    """The JSON-RPC response in a JSON body or in an SSE stream (its last message)."""
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            return None
    found = None
    for event in text.replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(line[5:].lstrip() for line in event.split("\n") if line.startswith("data:"))
        if data.strip():
            try:
                message = json.loads(data)
            except ValueError:
                return None
            if isinstance(message, dict) and ("result" in message or "error" in message):
                found = message
    return found


def expect_result(what: str, status: int, body: bytes) -> dict:
    message = jsonrpc_message(body)
    if status != 200 or message is None or not isinstance(message.get("result"), dict):
        fail(f"{what} answered {status}, not a JSON-RPC result: {body[:800]!r}")
    return message["result"]


def percentile(sorted_values: list[int], p: float) -> int:
    """Nearest-rank percentile of a sorted list."""
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["open", "check", "sessions"])
    parser.add_argument("url")
    parser.add_argument("extra", nargs="*", help="more URLs (sessions only)")
    parser.add_argument("--key", default=None, help="client API key (bearer)")
    parser.add_argument("--call", default=None, help="JSON-RPC request to send once on the session")
    parser.add_argument("--session", default=None)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()

    if args.command == "open":
        if not args.call or args.extra:
            fail("open takes one URL and --call")
        client = Client(args.url, args.key)
        session = client.initialize()
        client.initialized(session)
        client.call(session, args.call.encode())
        print(session)
        print(PROTOCOL_VERSION)
    elif args.command == "check":
        if not args.call or not args.session or args.extra:
            fail("check takes one URL, --call and --session")
        Client(args.url, args.key).call(args.session, args.call.encode())
    else:
        if args.count < 1:
            fail("--count must be at least 1")
        clients = [Client(url, args.key) for url in [args.url, *args.extra]]
        for _ in range(args.warmup):
            for client in clients:
                session = client.initialize()
                client.initialized(session)
                client.delete(session)
        init_ns: list[list[int]] = [[] for _ in clients]
        pair_ns: list[list[int]] = [[] for _ in clients]
        clock = time.perf_counter_ns
        for _ in range(args.count):
            for i, client in enumerate(clients):
                t0 = clock()
                session = client.initialize()
                t1 = clock()
                client.initialized(session)
                t2 = clock()
                client.delete(session)
                init_ns[i].append(t1 - t0)
                pair_ns[i].append(t2 - t0)
        for i in range(len(clients)):
            init_us = sorted(n // 1000 for n in init_ns[i])
            pair_us = sorted(n // 1000 for n in pair_ns[i])
            print(
                f"BENCH_SESSIONS target={i + 1} count={args.count}"
                f" init_p50_us={percentile(init_us, 50)} init_p99_us={percentile(init_us, 99)}"
                f" pair_p50_us={percentile(pair_us, 50)} pair_p99_us={percentile(pair_us, 99)}"
            )

if __name__ == "__main__":
    try:
        main()
    except (OSError, http.client.HTTPException) as error:
        fail(f"{type(error).__name__}: {error}")
