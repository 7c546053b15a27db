#!/usr/bin/env bash
# Run every test of the workspace against the real PostgreSQL and NATS.
#
#   deploy/test.sh                  # the whole workspace, nextest profile `ci`, then
#                                   # schemathesis against both OpenAPI documents
#   deploy/test.sh -p synapse-demo  # extra arguments go to the test runner (no schemathesis)
#
# Starts (or installs) the services first, exports the test environment's defaults, and
# exits non-zero if the test runner or schemathesis failed.
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
# A CI run builds once from scratch: incremental caches only cost disk there.
if [[ ${CI:-} == true ]]; then
    export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
fi

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

runner=nextest
if ! cargo nextest --version >/dev/null 2>&1; then
    log "cargo-nextest not found: installing it (cargo install cargo-nextest --locked)"
    if ! cargo install cargo-nextest --locked; then
        log "could not install cargo-nextest: falling back to cargo test"
        runner=test
    fi
fi

set +e
if [[ $runner == nextest ]]; then
    cargo nextest run "${scope[@]}" --profile ci "$@"
else
    cargo test "${scope[@]}" "$@"
fi
status=$?
set -e
log "cargo $runner exited with $status"

# Schemathesis against both services' OpenAPI documents (deploy/schemathesis.sh): part
# of the whole-workspace run, skipped when the caller picked packages or tests, or with
# SYNAPSE_SKIP_SCHEMATHESIS=true.
if ((${#scope[@]} > 0 && $# == 0)) && [[ ${SYNAPSE_SKIP_SCHEMATHESIS:-false} != true ]]; then
    set +e
    bash deploy/schemathesis.sh </dev/null
    schemathesis_status=$?
    set -e
    log "deploy/schemathesis.sh exited with $schemathesis_status"
    if ((status == 0)); then
        status=$schemathesis_status
    fi
fi
exit "$status"
