#!/usr/bin/env bash
# Make sure the two services SYNAPSE needs are up on this machine:
#   - PostgreSQL on 127.0.0.1:5432, trust auth for user postgres
#   - NATS with JetStream on 127.0.0.1:4222
#
# Idempotent and non-interactive: a service that already accepts connections is left
# exactly as it is (never stopped, never reconfigured). A missing binary is installed
# from Debian's packages; a stopped service is started the way this machine starts it.
# Needs root for installing and starting; exits non-zero with the log tail on failure.
set -euo pipefail

readonly PG_HOST=127.0.0.1
readonly PG_PORT=5432
readonly NATS_HOST=127.0.0.1
# Overridable only so the failure path can be exercised without touching the real server.
readonly NATS_PORT=${ENSURE_NATS_PORT:-4222}
readonly NATS_STORE_DIR=/var/lib/nats-server
readonly NATS_LOG=/var/log/nats-server.log
# How long a freshly started service may take to accept connections.
readonly WAIT_SECONDS=${ENSURE_WAIT_SECONDS:-30}

log() { printf '[ensure-services] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() {
    if [[ $(id -u) -ne 0 ]]; then
        die "$1 needs root (run this script as root)"
    fi
}

apt_updated=false
apt_install() {
    need_root "installing $*"
    if [[ $apt_updated == false ]]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
        apt_updated=true
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" </dev/null
}

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1; }

# A plain TCP connect via bash's /dev/tcp, then a check that the peer speaks NATS
# (the server greets every client with an INFO line).
nats_ready() {
    local greeting=""
    # The braces keep the 2>/dev/null from applying to the whole shell (a bare
    # `exec` with redirections would make it permanent).
    { exec 3<>"/dev/tcp/$NATS_HOST/$NATS_PORT"; } 2>/dev/null || return 1
    IFS= read -r -t 2 greeting <&3 || true
    exec 3>&- 3<&-
    [[ $greeting == INFO* ]]
}

wait_until() {
    local what=$1 check=$2 deadline=$((SECONDS + WAIT_SECONDS))
    until "$check"; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.5
    done
    log "$what is accepting connections"
}

pg_version() {
    # The one cluster version directory under /etc/postgresql (Debian layout).
    local versions
    versions=$(ls /etc/postgresql 2>/dev/null || true)
    [[ -n $versions ]] || die "no cluster under /etc/postgresql after installing postgresql"
    if [[ $(wc -w <<<"$versions") -ne 1 ]]; then
        die "several PostgreSQL versions under /etc/postgresql ($versions): start the right one by hand"
    fi
    echo "$versions"
}

# Trust auth for TCP connections from 127.0.0.1, only for a cluster we just installed:
# an existing cluster's authentication is its owner's business.
configure_fresh_pg_auth() {
    local hba="/etc/postgresql/$1/main/pg_hba.conf"
    [[ -f $hba ]] || return 0
    if ! grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
        log "configuring trust auth for 127.0.0.1 in $hba (fresh install)"
        local tmp
        tmp=$(mktemp)
        {
            echo "# Added by SYNAPSE deploy/ensure-services.sh: local development only."
            echo "local   all   all                  trust"
            echo "host    all   all   127.0.0.1/32   trust"
            echo "host    all   all   ::1/128        trust"
            cat "$hba"
        } >"$tmp"
        cat "$tmp" >"$hba"
        rm -f "$tmp"
    fi
}

ensure_postgres() {
    if pg_ready; then
        log "PostgreSQL already up on $PG_HOST:$PG_PORT"
        return 0
    fi
    local fresh=false
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || [[ -z $(ls /etc/postgresql 2>/dev/null || true) ]]; then
        apt_install postgresql
        fresh=true
    fi
    local version
    version=$(pg_version)
    if [[ $fresh == true ]]; then
        configure_fresh_pg_auth "$version"
        # Debian starts the new cluster through its service scripts where it can; a
        # restart-free reload is enough for pg_hba.conf if it is already running.
        pg_ctlcluster --skip-systemctl-redirect "$version" main reload >/dev/null 2>&1 || true
    fi
    if ! pg_ready; then
        need_root "starting PostgreSQL"
        log "starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    fi
    if ! wait_until "PostgreSQL" pg_ready; then
        log "PostgreSQL did not accept connections within ${WAIT_SECONDS}s; log tail:"
        tail -n 40 "/var/log/postgresql/postgresql-$version-main.log" >&2 2>/dev/null || true
        exit 1
    fi
    if ! psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atqc 'select 1' </dev/null >/dev/null 2>&1; then
        die "PostgreSQL is up but user postgres cannot log in over TCP without a password (need trust auth for 127.0.0.1)"
    fi
}

ensure_nats() {
    if nats_ready; then
        log "NATS already up on $NATS_HOST:$NATS_PORT"
        return 0
    fi
    if [[ ! -x /usr/sbin/nats-server ]]; then
        apt_install nats-server
    fi
    need_root "starting NATS"
    mkdir -p "$NATS_STORE_DIR" "$(dirname "$NATS_LOG")"
    # The Debian package may have started its own unit-less server on install; check again.
    if ! nats_ready; then
        log "starting nats-server with JetStream (store $NATS_STORE_DIR, log $NATS_LOG)"
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
            -a "$NATS_HOST" -p "$NATS_PORT" -js -sd "$NATS_STORE_DIR" -l "$NATS_LOG"
    fi
    if ! wait_until "NATS" nats_ready; then
        if pgrep -x nats-server >/dev/null 2>&1; then
            log "a nats-server process runs (start-stop-daemon left it alone) but nothing answers on $NATS_HOST:$NATS_PORT"
        fi
        log "NATS did not accept connections within ${WAIT_SECONDS}s; log tail:"
        tail -n 40 "$NATS_LOG" >&2 2>/dev/null || true
        exit 1
    fi
}

check_jetstream() {
    # The INFO greeting says whether JetStream is on; a server started elsewhere
    # without -js would make every service fail later with a less clear error.
    local greeting=""
    { exec 3<>"/dev/tcp/$NATS_HOST/$NATS_PORT"; } 2>/dev/null || die "NATS went away on $NATS_HOST:$NATS_PORT"
    IFS= read -r -t 2 greeting <&3 || true
    exec 3>&- 3<&-
    if [[ $greeting != *'"jetstream":true'* ]]; then
        die "NATS on $NATS_HOST:$NATS_PORT runs without JetStream (start it with -js); not touching a running server"
    fi
}

ensure_postgres
ensure_nats
check_jetstream
log "ready: postgres://postgres@$PG_HOST:$PG_PORT  nats://$NATS_HOST:$NATS_PORT (JetStream)"
