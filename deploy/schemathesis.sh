#!/usr/bin/env bash
# Schemathesis against the OpenAPI documents of both HTTP services.
#
#   deploy/schemathesis.sh                               # bounded run (deploy/test.sh runs it)
#   SCHEMATHESIS_MAX_EXAMPLES=200 deploy/schemathesis.sh # a longer hunt
#   SCHEMATHESIS_SEED=42 deploy/schemathesis.sh          # replay one run
#
# Installs schemathesis (pinned) into a cached virtualenv, builds the services if they
# are stale, starts command-service, projection-service and query-service on free ports
# with a database, a JetStream stream and a JWT secret of their own, and runs
# `schemathesis run` against each service's /openapi.json with an admin bearer token
# and the checks not_a_server_error and response_schema_conformance, after seeding a
# small plant whose ids it draws for id parameters (deploy/schemathesis-seed.py).
# Everything it started or created is removed at the end (services stopped, database
# dropped, stream deleted). Exits non-zero if schemathesis reports a failure or setup fails; the
# services' logs are kept then and their path printed. Needs no terminal (CI=true).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

log() { printf '[schemathesis] %s\n' "$*" >&2; }
fail() { log "ERROR: $*"; exit 1; }

readonly SCHEMATHESIS_VERSION=4.32.5
readonly VENV=${SYNAPSE_SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/synapse/schemathesis-venv}
# Test cases per operation and phase: with 25 both services take about a minute here,
# well inside the CI budget, and each operation still gets its boundary cases (the
# coverage phase) and random ones (the fuzzing phase).
readonly MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-25}
readonly SEED=${SCHEMATHESIS_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
readonly CHECKS=not_a_server_error,response_schema_conformance
readonly HOST=127.0.0.1
readonly READY_WAIT_SECONDS=60
readonly STOP_GRACE_SECONDS=15
readonly NATS_URL=${SCHEMATHESIS_NATS_URL:-nats://$HOST:4222}
readonly PG_ADMIN_URL=${SCHEMATHESIS_PG_ADMIN_URL:-postgres://postgres@$HOST:5432/postgres}

target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir="$repo_root/$target_dir"
readonly BIN_DIR="$target_dir/debug"

# --- 1. schemathesis in its own virtualenv -------------------------------------------
ensure_schemathesis() {
    local installed
    installed=$("$VENV/bin/schemathesis" --version 2>/dev/null || true)
    if [[ $installed == "schemathesis, version $SCHEMATHESIS_VERSION" ]]; then
        return
    fi
    log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    command -v python3 >/dev/null 2>&1 || fail "python3 is needed to install schemathesis"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        "schemathesis==$SCHEMATHESIS_VERSION" </dev/null
    installed=$("$VENV/bin/schemathesis" --version)
    [[ $installed == "schemathesis, version $SCHEMATHESIS_VERSION" ]] ||
        fail "installed '$installed', expected $SCHEMATHESIS_VERSION"
}

# --- helpers ---------------------------------------------------------------------------
# A free loopback port (free now; the service binds it a moment later).
free_port() {
    "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# 200 from GET URL.
answers_ok() {
    "$VENV/bin/python" - "$1" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)
PY
}

# Delete a JetStream stream by a raw NATS request (no nats CLI needed); prints the
# server's answer.
delete_stream() {
    "$VENV/bin/python" - "$NATS_URL" "$1" <<'PY'
import socket, sys, urllib.parse
url = urllib.parse.urlparse(sys.argv[1])
with socket.create_connection((url.hostname, url.port or 4222), timeout=5) as sock:
    sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n'
                 b'SUB _INBOX.schemathesis 1\r\n'
                 b'PUB $JS.API.STREAM.DELETE.' + sys.argv[2].encode() + b' _INBOX.schemathesis 0\r\n\r\n')
    answer = b""
    while b"MSG _INBOX.schemathesis" not in answer or not answer.rstrip().endswith(b"}"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    print(answer.decode(errors="replace").splitlines()[-1])
PY
}

psql_admin() { psql "$PG_ADMIN_URL" -v ON_ERROR_STOP=1 -Atqc "$1" </dev/null; }

# --- 2. setup ----------------------------------------------------------------------------
ensure_schemathesis
command -v openssl >/dev/null 2>&1 || fail "openssl is needed to sign the admin token"
bash deploy/ensure-services.sh
log "building the services (cargo build --bins; a no-op when up to date)"
# The whole workspace's bins, exactly as deploy/test.sh builds them: features are
# unified over the packages built, so a narrower `-p` list would build a second copy
# of many dependencies (and disk on a CI machine is not unlimited).
cargo build --bins

run_id="st$(openssl rand -hex 5)"
readonly DATABASE_NAME="synapse_schemathesis_$run_id"
readonly STREAM="SCHEMATHESIS_$run_id"
readonly SUBJECT_PREFIX="schemathesis_$run_id.events"
work_dir=$(mktemp -d "${TMPDIR:-/tmp}/synapse-schemathesis.XXXXXX")
readonly work_dir

declare -A PID=()
declare -A PORT=()
readonly SERVICES=(command-service projection-service query-service)
database_created=false
succeeded=false

cleanup() {
    local service pid deadline
    for service in "${SERVICES[@]}"; do
        pid=${PID[$service]:-}
        [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null || true
    done
    deadline=$((SECONDS + STOP_GRACE_SECONDS))
    for service in "${SERVICES[@]}"; do
        pid=${PID[$service]:-}
        [[ -n $pid ]] || continue
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $database_created == true ]]; then
        psql_admin "drop database if exists $DATABASE_NAME with (force)" ||
            log "could not drop database $DATABASE_NAME"
    fi
    if [[ -n ${PORT[command-service]:-} ]]; then
        delete_stream "$STREAM" >/dev/null 2>&1 || log "could not delete stream $STREAM"
    fi
    if [[ $succeeded == true ]]; then
        rm -rf "$work_dir"
    else
        log "service logs and reports kept in $work_dir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql_admin "create database $DATABASE_NAME"
database_created=true

JWT_SECRET=$(openssl rand -hex 32)
export JWT_SECRET
source "$repo_root/deploy/tokens.sh"
admin_token=$(TOKEN_TTL_SECONDS=3600 sign_token schemathesis admin)

# --- 3. the services -------------------------------------------------------------------
start_service() {
    local service=$1 port
    port=$(free_port)
    PORT[$service]=$port
    [[ -x "$BIN_DIR/$service" ]] || fail "$BIN_DIR/$service was not built"
    # Only what this run sets: nothing from the caller's shell may point a service at
    # other credentials, databases or a disabled authentication.
    env -u NATS_USER -u NATS_PASSWORD -u NATS_TOKEN -u NATS_NKEY_FILE -u NATS_CREDS \
        -u READ_DATABASE_URL -u AUTH_DISABLED -u JWT_ISSUER -u JWT_AUDIENCE \
        DATABASE_URL="postgres://postgres@$HOST:5432/$DATABASE_NAME" \
        NATS_URL="$NATS_URL" NATS_STREAM="$STREAM" NATS_SUBJECT_PREFIX="$SUBJECT_PREFIX" \
        LISTEN_ADDR="$HOST:$port" JWT_SECRET="$JWT_SECRET" \
        RUST_LOG="${SCHEMATHESIS_RUST_LOG:-warn}" NO_COLOR=1 \
        "$BIN_DIR/$service" >"$work_dir/$service.log" 2>&1 </dev/null &
    PID[$service]=$!
    local deadline=$((SECONDS + READY_WAIT_SECONDS))
    until answers_ok "http://$HOST:$port/readyz"; do
        kill -0 "${PID[$service]}" 2>/dev/null || {
            tail -n 30 "$work_dir/$service.log" >&2
            fail "$service exited during start"
        }
        ((SECONDS < deadline)) || {
            tail -n 30 "$work_dir/$service.log" >&2
            fail "$service was not ready within ${READY_WAIT_SECONDS}s"
        }
        sleep 0.3
    done
    log "$service ready on $HOST:$port"
}

# The command service first: its relay creates the stream the others follow.
for service in "${SERVICES[@]}"; do
    start_service "$service"
done

# --- 4. a small plant, so that operations on ids reach more than their 404 -----------------
log "seeding a small plant through the command API"
"$VENV/bin/python" deploy/schemathesis-seed.py "http://$HOST:${PORT[command-service]}" \
    "http://$HOST:${PORT[query-service]}" "$admin_token" "$work_dir"

# --- 5. schemathesis ----------------------------------------------------------------------
run_schemathesis() {
    local service=$1
    log "schemathesis run against $service (max examples $MAX_EXAMPLES, seed $SEED, checks $CHECKS)"
    # From the work directory: schemathesis keeps a cache (.schemathesis/) in its cwd.
    (cd "$work_dir" && "$VENV/bin/schemathesis" --config-file "$work_dir/$service.toml" \
        run "http://$HOST:${PORT[$service]}/openapi.json" \
        --checks "$CHECKS" \
        --max-examples "$MAX_EXAMPLES" \
        --seed "$SEED" \
        --header "Authorization: Bearer $admin_token" \
        --request-timeout 30 \
        --report junit --report-dir "$work_dir/$service-report" \
        </dev/null)
}

status=0
started=$SECONDS
# The read side first: the command side's run deletes and rolls back the seeded plant.
for service in query-service command-service; do
    run_schemathesis "$service" || status=$?
    for running in "${SERVICES[@]}"; do
        kill -0 "${PID[$running]}" 2>/dev/null || fail "$running died during the run (log in $work_dir)"
    done
done
log "schemathesis finished in $((SECONDS - started)) s with status $status"
if ((status == 0)); then
    succeeded=true
fi
exit "$status"
