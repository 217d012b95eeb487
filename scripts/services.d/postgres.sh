# shellcheck shell=bash
# Sourced by scripts/services (which sets REPO, SVC, TIMEOUT and the helpers in common.sh).
# PostgreSQL 15 from Debian's packages.

SERVICES+=(postgres); DEFAULT+=(postgres)
ALIAS[postgresql]=postgres; ALIAS[pg]=postgres; PREFIX[postgres]=pg

PG_BIN=/usr/lib/postgresql/15/bin        # Debian's; /usr/local/bin/pg_ctl may be a symlink to it
PG_DIR="$SVC/postgres"
PG_DATA="$PG_DIR/data"
PG_LOG="$PG_DIR/postgres.log"
PG_SOCK=/var/run/postgresql              # default socket dir of libpq: makes postgresql:///tidings work
PG_PORT=5432
ENV_LINES+=("export TIDINGS_POSTGRES_URL=postgresql://postgres@127.0.0.1:$PG_PORT/tidings")

pg_as() { runuser -u postgres -- "$@"; }   # root may not run postgres; its OS user can

pg_install() {
    if [ ! -x "$PG_BIN/postgres" ]; then
        # Debian's package would create and start its own 'main' cluster on 5432 and take
        # the port from ours.  createcluster.conf includes createcluster.d, so a drop-in
        # turns that off for this install only; it is removed again right after.
        local dropin=/etc/postgresql-common/createcluster.d/00-tidings-no-main-cluster.conf
        mkdir -p "$(dirname "$dropin")"
        echo "create_main_cluster = false" >"$dropin"
        apt_install postgresql-15 postgresql-client-15
        rm -f "$dropin"
        # Older postgresql-common without the include: stop the cluster our install started.
        if pg_lsclusters -h 2>/dev/null | grep -q '^15 main 5432 online'; then
            log "postgres: stopping Debian's freshly created 15/main cluster (it holds port 5432)"
            pg_ctlcluster 15 main stop || true
        fi
    fi
    [ -x "$PG_BIN/postgres" ] || fail postgres "postgresql-15 installed but $PG_BIN/postgres is missing" "$PG_LOG"
}

pg_pid() { # prints postmaster pid if our cluster is running
    [ -s "$PG_DATA/postmaster.pid" ] || return 1
    local pid
    pid="$(head -n1 "$PG_DATA/postmaster.pid")"
    [ -n "$pid" ] && cmdline_has "$pid" "$PG_DATA" || return 1
    echo "$pid"
}

pg_init() {
    id postgres >/dev/null 2>&1 || fail postgres "OS user 'postgres' missing (postgresql-common not installed?)" "$PG_LOG"
    mkdir -p "$PG_DIR"
    chown postgres:postgres "$PG_DIR"
    touch "$PG_LOG" && chown postgres:postgres "$PG_LOG"
    # The server runs as 'postgres', so it must be able to reach the repo directory.
    pg_as test -x "$PG_DIR" ||
        fail postgres "user postgres cannot enter $PG_DIR (a parent dir is not world-executable)" "$PG_LOG"
    mkdir -p "$PG_SOCK" && chown postgres:postgres "$PG_SOCK" && chmod 2775 "$PG_SOCK"

    if [ ! -s "$PG_DATA/PG_VERSION" ]; then
        log "postgres: initdb $PG_DATA"
        rm -rf "$PG_DATA"
        # trust for local socket and loopback TCP: a throwaway dev/test cluster.
        pg_as "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --no-locale \
            >>"$PG_LOG" 2>&1 || fail postgres "initdb failed" "$PG_LOG"
        echo "include_if_exists = 'tidings.conf'" >>"$PG_DATA/postgresql.conf"
    fi
    # Rewritten on every 'up' so edits here take effect on the next restart.
    # Durability settings are left at their defaults on purpose: benchmarks run here.
    cat >"$PG_DATA/tidings.conf" <<EOF
# written by scripts/services
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 200
logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
# Logical decoding for change data capture (Debezium's pgoutput slots, see connect.sh).
# A slot left behind keeps WAL forever: 'services down connect' drops ours.
wal_level = logical
max_replication_slots = 16
max_wal_senders = 16
EOF
    chown postgres:postgres "$PG_DATA/tidings.conf"
}

pg_up() {
    pg_install
    pg_init
    if pg_pid >/dev/null; then
        log "postgres already running (pid $(pg_pid))"
    else
        if port_open "$PG_PORT"; then
            fail postgres "port $PG_PORT is already taken by another process (Debian's own cluster? try: pg_lsclusters)" "$PG_LOG"
        fi
        pg_as "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG" -w -t "$TIMEOUT" >/dev/null 2>&1 ||
            fail postgres "server did not start within ${TIMEOUT}s" "$PG_LOG"
    fi
    for _ in $(seq $((TIMEOUT * 2))); do
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break
        sleep 0.5
    done
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" ||
        fail postgres "pg_isready on 127.0.0.1:$PG_PORT never answered" "$PG_LOG"
    # Role 'root' lets root use `psql postgresql:///tidings` with no user name.
    pg_as "$PG_BIN/psql" -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres -qAtX -v ON_ERROR_STOP=1 >>"$PG_LOG" 2>&1 <<'EOF' ||
SELECT 'CREATE ROLE root SUPERUSER LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'root')\gexec
SELECT 'CREATE DATABASE tidings OWNER postgres' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'tidings')\gexec
EOF
        fail postgres "could not create role root / database tidings" "$PG_LOG"
    # A cluster started before wal_level=logical was written above needs one restart.
    local wal
    wal="$(pg_as "$PG_BIN/psql" -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres -qAtX -c 'SHOW wal_level' 2>>"$PG_LOG")" || wal=""
    if [ "$wal" != logical ]; then
        log "postgres: restarting once to turn on wal_level=logical (was '$wal')"
        pg_as "$PG_BIN/pg_ctl" restart -D "$PG_DATA" -l "$PG_LOG" -m fast -w -t "$TIMEOUT" >/dev/null 2>&1 ||
            fail postgres "restart for wal_level=logical failed" "$PG_LOG"
    fi
    log "postgres ready: postgresql://postgres@127.0.0.1:$PG_PORT/tidings (pid $(pg_pid))"
}

pg_down() {
    if pg_pid >/dev/null; then
        local pid
        pid="$(pg_pid)"
        pg_as "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 >/dev/null
        log "postgres stopped (pid $pid)"
    else
        log "postgres not running"
    fi
}

pg_status() {
    if [ -d "$PG_DATA" ] && ! [ -r "$PG_DATA" ]; then   # data dir is postgres-only (mode 700)
        echo "postgres  unknown  -  postgresql://postgres@127.0.0.1:$PG_PORT/tidings (run as root to see)"
    elif pg_pid >/dev/null; then
        echo "postgres  running  pid $(pg_pid)  postgresql://postgres@127.0.0.1:$PG_PORT/tidings"
    else
        echo "postgres  stopped  -  postgresql://postgres@127.0.0.1:$PG_PORT/tidings"
    fi
}

