# shellcheck shell=bash
# Sourced by scripts/services (which sets REPO, SVC, TIMEOUT and the helpers in common.sh).
# NATS with JetStream, Debian's nats-server.

SERVICES+=(nats); DEFAULT+=(nats)

NATS_DIR="$SVC/nats"
NATS_LOG="$NATS_DIR/nats.log"
NATS_PID="$NATS_DIR/pid"
NATS_PORT=4222
NATS_MON=8222
ENV_LINES+=("export TIDINGS_NATS_URL=nats://127.0.0.1:$NATS_PORT")

nats_bin() { command -v nats-server || echo /usr/sbin/nats-server; }

nats_up() {
    [ -x "$(nats_bin)" ] || apt_install nats-server
    need_cmd curl curl
    mkdir -p "$NATS_DIR/store"
    if pid_alive "$NATS_PID" "$NATS_DIR/store" >/dev/null; then
        log "nats already running (pid $(pid_alive "$NATS_PID" "$NATS_DIR/store"))"
    else
        if port_open "$NATS_PORT"; then
            fail nats "port $NATS_PORT is already taken by another process" "$NATS_LOG"
        fi
        # The store dir is kept across restarts: JetStream streams and consumers survive 'down'.
        SPAWNED=("$NATS_PID" "$NATS_DIR/store")
        spawn "$NATS_PID" "$NATS_LOG" "$(nats_bin)" -js -a 127.0.0.1 -p "$NATS_PORT" \
            -m "$NATS_MON" -sd "$NATS_DIR/store" ||
            fail nats "could not launch nats-server" "$NATS_LOG"
    fi
    # /healthz answers ok only once JetStream is up too (it is checked when enabled).
    local _ health jsz
    for _ in $(seq $((TIMEOUT * 5))); do
        pid_alive "$NATS_PID" "$NATS_DIR/store" >/dev/null || fail nats "nats-server exited during startup" "$NATS_LOG"
        health="$(curl -fsS -m 2 "http://127.0.0.1:$NATS_MON/healthz" 2>/dev/null)" || health=""
        jsz="$(curl -fsS -m 2 "http://127.0.0.1:$NATS_MON/jsz" 2>/dev/null)" || jsz=""
        if [[ "$health" == *'"ok"'* && "$jsz" == *'"config"'* ]]; then
            log "nats ready: nats://127.0.0.1:$NATS_PORT, JetStream on (pid $(pid_alive "$NATS_PID" "$NATS_DIR/store"))"
            SPAWNED=()
            return 0
        fi
        sleep 0.2
    done
    fail nats "no healthy JetStream answer on http://127.0.0.1:$NATS_MON within ${TIMEOUT}s" "$NATS_LOG"
}

nats_down() { stop_pid nats "$NATS_PID" "$NATS_DIR/store" 15; }

nats_status() {
    local pid
    if pid="$(pid_alive "$NATS_PID" "$NATS_DIR/store")"; then
        echo "nats      running  pid $pid  nats://127.0.0.1:$NATS_PORT"
    else
        echo "nats      stopped  -  nats://127.0.0.1:$NATS_PORT"
    fi
}

