#!/usr/bin/env bash
# Runs every check Sluice has, from a fresh clone, with nothing started by hand:
#
#   1. cargo fmt --all -- --check
#   2. cargo clippy --workspace --all-targets -- -D warnings
#   3. redis-server                         (apt-get install when missing: the
#                                            Redis counter store's tests start
#                                            their own servers with it)
#   4. cargo test --workspace               (with SLUICE_REQUIRE_REDIS=1, so the
#                                            Redis tests fail rather than skip)
#  4b. e2e/kube/chart_test.sh               (the generated CRDs through kube-apiserver's
#                                            own validation code, and the Helm chart:
#                                            helm lint --strict, helm template of
#                                            several value sets, checked objects)
#   5. cargo build --workspace --bins       (debug binaries for the e2e tests)
#   6. the Python virtualenvs for e2e/python (pinned openai and mcp SDKs + pytest;
#      a second one with the MCP SDK's 2.x line for the 2026-07-28 tests)
#   7. the MCP peers for e2e/python         (npm ci of e2e/mcp: the pinned
#                                            @modelcontextprotocol/server-everything)
#  7b. e2e/kube/cluster.sh build            (kube-apiserver, etcd, kubectl, helm for
#                                            e2e/python/test_kubernetes.py; ~9 min
#                                            once, then cached; output in the log)
#   8. pytest e2e/python                    (real sluice, sluice-test-upstream and
#                                            server-everything processes, the
#                                            official OpenAI and MCP SDKs; run
#                                            once per venv, each collecting the
#                                            modules its MCP SDK line runs)
#
# Usage: e2e/test-all.sh [--quick] [--e2e] [--no-e2e] [-k EXPR] [-- PYTEST_ARGS...]
#   --quick     skip clippy (the slowest check that is not a test)
#   --e2e       only build and run the e2e tests (skip fmt, clippy, cargo test)
#   --no-e2e    skip the e2e tests (steps 6 to 8)
#   -k EXPR     run only the e2e tests matching EXPR (pytest -k)
#   -- ARGS     pass ARGS on to pytest, e.g. `-- -x -vv` or
#               `-- e2e/python/test_errors.py` (test paths replace e2e/python;
#               e2e/python/test_mcp_stateless.py runs in the MCP 2.x venv only,
#               so name it alone)
#
# A failing step does not stop the later ones, except that the e2e tests need
# the binaries and the virtualenv (without the MCP peers only the MCP tests
# fail). The script ends with a table of the steps and a count of the tests
# run, and exits non-zero if any step failed.
#
# Where things live (all outside the clone, reused between runs):
#   CARGO_TARGET_DIR  ~/.cache/sluice/target-<rustc version> unless already set
#   virtualenvs       ~/.cache/sluice/venv-py<version>-<hash of requirements.txt>
#                     and of requirements-mcp2.txt
#   MCP peers         ~/.cache/sluice/node-mcp-<hash of e2e/mcp/package-lock.json>
#   logs              ~/.cache/sluice/test-logs/ (cargo test output, pytest's
#                     junit XML, and each e2e test's process logs and configs)
# Environment: SLUICE_E2E_TIMEOUT (seconds, default 1200) bounds the whole
# pytest run; each test also has its own timeout (e2e/python/pytest.ini).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=e2e/lib.sh
source e2e/lib.sh

quick=0 e2e_only=0 no_e2e=0
pytest_args=()
while (($#)); do
    case "$1" in
        --quick) quick=1 ;;
        --e2e) e2e_only=1 ;;
        --no-e2e) no_e2e=1 ;;
        -k) [[ $# -ge 2 ]] || die "-k needs an expression"; pytest_args+=(-k "$2"); shift ;;
        --) shift; pytest_args+=("$@"); break ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

((e2e_only && no_e2e)) && die "--e2e and --no-e2e together leave nothing to run"

export_cargo_target_dir
logs="$SLUICE_CACHE/test-logs"
rm -rf "$logs"
mkdir -p "$logs"

step "environment"
note "repo:             $(pwd)"
note "rustc:            $(rustc -V)"
note "python:           $(python3 -V 2>&1)"
note "CARGO_TARGET_DIR: $CARGO_TARGET_DIR"
note "logs:             $logs"

# Step bookkeeping: names, results and durations for the closing table.
step_names=() step_results=() step_seconds=()
failed=0

record() { # NAME RESULT SECONDS
    step_names+=("$1")
    step_results+=("$2")
    step_seconds+=("$3")
    [[ "$2" == ok || "$2" == skipped* ]] || failed=1
}

# Runs one step: a header, the command, and a line in the closing table.
# The command runs in the || context, where `set -e` does not apply, so step
# functions below chain their commands with && or `|| return`.
run_step() { # NAME COMMAND...
    local name=$1 start=$SECONDS rc=0
    shift
    step "$name"
    "$@" || rc=$?
    if ((rc == 0)); then
        record "$name" ok $((SECONDS - start))
    else
        echo "    step '$name' failed (exit $rc)"
        record "$name" "FAILED (exit $rc)" $((SECONDS - start))
    fi
    return "$rc"
}

skip_step() { # NAME REASON
    step "$1"
    note "skipped: $2"
    record "$1" "skipped: $2" 0
}

# shellcheck disable=SC2317 # called through run_step
install_redis() {
    ensure_redis && note "$(redis-server --version)"
}

# shellcheck disable=SC2317 # called through run_step
cargo_test() {
    SLUICE_REQUIRE_REDIS=1 cargo test --workspace --no-fail-fast 2>&1 | tee "$logs/cargo-test.log"
}

# shellcheck disable=SC2317 # called through run_step
chart_test() {
    e2e/kube/chart_test.sh 2>&1 | tee "$logs/chart-test.log"
    return "${PIPESTATUS[0]}"
}

# shellcheck disable=SC2317 # called through run_step
sdk_versions='import importlib.metadata as m; print("    " + " / ".join(p + " " + m.version(p) for p in ("openai", "mcp", "pytest")))'

# shellcheck disable=SC2317 # called through run_step
make_venv() {
    venv="$(ensure_venv)" && note "venv: $venv" && "$venv/bin/python" -c "$sdk_versions"
}

# shellcheck disable=SC2317 # called through run_step
make_venv_mcp2() {
    venv_mcp2="$(ensure_venv e2e/python/requirements-mcp2.txt)" && note "venv: $venv_mcp2" \
        && "$venv_mcp2/bin/python" -c "$sdk_versions"
}

# shellcheck disable=SC2317 # called through run_step
make_mcp_peers() {
    local dir
    dir="$(ensure_mcp_node_modules)" || return
    note "node modules: $dir ($(node --version))"
    export SLUICE_MCP_NODE_MODULES="$dir"
    node -e 'const p = require(process.argv[1]); console.log("    " + p.name + " " + p.version)' \
        "$dir/node_modules/@modelcontextprotocol/server-everything/package.json"
}

# The API server binaries test_kubernetes.py runs (its fixture would build
# them too, but here the build's progress is in the log as it happens).
# shellcheck disable=SC2317 # called through run_step
kube_build() {
    e2e/kube/cluster.sh build 2>&1 | tee "$logs/kube-build.log"
    return "${PIPESTATUS[0]}"
}

# shellcheck disable=SC2317 # called through run_step
run_pytest() {
    export SLUICE_BIN="$CARGO_TARGET_DIR/debug/sluice"
    export SLUICE_UPSTREAM_BIN="$CARGO_TARGET_DIR/debug/sluice-test-upstream"
    export SLUICE_CONTROLLER_BIN="$CARGO_TARGET_DIR/debug/sluice-controller"
    note "SLUICE_BIN=$SLUICE_BIN"
    note "SLUICE_UPSTREAM_BIN=$SLUICE_UPSTREAM_BIN"
    note "SLUICE_CONTROLLER_BIN=$SLUICE_CONTROLLER_BIN"
    # Run e2e/python unless the arguments name test files or folders themselves.
    local targets=(e2e/python) arg rc=0 rc_mcp2=5 mcp2=1
    for arg in ${pytest_args[@]+"${pytest_args[@]}"}; do
        if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then
            targets=()
            [[ "$arg" == *test_mcp_stateless* ]] || mcp2=0
        fi
    done
    PYTHONDONTWRITEBYTECODE=1 timeout --kill-after=30 "${SLUICE_E2E_TIMEOUT:-1200}" \
        "$venv/bin/python" -m pytest ${targets[@]+"${targets[@]}"} \
        --basetemp="$logs/pytest" --junitxml="$logs/pytest.xml" \
        ${pytest_args[@]+"${pytest_args[@]}"} || rc=$?
    # The 2026-07-28 tests, with the MCP SDK's 2.x line (conftest.py collects
    # only them there).
    if ((mcp2)) && [[ -z "$venv_mcp2" ]]; then
        echo "    the MCP 2.x venv is missing: the 2026-07-28 tests did not run"
        rc_mcp2=1
    elif ((mcp2)); then
        rc_mcp2=0
        PYTHONDONTWRITEBYTECODE=1 timeout --kill-after=30 "${SLUICE_E2E_TIMEOUT:-1200}" \
            "$venv_mcp2/bin/python" -m pytest ${targets[@]+"${targets[@]}"} \
            --basetemp="$logs/pytest-mcp2" --junitxml="$logs/pytest-mcp2.xml" \
            ${pytest_args[@]+"${pytest_args[@]}"} || rc_mcp2=$?
    fi
    # Exit 5 (no test collected) from one venv is fine when the other ran some.
    if ((rc == 5 && rc_mcp2 == 5)); then
        return 5
    fi
    ((rc == 5)) && rc=0
    ((rc_mcp2 == 5)) && rc_mcp2=0
    ((rc == 0 && rc_mcp2 == 0))
}

if ((e2e_only)); then
    skip_step "cargo fmt --check" "--e2e"
    skip_step "cargo clippy" "--e2e"
    skip_step "redis-server" "--e2e"
    skip_step "cargo test" "--e2e"
    skip_step "helm chart + CRDs" "--e2e"
else
    run_step "cargo fmt --check" cargo fmt --all -- --check || true
    if ((quick)); then
        skip_step "cargo clippy" "--quick"
    else
        run_step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings || true
    fi
    # Without it the Redis store's tests fail (SLUICE_REQUIRE_REDIS).
    run_step "redis-server" install_redis || true
    run_step "cargo test" cargo_test || true
    run_step "helm chart + CRDs" chart_test || true
fi

built=0
run_step "cargo build (bins)" cargo build --workspace --bins && built=1

venv="" venv_mcp2=""
if ((no_e2e)); then
    skip_step "python venv" "--no-e2e"
    skip_step "python venv (MCP 2.x)" "--no-e2e"
    skip_step "MCP peers (npm ci)" "--no-e2e"
    skip_step "kube-apiserver (build)" "--no-e2e"
    skip_step "e2e tests (pytest)" "--no-e2e"
else
    have_venv=0
    run_step "python venv" make_venv && have_venv=1
    run_step "python venv (MCP 2.x)" make_venv_mcp2 || true
    # Without them the MCP tests fail (they try the install once more); the
    # other e2e tests still run.
    run_step "MCP peers (npm ci)" make_mcp_peers || true
    # Without them test_kubernetes.py builds them itself (and fails if it cannot).
    run_step "kube-apiserver (build)" kube_build || true
    if ((!built)); then
        skip_step "e2e tests (pytest)" "the build failed"
        failed=1
    elif ((!have_venv)); then
        skip_step "e2e tests (pytest)" "no virtualenv"
        failed=1
    else
        run_step "e2e tests (pytest)" run_pytest || true
    fi
fi

# Test counts: cargo's "test result:" lines plus pytest's junit XML.
count_tests() {
    local cargo_counts pytest_counts
    cargo_counts="$(awk '/^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i) ~ /^passed/) p += $(i - 1)
                if ($(i) ~ /^failed/) f += $(i - 1)
                if ($(i) ~ /^ignored/) s += $(i - 1)
            }
        } END { printf "%d %d %d", p, f, s }' "$logs/cargo-test.log" 2>/dev/null || echo "0 0 0")"
    pytest_counts="$(python3 - "$logs/pytest.xml" "$logs/pytest-mcp2.xml" <<'EOF' 2>/dev/null || echo "0 0 0"
import sys, xml.etree.ElementTree as ET
p = f = s = 0
suites = []
for path in sys.argv[1:]:
    try:
        suites += list(ET.parse(path).getroot().iter("testsuite"))
    except (OSError, ET.ParseError):
        pass
for suite in suites:
    n = int(suite.get("tests", 0))
    bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    p += n - bad - skipped
    f += bad
    s += skipped
print(p, f, s)
EOF
    )"
    echo "$cargo_counts $pytest_counts"
}

read -r cargo_p cargo_f cargo_s py_p py_f py_s <<<"$(count_tests)"

step "summary"
for i in "${!step_names[@]}"; do
    printf '    %-22s %-28s %5ss\n' "${step_names[$i]}" "${step_results[$i]}" "${step_seconds[$i]}"
done
echo
note "cargo test: $cargo_p passed, $cargo_f failed, $cargo_s ignored"
note "e2e:        $py_p passed, $py_f failed, $py_s skipped"
note "logs:       $logs"
if ((failed)); then
    echo "RESULT: FAILED"
else
    echo "RESULT: OK"
fi
echo "tests: $((cargo_p + py_p)) passed, $((cargo_f + py_f)) failed, $((cargo_s + py_s)) skipped"
exit "$failed"
