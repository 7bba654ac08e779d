#!/usr/bin/env bash
# Admission overhead benchmark: what a Budget costs on the request path.
# The same load (non-streaming chat, like run.sh) is sent through four
# Sluice processes in front of one fake upstream: one with no Budget
# ("limits off"), one with a Budget on the `memory` counter store, one
# with the same Budget on the `redis` store (a redis-server this script
# starts on a free loopback port), and one with it on the `raft` store
# (the measured process is one member of a three-replica Raft group; the
# other two members run idle beside it).
#
# Usage: e2e/bench/limits.sh
#
# What it does:
#   - installs wrk and redis-server from Debian if missing; builds release
#     binaries (copied to the scratch dir, so a concurrent build in the shared
#     target dir cannot swap them mid-run);
#   - starts `sluice-test-upstream --threads 1 --no-record`, a redis-server
#     (no RDB, AOF fsynced always, in the scratch dir) and three `sluice run -f`
#     with run.sh's bench config (API-key auth, JSON access log to a file,
#     admin listener, route `bench-model` -> the upstream, which is priced at
#     $2.50 / $10.00 per million tokens in all three), two of them with
#       kind: Budget (tenant: bench, the bench key's tenant)
#         limits: {cost: "1000000.00", period: Monthly}
#                 {requestsPerMinute: 100000000}
#         enforcement: Strict
#     on `state: {type: memory}` (journal in the scratch dir) and
#     `state: {type: redis}`; limits large enough never to refuse;
#   - checks one request through each (200, and the x-ratelimit-* headers
#     exactly where a Budget applies);
#   - for each round (BENCH_ROUNDS) and connection count: a warm-up and a
#     measured wrk run (e2e/bench/chat.lua, non-streaming, 5 chunks) through
#     each of the three in turn (off, memory, redis), so drift hits all alike;
#   - prints a markdown table (also saved to ~/.cache/sluice/bench/limits.md
#     and a timestamped copy): RPS, p50, p99, added p50 against "limits off",
#     Sluice's CPU µs per request (utime+stime from /proc/PID/stat over the
#     run, divided by the requests wrk completed, as in run.sh), the ratios
#     against "limits off", and redis-server's own CPU µs per request. With
#     several rounds, each figure is the median over the rounds.
#
# CPU pinning as in run.sh: wrk on CPU 1; the upstream, the three Sluice
# processes (two idle at any time) and redis-server on CPU 0. BENCH_PIN=0
# runs unpinned; with fewer than 2 cores nothing is pinned.
#
# Environment:
#   BENCH_SECONDS      seconds per measured run (default 10)
#   BENCH_WARMUP       seconds of warm-up before each run (default 2)
#   BENCH_CONNECTIONS  connection counts (default "1 32")
#   BENCH_ROUNDS       rounds over the three setups; medians reported (default 1)
#   BENCH_PIN          1 (default) to pin with taskset, 0 not to
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

seconds="${BENCH_SECONDS:-10}"
warmup="${BENCH_WARMUP:-2}"
rounds="${BENCH_ROUNDS:-1}"
read -r -a connections <<<"${BENCH_CONNECTIONS:-1 32}"
lua="$(pwd)/e2e/bench/chat.lua"
clk_tck="$(getconf CLK_TCK)"
modes=(off memory redis raft)

server_pin=() wrk_pin=() pinning="none"
if [[ "${BENCH_PIN:-1}" == 1 ]] && (($(nproc) >= 2)) && command -v taskset >/dev/null; then
    server_pin=(taskset -c 0)
    wrk_pin=(taskset -c 1)
    pinning="wrk on CPU 1; upstream, sluice and redis-server on CPU 0"
fi

step "tools"
ensure_apt_command wrk || die "could not install wrk"
ensure_redis || die "could not install redis-server"
note "$(wrk --version 2>&1 | head -1)"
note "$(redis-server --version)"

step "build (release)"
export_cargo_target_dir
cargo build --release --bins -p sluice -p sluice-test-upstream

start_scratch sluice-bench-limits
cp "$CARGO_TARGET_DIR/release/sluice" "$CARGO_TARGET_DIR/release/sluice-test-upstream" "$workdir/"
upstream_bin="$workdir/sluice-test-upstream"
sluice_bin="$workdir/sluice"

step "start"
"${server_pin[@]}" "$upstream_bin" --listen 127.0.0.1:0 --name bench --threads 1 --no-record \
    >"$workdir/upstream.out" 2>&1 &
upstream_pid=$!
pids+=("$upstream_pid")
upstream_port="$(wait_listening_port "$workdir/upstream.out" "$upstream_pid" 30)" \
    || { cat "$workdir/upstream.out" >&2; die "the upstream did not start"; }
note "upstream: http://127.0.0.1:$upstream_port (pid $upstream_pid)"

redis_port="$(free_port)"
mkdir -p "$workdir/redis"
"${server_pin[@]}" redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$workdir/redis" \
    --save '' --appendonly yes --appendfsync always \
    >"$workdir/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
for _ in $(seq 100); do
    redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
    kill -0 "$redis_pid" 2>/dev/null || { cat "$workdir/redis.log" >&2; die "redis-server exited"; }
    sleep 0.1
done
redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG || die "redis-server did not answer"
note "redis:    127.0.0.1:$redis_port (pid $redis_pid)"

api_key="sk-bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

# The bench config of run.sh, priced, plus (memory, redis) the Budget.
write_config() { # MODE FILE
    local state=""
    case "$1" in
        memory) state="  state: {type: memory, path: \"$workdir/counters.log\"}" ;;
        redis) state="  state: {type: redis, redis: {url: \"redis://127.0.0.1:$redis_port\"}}" ;;
        raft) state="  state: {type: raft, raft: {peers: [\"1=127.0.0.1:${raft_ports[0]}\", \"2=127.0.0.1:${raft_ports[1]}\", \"3=127.0.0.1:${raft_ports[2]}\"], dataDir: \"$workdir/raft-\${RAFT_NODE}\"}}" ;;
    esac
    bench_gateway_config bench 'http://127.0.0.1:${UPSTREAM_PORT}' \
        '{input: "2.50", output: "10.00"}' "$state" >"$2"
    if [[ "$1" != off ]]; then
        cat >>"$2" <<'EOF'
---
apiVersion: sluice.dev/v1alpha1
kind: Budget
metadata: {name: bench}
spec:
  tenant: bench
  limits:
    - {cost: "1000000.00", period: Monthly}
    - {requestsPerMinute: 100000000}
  enforcement: Strict
EOF
    fi
}

read -r -a raft_ports <<<"$(free_ports 3 | tr '\n' ' ')"
raft_peer_pids=()
declare -A sluice_pid_of url_of admin_of
for mode in "${modes[@]}"; do
    port="$(free_port)"
    admin="$(free_port)"
    write_config "$mode" "$workdir/$mode.yaml"
    SLUICE_PORT="$port" SLUICE_ADMIN_PORT="$admin" UPSTREAM_PORT="$upstream_port" \
        BENCH_API_KEY="$api_key" UPSTREAM_KEY="sk-upstream-bench" BENCH_ACCESS_LOG="$workdir/access-$mode.log" \
        RAFT_NODE=1 SLUICE_RAFT_ID=1 \
        "${server_pin[@]}" "$sluice_bin" run -f "$workdir/$mode.yaml" \
        >"$workdir/sluice-$mode.stdout" 2>"$workdir/sluice-$mode.stderr" &
    pid=$!
    pids+=("$pid")
    if [[ "$mode" == raft ]]; then
        # The other two members of the group, idle but voting and replicating.
        for node in 2 3; do
            SLUICE_PORT="$(free_port)" SLUICE_ADMIN_PORT="$(free_port)" UPSTREAM_PORT="$upstream_port" \
                BENCH_API_KEY="$api_key" UPSTREAM_KEY="sk-upstream-bench" BENCH_ACCESS_LOG="$workdir/access-raft-$node.log" \
                RAFT_NODE=$node SLUICE_RAFT_ID=$node \
                "${server_pin[@]}" "$sluice_bin" run -f "$workdir/$mode.yaml" \
                >"$workdir/sluice-raft-$node.stdout" 2>"$workdir/sluice-raft-$node.stderr" &
            pids+=("$!")
            raft_peer_pids+=("$!")
        done
        # Admission waits for nothing, but the first lease needs a leader.
        for _ in $(seq 100); do
            curl -fsS --max-time 2 "http://127.0.0.1:$admin/cluster" 2>/dev/null | grep -q '"leader":[0-9]' && break
            sleep 0.1
        done
    fi
    wait_http_ok "http://127.0.0.1:$admin/readyz" "$pid" 30 \
        || { tail -n 30 "$workdir/sluice-$mode.stderr" >&2; die "sluice ($mode) did not become ready"; }
    sluice_pid_of[$mode]=$pid
    url_of[$mode]="http://127.0.0.1:$port"
    admin_of[$mode]="http://127.0.0.1:$admin"
    note "sluice ($mode): ${url_of[$mode]} (pid $pid, admin :$admin)"
done

# One request through each: 200, and budget headers exactly where a Budget is.
for mode in "${modes[@]}"; do
    status="$(curl -sS -D "$workdir/preflight.headers" -o "$workdir/preflight.json" -w '%{http_code}' \
        --max-time 10 -H 'content-type: application/json' -H "authorization: Bearer $api_key" \
        -d '{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}' \
        "${url_of[$mode]}/v1/chat/completions")" || status="curl failed"
    if [[ "$status" != 200 ]]; then
        cat "$workdir/preflight.json" >&2 2>/dev/null || true
        tail -n 30 "$workdir/sluice-$mode.stderr" >&2
        die "preflight through sluice ($mode) answered $status"
    fi
    if grep -qi '^x-ratelimit-limit-requests:' "$workdir/preflight.headers"; then
        [[ "$mode" != off ]] || die "sluice (off) answered with budget headers"
    else
        [[ "$mode" == off ]] || die "sluice ($mode) answered without budget headers: is the Budget applied?"
    fi
done

# CPU ticks of the store's own processes (redis-server, the other Raft
# members), 0 for none.
store_ticks() { # PID...
    local pid total=0
    for pid in "$@"; do
        total=$((total + $(cpu_ticks "$pid")))
    done
    echo "$total"
}

# Runs wrk against URL; prints "requests duration_us p50_us p99_us errors".
run_wrk() { # URL CONNECTIONS SECONDS
    bench_wrk "$1" "$lua" "$2" "$3"
}

export BENCH_API_KEY="$api_key" BENCH_MODEL="bench-model" BENCH_STREAM=0 BENCH_CHUNKS=5
declare -A rps_of p50_of p99_of cpu_of redis_cpu_of err_of
for round in $(seq "$rounds"); do
    for conns in "${connections[@]}"; do
        for mode in "${modes[@]}"; do
            step "round $round/$rounds, chat, $conns connection(s), limits $mode"
            pid="${sluice_pid_of[$mode]}"
            run_wrk "${url_of[$mode]}" "$conns" "$warmup" >/dev/null || die "wrk through sluice ($mode) failed"
            cpu_before="$(cpu_ticks "$pid")"
            store_pids=()
            case "$mode" in
                redis) store_pids=("$redis_pid") ;;
                raft) store_pids=("${raft_peer_pids[@]}") ;;
            esac
            redis_before="$(store_ticks "${store_pids[@]}")"
            result="$(run_wrk "${url_of[$mode]}" "$conns" "$seconds")" || die "wrk through sluice ($mode) failed"
            cpu_after="$(cpu_ticks "$pid")"
            redis_after="$(store_ticks "${store_pids[@]}")"
            read -r req dur p50 p99 err <<<"$result"
            read -r rps cpu_us redis_us <<<"$(awk -v r="$req" -v d="$dur" -v c0="$cpu_before" -v c1="$cpu_after" \
                -v q0="$redis_before" -v q1="$redis_after" -v hz="$clk_tck" 'BEGIN {
                    printf "%.0f %.1f %.2f\n", r / (d / 1e6), (r > 0 ? (c1 - c0) / hz * 1e6 / r : 0),
                        (r > 0 ? (q1 - q0) / hz * 1e6 / r : 0)
                }')"
            note "$rps req/s, p50 $p50 µs, p99 $p99 µs, $cpu_us µs CPU/req (redis-server $redis_us), errors $err"
            k="$conns/$mode"
            rps_of[$k]+="$rps " p50_of[$k]+="$p50 " p99_of[$k]+="$p99 "
            cpu_of[$k]+="$cpu_us " redis_cpu_of[$k]+="$redis_us " err_of[$k]+="$err "
        done
    done
done

# What the budgets counted (the cost limit: 7 input + 5 output tokens per
# request at $2.50 / $10.00 per million = $0.000068).
sleep 0.5
budget_line() { # MODE
    # shellcheck disable=SC2016 # the $ are Python's
    curl -fsS --max-time 5 "${admin_of[$1]}/budgets" | python3 -c '
import json, sys
for b in json.load(sys.stdin)["budgets"]:
    for l in b["limits"]:
        if l["metric"] == "cost":
            print("%s spent (%d requests at $0.000068)" % (l["spent"], round(float(l["spent"]) / 0.000068)))
' || echo "unreadable"
}
spent_memory="$(budget_line memory)"
spent_redis="$(budget_line redis)"
spent_raft="$(budget_line raft)"
redis_keys="$(redis-cli -p "$redis_port" --scan --pattern 'sluice:*' | wc -l)"

rows=()
for conns in "${connections[@]}"; do
    read -r -a base_rps <<<"${rps_of[$conns/off]}"
    read -r -a base_cpu <<<"${cpu_of[$conns/off]}"
    read -r -a base_p50 <<<"${p50_of[$conns/off]}"
    off_rps="$(median "${base_rps[@]}")" off_cpu="$(median "${base_cpu[@]}")" off_p50="$(median "${base_p50[@]}")"
    for mode in "${modes[@]}"; do
        k="$conns/$mode"
        read -r -a a <<<"${rps_of[$k]}"; rps="$(median "${a[@]}")"
        read -r -a a <<<"${p50_of[$k]}"; p50="$(median "${a[@]}")"
        read -r -a a <<<"${p99_of[$k]}"; p99="$(median "${a[@]}")"
        read -r -a a <<<"${cpu_of[$k]}"; cpu="$(median "${a[@]}")"
        read -r -a a <<<"${redis_cpu_of[$k]}"; rcpu="$(median "${a[@]}")"
        read -r -a a <<<"${err_of[$k]}"; errs="$(printf '%s\n' "${a[@]}" | awk '{ s += $1 } END { print s }')"
        read -r rps_ratio cpu_ratio added cpu_delta <<<"$(awk -v r="$rps" -v r0="$off_rps" -v c="$cpu" -v c0="$off_cpu" \
            -v p="$p50" -v p0="$off_p50" 'BEGIN {
                printf "%.2f %.2f %+d %+.1f\n", (r0 > 0 ? r / r0 : 0), (c0 > 0 ? c / c0 : 0), p - p0, c - c0 }')"
        case "$mode" in
            off) label="limits off" rcpu_cell="-" added="-" cpu_delta="-" ;;
            memory) label="Budget, memory store" rcpu_cell="-" ;;
            redis) label="Budget, redis store" rcpu_cell="$rcpu" ;;
            raft) label="Budget, raft store (3 members)" rcpu_cell="$rcpu" ;;
        esac
        rows+=("| $label | $conns | $(printf '%.0f' "$rps") | $rps_ratio | $(printf '%.0f' "$p50") | $added | $(printf '%.0f' "$p99") | $(printf '%.1f' "$cpu") | $cpu_delta | $cpu_ratio | $rcpu_cell | $errs |")
    done
done

report="$workdir/limits-report.md"
{
    echo "## Admission overhead (Budgets), $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "- machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "- wrk: 1 thread, non-streaming chat, ${seconds}s per run after ${warmup}s warm-up, $rounds round(s) (medians); pinning: $pinning"
    echo "- sluice: release build, API-key auth, JSON access log to a file, backend priced; Budget: cost \$1000000 Monthly + requestsPerMinute 100000000, Strict"
    echo "- $(redis-server --version | awk '{ print $1, $2, $3 }'), AOF fsync always, same host"
    echo
    echo "| setup | conns | RPS | RPS vs off | p50 µs | added p50 µs | p99 µs | sluice CPU µs/req | added CPU µs/req | CPU vs off | store CPU µs/req | errors |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Budget spend at the end (GET /budgets, cost limit): memory $spent_memory; redis $spent_redis; raft $spent_raft; redis keys: $redis_keys."
    echo "store CPU: redis-server's, or the two other Raft members' together, per request through the measured replica."
    echo "errors: wrk's connect, read, write, timeout and non-2xx counts (a refusal would be a non-2xx)."
} >"$report"

mkdir -p "$SLUICE_CACHE/bench"
cp "$report" "$SLUICE_CACHE/bench/limits.md"
cp "$report" "$SLUICE_CACHE/bench/limits-$(date -u +%Y%m%d-%H%M%S).md"
step "result (saved to $SLUICE_CACHE/bench/limits.md)"
cat "$report"
