# shellcheck shell=bash
# Sourced by scripts/services (which sets REPO, SVC, TIMEOUT and the helpers in common.sh).
# Apache Kafka 4 (KRaft, single node) from Maven Central's jars.

SERVICES+=(kafka); DEFAULT+=(kafka)

KAFKA_DIR="$SVC/kafka"
KAFKA_LIB="$KAFKA_DIR/lib"
KAFKA_LOG="$KAFKA_DIR/kafka.log"
KAFKA_PID="$KAFKA_DIR/pid"
KAFKA_POM="$REPO/scripts/kafka/pom.xml"
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
ENV_LINES+=("export TIDINGS_KAFKA_URL=kafka://127.0.0.1:$KAFKA_PORT")

# JVM for short-lived CLI tools: fast start matters more than peak speed.
# Bounded by TOOL_TIMEOUT so a wedged broker cannot hang 'up' forever.
kafka_tool() { # [TOOL_TIMEOUT=s] kafka_tool MAIN_CLASS ARGS...
    timeout "${TOOL_TIMEOUT:-60}" java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
        -Dlog4j2.configurationFile="$KAFKA_DIR/tools-log4j2.properties" \
        -cp "$KAFKA_LIB/*" "$@"
}

kafka_install() { maven_lib kafka "$KAFKA_POM" "$KAFKA_LIB"; }

kafka_config() {
    # Combined broker+controller, one node.  The 4.x dynamic quorum
    # (controller.quorum.bootstrap.servers + format --standalone) replaces static voters.
    cat >"$KAFKA_DIR/server.properties" <<EOF
# written by scripts/services
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=3
auto.create.topics.enable=true
# one node: internal topics cannot have more than one replica
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# tests start consumer groups all the time; do not make each join wait 3s
group.initial.rebalance.delay.ms=0
EOF
    java_log4j "$KAFKA_DIR/log4j2.properties" "$KAFKA_LOG" 50 3 state.change.logger WARN \
        kafka.request.logger WARN kafka.log.LogCleaner WARN
    # CLI tools: warnings only, on stderr.
    cat >"$KAFKA_DIR/tools-log4j2.properties" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
}

kafka_format() {
    # Format once; 'down' + 'up' keeps the data dir and its cluster id.
    [ -s "$KAFKA_DIR/data/meta.properties" ] && return 0
    local cid
    cid="$(kafka_tool kafka.tools.StorageTool random-uuid 2>>"$KAFKA_LOG")" ||
        fail kafka "StorageTool random-uuid failed" "$KAFKA_LOG"
    log "kafka: formatting $KAFKA_DIR/data (cluster id $cid)"
    kafka_tool kafka.tools.StorageTool format -t "$cid" -c "$KAFKA_DIR/server.properties" --standalone \
        >>"$KAFKA_LOG" 2>&1 || fail kafka "StorageTool format failed" "$KAFKA_LOG"
}

kafka_up() {
    kafka_install
    kafka_config
    if pid_alive "$KAFKA_PID" "$KAFKA_DIR/server.properties" >/dev/null; then
        log "kafka already running (pid $(pid_alive "$KAFKA_PID" "$KAFKA_DIR/server.properties"))"
    else
        if port_open "$KAFKA_PORT"; then
            fail kafka "port $KAFKA_PORT is already taken by another process" "$KAFKA_LOG"
        fi
        if port_open "$KAFKA_CONTROLLER_PORT"; then
            fail kafka "port $KAFKA_CONTROLLER_PORT is already taken by another process" "$KAFKA_LOG"
        fi
        kafka_format
        # JVM flags as in Kafka's own kafka-server-start.sh / kafka-run-class.sh.
        SPAWNED=("$KAFKA_PID" "$KAFKA_DIR/server.properties")
        # shellcheck disable=SC2086
        spawn "$KAFKA_PID" "$KAFKA_DIR/stdout.log" java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} \
            -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
            -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
            -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
            -cp "$KAFKA_LIB/*" kafka.Kafka "$KAFKA_DIR/server.properties" ||
            fail kafka "could not launch the JVM" "$KAFKA_DIR/stdout.log"
    fi
    # An open port is not enough: wait until the broker answers an ApiVersions request
    # and reports itself unfenced (registered with the controller, able to lead partitions).
    local deadline=$((SECONDS + TIMEOUT)) out
    while [ "$SECONDS" -lt "$deadline" ]; do
        pid_alive "$KAFKA_PID" "$KAFKA_DIR/server.properties" >/dev/null ||
            fail kafka "broker JVM exited during startup" "$KAFKA_DIR/stdout.log, $KAFKA_LOG"
        if port_open "$KAFKA_PORT"; then
            out="$(TOOL_TIMEOUT=20 kafka_tool org.apache.kafka.tools.BrokerApiVersionsCommand \
                --bootstrap-server "127.0.0.1:$KAFKA_PORT" 2>/dev/null)" || out=""
            if [[ "$out" == *"(id: 1 "* && "$out" != *"isFenced: true"* ]]; then
                log "kafka ready: kafka://127.0.0.1:$KAFKA_PORT (pid $(pid_alive "$KAFKA_PID" "$KAFKA_DIR/server.properties"))"
                SPAWNED=()
                return 0
            fi
        fi
        sleep 0.5
    done
    fail kafka "broker did not answer an ApiVersions request on 127.0.0.1:$KAFKA_PORT within ${TIMEOUT}s" "$KAFKA_LOG"
}

kafka_down() { stop_pid kafka "$KAFKA_PID" "$KAFKA_DIR/server.properties" 30; }

kafka_status() {
    local pid
    if pid="$(pid_alive "$KAFKA_PID" "$KAFKA_DIR/server.properties")"; then
        echo "kafka     running  pid $pid  kafka://127.0.0.1:$KAFKA_PORT"
    else
        echo "kafka     stopped  -  kafka://127.0.0.1:$KAFKA_PORT"
    fi
}

