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
    # Where this incarnation's lines begin in the (appended, rolling) log: kc_node_running reads from here.
    stat -c %s "$dir/kafka.log" >"$dir/log-mark" 2>/dev/null || echo 0 >"$dir/log-mark"
    # shellcheck disable=SC2086
    spawn "$dir/pid" "$dir/stdout.log" java ${KAFKA_CLUSTER_HEAP_OPTS:--Xms128m -Xmx384m} \
        -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExplicitGCInvokesConcurrent \
        -XX:TieredStopAtLevel=1 -XX:CICompilerCount=2 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$dir/log4j2.properties" \
        -cp "$KAFKA_LIB/*" kafka.Kafka "$(kc_conf "$n")" ||
        fail kafka-cluster "could not launch the JVM of node $n" "$dir/stdout.log"
}

kc_node_running() { # kc_node_running NODE: its log shows it unfenced since its latest start
    local log="$KC_DIR/$1/kafka.log" mark size
    mark="$(cat "$KC_DIR/$1/log-mark" 2>/dev/null)" || mark=0
    size="$(stat -c %s "$log" 2>/dev/null)" || return 1
    # grep -c reads to the end (grep -q would exit early and, under pipefail, tail's SIGPIPE
    # would make a found line look like a failure); it exits 1 when it counts none.
    local found
    if [ "$size" -ge "${mark:-0}" ]; then
        found="$(tail -c +"$((${mark:-0} + 1))" "$log" | grep -c "$KC_RUNNING")" || true
    else # rolled over since the start (20 MB of log): the start is in kafka.log.1 or gone
        found="$(cat "$log.1" "$log" 2>/dev/null | grep -c "$KC_RUNNING")" || true
    fi
    [ "${found:-0}" -gt 0 ]
}
KC_RUNNING="Transitioning from RECOVERY to RUNNING"

kafka_cluster_up() {
    kafka_install
    mkdir -p "$KC_DIR"
    local n
    for n in "${KC_NODES[@]}"; do kafka_cluster_start_node "$n"; done
    # Ready when every node's own log says, since its latest start, that the controller
    # unfenced it ("Transitioning from RECOVERY to RUNNING": registered, caught up with the
    # metadata, serving). Asked this way, not with a Kafka admin tool: each tool run is a JVM
    # start, 10 s on a loaded 2-core machine and over the 30 s it was given at load 20, so
    # every poll timed out and a node that was serving after 16 s was reported as not
    # registered after 180 s (the chaos run's kill_leader).
    local deadline=$((SECONDS + TIMEOUT * 2)) waiting
    while [ "$SECONDS" -lt "$deadline" ]; do
        waiting=""
        for n in "${KC_NODES[@]}"; do
            pid_alive "$KC_DIR/$n/pid" "$(kc_conf "$n")" >/dev/null ||
                fail kafka-cluster "node $n exited during startup" "$KC_DIR/$n/stdout.log, $KC_DIR/$n/kafka.log"
            kc_node_running "$n" || waiting+=" $n"
        done
        if [ -z "$waiting" ]; then
            log "kafka-cluster ready: kafka://127.0.0.1:19092,127.0.0.1:29092,127.0.0.1:39092"
            return 0
        fi
        sleep 0.5
    done
    fail kafka-cluster "node(s)$waiting not registered and unfenced within $((TIMEOUT * 2))s" "$KC_DIR/*/kafka.log"
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
