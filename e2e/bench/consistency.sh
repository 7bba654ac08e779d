#!/usr/bin/env bash
# Consistency of shared budgets under faults: for every fault x store x
# replica count, e2e/cluster/harness.py starts the replicas, drives load
# through all of them against one Budget, injects the fault and measures
# overshoot, requests wrongly rejected, spend lost and time to recover.
#
# Usage: e2e/bench/consistency.sh        (root: network namespaces, nftables)
#
# What it does:
#   - installs what is missing (redis-server, nftables, the e2e virtualenv)
#     and builds sluice and sluice-test-upstream (release);
#   - asks `sluice validate` whether `state.type: raft` is accepted: when it
#     is not, the raft rows say "pending the raft store";
#   - for each store (redis, raft), replica count (3, 5) and fault (none,
#     kill-leader, restart-follower, wipe-follower, partition,
#     rolling-restart), plus a partition under FailOpen with 3 replicas: one
#     harness run (about 15-25 s; each in a network namespace of its own);
#   - prints a markdown table (also saved to ~/.cache/sluice/bench/consistency.md
#     and a timestamped copy), the table of docs/consistency.md; each run's
#     JSON result and logs are kept in ~/.cache/sluice/bench/consistency-last/.
#
# Environment:
#   CONSISTENCY_STORES    stores to run (default "redis raft")
#   CONSISTENCY_REPLICAS  replica counts (default "3 5")
#   CONSISTENCY_FAULTS    faults (default: all six)
#   CONSISTENCY_FAILOPEN  1 (default) adds the FailOpen partition rows
#   CONSISTENCY_PROFILE   release (default) or debug
# The numbers are not asserted here: e2e/python/test_cluster.py asserts the
# invariants.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=e2e/lib.sh
source e2e/lib.sh

case "${1:-}" in
    "") ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
esac
((EUID == 0)) || die "needs root (network namespaces and nftables)"

read -r -a stores <<<"${CONSISTENCY_STORES:-redis raft}"
read -r -a replica_counts <<<"${CONSISTENCY_REPLICAS:-3 5}"
read -r -a faults <<<"${CONSISTENCY_FAULTS:-none kill-leader restart-follower wipe-follower partition rolling-restart}"
failopen="${CONSISTENCY_FAILOPEN:-1}"
profile="${CONSISTENCY_PROFILE:-release}"
harness="$(pwd)/e2e/cluster/harness.py"

step "tools"
ensure_redis || die "could not install redis-server"
ensure_apt_command nft nftables || die "could not install nftables"
command -v unshare >/dev/null || die "unshare (util-linux) not found"
note "$(redis-server --version)"
venv="$(ensure_venv e2e/python/requirements.txt)" || die "could not make the e2e virtualenv"
python="$venv/bin/python"

step "build ($profile)"
export_cargo_target_dir
if [[ "$profile" == release ]]; then
    cargo build --release --bins -p sluice -p sluice-test-upstream
else
    cargo build --bins -p sluice -p sluice-test-upstream
fi
start_scratch sluice-consistency
cp "$CARGO_TARGET_DIR/$profile/sluice" "$CARGO_TARGET_DIR/$profile/sluice-test-upstream" "$workdir/"
started=$SECONDS

raft_why="$("$python" "$harness" raft-supported --sluice "$workdir/sluice")" && raft_ok=1 || raft_ok=0
note "raft store: $raft_why"

rows=()
run_case() { # STORE REPLICAS FAULT FAILURE_MODE
    local store=$1 n=$2 fault=$3 mode=$4 name out keep
    name="$store-$n-$fault-$mode"
    out="$workdir/$name.json"
    if [[ "$store" == raft && "$raft_ok" != 1 ]]; then
        printf '{"store":"raft","replicas":%s,"fault":"%s","failure_mode":"%s","pending":"pending the raft store"}\n' \
            "$n" "$fault" "$mode" >"$out"
        rows+=("$out")
        return
    fi
    step "$store, $n replicas, $fault ($mode)"
    if "$python" "$harness" run --store "$store" --replicas "$n" --fault "$fault" --failure-mode "$mode" \
        --out "$out" --workdir "$workdir/$name" --sluice "$workdir/sluice" \
        --upstream "$workdir/sluice-test-upstream" 2>"$workdir/$name.log"; then
        rows+=("$out")
    else
        tail -n 20 "$workdir/$name.log" >&2
        printf '{"store":"%s","replicas":%s,"fault":"%s","failure_mode":"%s","pending":"the run failed"}\n' \
            "$store" "$n" "$fault" "$mode" >"$out"
        rows+=("$out")
    fi
    keep="$SLUICE_CACHE/bench/consistency-last/$name"
    rm -rf "$keep" && mkdir -p "$keep"
    cp "$out" "$workdir/$name.log" "$keep/" 2>/dev/null || true
    cp -r "$workdir/$name/logs" "$workdir/$name/records.json" "$keep/" 2>/dev/null || true
}

rm -rf "$SLUICE_CACHE/bench/consistency-last"
for store in "${stores[@]}"; do
    for n in "${replica_counts[@]}"; do
        for fault in "${faults[@]}"; do
            run_case "$store" "$n" "$fault" FailClosed
        done
    done
    if [[ "$failopen" == 1 ]]; then
        run_case "$store" 3 partition FailOpen
    fi
done

report="$workdir/consistency-report.md"
{
    echo "## Consistency under faults, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "- machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); $(redis-server --version | awk '{ print $1, $2, $3 }'); sluice $profile build"
    echo "- raft store: $raft_why"
    echo
    "$python" "$harness" table "${rows[@]}"
    echo
    echo "Total run time: $((SECONDS - started)) s. Results and logs of each run: $SLUICE_CACHE/bench/consistency-last/."
} >"$report"

mkdir -p "$SLUICE_CACHE/bench"
cp "$report" "$SLUICE_CACHE/bench/consistency.md"
cp "$report" "$SLUICE_CACHE/bench/consistency-$(date -u +%Y%m%d-%H%M%S).md"
step "result (saved to $SLUICE_CACHE/bench/consistency.md)"
cat "$report"
