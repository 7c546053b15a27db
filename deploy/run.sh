#!/usr/bin/env bash
# Run the whole SYNAPSE system on this machine, in the foreground.
#
#   deploy/run.sh                 # services + 5,000-asset demo plant
#   deploy/run.sh --no-demo       # services only
#   deploy/run.sh --assets 20000  # a bigger demo plant
#
# Ensures PostgreSQL and NATS are up, creates the `synapse` database, builds the
# binaries (dev profile, shared with the tests), starts command-service (8081),
# projection-service (8083) and query-service (8082), waits until each answers
# /healthz, loads the demo plant, prints where everything listens, and stays in the
# foreground. Ctrl-C or SIGTERM stops the three services (SIGTERM, then SIGKILL after
# a grace period). Logs go to .run/logs/.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

load_demo=true
demo_args=()
usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while (($# > 0)); do
    case $1 in
        --no-demo) load_demo=false ;;
        --assets | --seed)
            (($# >= 2)) || { echo "run.sh: $1 needs a value" >&2; exit 2; }
            demo_args+=("$1" "$2")
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) echo "run.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

readonly HOST=127.0.0.1
# Which address the services bind: loopback by default, 0.0.0.0 to expose them.
readonly BIND_HOST=${SYNAPSE_BIND_HOST:-127.0.0.1}
readonly DATABASE_NAME=synapse
readonly HEALTH_WAIT_SECONDS=${SYNAPSE_HEALTH_WAIT_SECONDS:-60}
# Grace period between SIGTERM and SIGKILL: services drain requests and flush their
# relay/projector checkpoints in this time.
readonly STOP_GRACE_SECONDS=15
readonly LOG_DIR="$repo_root/.run/logs"

# Start order: the command side first (it owns the event log and its migrations), then
# the projector (read models), then the query side that reads them.
readonly SERVICES=(command-service projection-service query-service)
declare -A PORT=([command-service]=8081 [query-service]=8082 [projection-service]=8083)
declare -A PID=()

log() { printf '[run] %s\n' "$*" >&2; }

target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir="$repo_root/$target_dir"
readonly BIN_DIR="$target_dir/debug"

export DATABASE_URL=${DATABASE_URL:-postgres://postgres@$HOST:5432/$DATABASE_NAME}
export NATS_URL=${NATS_URL:-nats://$HOST:4222}
export RUST_LOG=${RUST_LOG:-info}
# The logs go to files: no ANSI colour codes in them (tracing-subscriber honours NO_COLOR).
export NO_COLOR=${NO_COLOR:-1}

port_in_use() { { exec 3<>"/dev/tcp/$HOST/$1"; } 2>/dev/null && { exec 3>&- 3<&-; return 0; }; return 1; }

# 200 from GET /healthz; curl where present, else a plain HTTP/1.0 request over bash's
# /dev/tcp (a fresh machine may lack curl).
healthy() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 2 "http://$HOST:$1/healthz" >/dev/null 2>&1
        return
    fi
    local status_line=""
    { exec 4<>"/dev/tcp/$HOST/$1"; } 2>/dev/null || return 1
    printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$HOST" >&4
    IFS= read -r -t 2 status_line <&4 || true
    exec 4>&- 4<&-
    [[ $status_line == "HTTP/"*" 200"* ]]
}

# What a service said before it died: its `Error:` report (anyhow's, without the
# backtrace) if it printed one, else the last lines of its log.
log_tail() {
    local service=$1 file="$LOG_DIR/$service.log"
    if grep -q '^Error:' "$file" 2>/dev/null; then
        log "$service reported ($file):"
        sed -n '/^Error:/,/^Stack backtrace:/p' "$file" | grep -v '^Stack backtrace:' | head -n 30 >&2
    else
        log "last lines of $file:"
        tail -n 40 "$file" >&2 2>/dev/null || true
    fi
}

stopping=false
stop_services() {
    [[ $stopping == true ]] && return 0
    stopping=true
    local service pid alive
    # Stop in reverse order: readers first, the event log's owner last.
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        service=${SERVICES[i]}
        pid=${PID[$service]:-}
        [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || continue
        log "stopping $service (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
    done
    local deadline=$((SECONDS + STOP_GRACE_SECONDS))
    while ((SECONDS < deadline)); do
        alive=false
        for service in "${SERVICES[@]}"; do
            pid=${PID[$service]:-}
            [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && alive=true
        done
        [[ $alive == false ]] && break
        sleep 0.2
    done
    for service in "${SERVICES[@]}"; do
        pid=${PID[$service]:-}
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            log "$service did not stop within ${STOP_GRACE_SECONDS}s: killing pid $pid"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        [[ -n $pid ]] && wait "$pid" 2>/dev/null || true
    done
    log "all services stopped; logs are in $LOG_DIR"
}

on_signal() {
    log "signal received"
    stop_services
    exit 0
}
trap on_signal INT TERM
# Any other way out (an error in this script) still stops what it started.
trap stop_services EXIT

fail() {
    log "ERROR: $*"
    exit 1
}

# --- authentication ------------------------------------------------------------------
# The services verify HS256 bearer tokens signed with JWT_SECRET. Locally, run.sh keeps
# a random secret in .run/jwt-secret (created once, readable by its owner only) and
# signs ready-made tokens for the three roles into .run/tokens.env. AUTH_DISABLED=true
# in the environment switches authentication off instead.
readonly JWT_ISSUER=${JWT_ISSUER:-synapse}
readonly JWT_AUDIENCE=${JWT_AUDIENCE:-synapse-api}
# Seven days: long enough for a demo session, short enough not to live forever.
readonly TOKEN_TTL_SECONDS=$((7 * 24 * 3600))
readonly TOKENS_FILE="$repo_root/.run/tokens.env"

# base64url and sign_token SUBJECT ROLE.
source "$repo_root/deploy/tokens.sh"

setup_auth() {
    mkdir -p "$repo_root/.run"
    if [[ ${AUTH_DISABLED:-false} == true ]]; then
        log "AUTH_DISABLED=true: the services accept every request as an admin"
        : >"$TOKENS_FILE"
        return
    fi
    command -v openssl >/dev/null 2>&1 || fail "openssl is needed to sign local tokens (or set AUTH_DISABLED=true)"
    if [[ -z ${JWT_SECRET:-} ]]; then
        local secret_file="$repo_root/.run/jwt-secret"
        if [[ ! -s $secret_file ]]; then
            (umask 077 && openssl rand -hex 32 >"$secret_file")
        fi
        JWT_SECRET=$(<"$secret_file")
    fi
    export JWT_SECRET
    (
        umask 077
        {
            echo "# Local SYNAPSE tokens, signed by deploy/run.sh; valid 7 days. source this file."
            echo "export SYNAPSE_VIEWER_TOKEN=$(sign_token demo-viewer viewer)"
            echo "export SYNAPSE_ENGINEER_TOKEN=$(sign_token demo-engineer engineer)"
            echo "export SYNAPSE_ADMIN_TOKEN=$(sign_token demo-admin admin)"
        } >"$TOKENS_FILE"
    )
}

# Delete the JetStream stream `$1` with one raw NATS request over bash's /dev/tcp (no
# nats CLI needed). Only for a plain local NATS_URL (no credentials, one server).
delete_stream() {
    local address=${NATS_URL#nats://}
    if [[ $address == *@* || $address == *,* || $address == */* ]]; then
        log "NATS_URL names credentials or several servers: not deleting stream $1;" \
            "if it holds another database's events, delete it (the relay refuses it)"
        return 0
    fi
    local host=${address%:*} port=${address##*:} line answer=""
    [[ $port == "$address" ]] && port=4222
    { exec 4<>"/dev/tcp/$host/$port"; } 2>/dev/null || { log "NATS at $host:$port refused"; return 0; }
    printf 'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.synapse_run 1\r\nPUB $JS.API.STREAM.DELETE.%s _INBOX.synapse_run 0\r\n\r\n' "$1" >&4
    while IFS= read -r -t 5 line <&4; do
        if [[ $line == MSG* ]]; then
            IFS= read -r -t 5 answer <&4
            break
        fi
    done
    exec 4>&- 4<&-
    case $answer in
        *'"success":true'*) log "deleted stream $1: it held the events of an earlier database" ;;
        *stream\ not\ found*) ;;
        *) log "deleting stream $1: ${answer:-no answer}" ;;
    esac
}

# --- 1. services and database ------------------------------------------------------
bash deploy/ensure-services.sh

exists=$(psql -h "$HOST" -U postgres -d postgres -Atqc \
    "select 1 from pg_database where datname = '$DATABASE_NAME'" </dev/null)
if [[ $exists != 1 ]]; then
    log "creating database $DATABASE_NAME"
    psql -h "$HOST" -U postgres -d postgres -qc "create database $DATABASE_NAME" </dev/null
    # A new database starts a new event log: a stream kept from an earlier one does not
    # follow it, and the relay would refuse to publish to it.
    delete_stream "${NATS_STREAM:-SYNAPSE_EVENTS}"
fi

for service in "${SERVICES[@]}"; do
    if port_in_use "${PORT[$service]}"; then
        fail "port ${PORT[$service]} ($service) is already in use: is another deploy/run.sh running?"
    fi
done

setup_auth

# --- 2. build ----------------------------------------------------------------------
# Only the packages run.sh starts: an unrelated crate (a benchmark half-written in the
# working tree) must not keep the system from running.
log "building (cargo build --bins, dev profile; target $target_dir)"
cargo build --bins -p command-service -p projection-service -p query-service -p synapse-demo

# --- 3. start ----------------------------------------------------------------------
mkdir -p "$LOG_DIR"
for service in "${SERVICES[@]}"; do
    port=${PORT[$service]}
    [[ -x "$BIN_DIR/$service" ]] || fail "$BIN_DIR/$service was not built"
    log "starting $service on $BIND_HOST:$port (log $LOG_DIR/$service.log)"
    LISTEN_ADDR="$BIND_HOST:$port" "$BIN_DIR/$service" >"$LOG_DIR/$service.log" 2>&1 </dev/null &
    PID[$service]=$!
    deadline=$((SECONDS + HEALTH_WAIT_SECONDS))
    until healthy "$port"; do
        if ! kill -0 "${PID[$service]}" 2>/dev/null; then
            wait "${PID[$service]}" && status=0 || status=$?
            log_tail "$service"
            fail "$service exited with status $status during start"
        fi
        if ((SECONDS >= deadline)); then
            log_tail "$service"
            fail "$service did not answer http://$HOST:$port/healthz within ${HEALTH_WAIT_SECONDS}s"
        fi
        sleep 0.3
    done
    log "$service is up (pid ${PID[$service]})"
done

# --- 4. demo data ------------------------------------------------------------------
demo_status="not loaded (--no-demo)"
if [[ $load_demo == true ]]; then
    log "loading the demo plant (synapse-demo ${demo_args[*]:-})"
    demo_token=""
    [[ ${AUTH_DISABLED:-false} == true ]] || demo_token=$(sign_token synapse-demo admin)
    if SYNAPSE_TOKEN=$demo_token "$BIN_DIR/synapse-demo" \
        --command-url "http://$HOST:${PORT[command-service]}" "${demo_args[@]}"; then
        demo_status="loaded"
    else
        demo_status="FAILED to load (see above); the services keep running"
        log "demo load failed; the services keep running"
    fi
fi

# --- 5. where everything is ---------------------------------------------------------
cmd="http://$HOST:${PORT[command-service]}"
qry="http://$HOST:${PORT[query-service]}"
prj="http://$HOST:${PORT[projection-service]}"
cat <<EOF

SYNAPSE is running (Ctrl-C stops it).

  command API      $cmd          OpenAPI $cmd/openapi.json
  query API        $qry          OpenAPI $qry/openapi.json
  live feed (WS)   ws://$HOST:${PORT[query-service]}/ws
  projection       $prj          (health and metrics only)
  health           /healthz  /readyz on each of the three
  metrics          $cmd/metrics  $qry/metrics  $prj/metrics
  logs             $LOG_DIR/{command-service,query-service,projection-service}.log
  database         $DATABASE_URL
  NATS             $NATS_URL (JetStream)
  demo plant       $demo_status
  tokens           $TOKENS_FILE (viewer, engineer, admin; source it)

Try (in another shell):
  source $TOKENS_FILE
  curl -s -H "authorization: Bearer \$SYNAPSE_VIEWER_TOKEN" '$qry/disciplines'
  curl -s -H "authorization: Bearer \$SYNAPSE_VIEWER_TOKEN" '$qry/events/timeline?discipline=ELECTRICAL&limit=5'
  curl -s -H "authorization: Bearer \$SYNAPSE_VIEWER_TOKEN" '$qry/batches'
  curl -s -H "authorization: Bearer \$SYNAPSE_VIEWER_TOKEN" '$qry/findings?severity=error&limit=5'
  curl -s -X POST '$cmd/assets' -H "authorization: Bearer \$SYNAPSE_ENGINEER_TOKEN" -H 'content-type: application/json' \\
       -d '{"tag":"M-999A","asset_type":"ELECTRIC_MOTOR","discipline":"ELECTRICAL","name":"Spare motor","area":"U100","properties":{"rated_power_kw":75,"rated_voltage_v":400,"mcc":"MCC-U100-02"}}'
  curl -s -X POST '$cmd/rules/execute' -H "authorization: Bearer \$SYNAPSE_ENGINEER_TOKEN" -H 'content-type: application/json' \\
       -d '{"dry_run":true,"wait":true,"filters":{"disciplines":["ELECTRICAL"]}}'

EOF

# --- 6. foreground -----------------------------------------------------------------
# Wait for whichever service ends first: if one dies on its own, report it and stop
# the others (the system is not usable without all three).
while true; do
    exited_pid=""
    wait -n -p exited_pid "${PID[@]}" && status=0 || status=$?
    [[ -n $exited_pid ]] || continue
    for service in "${SERVICES[@]}"; do
        if [[ ${PID[$service]} == "$exited_pid" ]]; then
            PID[$service]=""
            log "$service exited unexpectedly with status $status"
            log_tail "$service"
        fi
    done
    stop_services
    exit 1
done
