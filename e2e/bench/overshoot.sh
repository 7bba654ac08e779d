#!/usr/bin/env bash
# Budget overshoot: how far past a cost limit a fleet of gateways lets spend
# go when many streaming clients race for the last of it.
#
# Usage: e2e/bench/overshoot.sh
#
# What it does, for each case (store x gateways x enforcement):
#   - starts one fake upstream (for the whole run) and, for a redis case, a
#     fresh redis-server on a free loopback port (no RDB, AOF fsync always);
#   - starts the case's `sluice run` processes (two sharing the redis-server
#     with `state.type: redis`, or one with the memory store and its journal
#     in the scratch dir), each with the same config: API-key auth, the JSON
#     access log to its own file, route `bench-model` -> the upstream priced
#     at $2.00 / $20.00 per million input / output tokens, and
#       kind: Budget {tenant: bench, limits: [{cost: "1.00", period: Monthly}],
#                     enforcement: Strict | Lenient}
#   - e2e/bench/overshoot.py load: OVERSHOOT_CLIENTS (200) concurrent
#     streaming clients, split evenly over the gateways, each sending requests
#     in a loop until it is refused (429) (workload: see overshoot.py; a
#     request costs about 1/500 of the budget and reserves about 1/460);
#   - waits for the settlement (every 100 ms), reads GET /budgets from every
#     gateway, stops them (SIGTERM: leases handed back, logs flushed) and
#     reads what the store settled (the redis hash, or the memory journal);
#   - overshoot.py report: the spend is the sum of `cost_usd` over the
#     gateways' access logs; overshoot = spend beyond the limit, in percent of
#     the limit;
#   - prints a markdown table (also saved to ~/.cache/sluice/bench/overshoot.md
#     and a timestamped copy) and, below it, the details of each case.
#
# Environment:
#   OVERSHOOT_CLIENTS         concurrent clients (default 200)
#   OVERSHOOT_CHUNK_DELAY_MS  ms between content chunks (default 20)
#   OVERSHOOT_MAX_SECONDS     longest load phase per case (default 45)
#   OVERSHOOT_MAX_TOKENS      max_tokens of each request (default 100)
#   OVERSHOOT_OVERRUN_SHARE   share of requests that write past max_tokens
#                             (default 0.25)
#   OVERSHOOT_PROMPT_TOKENS   input tokens the fake provider reports (default 66:
#                             the gateway estimates 76 for the prompt, and its
#                             estimate is documented as 10-15% high for prose)
#   OVERSHOOT_CASES           case numbers to run (default "1 2 3 4")
# The numbers are not asserted anywhere: this measures, it does not test.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=e2e/lib.sh
source e2e/lib.sh

case "${1:-}" in
    "") ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
esac

clients="${OVERSHOOT_CLIENTS:-200}"
chunk_delay="${OVERSHOOT_CHUNK_DELAY_MS:-20}"
max_seconds="${OVERSHOOT_MAX_SECONDS:-45}"
max_tokens="${OVERSHOOT_MAX_TOKENS:-100}"
overrun_share="${OVERSHOOT_OVERRUN_SHARE:-0.25}"
prompt_tokens="${OVERSHOOT_PROMPT_TOKENS:-66}"
read -r -a wanted_cases <<<"${OVERSHOOT_CASES:-1 2 3 4}"
limit_usd="1.00"
driver="$(pwd)/e2e/bench/overshoot.py"
# name | store | gateways | enforcement
cases=(
    "redis, 2 gateways, Strict|redis|2|Strict"
    "memory, 1 gateway, Strict|memory|1|Strict"
    "redis, 2 gateways, Lenient|redis|2|Lenient"
    "memory, 1 gateway, Lenient|memory|1|Lenient"
)

step "tools"
ensure_redis || die "could not install redis-server"
note "$(redis-server --version)"
venv="$(ensure_venv e2e/python/requirements.txt)" || die "could not make the e2e virtualenv"
python="$venv/bin/python"

step "build (release)"
export_cargo_target_dir
cargo build --release --bins -p sluice -p sluice-test-upstream

start_scratch sluice-overshoot
rm -rf "$SLUICE_CACHE/bench/overshoot-last"
cp "$CARGO_TARGET_DIR/release/sluice" "$CARGO_TARGET_DIR/release/sluice-test-upstream" "$workdir/"
started=$SECONDS

step "start the upstream"
"$workdir/sluice-test-upstream" --listen 127.0.0.1:0 --name bench --threads 2 --no-record \
    >"$workdir/upstream.out" 2>&1 &
upstream_pid=$!
pids+=("$upstream_pid")
upstream_port="$(wait_listening_port "$workdir/upstream.out" "$upstream_pid" 30)" \
    || { cat "$workdir/upstream.out" >&2; die "the upstream did not start"; }
note "upstream: http://127.0.0.1:$upstream_port (pid $upstream_pid)"

api_key="sk-bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

start_redis() { # DIR; sets redis_pid, redis_port
    redis_port="$(free_port)"
    mkdir -p "$1"
    redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$1" \
        --save '' --appendonly yes --appendfsync always >"$1/redis.log" 2>&1 &
    redis_pid=$!
    pids+=("$redis_pid")
    for _ in $(seq 100); do
        redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && return 0
        kill -0 "$redis_pid" 2>/dev/null || { cat "$1/redis.log" >&2; die "redis-server exited"; }
        sleep 0.1
    done
    die "redis-server did not answer"
}

rows=()
n=0
for spec in "${cases[@]}"; do
    IFS='|' read -r name store gateways enforcement <<<"$spec"
    n=$((n + 1))
    [[ " ${wanted_cases[*]} " == *" $n "* ]] || continue
    dir="$workdir/case$n"
    mkdir -p "$dir"
    step "case $n: $name"

    case "$store" in
        redis)
            start_redis "$dir/redis"
            note "redis: 127.0.0.1:$redis_port (pid $redis_pid)"
            state="  state: {type: redis, redis: {url: \"redis://127.0.0.1:$redis_port\"}}"
            ;;
        memory) state="  state: {type: memory, path: \"$dir/counters.log\"}" ;;
    esac
    {
        bench_gateway_config overshoot "http://127.0.0.1:$upstream_port" \
            '{input: "2.00", output: "20.00"}' "$state"
        cat <<EOF
---
apiVersion: sluice.dev/v1alpha1
kind: Budget
metadata: {name: overshoot}
spec:
  tenant: bench
  limits:
    - {cost: "$limit_usd", period: Monthly}
  enforcement: $enforcement
EOF
    } >"$dir/sluice.yaml"

    gw_pids=() urls=() admins=() logs=()
    for g in $(seq "$gateways"); do
        port="$(free_port)"
        admin="$(free_port)"
        SLUICE_PORT="$port" SLUICE_ADMIN_PORT="$admin" BENCH_API_KEY="$api_key" \
            UPSTREAM_KEY="sk-upstream-bench" BENCH_ACCESS_LOG="$dir/access-$g.log" \
            "$workdir/sluice" run -f "$dir/sluice.yaml" \
            >"$dir/sluice-$g.stdout" 2>"$dir/sluice-$g.stderr" &
        pid=$!
        pids+=("$pid")
        wait_http_ok "http://127.0.0.1:$admin/readyz" "$pid" 30 \
            || { tail -n 30 "$dir/sluice-$g.stderr" >&2; die "sluice $g did not become ready"; }
        gw_pids+=("$pid") urls+=("http://127.0.0.1:$port") admins+=("http://127.0.0.1:$admin")
        logs+=("$dir/access-$g.log")
        note "sluice $g: http://127.0.0.1:$port (pid $pid, admin :$admin)"
    done

    url_args=() log_args=() budget_args=()
    for u in "${urls[@]}"; do url_args+=(--url "$u"); done
    for l in "${logs[@]}"; do log_args+=(--log "$l"); done
    "$python" "$driver" load "${url_args[@]}" --key "$api_key" --out "$dir/requests.json" \
        --clients "$clients" --chunk-delay-ms "$chunk_delay" --max-seconds "$max_seconds" \
        --max-tokens "$max_tokens" --overrun-share "$overrun_share" --prompt-tokens "$prompt_tokens"

    # Settlement runs every 100 ms; then what each gateway reports.
    sleep 0.5
    for g in $(seq "$gateways"); do
        curl -sS --max-time 5 "${admins[$((g - 1))]}/budgets" >"$dir/budgets-$g.json" || true
        budget_args+=(--budgets "$dir/budgets-$g.json")
    done
    for pid in "${gw_pids[@]}"; do stop_pid "$pid"; done
    for g in $(seq "$gateways"); do
        grep -E 'WARN|ERROR' "$dir/sluice-$g.stderr" | head -5 | sed "s/^/    sluice $g: /" || true
    done

    # What the store settled: the redis hash, or the memory journal.
    case "$store" in
        redis)
            settled_micro=0
            while read -r key; do
                [[ -n "$key" ]] || continue
                note "redis $key: $(redis-cli -p "$redis_port" hgetall "$key" | paste -sd ' ')"
                v="$(redis-cli -p "$redis_port" hget "$key" settled)"
                settled_micro=$((settled_micro + ${v:-0}))
            done < <(redis-cli -p "$redis_port" --scan --pattern 'sluice:*')
            stop_pid "$redis_pid"
            ;;
        memory)
            settled_micro="$(awk '{ s += $NF } END { print s + 0 }' "$dir/counters.log")"
            ;;
    esac
    settled_usd="$(awk -v m="$settled_micro" 'BEGIN { printf "%.6f", m / 1e6 }')"

    "$python" "$driver" report --case "$name" --limit "$limit_usd" --requests "$dir/requests.json" \
        "${log_args[@]}" "${budget_args[@]}" --store-settled "$settled_usd" --row "$dir/row.json"
    rows+=(--row "$dir/row.json")
    # Keep the case's logs and records for a look afterwards.
    keep="$SLUICE_CACHE/bench/overshoot-last/case$n"
    rm -rf "$keep" && mkdir -p "$keep"
    cp "$dir"/*.json "$dir"/*.log "$dir"/*.yaml "$dir"/*.stderr "$keep/" 2>/dev/null || true
done

report="$workdir/overshoot-report.md"
{
    echo "## Budget overshoot, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "- machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); $(redis-server --version | awk '{ print $1, $2, $3 }')"
    echo "- Budget: cost \$$limit_usd Monthly; pricing \$2.00 / \$20.00 per million input / output tokens"
    echo "- load: $clients concurrent streaming clients (split over the gateways), each until refused; max_tokens $max_tokens,"
    echo "  $((max_tokens / 4))..$max_tokens chunks, or $((max_tokens + 1))..$((2 * max_tokens)) for a share $overrun_share of the requests"
    echo "  (the fake provider does not honour max_tokens); ${chunk_delay} ms between chunks; $prompt_tokens prompt tokens reported"
    echo
    "$python" "$driver" table "${rows[@]}"
    echo
    echo "spent: sum of cost_usd in the access logs; overshoot: spent beyond the limit, in % of it."
    echo "cut before the first refusal: Strict streams cut while the fleet still admitted new requests."
    echo "spent at the first cut / refusal: spend already charged (access logs) when it happened, in % of the limit."
    echo "refused with >1% left: 429s whose message says more than 1% of the limit (a lease's worth) was left."
    echo "GET /budgets spent: each gateway's answer after the load (store settled + its unsettled spend);"
    echo "store settled: the redis hash's settled (or the memory journal) after the gateways stopped."
    echo "other errors: answers neither 200 nor 429, and streams that ended with another error."
    echo "Total run time: $((SECONDS - started)) s. Logs, load records and GET /budgets answers of each case: $SLUICE_CACHE/bench/overshoot-last/."
} >"$report"

mkdir -p "$SLUICE_CACHE/bench"
cp "$report" "$SLUICE_CACHE/bench/overshoot.md"
cp "$report" "$SLUICE_CACHE/bench/overshoot-$(date -u +%Y%m%d-%H%M%S).md"
step "result (saved to $SLUICE_CACHE/bench/overshoot.md)"
cat "$report"
