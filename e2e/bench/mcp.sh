#!/usr/bin/env bash
# Sluice's MCP benchmark: MCP requests sent to the reference MCP server
# (@modelcontextprotocol/server-everything) directly and through Sluice, and
# the difference between the two; and the built-in demo MCP server alone.
#
# Usage: e2e/bench/mcp.sh
#
# What it does:
#   - installs wrk from Debian if missing, the pinned MCP node modules
#     (e2e/mcp, `npm ci` into ~/.cache/sluice/node-mcp-<hash>), builds the
#     release `sluice`;
#   - starts server-everything (`node .../dist/index.js streamableHttp`) and
#     `sluice run -f` a bench config: API-key auth on, JSON access log to a
#     file, the admin listener on, one MCPRoute `/mcp` with the one backend
#     server-everything, `prefixMode: Never` (tool names unchanged);
#   - 1. tools/call `echo`: opens one MCP session each way (initialize,
#     notifications/initialized, one checked call: mcp_bench.py open), then
#     for each connection count a short warm-up and BENCH_SECONDS of wrk
#     replaying the same tools/call with that Mcp-Session-Id (mcp.lua),
#     direct then through Sluice; every answer must be 200 with a JSON-RPC
#     result, else it counts as an error;
#   - 2. session set-up: BENCH_MCP_SESSIONS times, one after another and
#     alternating direct and through Sluice, initialize then
#     notifications/initialized (timed), then DELETE (untimed)
#     (mcp_bench.py sessions);
#   - 3. the built-in demo MCP server: `sluice run` with the default config
#     (no -f: the demo MCPRoute at /mcp, in process, anonymous tenant), wrk
#     replaying tools/call `search-flight` on one session;
#   - prints markdown tables (also saved to ~/.cache/sluice/bench/mcp.md):
#     RPS, p50 and p99 latency, the ratio via/direct, the p50 latency Sluice
#     adds, Sluice's CPU time per request or per session (utime+stime from
#     /proc/PID/stat over the run, divided by what was completed) and its RSS.
#
# CPU pinning, as in run.sh: the load generators (wrk, mcp_bench.py) run on
# CPU 1; server-everything and Sluice share CPU 0, in both halves. Sluice's
# runtime sees one CPU. BENCH_PIN=0 runs unpinned; with fewer than 2 cores
# nothing is pinned.
#
# Environment:
#   BENCH_SECONDS           seconds per measured wrk run (default 10)
#   BENCH_WARMUP            seconds of warm-up before each wrk run (default 2)
#   BENCH_MCP_CONNECTIONS   connection counts (default "1 16")
#   BENCH_MCP_SESSIONS      timed session set-ups each way (default 300)
#   BENCH_PIN               1 (default) to pin with taskset, 0 not to
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
read -r -a connections <<<"${BENCH_MCP_CONNECTIONS:-1 16}"
session_count="${BENCH_MCP_SESSIONS:-300}"
lua="$(pwd)/e2e/bench/mcp.lua"
client_py="$(pwd)/e2e/bench/mcp_bench.py"
clk_tck="$(getconf CLK_TCK)"

server_pin=() client_pin=() pinning="none"
if [[ "${BENCH_PIN:-1}" == 1 ]] && (($(nproc) >= 2)) && command -v taskset >/dev/null; then
    server_pin=(taskset -c 0)
    client_pin=(taskset -c 1)
    pinning="wrk and mcp_bench.py on CPU 1; server-everything and sluice on CPU 0"
fi

# The JSON-RPC requests replayed by wrk.
echo_call='{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"Say hello"}}}'
flight_call='{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"search-flight","arguments":{"origin":"New York","destination":"Los Angeles","date":"31/12/2026"}}}'

step "tools"
ensure_apt_command wrk || die "could not install wrk"
note "$(wrk --version 2>&1 | head -1)"
command -v node >/dev/null || die "node not found (server-everything needs Node 20+)"
node_modules="$(ensure_mcp_node_modules)" || die "could not install e2e/mcp's node modules"
everything_js="$node_modules/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
[[ -f "$everything_js" ]] || die "no server-everything at $everything_js"
everything_version="$(node -p "require('$node_modules/node_modules/@modelcontextprotocol/server-everything/package.json').version")"
note "node $(node --version), server-everything $everything_version, $(python3 --version)"

step "build (release)"
export_cargo_target_dir
cargo build --release --bins -p sluice
sluice_bin="$CARGO_TARGET_DIR/release/sluice"

start_scratch sluice-bench-mcp

# Waits until 127.0.0.1:PORT accepts a connection; fails when PID exits first.
wait_accepting() { # PORT PID TIMEOUT
    local deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || { echo "process $2 exited before it listened on :$1" >&2; return 1; }
        sleep 0.05
    done
    echo "nothing accepts connections on :$1 after $3s" >&2
    return 1
}

proc_status_mib() { # PID FIELD (VmRSS | VmHWM)
    awk -v f="$2:" '$1 == f { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# Starts sluice on CPU 0 with ARGS; sets sluice_pid, sluice_url (…/mcp),
# sluice_log (its stderr). Env: whatever the config needs.
start_sluice() { # NAME ARGS...
    local name=$1 port admin
    shift
    port="$(free_port)"
    admin="$(free_port)"
    sluice_log="$workdir/sluice-$name.stderr"
    "${server_pin[@]}" "$sluice_bin" run --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" "$@" \
        >"$workdir/sluice-$name.stdout" 2>"$sluice_log" &
    sluice_pid=$!
    pids+=("$sluice_pid")
    wait_http_ok "http://127.0.0.1:$admin/readyz" "$sluice_pid" 30 \
        || { tail -n 30 "$sluice_log" >&2; die "sluice ($name) did not become ready"; }
    sluice_url="http://127.0.0.1:$port/mcp"
    note "sluice ($name): $sluice_url (pid $sluice_pid, admin :$admin)"
}

# Opens an MCP session at URL and checks one CALL on it; prints the session id.
open_session() { # URL CALL [KEY]
    local out
    out="$("${client_pin[@]}" python3 "$client_py" open "$1" --call "$2" ${3:+--key "$3"})" \
        || { [[ -z "${sluice_log:-}" ]] || tail -n 20 "$sluice_log" >&2; die "opening an MCP session at $1 failed"; }
    head -n1 <<<"$out"
}

# One checked CALL on an open session (after a run: the session still works).
check_session() { # URL SESSION CALL [KEY]
    "${client_pin[@]}" python3 "$client_py" check "$1" --session "$2" --call "$3" ${4:+--key "$4"} \
        || { [[ -z "${sluice_log:-}" ]] || tail -n 20 "$sluice_log" >&2; die "the MCP session at $1 stopped working"; }
}

# Runs wrk against URL on SESSION; prints "requests duration_us p50_us p99_us errors"
# (errors: connect, read, write, timeout, non-2xx, and answers without a
# JSON-RPC result).
run_wrk() { # URL SESSION BODY KEY CONNECTIONS SECONDS
    local out
    out="$(MCP_SESSION="$2" MCP_BODY="$3" MCP_API_KEY="$4" \
        "${client_pin[@]}" wrk -t1 -c"$5" -d"$6"s --timeout 10s -s "$lua" "$1")" \
        || { echo "$out" >&2; return 1; }
    awk '/^BENCH_RESULT/ {
            for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            print v["requests"], v["duration_us"], v["p50_us"], v["p99_us"],
                v["err_connect"] + v["err_read"] + v["err_write"] + v["err_status"] + v["err_timeout"] + v["bad"]
        }' <<<"$out" | grep . || { echo "$out" >&2; return 1; }
}

# A measured wrk run through sluice: sets v_req v_dur v_p50 v_p99 v_err,
# cpu_us (sluice CPU per request) and load_rss (VmRSS halfway).
measure_via() { # URL SESSION BODY KEY CONNECTIONS
    local cpu_before cpu_after wrk_pid
    run_wrk "$1" "$2" "$3" "$4" "$5" "$warmup" >/dev/null || die "wrk through sluice failed"
    cpu_before="$(cpu_ticks "$sluice_pid")"
    run_wrk "$1" "$2" "$3" "$4" "$5" "$seconds" >"$workdir/via.result" &
    wrk_pid=$!
    sleep "$(awk -v s="$seconds" 'BEGIN { print s / 2 }')"
    load_rss="$(proc_status_mib "$sluice_pid" VmRSS)"
    wait "$wrk_pid" || die "wrk through sluice failed"
    cpu_after="$(cpu_ticks "$sluice_pid")"
    read -r v_req v_dur v_p50 v_p99 v_err <"$workdir/via.result"
    read -r v_rps cpu_us <<<"$(awk -v r="$v_req" -v d="$v_dur" -v c0="$cpu_before" -v c1="$cpu_after" \
        -v hz="$clk_tck" 'BEGIN {
            printf "%.0f %.1f\n", r / (d / 1e6), (r > 0 ? (c1 - c0) / hz * 1e6 / r : 0)
        }')"
}

step "start server-everything and sluice"
everything_port="$(free_port)"
# server-everything logs a line per request on stdout; it goes to a file.
(cd "$workdir" && PORT="$everything_port" exec "${server_pin[@]}" node "$everything_js" streamableHttp) \
    >"$workdir/everything.out" 2>&1 &
everything_pid=$!
pids+=("$everything_pid")
wait_accepting "$everything_port" "$everything_pid" 30 \
    || { cat "$workdir/everything.out" >&2; die "server-everything did not start"; }
direct_url="http://127.0.0.1:$everything_port/mcp"
note "server-everything: $direct_url (pid $everything_pid)"

api_key="sk-bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
cat >"$workdir/mcp.yaml" <<'EOF'
apiVersion: sluice.dev/v1alpha1
kind: AIGateway
metadata: {name: bench}
spec:
  auth:
    apiKeys:
      - {name: bench, tenant: bench, valueFrom: {env: BENCH_API_KEY}}
  llm: {routes: []}
  telemetry:
    accessLog: {to: "${BENCH_ACCESS_LOG}"}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: everything}
spec:
  provider: MCP
  endpoint: http://127.0.0.1:${EVERYTHING_PORT}/mcp
---
apiVersion: sluice.dev/v1alpha1
kind: MCPRoute
metadata: {name: bench}
spec:
  path: /mcp
  prefixMode: Never
  backends: [{backend: everything}]
EOF
BENCH_API_KEY="$api_key" BENCH_ACCESS_LOG="$workdir/access.log" EVERYTHING_PORT="$everything_port" \
    start_sluice everything -f "$workdir/mcp.yaml"
via_url="$sluice_url"
idle_rss="$(proc_status_mib "$sluice_pid" VmRSS)"

# One session each way, checked with one call: a broken setup fails here.
direct_session="$(open_session "$direct_url" "$echo_call")"
via_session="$(open_session "$via_url" "$echo_call" "$api_key")"

call_rows=()
for conns in "${connections[@]}"; do
    step "tools/call echo, $conns connection(s)"
    run_wrk "$direct_url" "$direct_session" "$echo_call" "" "$conns" "$warmup" >/dev/null \
        || die "wrk against server-everything failed"
    result="$(run_wrk "$direct_url" "$direct_session" "$echo_call" "" "$conns" "$seconds")" \
        || die "wrk against server-everything failed"
    read -r d_req d_dur d_p50 d_p99 d_err <<<"$result"
    d_rps="$(awk -v r="$d_req" -v d="$d_dur" 'BEGIN { printf "%.0f", r / (d / 1e6) }')"
    check_session "$direct_url" "$direct_session" "$echo_call"
    note "direct: $d_rps req/s, p50 ${d_p50} µs, p99 ${d_p99} µs, errors $d_err"

    measure_via "$via_url" "$via_session" "$echo_call" "$api_key" "$conns"
    check_session "$via_url" "$via_session" "$echo_call" "$api_key"
    read -r ratio added <<<"$(awk -v dr="$d_rps" -v vr="$v_rps" -v dp="$d_p50" -v vp="$v_p50" \
        'BEGIN { printf "%.2f %d\n", (dr > 0 ? vr / dr : 0), vp - dp }')"
    note "sluice: $v_rps req/s, p50 ${v_p50} µs, p99 ${v_p99} µs, errors $v_err; ratio $ratio, +$added µs p50, $cpu_us µs CPU/req, RSS $load_rss MiB"
    call_rows+=("| tools/call echo | $conns | $d_rps | $v_rps | $ratio | $d_p50 | $v_p50 | $added | $d_p99 | $v_p99 | $cpu_us | $load_rss | $((d_err + v_err)) |")
done

step "session set-up, $session_count each way"
cpu_before="$(cpu_ticks "$sluice_pid")"
out="$("${client_pin[@]}" python3 "$client_py" sessions "$direct_url" "$via_url" \
    --count "$session_count" --key "$api_key")" \
    || { tail -n 20 "$sluice_log" >&2; die "the session set-up run failed"; }
cpu_after="$(cpu_ticks "$sluice_pid")"
session_fields() { # TARGET -> "init_p50 init_p99 pair_p50 pair_p99"
    awk -v t="target=$1" '$1 == "BENCH_SESSIONS" && $2 == t {
            for (i = 3; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            print v["init_p50_us"], v["init_p99_us"], v["pair_p50_us"], v["pair_p99_us"]
        }' <<<"$out"
}
read -r di_p50 di_p99 dp_p50 dp_p99 <<<"$(session_fields 1)"
read -r vi_p50 vi_p99 vp_p50 vp_p99 <<<"$(session_fields 2)"
[[ -n "$dp_p99" && -n "$vp_p99" ]] || { echo "$out" >&2; die "no result from mcp_bench.py sessions"; }
session_cpu_us="$(awk -v n="$session_count" -v c0="$cpu_before" -v c1="$cpu_after" -v hz="$clk_tck" \
    'BEGIN { printf "%.0f", (c1 - c0) / hz * 1e6 / n }')"
note "initialize: direct p50 $di_p50 µs, via p50 $vi_p50 µs; initialize + initialized: direct p50 $dp_p50 µs, via p50 $vp_p50 µs; sluice $session_cpu_us µs CPU/session"
session_rows=(
    "| initialize | $di_p50 | $vi_p50 | $((vi_p50 - di_p50)) | $di_p99 | $vi_p99 |"
    "| initialize + notifications/initialized | $dp_p50 | $vp_p50 | $((vp_p50 - dp_p50)) | $dp_p99 | $vp_p99 |"
)
# Through Sluice, initialize includes the upstream's initialize and its
# notifications/initialized: compare it with the direct pair.
own_p50=$((vi_p50 - dp_p50))
peak_rss="$(proc_status_mib "$sluice_pid" VmHWM)"

step "stop server-everything and sluice"
stop_pid "$sluice_pid"
stop_pid "$everything_pid"

step "the built-in demo MCP server (sluice run, default config)"
# An empty OPENAI_API_KEY: the default config then has no OpenAI route.
OPENAI_API_KEY="" start_sluice demo
demo_session="$(open_session "$sluice_url" "$flight_call")"
demo_rows=()
for conns in "${connections[@]}"; do
    measure_via "$sluice_url" "$demo_session" "$flight_call" "" "$conns"
    check_session "$sluice_url" "$demo_session" "$flight_call"
    note "$conns connection(s): $v_rps req/s, p50 ${v_p50} µs, p99 ${v_p99} µs, errors $v_err, $cpu_us µs CPU/req, RSS $load_rss MiB"
    demo_rows+=("| tools/call search-flight (demo, in process) | $conns | $v_rps | $v_p50 | $v_p99 | $cpu_us | $load_rss | $v_err |")
done

report="$workdir/report.md"
{
    echo "## Sluice MCP benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "- machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "- wrk: 1 thread, ${seconds}s per run after ${warmup}s warm-up; pinning: $pinning"
    echo "- sluice: release build, API-key auth, JSON access log to a file, one MCPRoute (prefixMode Never) -> server-everything $everything_version (node $(node --version))"
    echo
    echo "tools/call \`echo\` on one MCP session, direct to server-everything and through Sluice:"
    echo
    echo "| case | conns | direct RPS | via RPS | via/direct | direct p50 µs | via p50 µs | added p50 µs | direct p99 µs | via p99 µs | sluice CPU µs/req | sluice RSS under load MiB | errors |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${call_rows[@]}"
    echo
    echo "Session set-up, $session_count times each way, one at a time (then DELETE, untimed):"
    echo
    echo "| round trip | direct p50 µs | via p50 µs | added p50 µs | direct p99 µs | via p99 µs |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${session_rows[@]}"
    echo
    echo "Through Sluice, initialize includes the upstream's initialize and notifications/initialized"
    echo "(the client's own notifications/initialized is then answered by Sluice): via initialize p50"
    echo "minus direct initialize + notifications/initialized p50 = $own_p50 µs."
    echo "Sluice CPU per session (initialize, notifications/initialized, DELETE): $session_cpu_us µs."
    echo
    echo "The built-in demo MCP server (\`sluice run\`, default config, anonymous tenant, access log to a file):"
    echo
    echo "| case | conns | RPS | p50 µs | p99 µs | sluice CPU µs/req | sluice RSS under load MiB | errors |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${demo_rows[@]}"
    echo
    echo "Sluice (server-everything config) RSS idle: $idle_rss MiB; peak (VmHWM): $peak_rss MiB."
    echo "errors: wrk's connect, read, write, timeout and non-2xx counts, and answers without a JSON-RPC result or with a tool error (isError), both halves."
} >"$report"

mkdir -p "$SLUICE_CACHE/bench"
cp "$report" "$SLUICE_CACHE/bench/mcp.md"
cp "$report" "$SLUICE_CACHE/bench/mcp-$(date -u +%Y%m%d-%H%M%S).md"
step "result (saved to $SLUICE_CACHE/bench/mcp.md)"
cat "$report"
