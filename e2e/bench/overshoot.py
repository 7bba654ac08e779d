"""Load and report for e2e/bench/overshoot.sh (run with the e2e venv: httpx).

    overshoot.py load --url URL [--url URL ...] --key KEY --out FILE [options]
        CLIENTS concurrent streaming clients, split evenly over the URLs (client
        i always uses URL i mod n), each sending chat completions in a loop
        until it is refused (429); writes one JSON record per request to FILE.
    overshoot.py report --case NAME --limit USD --requests FILE --log FILE [--log ...]
        [--budgets FILE ...] [--store-settled USD] --row FILE
        Reads the access logs, the load records, GET /budgets answers and what
        the store holds, and writes one JSON summary (a table row) to --row.
    overshoot.py table --row FILE [--row ...]
        Prints the markdown table of the rows.

The workload (each client has its own seeded random generator, so every case
sends the same sequence): a streaming chat completion with max_tokens M (100)
and a fixed prompt; the fake provider is asked (x-mock-chunks) for M/4..M
content chunks (one token each), or, for a quarter of the requests,
M+1..2M: the fake
provider does not honour max_tokens, so these stand for responses longer than
what was reserved, which must draw more mid-stream (and are cut under Strict
when a limit has no more). Chunks come x-mock-chunk-delay-ms apart, and the
provider reports --prompt-tokens input tokens.
"""

import argparse
import asyncio
import json
import random
import re
import sys
import time
from decimal import Decimal

PROMPT = (
    "You are reviewing a pull request that changes how an HTTP gateway admits "
    "requests against per-tenant budgets. Summarise the change in three bullet "
    "points and list the risks you see for concurrent replicas."
)


async def client_loop(i, url, args, http, records, deadline):
    rng = random.Random(args.seed * 100_003 + i)
    errors = 0
    while time.monotonic() < deadline:
        if rng.random() < args.overrun_share:
            chunks = rng.randint(args.max_tokens + 1, 2 * args.max_tokens)
        else:
            chunks = rng.randint(args.max_tokens // 4, args.max_tokens)
        body = {
            "model": "bench-model",
            "stream": True,
            "max_tokens": args.max_tokens,
            "messages": [{"role": "user", "content": PROMPT}],
        }
        headers = {
            "authorization": f"Bearer {args.key}",
            "x-mock-chunks": str(chunks),
            "x-mock-chunk-delay-ms": str(args.chunk_delay_ms),
            "x-mock-prompt-tokens": str(args.prompt_tokens),
        }
        record = {"client": i, "url": url, "chunks": chunks, "start": time.monotonic()}
        try:
            async with http.stream(
                "POST", url + "/v1/chat/completions", json=body, headers=headers
            ) as response:
                record["status"] = response.status_code
                tail = b""
                size = 0
                async for data in response.aiter_bytes():
                    size += len(data)
                    tail = (tail + data)[-2048:]
                record["bytes"] = size
                if response.status_code == 200:
                    if b'"budget_exceeded"' in tail:
                        record["outcome"] = "cut"
                    elif b"[DONE]" in tail:
                        record["outcome"] = "complete"
                    else:
                        record["outcome"] = "incomplete"
                        record["tail"] = tail[-300:].decode("utf-8", "replace")
                elif response.status_code == 429:
                    record["outcome"] = "refused"
                    record["tail"] = tail[-400:].decode("utf-8", "replace")
                else:
                    record["outcome"] = "error"
                    record["tail"] = tail[-400:].decode("utf-8", "replace")
        except Exception as e:  # noqa: BLE001 - reported, never hidden
            record["status"] = None
            record["outcome"] = "exception"
            record["tail"] = f"{type(e).__name__}: {e}"
        record["end"] = time.monotonic()
        records.append(record)
        if record["outcome"] == "refused":
            return
        if record["outcome"] in ("error", "exception"):
            errors += 1
            if errors >= 5:
                return
            await asyncio.sleep(0.05)


async def load(args):
    import httpx

    records = []
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    timeout = httpx.Timeout(args.request_timeout)
    clients = {u: httpx.AsyncClient(limits=limits, timeout=timeout) for u in args.url}
    start = time.monotonic()
    deadline = start + args.max_seconds
    try:
        await asyncio.gather(
            *(
                client_loop(i, args.url[i % len(args.url)], args, clients[args.url[i % len(args.url)]],
                            records, deadline)
                for i in range(args.clients)
            )
        )
    finally:
        for c in clients.values():
            await c.aclose()
    elapsed = time.monotonic() - start
    for r in records:
        r["start"] -= start
        r["end"] -= start
    out = {
        "clients": args.clients,
        "elapsed_s": elapsed,
        "timed_out": elapsed >= args.max_seconds,
        "settings": {
            "max_tokens": args.max_tokens,
            "overrun_share": args.overrun_share,
            "chunk_delay_ms": args.chunk_delay_ms,
            "prompt_tokens": args.prompt_tokens,
            "seed": args.seed,
        },
        "requests": records,
    }
    with open(args.out, "w") as f:
        json.dump(out, f)
    outcomes = {}
    for r in records:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    refused_clients = len({r["client"] for r in records if r["outcome"] == "refused"})
    print(f"    {len(records)} requests in {elapsed:.1f}s: {outcomes}; "
          f"{refused_clients}/{args.clients} clients refused")


def read_log(path):
    lines = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                lines.append(json.loads(line, parse_float=Decimal))
    return lines


def report(args):
    limit = Decimal(args.limit)
    with open(args.requests) as f:
        run = json.load(f)
    lines = []
    for path in args.log:
        lines += [l for l in read_log(path) if l.get("path") == "/v1/chat/completions"]
    spend = sum((Decimal(str(l.get("cost_usd", 0))) for l in lines), Decimal(0))
    tokens_in = sum(l.get("tokens_in") or 0 for l in lines)
    tokens_out = sum(l.get("tokens_out") or 0 for l in lines)
    admitted = [l for l in lines if l["status"] == 200]
    refused = [l for l in lines if l["status"] == 429]
    other = [l for l in lines if l["status"] not in (200, 429)]
    cut = [l for l in admitted if l.get("error") == "budget_exceeded"]
    other_errors = [l for l in admitted if l.get("error") and l.get("error") != "budget_exceeded"]
    estimated_in = sorted({int(l["tokens_in"]) for l in admitted if l.get("tokens_estimated")})

    # Spend already charged when each request ended (access-log order by end
    # time: ts is the start, plus latency_ms).
    def end_ms(l):
        from datetime import datetime
        start = datetime.fromisoformat(l["ts"].replace("Z", "+00:00")).timestamp() * 1000
        return start + float(l["latency_ms"])

    spent_at = {}
    running = Decimal(0)
    for l in sorted(lines, key=end_ms):
        spent_at[id(l)] = running
        running += Decimal(str(l.get("cost_usd", 0)))
    early_cut = sum(1 for l in cut if spent_at[id(l)] < limit * Decimal("0.9"))
    first_cut_pct = min((float(spent_at[id(l)] / limit * 100) for l in cut), default=None)
    first_429 = min((l for l in refused), key=end_ms, default=None)
    spent_at_first_429 = float(spent_at[id(first_429)] / limit * 100) if first_429 is not None else None

    reqs = run["requests"]
    first_refusal = min((r["end"] for r in reqs if r["outcome"] == "refused"), default=None)
    cut_before_refusal = sum(
        1 for r in reqs if r["outcome"] == "cut" and first_refusal is not None and r["end"] < first_refusal
    )
    # Refusals whose 429 says more than 1% of the limit (a lease's worth) was
    # left: refused although the fleet had room.
    def left_usd(r):
        m = re.search(r"; ([0-9.]+) USD left", r.get("tail", ""))
        return Decimal(m.group(1)) if m else Decimal(0)

    refused_with_room = [round(float(left_usd(r)), 6) for r in reqs
                         if r["outcome"] == "refused" and left_usd(r) > limit / 100]
    client_outcomes = {}
    for r in reqs:
        client_outcomes[r["outcome"]] = client_outcomes.get(r["outcome"], 0) + 1
    refused_clients = len({r["client"] for r in reqs if r["outcome"] == "refused"})
    # A request the client saw cut, or that asked for more than max_tokens.
    asked_over = sum(1 for r in reqs if r["outcome"] in ("complete", "cut")
                     and r["chunks"] > run["settings"]["max_tokens"])

    budgets_spent = []
    for path in args.budgets or []:
        try:
            with open(path) as f:
                data = json.load(f)
            for b in data["budgets"]:
                for l in b["limits"]:
                    if l["metric"] == "cost":
                        budgets_spent.append(l["spent"])
        except (OSError, ValueError, KeyError) as e:
            budgets_spent.append(f"unreadable ({e})")

    over = max(spend - limit, Decimal(0))
    row = {
        "case": args.case,
        "limit": str(limit),
        "spend": str(spend),
        "used_pct": float(spend / limit * 100),
        "overshoot_pct": float(over / limit * 100),
        "admitted": len(admitted),
        "refused": len(refused),
        "cut": len(cut),
        "cut_before_first_refusal": cut_before_refusal,
        "cut_with_10pct_left": early_cut,
        "refused_with_room": refused_with_room,
        "spent_pct_at_first_refusal": spent_at_first_429,
        "spent_pct_at_first_cut": first_cut_pct,
        "asked_over_max_tokens": asked_over,
        "other_status": len(other),
        "other_errors": len(other_errors),
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "estimated_input_tokens": estimated_in,
        "budgets_spent": budgets_spent,
        "store_settled": args.store_settled,
        "clients": run["clients"],
        "refused_clients": refused_clients,
        "client_outcomes": client_outcomes,
        "first_refusal_s": first_refusal,
        "elapsed_s": run["elapsed_s"],
        "timed_out": run["timed_out"],
        "mean_cost": str((spend / len(admitted)).quantize(Decimal("0.000001"))) if admitted else "0",
        "samples": [r for r in reqs if r["outcome"] in ("error", "exception", "incomplete")][:5],
    }
    with open(args.row, "w") as f:
        json.dump(row, f, indent=1)
    print(json.dumps({k: v for k, v in row.items() if k != "samples"}))
    for s in row["samples"]:
        print("    sample problem:", json.dumps(s), file=sys.stderr)


def table(args):
    rows = []
    for path in args.row:
        with open(path) as f:
            rows.append(json.load(f))
    print("| case | spent (access logs) | of budget | overshoot | admitted | refused | streams cut | cut before the first refusal | spent at the first cut | spent at the first refusal | refused with >1% left | GET /budgets spent | store settled | other errors | time |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        errors = r["other_status"] + r["other_errors"]
        budgets = " / ".join(f"${s}" for s in r["budgets_spent"]) or "-"
        store = f"${r['store_settled']}" if r["store_settled"] else "-"
        first_cut = "-" if r.get("spent_pct_at_first_cut") is None else f"{r['spent_pct_at_first_cut']:.1f}%"
        first = "-" if r["spent_pct_at_first_refusal"] is None else f"{r['spent_pct_at_first_refusal']:.1f}%"
        print(f"| {r['case']} | ${Decimal(r['spend']):.6f} | {r['used_pct']:.2f}% | {r['overshoot_pct']:.3f}% "
              f"| {r['admitted']} | {r['refused']} | {r['cut']} | {r['cut_before_first_refusal']} | {first_cut} | {first} | {len(r['refused_with_room'])} "
              f"| {budgets} | {store} | {errors} | {r['elapsed_s']:.1f}s{' (timed out)' if r['timed_out'] else ''} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("load")
    p.add_argument("--url", action="append", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--max-tokens", type=int, default=100)
    p.add_argument("--overrun-share", type=float, default=0.25)
    p.add_argument("--chunk-delay-ms", type=int, default=20)
    p.add_argument("--prompt-tokens", type=int, default=66)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=60)
    p.add_argument("--request-timeout", type=float, default=30)
    p = sub.add_parser("report")
    p.add_argument("--case", required=True)
    p.add_argument("--limit", required=True)
    p.add_argument("--requests", required=True)
    p.add_argument("--log", action="append", required=True)
    p.add_argument("--budgets", action="append")
    p.add_argument("--store-settled")
    p.add_argument("--row", required=True)
    p = sub.add_parser("table")
    p.add_argument("--row", action="append", required=True)
    args = parser.parse_args()
    if args.command == "load":
        asyncio.run(load(args))
    elif args.command == "report":
        report(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
