# shellcheck shell=bash
# Sourced by scripts/services (which sets REPO, SVC, TIMEOUT and the helpers in common.sh).
# Kafka Connect 4.3 (distributed, one worker) with Debezium's PostgreSQL connector, from
# Maven Central's jars (scripts/connect/pom.xml), talking to the kafka service's broker.
#
# Distributed, not standalone: connectors registered over REST (`tidings cdc register`)
# and their source offsets live in topics on our broker, so a worker killed and started
# again resumes every connector where it stopped without anyone registering it again;
# a standalone worker forgets REST-created connectors when it exits.  The three internal
# topics (tidings-connect-*) are created by the worker on its first start.
#
# 'down' deletes every connector, then drops the replication slots and publications
# they used (and any inactive slot named tidings_cdc_*, left by a worker that died):
# a slot nobody reads keeps PostgreSQL's WAL forever.

SERVICES+=(connect); DEFAULT+=(connect)
ALIAS[kafka-connect]=connect; ALIAS[debezium]=connect

CONNECT_DIR="$SVC/connect"
CONNECT_LIB="$CONNECT_DIR/lib"
CONNECT_LOG="$CONNECT_DIR/connect.log"
CONNECT_PID="$CONNECT_DIR/pid"
CONNECT_POM="$REPO/scripts/connect/pom.xml"
CONNECT_PORT=8083
CONNECT_URL="http://127.0.0.1:$CONNECT_PORT"
CONNECT_PG_URL="postgresql://postgres@127.0.0.1:5432/tidings"
ENV_LINES+=("export TIDINGS_CONNECT_URL=$CONNECT_URL")

connect_install() {
    need_cmd curl curl
    maven_lib connect "$CONNECT_POM" "$CONNECT_LIB"
}

connect_config() {
    cat >"$CONNECT_DIR/worker.properties" <<WORKER
# written by scripts/services
bootstrap.servers=127.0.0.1:9092
group.id=tidings-connect
config.storage.topic=tidings-connect-configs
offset.storage.topic=tidings-connect-offsets
status.storage.topic=tidings-connect-status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
offset.storage.partitions=5
status.storage.partitions=3
# Change events as plain JSON (no embedded schema): what tidings.cdc decodes.
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=false
value.converter.schemas.enable=false
listeners=http://127.0.0.1:$CONNECT_PORT
rest.advertised.host.name=127.0.0.1
rest.advertised.port=$CONNECT_PORT
# Source offsets flushed every second: a worker killed replays at most ~1s of changes
# (the consumers' inboxes absorb the duplicates).
offset.flush.interval.ms=1000
# One worker: a worker that died and came back gets its tasks at once, not after the
# default 5 minutes kept for a lost member's return.
scheduled.rebalance.max.delay.ms=0
# Plugins are found through their ServiceLoader manifests (Connect's and Debezium's jars
# ship them) instead of scanning every class on the classpath: ~40s less at start.
plugin.discovery=service_load
WORKER
    java_log4j "$CONNECT_DIR/log4j2.properties" "$CONNECT_LOG" 50 3 \
        org.apache.kafka.clients WARN org.apache.kafka.common WARN
}

connect_wait_deps() {
    # 'up' starts services in parallel: the broker and PostgreSQL may still be starting.
    local deadline=$((SECONDS + TIMEOUT))
    until port_open 9092 && port_open 5432; do
        [ "$SECONDS" -lt "$deadline" ] ||
            fail connect "kafka (127.0.0.1:9092) and postgres (127.0.0.1:5432) must be up first: scripts/services up kafka postgres" "$CONNECT_LOG"
        sleep 0.5
    done
}

connect_up() {
    connect_install
    connect_config
    if pid_alive "$CONNECT_PID" "$CONNECT_DIR/worker.properties" >/dev/null; then
        log "connect already running (pid $(pid_alive "$CONNECT_PID" "$CONNECT_DIR/worker.properties"))"
    else
        if port_open "$CONNECT_PORT"; then
            fail connect "port $CONNECT_PORT is already taken by another process" "$CONNECT_LOG"
        fi
        connect_wait_deps
        SPAWNED=("$CONNECT_PID" "$CONNECT_DIR/worker.properties")
        # shellcheck disable=SC2086
        spawn "$CONNECT_PID" "$CONNECT_DIR/stdout.log" java ${CONNECT_HEAP_OPTS:--Xms128m -Xmx512m} \
            -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
            -Dlog4j2.configurationFile="$CONNECT_DIR/log4j2.properties" \
            -cp "$CONNECT_LIB/*" org.apache.kafka.connect.cli.ConnectDistributed \
            "$CONNECT_DIR/worker.properties" ||
            fail connect "could not launch the JVM" "$CONNECT_DIR/stdout.log"
    fi
    # Ready when the herder answers GET /connectors (it joined its group and read the
    # config topic); the REST port opens before that.
    local deadline=$((SECONDS + TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        pid_alive "$CONNECT_PID" "$CONNECT_DIR/worker.properties" >/dev/null ||
            fail connect "Connect worker JVM exited during startup" "$CONNECT_DIR/stdout.log, $CONNECT_LOG"
        if curl -fsS -m 5 "$CONNECT_URL/connectors" >/dev/null 2>&1; then
            log "connect ready: $CONNECT_URL (pid $(pid_alive "$CONNECT_PID" "$CONNECT_DIR/worker.properties"))"
            SPAWNED=()
            return 0
        fi
        sleep 0.5
    done
    fail connect "the worker did not answer GET $CONNECT_URL/connectors within ${TIMEOUT}s" "$CONNECT_LOG"
}

connect_psql() { # connect_psql SQL -> runs it on the tidings database, output unaligned
    /usr/lib/postgresql/15/bin/psql "$CONNECT_PG_URL" -qAtX -v ON_ERROR_STOP=1 -c "$1"
}

# Prints "slot publication" for each connector's config read on stdin (a JSON map of maps).
CONNECT_SLOTS_PY='import json, sys
for c in json.load(sys.stdin).values():
    cfg = c.get("info", {}).get("config", {})
    print(cfg.get("slot.name", "debezium"), cfg.get("publication.name", "dbz_publication"))'

connect_drop_slot() { # connect_drop_slot SLOT PUBLICATION -> waits until the slot is inactive
    local _
    for _ in $(seq 20); do
        [ "$(connect_psql "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$1' AND active" 2>/dev/null)" = 0 ] && break
        sleep 0.5
    done
    connect_psql "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$1'" >/dev/null 2>&1 &&
        log "connect: dropped replication slot $1"
    connect_psql "DROP PUBLICATION IF EXISTS \"$2\"" >/dev/null 2>&1 || true
}

connect_down() {
    local pairs="" name slot pub
    if pid_alive "$CONNECT_PID" "$CONNECT_DIR/worker.properties" >/dev/null &&
        curl -fsS -m 5 "$CONNECT_URL/connectors" >/dev/null 2>&1; then
        pairs="$(curl -fsS -m 10 "$CONNECT_URL/connectors?expand=info" | python3 -c "$CONNECT_SLOTS_PY")" || pairs=""
        for name in $(curl -fsS -m 10 "$CONNECT_URL/connectors" |
            python3 -c 'import json, sys; print("\n".join(json.load(sys.stdin)))'); do
            curl -fsS -m 30 -X DELETE "$CONNECT_URL/connectors/$name" >/dev/null 2>&1 &&
                log "connect: deleted connector $name"
        done
    fi
    stop_pid connect "$CONNECT_PID" "$CONNECT_DIR/worker.properties" 30
    if ! port_open 5432; then
        [ -z "$pairs" ] || log "connect: postgres is down; replication slots not dropped: $pairs"
        return 0
    fi
    while read -r slot pub; do
        [ -n "$slot" ] && connect_drop_slot "$slot" "$pub"
    done <<<"$pairs"
    # Slots and publications of connectors that died with their worker: tidings_cdc_ is ours.
    while read -r slot; do
        [ -n "$slot" ] && connect_drop_slot "$slot" "$slot"
    done <<<"$(connect_psql "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'tidings\_cdc\_%' AND NOT active" 2>/dev/null)"
    return 0
}

# One line per connector: its state, each task's state, and the first line of a failure.
CONNECT_STATUS_PY="$(cat <<'PY'
import json, sys
for name, info in sorted(json.load(sys.stdin).items()):
    st = info["status"]
    tasks = " ".join(f"task{t['id']}={t['state']}" for t in st["tasks"]) or "no tasks"
    print(f"  connector {name}: {st['connector']['state']}, {tasks}")
    for part in [st["connector"], *st["tasks"]]:
        if part.get("trace"):
            print(f"    failed: {part['trace'].splitlines()[0]}")
PY
)"

connect_status() {
    local pid
    if pid="$(pid_alive "$CONNECT_PID" "$CONNECT_DIR/worker.properties")"; then
        echo "connect   running  pid $pid  $CONNECT_URL"
        curl -fsS -m 5 "$CONNECT_URL/connectors?expand=status" 2>/dev/null | python3 -c "$CONNECT_STATUS_PY" ||
            echo "  (connectors unknown: $CONNECT_URL/connectors did not answer)"
    else
        echo "connect   stopped  -  $CONNECT_URL"
    fi
}
