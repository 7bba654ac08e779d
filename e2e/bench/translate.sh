#!/usr/bin/env bash
# Translation overhead benchmark: what Sluice costs when it translates
# between schemas, next to what it costs when it passes one through. The
# same OpenAI-schema load (e2e/bench/chat.lua, as in run.sh) goes through
# two Sluice processes in front of one test upstream:
#   - passthrough: route `bench-model` -> `provider: OpenAICompatible`, the
#     upstream's OpenAI face (`/v1/chat/completions`), as in run.sh;
#   - translated:  route `bench-model` -> `provider: Anthropic`, the
#     upstream's Anthropic face (`/v1/messages`, which checks x-api-key and
#     anthropic-version): Sluice turns the chat request into a Messages
#     request and the message (or the event stream) back into a chat
#     completion (or chunks).
# Each has its own direct baseline, the same request sent straight to the
# face it uses: chat.lua to the OpenAI face, e2e/bench/messages.lua (the
# Messages request Sluice sends) to the Anthropic face.
#
# Usage: e2e/bench/translate.sh
#
# What it does:
#   - installs wrk from Debian if missing; builds release binaries (copied to
#     the scratch dir, so a concurrent build in the shared target dir cannot
#     swap them mid-run);
#   - starts `sluice-test-upstream --threads 1 --no-record` and two
#     `sluice run -f` with run.sh's bench config (API-key auth, JSON access
#     log to a file, admin listener), the backend's provider the only
#     difference;
#   - checks one request each way (200, a chat completion through both
#     gateways, and the streamed chunk count);
#   - for each round (BENCH_ROUNDS), case {chat, streaming chat with
#     x-mock-chunks: 20} and connection count: a warm-up and a measured wrk
#     run for each of direct OpenAI, passthrough, direct Anthropic,
#     translated, in turn, so drift hits all alike;
#   - prints a markdown table (also saved to ~/.cache/sluice/bench/translate.md
#     and a timestamped copy): RPS, p50, p99, the p50 Sluice adds over its
#     direct baseline, Sluice's CPU µs per request (utime+stime from
#     /proc/PID/stat over the run, divided by the requests wrk completed, as
#     in run.sh), the translated/passthrough CPU ratio, and the upstream's own
#     CPU µs per request. With several rounds, each figure is the median.
#
# CPU pinning as in run.sh: wrk on CPU 1; the upstream and both Sluice
# processes (one idle at any time) on CPU 0. BENCH_PIN=0 runs unpinned; with
# fewer than 2 cores nothing is pinned.
#
# Environment:
#   BENCH_SECONDS      seconds per measured run (default 10)
#   BENCH_WARMUP       seconds of warm-up before each run (default 2)
#   BENCH_CONNECTIONS  connection counts (default "1 32")
#   BENCH_ROUNDS       rounds over the four setups; medians reported (default 1)
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
chat_lua="$(pwd)/e2e/bench/chat.lua"
messages_lua="$(pwd)/e2e/bench/messages.lua"
clk_tck="$(getconf CLK_TCK)"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
setups=(direct passthrough direct-anthropic translated)
gateways=(passthrough translated)

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
cargo build --release --bins -p sluice -p sluice-test-upstream

start_scratch sluice-bench-translate
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
direct_url="http://127.0.0.1:$upstream_port"
note "upstream: $direct_url (pid $upstream_pid)"

api_key="sk-bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

# run.sh's bench config (through lib.sh), priced alike; the translated one
# names the Anthropic provider, nothing else differs.
write_config() { # GATEWAY FILE
    # shellcheck disable=SC2016 # ${UPSTREAM_PORT} is for sluice to expand
    bench_gateway_config bench 'http://127.0.0.1:${UPSTREAM_PORT}' '{input: "2.50", output: "10.00"}' >"$2"
    if [[ "$1" == translated ]]; then
        sed -i 's/^  provider: OpenAICompatible$/  provider: Anthropic/' "$2"
        grep -q '^  provider: Anthropic$' "$2" || die "could not set the Anthropic provider in $2"
    fi
}

declare -A pid_of url_of lua_of
url_of[direct]="$direct_url" url_of[direct-anthropic]="$direct_url"
lua_of[direct]="$chat_lua" lua_of[passthrough]="$chat_lua"
lua_of[direct-anthropic]="$messages_lua" lua_of[translated]="$chat_lua"
for gw in "${gateways[@]}"; do
    port="$(free_port)"
    admin="$(free_port)"
    write_config "$gw" "$workdir/$gw.yaml"
    SLUICE_PORT="$port" SLUICE_ADMIN_PORT="$admin" UPSTREAM_PORT="$upstream_port" \
        BENCH_API_KEY="$api_key" UPSTREAM_KEY="sk-upstream-bench" BENCH_ACCESS_LOG="$workdir/access-$gw.log" \
        "${server_pin[@]}" "$sluice_bin" run -f "$workdir/$gw.yaml" \
        >"$workdir/sluice-$gw.stdout" 2>"$workdir/sluice-$gw.stderr" &
    pid=$!
    pids+=("$pid")
    wait_http_ok "http://127.0.0.1:$admin/readyz" "$pid" 30 \
        || { tail -n 30 "$workdir/sluice-$gw.stderr" >&2; die "sluice ($gw) did not become ready"; }
    pid_of[$gw]=$pid
    url_of[$gw]="http://127.0.0.1:$port"
    note "sluice ($gw): ${url_of[$gw]} (pid $pid, admin :$admin)"
done

# One request each way, non-streaming and streaming: 200, the right shape.
preflight() { # SETUP STREAM
    local body path=/v1/chat/completions status headers=(-H 'content-type: application/json' -H 'x-mock-chunks: 20')
    body='{"model":"bench-model","messages":[{"role":"user","content":"Say hello"}],"stream":'"$2"'}'
    if [[ "$1" == direct-anthropic ]]; then
        path=/v1/messages
        headers+=(-H 'x-api-key: sk-upstream-bench' -H 'anthropic-version: 2023-06-01')
        body='{"model":"bench-model","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"Say hello"}]}],"stream":'"$2"'}'
    else
        headers+=(-H "authorization: Bearer $api_key")
    fi
    status="$(curl -sS -N -o "$workdir/preflight.out" -w '%{http_code}' --max-time 10 \
        "${headers[@]}" -d "$body" "${url_of[$1]}$path")" || status="curl failed"
    if [[ "$status" != 200 ]]; then
        cat "$workdir/preflight.out" >&2 2>/dev/null || true
        [[ -z "${pid_of[$1]:-}" ]] || tail -n 30 "$workdir/sluice-$1.stderr" >&2
        die "preflight ($1, stream $2) answered $status"
    fi
    local want got
    case "$1/$2" in
        direct-anthropic/false) want='"type":"message"' ;;
        direct-anthropic/true) want='content_block_delta' ;;
        */false) want='"object":"chat.completion"' ;;
        */true) want='"object":"chat.completion.chunk"' ;;
    esac
    grep -q "$want" "$workdir/preflight.out" || { cat "$workdir/preflight.out" >&2; die "preflight ($1, stream $2): no $want"; }
    got="$(grep -o 'tok[0-9]* ' "$workdir/preflight.out" | wc -l)"
    [[ "$got" == 20 ]] || { cat "$workdir/preflight.out" >&2; die "preflight ($1, stream $2): $got content chunks, not 20"; }
}
for setup in "${setups[@]}"; do
    preflight "$setup" false
    preflight "$setup" true
done


export BENCH_API_KEY="$api_key" BENCH_MODEL="bench-model"
declare -A rps_of p50_of p99_of cpu_of up_cpu_of err_of
for round in $(seq "$rounds"); do
    for bench_case in chat stream; do
        if [[ "$bench_case" == stream ]]; then
            export BENCH_STREAM=1 BENCH_CHUNKS=20
        else
            export BENCH_STREAM=0 BENCH_CHUNKS=5
        fi
        for conns in "${connections[@]}"; do
            for setup in "${setups[@]}"; do
                step "round $round/$rounds, $bench_case, $conns connection(s), $setup"
                pid="${pid_of[$setup]:-}"
                bench_wrk "${url_of[$setup]}" "${lua_of[$setup]}" "$conns" "$warmup" >/dev/null \
                    || die "wrk ($setup) failed"
                cpu_before=0
                [[ -z "$pid" ]] || cpu_before="$(cpu_ticks "$pid")"
                up_before="$(cpu_ticks "$upstream_pid")"
                result="$(bench_wrk "${url_of[$setup]}" "${lua_of[$setup]}" "$conns" "$seconds")" \
                    || die "wrk ($setup) failed"
                cpu_after=0
                [[ -z "$pid" ]] || cpu_after="$(cpu_ticks "$pid")"
                up_after="$(cpu_ticks "$upstream_pid")"
                read -r req dur p50 p99 err <<<"$result"
                read -r rps cpu_us up_us <<<"$(awk -v r="$req" -v d="$dur" -v c0="$cpu_before" -v c1="$cpu_after" \
                    -v u0="$up_before" -v u1="$up_after" -v hz="$clk_tck" 'BEGIN {
                        printf "%.0f %.1f %.1f\n", r / (d / 1e6), (r > 0 ? (c1 - c0) / hz * 1e6 / r : 0),
                            (r > 0 ? (u1 - u0) / hz * 1e6 / r : 0)
                    }')"
                note "$rps req/s, p50 $p50 µs, p99 $p99 µs, sluice $cpu_us µs CPU/req, upstream $up_us, errors $err"
                k="$bench_case/$conns/$setup"
                rps_of[$k]+="$rps " p50_of[$k]+="$p50 " p99_of[$k]+="$p99 "
                cpu_of[$k]+="$cpu_us " up_cpu_of[$k]+="$up_us " err_of[$k]+="$err "
            done
        done
    done
done

med() { # ARRAY-NAME KEY
    local -n m="$1"
    local -a a
    read -r -a a <<<"${m[$2]}"
    median "${a[@]}"
}

rows=()
for bench_case in chat stream; do
    label="chat"
    [[ "$bench_case" == chat ]] || label="streaming chat, 20 chunks"
    for conns in "${connections[@]}"; do
        base="$bench_case/$conns"
        pass_cpu="$(med cpu_of "$base/passthrough")"
        for setup in "${setups[@]}"; do
            k="$base/$setup"
            rps="$(med rps_of "$k")" p50="$(med p50_of "$k")" p99="$(med p99_of "$k")"
            cpu="$(med cpu_of "$k")" up="$(med up_cpu_of "$k")"
            read -r -a a <<<"${err_of[$k]}"
            errs="$(printf '%s\n' "${a[@]}" | awk '{ s += $1 } END { print s }')"
            case "$setup" in
                direct) name="direct, OpenAI face" added="-" cpu_cell="-" ratio="-" ;;
                direct-anthropic) name="direct, Anthropic face" added="-" cpu_cell="-" ratio="-" ;;
                passthrough | translated)
                    if [[ "$setup" == passthrough ]]; then
                        name="Sluice passthrough (OpenAI-compatible)" dp50="$(med p50_of "$base/direct")"
                    else
                        name="Sluice translated (Anthropic)" dp50="$(med p50_of "$base/direct-anthropic")"
                    fi
                    read -r added ratio <<<"$(awk -v p="$p50" -v d="$dp50" -v c="$cpu" -v c0="$pass_cpu" \
                        'BEGIN { printf "%+d %.2f\n", p - d, (c0 > 0 ? c / c0 : 0) }')"
                    cpu_cell="$(printf '%.1f' "$cpu")"
                    ;;
            esac
            rows+=("| $label | $conns | $name | $(printf '%.0f' "$rps") | $(printf '%.0f' "$p50") | $added | $(printf '%.0f' "$p99") | $cpu_cell | $ratio | $(printf '%.1f' "$up") | $errs |")
        done
    done
done

report="$workdir/translate-report.md"
{
    echo "## Translation overhead (OpenAI client, Anthropic backend), $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "- machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); load average before the run: $load_before"
    echo "- wrk: 1 thread, ${seconds}s per run after ${warmup}s warm-up, $rounds round(s) (medians); pinning: $pinning"
    echo "- sluice: release build, API-key auth, JSON access log to a file, backend priced; upstream: --threads 1 --no-record"
    echo
    echo "| case | conns | setup | RPS | p50 µs | added p50 µs | p99 µs | sluice CPU µs/req | CPU vs passthrough | upstream CPU µs/req | errors |"
    echo "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${rows[@]}"
    echo
    echo "added p50: Sluice's p50 minus the p50 of the same request sent straight to the face it uses (passthrough: the OpenAI face; translated: the Anthropic face, e2e/bench/messages.lua)."
    echo "errors: wrk's connect, read, write, timeout and non-2xx counts."
} >"$report"

mkdir -p "$SLUICE_CACHE/bench"
cp "$report" "$SLUICE_CACHE/bench/translate.md"
cp "$report" "$SLUICE_CACHE/bench/translate-$(date -u +%Y%m%d-%H%M%S).md"
step "result (saved to $SLUICE_CACHE/bench/translate.md)"
cat "$report"
