#!/usr/bin/env bash
# Sluice's overhead benchmark: the same load sent to the fake upstream
# directly and through Sluice, and the difference between the two.
#
# Usage: e2e/bench/run.sh [--direct-only]
#   --direct-only   only the direct-to-upstream half (checks the harness and
#                   the upstream without the gateway); no MCP benchmark
#
# What it does:
#   - installs wrk from Debian if missing; builds release binaries;
#   - starts `sluice-test-upstream --threads 1 --no-record` and `sluice run -f`
#     a bench config: API-key auth on, JSON access log to a file, the admin
#     listener (with /metrics) on, one route `bench-model` -> the upstream;
#   - for each case {chat, streaming chat with x-mock-chunks: 20} x
#     {1, 32 connections}: a short warm-up, then BENCH_SECONDS of wrk direct to
#     the upstream, then the same through Sluice;
#   - prints a markdown table (also saved to ~/.cache/sluice/bench/last.md):
#     RPS, p50 and p99 latency for both, the ratio via/direct, the p50 latency
#     Sluice adds, Sluice's CPU time per request (utime+stime from
#     /proc/PID/stat over the run, divided by the requests wrk completed) and
#     its RSS under load (VmRSS sampled mid-run); and below the table Sluice's
#     RSS idle (before any load) and its peak (VmHWM);
#   - then runs the admission overhead benchmark, e2e/bench/limits.sh (no
#     Budget vs. a Budget on the memory and on the redis counter store; its
#     own table, saved to ~/.cache/sluice/bench/limits.md), unless
#     BENCH_LIMITS=0;
#   - then runs the translation overhead benchmark, e2e/bench/translate.sh
#     (the same OpenAI-schema load through a passthrough OpenAI-compatible
#     backend and a translated Anthropic one, each beside its direct
#     baseline; its own table, saved to ~/.cache/sluice/bench/translate.md),
#     unless BENCH_TRANSLATE=0;
#   - then runs the MCP benchmark, e2e/bench/mcp.sh (its own table, saved to
#     ~/.cache/sluice/bench/mcp.md), unless BENCH_MCP=0.
#
# CPU pinning: the machine has 2 cores. wrk (one thread) gets core 1; the
# upstream and Sluice share core 0, in both halves. The load generator never
# takes CPU from the servers, and Sluice's CPU cost shows up in its numbers
# (it competes with the upstream, as a co-located sidecar would). Sluice's
# runtime sees one CPU. Set BENCH_PIN=0 to run unpinned; with fewer than 2
# cores nothing is pinned.
#
# Environment:
#   BENCH_SECONDS      seconds per measured run (default 10)
#   BENCH_WARMUP       seconds of warm-up before each run (default 2)
#   BENCH_CONNECTIONS  connection counts (default "1 32")
#   BENCH_PIN          1 (default) to pin with taskset, 0 not to
#   BENCH_LIMITS       1 (default) to run e2e/bench/limits.sh afterwards, 0 not to
#                      (it reads BENCH_SECONDS, BENCH_WARMUP, BENCH_CONNECTIONS
#                      and BENCH_PIN too)
#   BENCH_TRANSLATE    1 (default) to run e2e/bench/translate.sh afterwards, 0
#                      not to (it reads the same variables as limits.sh)
#   BENCH_MCP          1 (default) to run e2e/bench/mcp.sh afterwards, 0 not to
#                      (it reads BENCH_SECONDS, BENCH_WARMUP and BENCH_PIN too)
# The numbers are not asserted anywhere: this measures, it does not test.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=e2e/lib.sh
source e2e/lib.sh

direct_only=0
case "${1:-}" in
    "") ;;
    --direct-only) direct_only=1 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
esac

seconds="${BENCH_SECONDS:-10}"
warmup="${BENCH_WARMUP:-2}"
read -r -a connections <<<"${BENCH_CONNECTIONS:-1 32}"
lua="$(pwd)/e2e/bench/chat.lua"
clk_tck="$(getconf CLK_TCK)"

server_pin=() wrk_pin=() pinning="none"
if [[ "${BENCH_PIN:-1}" == 1 ]] && (($(nproc) >= 2)) && command -v taskset >/dev/null; then
    server_pin=(taskset -c 0)
    wrk_pin=(taskset -c 1)
    pinning="wrk on CPU 1; upstream and sluice on CPU 0"
fi

step "wrk"
ensure_apt_command wrk || die "could not install wrk"
note "$(wrk --version 2>&1 | head -1)"

step "build (release)"
export_cargo_target_dir
packages=(-p sluice-test-upstream)
((direct_only)) || packages+=(-p sluice)
cargo build --release --bins "${packages[@]}"
upstream_bin="$CARGO_TARGET_DIR/release/sluice-test-upstream"
sluice_bin="$CARGO_TARGET_DIR/release/sluice"

start_scratch sluice-bench

step "start"
"${server_pin[@]}" "$upstream_bin" --listen 127.0.0.1:0 --name bench --threads 1 --no-record \
    >"$workdir/upstream.out" 2>&1 &
upstream_pid=$!
pids+=("$upstream_pid")
upstream_port="$(wait_listening_port "$workdir/upstream.out" "$upstream_pid" 30)" \
    || { cat "$workdir/upstream.out" >&2; die "the upstream did not start"; }
direct_url="http://127.0.0.1:$upstream_port"
note "upstream: $direct_url (pid $upstream_pid)"

api_key="sk-bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
sluice_pid=""
if ((!direct_only)); then
    sluice_port="$(free_port)"
    admin_port="$(free_port)"
    cat >"$workdir/bench.yaml" <<'EOF'
apiVersion: sluice.dev/v1alpha1
kind: AIGateway
metadata: {name: bench}
spec:
  listen: 127.0.0.1:${SLUICE_PORT}
  admin: 127.0.0.1:${SLUICE_ADMIN_PORT}
  auth:
    apiKeys:
      - {name: bench, tenant: bench, valueFrom: {env: BENCH_API_KEY}}
  llm:
    routes:
      - models: ["bench-model"]
        backends: [{backend: upstream}]
  telemetry:
    accessLog: {to: "${BENCH_ACCESS_LOG}"}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: upstream}
spec:
  provider: OpenAICompatible
  endpoint: http://127.0.0.1:${UPSTREAM_PORT}
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
  models: ["bench-model"]
EOF
    SLUICE_PORT="$sluice_port" SLUICE_ADMIN_PORT="$admin_port" UPSTREAM_PORT="$upstream_port" \
        BENCH_API_KEY="$api_key" UPSTREAM_KEY="sk-upstream-bench" BENCH_ACCESS_LOG="$workdir/access.log" \
        "${server_pin[@]}" "$sluice_bin" run -f "$workdir/bench.yaml" \
        >"$workdir/sluice.stdout" 2>"$workdir/sluice.stderr" &
    sluice_pid=$!
    pids+=("$sluice_pid")
    wait_http_ok "http://127.0.0.1:$admin_port/readyz" "$sluice_pid" 30 \
        || { tail -n 30 "$workdir/sluice.stderr" >&2; die "sluice did not become ready"; }
    via_url="http://127.0.0.1:$sluice_port"
    note "sluice:   $via_url (pid $sluice_pid, admin :$admin_port)"
fi

# One request each way before any load: a broken setup fails here, loudly.
preflight() { # URL
    local status
    status="$(curl -sS -o "$workdir/preflight.json" -w '%{http_code}' --max-time 10 \
        -H 'content-type: application/json' -H "authorization: Bearer $api_key" \
        -d '{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}' \
        "$1/v1/chat/completions")" || status="curl failed"
    if [[ "$status" != 200 ]]; then
        echo "preflight to $1 answered $status:" >&2
        cat "$workdir/preflight.json" >&2 2>/dev/null || true
        [[ -z "$sluice_pid" ]] || tail -n 30 "$workdir/sluice.stderr" >&2
        die "preflight failed"
    fi
}
preflight "$direct_url"
[[ -z "$sluice_pid" ]] || preflight "$via_url"

proc_status_mib() { # PID FIELD (VmRSS | VmHWM)
    awk -v f="$2:" '$1 == f { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

idle_rss="-"
[[ -z "$sluice_pid" ]] || idle_rss="$(proc_status_mib "$sluice_pid" VmRSS)"

# Runs wrk against URL; prints "requests duration_us p50_us p99_us errors".
run_wrk() { # URL CONNECTIONS SECONDS
    bench_wrk "$1" "$lua" "$2" "$3"
}

export BENCH_API_KEY="$api_key" BENCH_MODEL="bench-model"
rows=()
for bench_case in chat stream; do
    if [[ "$bench_case" == stream ]]; then
        export BENCH_STREAM=1 BENCH_CHUNKS=20
        label="streaming chat, 20 chunks"
    else
        export BENCH_STREAM=0 BENCH_CHUNKS=5
        label="chat"
    fi
    for conns in "${connections[@]}"; do
        step "$label, $conns connection(s)"
        run_wrk "$direct_url" "$conns" "$warmup" >/dev/null || die "wrk against the upstream failed"
        result="$(run_wrk "$direct_url" "$conns" "$seconds")" || die "wrk against the upstream failed"
        read -r d_req d_dur d_p50 d_p99 d_err <<<"$result"
        d_rps="$(awk -v r="$d_req" -v d="$d_dur" 'BEGIN { printf "%.0f", r / (d / 1e6) }')"
        note "direct: $d_rps req/s, p50 ${d_p50} µs, p99 ${d_p99} µs, errors $d_err"
        if [[ -z "$sluice_pid" ]]; then
            rows+=("| $label | $conns | $d_rps | - | - | $d_p50 | - | - | $d_p99 | - | - | - | $d_err |")
            continue
        fi

        run_wrk "$via_url" "$conns" "$warmup" >/dev/null || die "wrk through sluice failed"
        cpu_before="$(cpu_ticks "$sluice_pid")"
        run_wrk "$via_url" "$conns" "$seconds" >"$workdir/via.result" &
        wrk_pid=$!
        sleep "$(awk -v s="$seconds" 'BEGIN { print s / 2 }')"
        load_rss="$(proc_status_mib "$sluice_pid" VmRSS)"
        wait "$wrk_pid" || die "wrk through sluice failed"
        cpu_after="$(cpu_ticks "$sluice_pid")"
        read -r v_req v_dur v_p50 v_p99 v_err <"$workdir/via.result"

        read -r v_rps ratio added cpu_us <<<"$(awk \
            -v dr="$d_rps" -v r="$v_req" -v d="$v_dur" -v dp="$d_p50" -v vp="$v_p50" \
            -v c0="$cpu_before" -v c1="$cpu_after" -v hz="$clk_tck" 'BEGIN {
                rps = r / (d / 1e6)
                printf "%.0f %.2f %d %.1f\n", rps, (dr > 0 ? rps / dr : 0), vp - dp,
                    (r > 0 ? (c1 - c0) / hz * 1e6 / r : 0)
            }')"
        note "sluice: $v_rps req/s, p50 ${v_p50} µs, p99 ${v_p99} µs, errors $v_err; ratio $ratio, +$added µs p50, $cpu_us µs CPU/req, RSS $load_rss MiB"
        rows+=("| $label | $conns | $d_rps | $v_rps | $ratio | $d_p50 | $v_p50 | $added | $d_p99 | $v_p99 | $cpu_us | $load_rss | $((d_err + v_err)) |")
    done
done

peak_rss="-"
[[ -z "$sluice_pid" ]] || peak_rss="$(proc_status_mib "$sluice_pid" VmHWM)"

report="$workdir/report.md"
{
    echo "## Sluice benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "- machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "- wrk: 1 thread, ${seconds}s per run after ${warmup}s warm-up; pinning: $pinning"
    echo "- sluice: release build, API-key auth, JSON access log to a file; upstream: --threads 1 --no-record"
    echo
    echo "| case | conns | direct RPS | via RPS | via/direct | direct p50 µs | via p50 µs | added p50 µs | direct p99 µs | via p99 µs | sluice CPU µs/req | sluice RSS under load MiB | errors |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Sluice RSS idle (before load): $idle_rss MiB; peak (VmHWM): $peak_rss MiB."
    echo "errors: wrk's connect, read, write, timeout and non-2xx counts, both halves."
} >"$report"

mkdir -p "$SLUICE_CACHE/bench"
cp "$report" "$SLUICE_CACHE/bench/last.md"
cp "$report" "$SLUICE_CACHE/bench/$(date -u +%Y%m%d-%H%M%S).md"
step "result (saved to $SLUICE_CACHE/bench/last.md)"
cat "$report"

if [[ "${BENCH_LIMITS:-1}" != 0 ]] && ((!direct_only)); then
    # This run's servers stop first: the next benchmark has CPU 0 to itself.
    stop_scratch
    pids=()
    step "Budget admission benchmark (e2e/bench/limits.sh; BENCH_LIMITS=0 skips it)"
    e2e/bench/limits.sh
fi

if [[ "${BENCH_TRANSLATE:-1}" != 0 ]] && ((!direct_only)); then
    # This run's servers stop first: the next benchmark has CPU 0 to itself.
    stop_scratch
    pids=()
    step "Translation overhead benchmark (e2e/bench/translate.sh; BENCH_TRANSLATE=0 skips it)"
    e2e/bench/translate.sh
fi

if [[ "${BENCH_MCP:-1}" != 0 ]] && ((!direct_only)); then
    # This run's servers stop first: the MCP benchmark has CPU 0 to itself.
    stop_scratch
    pids=()
    step "MCP benchmark (e2e/bench/mcp.sh; BENCH_MCP=0 skips it)"
    e2e/bench/mcp.sh
fi
