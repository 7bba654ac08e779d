# Developer shortcuts. Each recipe is a thin call of a script or of cargo, so
# nothing here is needed: the README's commands work without `just`.

# Cargo's target dir lives outside the clone, keyed by the toolchain version
# (the same rule as e2e/lib.sh).
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") + "/.cache/sluice/target-" + `rustc -V | awk '{print $2}'`)

# List the recipes.
default:
    @just --list

# Run the gateway (release build); e.g. `just run -f sluice.yaml`.
run *ARGS:
    cargo run --release --bin sluice -- run {{ARGS}}

# Every check: fmt, clippy, cargo test, e2e tests; e.g. `just test --quick`.
test *ARGS:
    e2e/test-all.sh {{ARGS}}

# The overhead benchmark (direct vs. through Sluice), LLM, then Budget
# admission (BENCH_LIMITS=0 skips it), then translation (BENCH_TRANSLATE=0
# skips it), then MCP (BENCH_MCP=0 skips it).
bench *ARGS:
    e2e/bench/run.sh {{ARGS}}

# The Budget admission benchmark alone (no Budget vs. memory vs. redis store).
bench-limits:
    e2e/bench/limits.sh

# The translation benchmark alone (OpenAI clients through a passthrough
# OpenAI-compatible backend vs. a translated Anthropic one).
bench-translate:
    e2e/bench/translate.sh

# Budget overshoot: 200 streaming clients against a $1 budget, two gateways
# sharing a redis-server (and baselines); prints and saves a table.
bench-overshoot:
    e2e/bench/overshoot.sh

# The MCP benchmark alone (server-everything direct vs. through Sluice, and
# the built-in demo MCP server).
bench-mcp:
    e2e/bench/mcp.sh

# Format the code.
fmt:
    cargo fmt --all

# Check formatting and clippy, as CI does.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Run the fake provider; e.g. `just upstream --listen 127.0.0.1:8000`.
upstream *ARGS:
    cargo run --release --bin sluice-test-upstream -- {{ARGS}}
