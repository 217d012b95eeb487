# shellcheck shell=bash
# Sourced by scripts/services (which sets REPO, SVC, TIMEOUT and the helpers in common.sh).
# Toxiproxy (Shopify's TCP proxy for network faults), built from its Go module: the chaos
# runs (bench/chaos.py) put one proxy on every link between a service and a broker node or
# PostgreSQL, and cut, slow or delay it through the HTTP API on 127.0.0.1:8474.

SERVICES+=(toxiproxy); DEFAULT+=(toxiproxy)   # the short chaos run of `make test`

TOXIPROXY_DIR="$SVC/toxiproxy"
TOXIPROXY_BIN="$TOXIPROXY_DIR/bin/server"
TOXIPROXY_LOG="$TOXIPROXY_DIR/toxiproxy.log"
TOXIPROXY_PID="$TOXIPROXY_DIR/pid"
TOXIPROXY_PORT=8474
TOXIPROXY_MODULE="github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0"
ENV_LINES+=("export TIDINGS_TOXIPROXY_URL=http://127.0.0.1:$TOXIPROXY_PORT")

toxiproxy_install() {
    [ -x "$TOXIPROXY_BIN" ] && return 0
    local go
    go="$(command -v go || echo /usr/local/go/bin/go)"
    [ -x "$go" ] || need_cmd go golang-go
    go="$(command -v go || echo /usr/local/go/bin/go)"
    mkdir -p "$TOXIPROXY_DIR"
    log "toxiproxy: building $TOXIPROXY_MODULE (about a minute, log: $TOXIPROXY_DIR/build.log)"
    GOBIN="$TOXIPROXY_DIR/bin" "$go" install "$TOXIPROXY_MODULE" >"$TOXIPROXY_DIR/build.log" 2>&1 ||
        fail toxiproxy "go install $TOXIPROXY_MODULE failed" "$TOXIPROXY_DIR/build.log"
}

toxiproxy_up() {
    toxiproxy_install
    need_cmd curl curl
    if pid_alive "$TOXIPROXY_PID" "$TOXIPROXY_BIN" >/dev/null; then
        log "toxiproxy already running (pid $(pid_alive "$TOXIPROXY_PID" "$TOXIPROXY_BIN"))"
    else
        if port_open "$TOXIPROXY_PORT"; then
            fail toxiproxy "port $TOXIPROXY_PORT is already taken by another process" "$TOXIPROXY_LOG"
        fi
        SPAWNED=("$TOXIPROXY_PID" "$TOXIPROXY_BIN")
        spawn "$TOXIPROXY_PID" "$TOXIPROXY_LOG" "$TOXIPROXY_BIN" -host 127.0.0.1 \
            -port "$TOXIPROXY_PORT" || fail toxiproxy "could not launch toxiproxy" "$TOXIPROXY_LOG"
    fi
    local _
    for _ in $(seq $((TIMEOUT * 5))); do
        pid_alive "$TOXIPROXY_PID" "$TOXIPROXY_BIN" >/dev/null ||
            fail toxiproxy "toxiproxy exited during startup" "$TOXIPROXY_LOG"
        if curl -fsS -m 2 "http://127.0.0.1:$TOXIPROXY_PORT/version" >/dev/null 2>&1; then
            log "toxiproxy ready: http://127.0.0.1:$TOXIPROXY_PORT (pid $(pid_alive "$TOXIPROXY_PID" "$TOXIPROXY_BIN"))"
            SPAWNED=()
            return 0
        fi
        sleep 0.2
    done
    fail toxiproxy "no answer on http://127.0.0.1:$TOXIPROXY_PORT/version within ${TIMEOUT}s" "$TOXIPROXY_LOG"
}

toxiproxy_down() { stop_pid toxiproxy "$TOXIPROXY_PID" "$TOXIPROXY_BIN" 10; }

toxiproxy_status() {
    local pid
    if pid="$(pid_alive "$TOXIPROXY_PID" "$TOXIPROXY_BIN")"; then
        echo "toxiproxy running  pid $pid  http://127.0.0.1:$TOXIPROXY_PORT"
    else
        echo "toxiproxy stopped  -  http://127.0.0.1:$TOXIPROXY_PORT"
    fi
}
