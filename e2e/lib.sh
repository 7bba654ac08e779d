# shellcheck shell=bash
# Shared helpers for Sluice's test and benchmark scripts (e2e/test-all.sh,
# e2e/bench/run.sh). Source it; it defines functions and sets no shell options.
#
# Everything the scripts build or install lives under $SLUICE_CACHE
# (default ~/.cache/sluice), keyed by the version of what built it, so a fresh
# clone reuses it and a toolchain or requirements change gets a fresh copy.

SLUICE_CACHE="${SLUICE_CACHE:-$HOME/.cache/sluice}"

# The repository root (the parent of e2e/).
repo_root() (
    cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd
)

# A step header, so CI logs read as a list of steps.
step() {
    if [[ -t 1 ]]; then
        printf '\n\033[1m==> %s\033[0m\n' "$*"
    else
        printf '\n==> %s\n' "$*"
    fi
}

note() {
    printf '    %s\n' "$*"
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Cargo's target dir lives outside the clone, keyed by the toolchain version,
# so every clone on the machine shares one build cache.
export_cargo_target_dir() {
    local rustc_version
    rustc_version="$(rustc -V | awk '{print $2}')" || die "rustc not found"
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SLUICE_CACHE/target-$rustc_version}"
}

# Prints the path of a virtualenv with e2e/python/requirements.txt installed
# (or the requirements file given, e.g. e2e/python/requirements-mcp2.txt),
# creating it on first use. The venv is keyed by the Python version and a hash
# of the requirements file; a marker file says the install finished, so an
# interrupted install is redone rather than reused.
ensure_venv() { # [REQUIREMENTS]
    local root requirements py_version req_hash venv
    root="$(repo_root)" || return 1
    requirements="${1:-$root/e2e/python/requirements.txt}"
    py_version="$(python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')" || return 1
    req_hash="$(sha256sum "$requirements" | cut -c1-12)" || return 1
    venv="$SLUICE_CACHE/venv-py$py_version-$req_hash"
    if [[ ! -f "$venv/.installed" ]]; then
        rm -rf "$venv"
        mkdir -p "$SLUICE_CACHE"
        echo "creating $venv" >&2
        python3 -m venv "$venv" >&2 || return 1
        "$venv/bin/pip" install --quiet --no-input --disable-pip-version-check \
            -r "$requirements" >&2 || return 1
        touch "$venv/.installed"
    fi
    echo "$venv"
}

# Prints the path of a folder with e2e/mcp's node modules installed (the MCP
# peers of the e2e tests, e.g. @modelcontextprotocol/server-everything),
# installing them with `npm ci` on first use. The folder is
# $SLUICE_CACHE/node-mcp-<hash of e2e/mcp/package-lock.json>, outside the
# clone; a marker file says the install finished, so an interrupted install is
# redone rather than reused. Needs node and npm (Node 20 or later).
ensure_mcp_node_modules() {
    local root lock lock_hash dir
    root="$(repo_root)" || return 1
    lock="$root/e2e/mcp/package-lock.json"
    command -v npm >/dev/null 2>&1 || { echo "npm not found (the MCP e2e tests need Node 20+)" >&2; return 1; }
    lock_hash="$(sha256sum "$lock" | cut -c1-12)" || return 1
    dir="$SLUICE_CACHE/node-mcp-$lock_hash"
    if [[ ! -f "$dir/.installed" ]]; then
        rm -rf "$dir"
        mkdir -p "$dir"
        echo "installing $dir (npm ci)" >&2
        cp "$root/e2e/mcp/package.json" "$lock" "$dir/" || return 1
        (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) >&2 || return 1
        touch "$dir/.installed"
    fi
    echo "$dir"
}

# Installs a Debian package when the command it provides is missing (through
# sudo when not root).
ensure_apt_command() {
    local command=$1 package=${2:-$1} sudo=()
    command -v "$command" >/dev/null 2>&1 && return 0
    ((EUID == 0)) || sudo=(sudo --preserve-env=DEBIAN_FRONTEND)
    echo "installing $package (apt)" >&2
    export DEBIAN_FRONTEND=noninteractive
    ${sudo[@]+"${sudo[@]}"} apt-get install -y -q "$package" >&2 \
        || { ${sudo[@]+"${sudo[@]}"} apt-get update -q >&2 && ${sudo[@]+"${sudo[@]}"} apt-get install -y -q "$package" >&2; } \
        || return 1
    command -v "$command" >/dev/null 2>&1
}

# Makes sure redis-server and redis-cli are on PATH (Debian's redis-server,
# which brings redis-tools), for the Redis counter store's tests. The tests
# start their own servers on free ports; a system service the package may
# start is not used.
ensure_redis() {
    ensure_apt_command redis-server && ensure_apt_command redis-cli redis-tools
}

# Waits until FILE has a line "listening on HOST:PORT" and prints PORT.
# Fails when PID exits first or after TIMEOUT seconds.
wait_listening_port() {
    local file=$1 pid=$2 timeout=${3:-30} deadline line
    deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        line="$(grep -m1 -Eo 'listening on [^ ]+:[0-9]+' "$file" 2>/dev/null || true)"
        if [[ -n "$line" ]]; then
            echo "${line##*:}"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { echo "process $pid exited before it listened" >&2; return 1; }
        sleep 0.05
    done
    echo "no 'listening on' line in $file after ${timeout}s" >&2
    return 1
}

# Waits until URL answers 200. Fails when PID exits first or after TIMEOUT s.
wait_http_ok() {
    local url=$1 pid=$2 timeout=${3:-30} deadline
    deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { echo "process $pid exited before $url was ready" >&2; return 1; }
        sleep 0.1
    done
    echo "$url not ready after ${timeout}s" >&2
    return 1
}

# A free TCP port on 127.0.0.1 (bound then released: a small race, fine here).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Stops a process we started: SIGTERM, then SIGKILL after 5 s.
# Makes $workdir, a scratch folder for one script run, and on exit stops
# every process in $pids (scripts append what they start) and removes it.
# The priced bench gateway of the budget benchmarks (limits.sh,
# overshoot.sh), on stdout: key `bench` (env BENCH_API_KEY) of tenant bench,
# route bench-model -> the upstream at ENDPOINT, access log to
# $BENCH_ACCESS_LOG, listen/admin from $SLUICE_PORT/$SLUICE_ADMIN_PORT.
# STATE_LINE is a `  state: {...}` line or empty; PRICE is the bench-model
# price (`{input: "..", output: ".."}`).
bench_gateway_config() { # NAME ENDPOINT PRICE [STATE_LINE]
    cat <<EOF
apiVersion: sluice.dev/v1alpha1
kind: AIGateway
metadata: {name: $1}
spec:
  listen: 127.0.0.1:\${SLUICE_PORT}
  admin: 127.0.0.1:\${SLUICE_ADMIN_PORT}
  auth:
    apiKeys:
      - {name: bench, tenant: bench, valueFrom: {env: BENCH_API_KEY}}
  llm:
    routes:
      - models: ["bench-model"]
        backends: [{backend: upstream}]
  telemetry:
    accessLog: {to: "\${BENCH_ACCESS_LOG}"}
${4:-}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: upstream}
spec:
  provider: OpenAICompatible
  endpoint: $2
  auth: {apiKey: {valueFrom: {env: UPSTREAM_KEY}}}
  models: ["bench-model"]
  pricing:
    bench-model: $3
EOF
}

start_scratch() { # NAME
    workdir="$(mktemp -d -t "$1.XXXXXX")"
    pids=()
    trap stop_scratch EXIT
    trap 'exit 130' INT TERM
}

stop_scratch() {
    local pid
    for pid in ${pids[@]+"${pids[@]}"}; do
        stop_pid "$pid"
    done
    rm -rf "$workdir"
}

stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# N distinct free TCP ports on 127.0.0.1, one a line (all bound at once, then
# released, so they differ from each other; the same small race as free_port).
free_ports() { # N
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
    s.close()
PY
}

# Waits until COMMAND... succeeds (run every 0.2 s, output discarded). Fails
# when PID exits first or after TIMEOUT seconds. For readiness checks that
# need more than a plain URL, e.g. curl with client certificates.
wait_command_ok() { # PID TIMEOUT COMMAND...
    local pid=$1 timeout=$2 deadline
    shift 2
    deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        "$@" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || { echo "process $pid exited before '$*' succeeded" >&2; return 1; }
        sleep 0.2
    done
    echo "'$*' did not succeed within ${timeout}s" >&2
    return 1
}

# --- benchmark helpers (e2e/bench/*.sh) ---

cpu_ticks() { # PID: utime + stime of the whole process, in clock ticks
    # Fields after "pid (comm) ": state is $1, so utime is $12 and stime $13.
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# Median of the numbers given.
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Runs wrk (1 thread, pinned by the caller's wrk_pin array) against URL with
# the e2e/bench Lua script LUA; prints "requests duration_us p50_us p99_us
# errors" from the script's BENCH_RESULT line.
bench_wrk() { # URL LUA CONNECTIONS SECONDS
    local out
    # shellcheck disable=SC2154 # wrk_pin: set by the calling script
    out="$(${wrk_pin[@]+"${wrk_pin[@]}"} wrk -t1 -c"$3" -d"$4"s --timeout 10s -s "$2" "$1")" \
        || { echo "$out" >&2; return 1; }
    awk '/^BENCH_RESULT/ {
            for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            print v["requests"], v["duration_us"], v["p50_us"], v["p99_us"],
                v["err_connect"] + v["err_read"] + v["err_write"] + v["err_status"] + v["err_timeout"]
        }' <<<"$out"
}
