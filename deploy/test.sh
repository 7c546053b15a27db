#!/usr/bin/env bash
# Run every test of the workspace against the real PostgreSQL and NATS.
#
#   deploy/test.sh                  # the whole workspace, nextest profile `ci`
#   deploy/test.sh -p synapse-demo  # extra arguments go to the test runner
#
# Starts (or installs) the services first, exports the test environment's defaults, and
# exits with the test runner's exit code.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

log() { printf '[test] %s\n' "$*" >&2; }

bash deploy/ensure-services.sh

# Tests create one database per test through this server-level URL, and one stream and
# subject prefix per test on this NATS server.
export TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export TEST_NATS_URL=${TEST_NATS_URL:-nats://127.0.0.1:4222}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
# Keep the test build in the dev profile, so it shares artifacts with `deploy/run.sh`.
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-auto}

log "TEST_DATABASE_URL=$TEST_DATABASE_URL TEST_NATS_URL=$TEST_NATS_URL"

# The whole workspace unless the caller chose packages (`-p synapse-demo`).
scope=(--workspace)
for argument in "$@"; do
    case $argument in
        -p | --package | --package=* | -p*) scope=() ;;
    esac
done

# The fault tests (tests/e2e/faults.rs) run the service binaries as real processes.
cargo build --bins

if ! cargo nextest --version >/dev/null 2>&1; then
    log "cargo-nextest not found: installing it (cargo install cargo-nextest --locked)"
    if ! cargo install cargo-nextest --locked; then
        log "could not install cargo-nextest: falling back to cargo test"
        set +e
        cargo test "${scope[@]}" "$@"
        status=$?
        set -e
        log "cargo test exited with $status"
        exit "$status"
    fi
fi

set +e
cargo nextest run "${scope[@]}" --profile ci "$@"
status=$?
set -e
log "cargo nextest exited with $status"
exit "$status"
