# shellcheck shell=bash
# Sourced by scripts/services (which sets REPO, SVC, TIMEOUT and the helpers in common.sh).
# RabbitMQ from Debian's rabbitmq-server.

SERVICES+=(rabbitmq); DEFAULT+=(rabbitmq)
ALIAS[rabbit]=rabbitmq; ALIAS[amqp]=rabbitmq; PREFIX[rabbitmq]=rmq

RMQ_DIR="$SVC/rabbitmq"
RMQ_LOG="$RMQ_DIR/rabbitmq.log"   # the node's stdout/stderr; its own log files are in $RMQ_DIR/log
RMQ_PID="$RMQ_DIR/pid"
RMQ_BIN=/usr/lib/rabbitmq/bin      # the scripts themselves: /usr/sbin's wrappers switch user and reset the env
RMQ_NODE=tidings@localhost
RMQ_PORT=5672
RMQ_MGMT=15672
RMQ_DIST=25672
ENV_LINES+=("export TIDINGS_RABBITMQ_URL=amqp://guest:guest@127.0.0.1:$RMQ_PORT/")

# The node's environment: its own name, cookie (HOME), config, data and logs, so that
# it neither clashes with a Debian 'rabbit@host' node nor reads /etc/rabbitmq.
RMQ_ENV=(HOME="$RMQ_DIR" RABBITMQ_NODENAME="$RMQ_NODE" RABBITMQ_USE_LONGNAME=false
    RABBITMQ_CONFIG_FILE="$RMQ_DIR/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_DIR/enabled_plugins"
    RABBITMQ_MNESIA_BASE="$RMQ_DIR/mnesia" RABBITMQ_LOG_BASE="$RMQ_DIR/log"
    RABBITMQ_ADVANCED_CONFIG_FILE="$RMQ_DIR/advanced.config" RABBITMQ_CONF_ENV_FILE="$RMQ_DIR/rabbitmq-env.conf"
    RABBITMQ_DIST_PORT="$RMQ_DIST" ERL_EPMD_ADDRESS=127.0.0.1
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")

rmq_config() {
    mkdir -p "$RMQ_DIR/log" "$RMQ_DIR/mnesia"
    # Rewritten on every 'up'.  Statistics every second: `tidings lag` reads queue
    # depths from the management API.
    cat >"$RMQ_DIR/rabbitmq.conf" <<EOF
# written by scripts/services
listeners.tcp.default = 127.0.0.1:$RMQ_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $RMQ_MGMT
collect_statistics_interval = 1000
log.file.level = warning
EOF
    echo "[rabbitmq_management]." >"$RMQ_DIR/enabled_plugins"
    : >"$RMQ_DIR/rabbitmq-env.conf"
    echo "[]." >"$RMQ_DIR/advanced.config"
}

rmq_up() {
    if [ ! -x "$RMQ_BIN/rabbitmq-server" ]; then
        # Debian's package would start its own node (rabbit@host, port 5672) at install:
        # a policy-rc.d that denies service starts is put in place for the install only.
        local policy=/usr/sbin/policy-rc.d had_policy=1
        if [ ! -e "$policy" ]; then
            had_policy=0
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
        fi
        apt_install rabbitmq-server
        [ "$had_policy" = 1 ] || rm -f "$policy"
    fi
    [ -x "$RMQ_BIN/rabbitmq-server" ] ||
        fail rabbitmq "rabbitmq-server installed but $RMQ_BIN/rabbitmq-server is missing" "$RMQ_LOG"
    need_cmd curl curl
    rmq_config
    if pid_alive "$RMQ_PID" "$RMQ_DIR" >/dev/null; then
        log "rabbitmq already running (pid $(pid_alive "$RMQ_PID" "$RMQ_DIR"))"
    else
        local port _
        for port in "$RMQ_PORT" "$RMQ_MGMT" "$RMQ_DIST"; do
            if port_open "$port"; then
                fail rabbitmq "port $port is already taken by another process (Debian's own node? try: pgrep -a beam)" "$RMQ_LOG"
            fi
        done
        # The data dir is kept across restarts: quorum queues and their messages survive 'down'.
        # rabbitmq-server is a shell script that stays the parent of the Erlang VM; the
        # pid file names the VM (its command line holds $RMQ_DIR), which stops the node
        # cleanly on SIGTERM, the script exiting with it.
        spawn "$RMQ_DIR/script.pid" "$RMQ_LOG" env "${RMQ_ENV[@]}" "$RMQ_BIN/rabbitmq-server" ||
            fail rabbitmq "could not launch rabbitmq-server" "$RMQ_LOG"
        local script child
        script="$(cat "$RMQ_DIR/script.pid")"
        for _ in $(seq 100); do
            for child in $(pgrep -P "$script" 2>/dev/null || true); do
                cmdline_has "$child" "$RMQ_DIR" && echo "$child" >"$RMQ_PID"
            done
            [ -s "$RMQ_PID" ] && break
            sleep 0.1
        done
        [ -s "$RMQ_PID" ] || fail rabbitmq "the Erlang VM of rabbitmq-server did not start" "$RMQ_LOG"
        SPAWNED=("$RMQ_PID" "$RMQ_DIR")
    fi
    # Ready when the management API answers an aliveness test of the default vhost
    # (the node has booted, and a queue round trip works).
    local out
    for _ in $(seq $((TIMEOUT * 2))); do
        pid_alive "$RMQ_PID" "$RMQ_DIR" >/dev/null ||
            fail rabbitmq "rabbitmq-server exited during startup" "$RMQ_LOG, $RMQ_DIR/log"
        out="$(curl -fsS -m 2 -u guest:guest "http://127.0.0.1:$RMQ_MGMT/api/aliveness-test/%2F" 2>/dev/null)" || out=""
        if [[ "$out" == *'"ok"'* ]] && port_open "$RMQ_PORT"; then
            log "rabbitmq ready: amqp://guest:guest@127.0.0.1:$RMQ_PORT/ (node $RMQ_NODE, pid $(pid_alive "$RMQ_PID" "$RMQ_DIR"))"
            SPAWNED=()
            return 0
        fi
        sleep 0.5
    done
    fail rabbitmq "no aliveness answer on http://127.0.0.1:$RMQ_MGMT within ${TIMEOUT}s" "$RMQ_LOG, $RMQ_DIR/log"
}

rmq_down() {
    if pid_alive "$RMQ_PID" "$RMQ_DIR" >/dev/null; then
        # rabbitmqctl stop lets the node shut its queues down cleanly; stop_pid is the fallback.
        env "${RMQ_ENV[@]}" timeout 60 "$RMQ_BIN/rabbitmqctl" -n "$RMQ_NODE" stop >>"$RMQ_LOG" 2>&1 || true
    fi
    stop_pid rabbitmq "$RMQ_PID" "$RMQ_DIR" 30
    # The node started Erlang's port mapper (epmd) as a daemon; stop it too once no node
    # is registered with it (another Erlang program's node keeps it running).
    if command -v epmd >/dev/null && ! epmd -names 2>/dev/null | grep -q '^name '; then
        epmd -kill >/dev/null 2>&1 || true
    fi
}

rmq_status() {
    local pid
    if pid="$(pid_alive "$RMQ_PID" "$RMQ_DIR")"; then
        echo "rabbitmq  running  pid $pid  amqp://guest:guest@127.0.0.1:$RMQ_PORT/"
    else
        echo "rabbitmq  stopped  -  amqp://guest:guest@127.0.0.1:$RMQ_PORT/"
    fi
}

