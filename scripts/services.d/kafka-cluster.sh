# shellcheck shell=bash
# Sourced by scripts/services (which sets REPO, SVC, TIMEOUT and the helpers in common.sh).
# A three-node Apache Kafka 4 cluster in KRaft mode for the chaos runs (bench/chaos.py):
# every node is broker and controller (a three-voter quorum), on its own ports
# (node N: clients 127.0.0.1:N9092, controller N9093), data under .services/kafka-cluster/N,
# from the jars kafka.sh installs. Topics get 3 replicas and min.insync.replicas=2, so a
# write acknowledged with acks=all survives the loss of any one node.
# Heaps are small (KAFKA_CLUSTER_HEAP_OPTS, default -Xms128m -Xmx384m) so that three
# brokers, the shop and PostgreSQL fit on two cores.

SERVICES+=(kafka-cluster)

KC_DIR="$SVC/kafka-cluster"
KC_NODES=(1 2 3)
KC_VOTERS="1@127.0.0.1:19093,2@127.0.0.1:29093,3@127.0.0.1:39093"
ENV_LINES+=("export TIDINGS_KAFKA_CLUSTER_URL=kafka://127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092")

kc_port() { echo "${1}9092"; }   # node N -> its client port
kc_conf() { echo "$KC_DIR/$1/server.properties"; }

kafka_cluster_config() { # kafka_cluster_config NODE
    local n="$1" dir="$KC_DIR/$1"
    mkdir -p "$dir"
    cat >"$dir/server.properties" <<CONF
# written by scripts/services (kafka-cluster)
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$KC_VOTERS
listeners=PLAINTEXT://127.0.0.1:${n}9092,CONTROLLER://127.0.0.1:${n}9093
advertised.listeners=PLAINTEXT://127.0.0.1:${n}9092
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=3
default.replication.factor=3
min.insync.replicas=2
auto.create.topics.enable=true
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
# fewer threads: three brokers share two cores
num.network.threads=2
num.io.threads=2
background.threads=2
CONF
    java_log4j "$dir/log4j2.properties" "$dir/kafka.log" 20 2 state.change.logger WARN \
        kafka.request.logger WARN
}

kafka_cluster_start_node() { # kafka_cluster_start_node NODE  (no wait)
    local n="$1" dir="$KC_DIR/$1"
    kafka_cluster_config "$n"
    pid_alive "$dir/pid" "$(kc_conf "$n")" >/dev/null && return 0
    port_open "$(kc_port "$n")" && fail kafka-cluster "port $(kc_port "$n") is already taken" "$dir/kafka.log"
    if ! [ -s "$dir/data/meta.properties" ]; then
        local cid
        cid="$(cat "$KC_DIR/cluster-id" 2>/dev/null)" || cid=""
        if [ -z "$cid" ]; then
            cid="$(TOOL_TIMEOUT=180 kafka_tool kafka.tools.StorageTool random-uuid 2>>"$dir/kafka.log")" ||
                fail kafka-cluster "StorageTool random-uuid failed" "$dir/kafka.log"
            echo "$cid" >"$KC_DIR/cluster-id"
        fi
        TOOL_TIMEOUT=180 kafka_tool kafka.tools.StorageTool format -t "$cid" -c "$(kc_conf "$n")" \
            >>"$dir/kafka.log" 2>&1 || fail kafka-cluster "StorageTool format of node $n failed" "$dir/kafka.log"
    fi
    # shellcheck disable=SC2086
    spawn "$dir/pid" "$dir/stdout.log" java ${KAFKA_CLUSTER_HEAP_OPTS:--Xms128m -Xmx384m} \
        -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExplicitGCInvokesConcurrent \
        -XX:TieredStopAtLevel=1 -XX:CICompilerCount=2 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$dir/log4j2.properties" \
        -cp "$KAFKA_LIB/*" kafka.Kafka "$(kc_conf "$n")" ||
        fail kafka-cluster "could not launch the JVM of node $n" "$dir/stdout.log"
}

kafka_cluster_up() {
    kafka_install
    mkdir -p "$KC_DIR"
    local n
    for n in "${KC_NODES[@]}"; do kafka_cluster_start_node "$n"; done
    # Ready when a broker reports all three nodes registered and unfenced.
    local deadline=$((SECONDS + TIMEOUT * 2)) out
    while [ "$SECONDS" -lt "$deadline" ]; do
        for n in "${KC_NODES[@]}"; do
            pid_alive "$KC_DIR/$n/pid" "$(kc_conf "$n")" >/dev/null ||
                fail kafka-cluster "node $n exited during startup" "$KC_DIR/$n/stdout.log, $KC_DIR/$n/kafka.log"
        done
        out="$(TOOL_TIMEOUT=30 kafka_tool org.apache.kafka.tools.BrokerApiVersionsCommand \
            --bootstrap-server 127.0.0.1:19092 2>/dev/null)" || out=""
        if [[ "$out" == *"(id: 1 "* && "$out" == *"(id: 2 "* && "$out" == *"(id: 3 "* && "$out" != *"isFenced: true"* ]]; then
            log "kafka-cluster ready: kafka://127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092"
            return 0
        fi
        sleep 1
    done
    fail kafka-cluster "the three nodes did not all register within $((TIMEOUT * 2))s" "$KC_DIR/*/kafka.log"
}

kafka_cluster_down() {
    local n
    for n in "${KC_NODES[@]}"; do stop_pid "kafka-cluster node $n" "$KC_DIR/$n/pid" "$(kc_conf "$n")" 30; done
}

kafka_cluster_status() {
    local n pid
    for n in "${KC_NODES[@]}"; do
        if pid="$(pid_alive "$KC_DIR/$n/pid" "$(kc_conf "$n")")"; then
            echo "kafka-cluster node $n running  pid $pid  kafka://127.0.0.1:$(kc_port "$n")"
        else
            echo "kafka-cluster node $n stopped  -  kafka://127.0.0.1:$(kc_port "$n")"
        fi
    done
}
