# shellcheck shell=bash
# Sourced by scripts/services (which sets REPO, SVC, TIMEOUT and the helpers in common.sh).
# A three-node NATS JetStream cluster for the chaos runs (bench/chaos.py): node N serves
# clients on 127.0.0.1:N4222, routes on N6222, monitoring on N8222; data under
# .services/nats-cluster/N. The cluster does not advertise its nodes' client addresses
# (no_advertise), so a client reached through a proxy stays on the proxies it was given.
# Streams get 3 replicas when the transport's URL says replicas=3.

SERVICES+=(nats-cluster); DEFAULT+=(nats-cluster)   # the short chaos run of `make test`

NC_DIR="$SVC/nats-cluster"
NC_NODES=(1 2 3)
ENV_LINES+=("export TIDINGS_NATS_CLUSTER_URL=nats://127.0.0.1:14222,127.0.0.1:24222,127.0.0.1:34222?replicas=3")

nc_conf() { echo "$NC_DIR/$1/nats.conf"; }

nats_cluster_config() { # nats_cluster_config NODE
    local n="$1" dir="$NC_DIR/$1"
    mkdir -p "$dir/store"
    cat >"$dir/nats.conf" <<CONF
# written by scripts/services (nats-cluster)
server_name: n$n
host: 127.0.0.1
port: ${n}4222
http: 127.0.0.1:${n}8222
jetstream { store_dir: "$dir/store", max_memory_store: 256MB, max_file_store: 4GB }
cluster {
  name: tidings-chaos
  host: 127.0.0.1
  port: ${n}6222
  no_advertise: true
  routes: [ nats://127.0.0.1:16222, nats://127.0.0.1:26222, nats://127.0.0.1:36222 ]
}
CONF
}

nats_cluster_start_node() { # nats_cluster_start_node NODE  (no wait)
    local n="$1" dir="$NC_DIR/$1"
    nats_cluster_config "$n"
    pid_alive "$dir/pid" "$(nc_conf "$n")" >/dev/null && return 0
    port_open "${n}4222" && fail nats-cluster "port ${n}4222 is already taken" "$dir/nats.log"
    spawn "$dir/pid" "$dir/nats.log" "$(nats_bin)" -c "$(nc_conf "$n")" ||
        fail nats-cluster "could not launch nats-server node $n" "$dir/nats.log"
}

nats_cluster_up() {
    [ -x "$(nats_bin)" ] || apt_install nats-server
    need_cmd curl curl
    local n _ ok health
    for n in "${NC_NODES[@]}"; do nats_cluster_start_node "$n"; done
    # /healthz is ok on a node once JetStream there is current with the meta leader.
    for _ in $(seq $((TIMEOUT * 5))); do
        ok=0
        for n in "${NC_NODES[@]}"; do
            pid_alive "$NC_DIR/$n/pid" "$(nc_conf "$n")" >/dev/null ||
                fail nats-cluster "node $n exited during startup" "$NC_DIR/$n/nats.log"
            health="$(curl -fsS -m 2 "http://127.0.0.1:${n}8222/healthz" 2>/dev/null)" || health=""
            [[ "$health" == *'"ok"'* ]] && ok=$((ok + 1))
        done
        if [ "$ok" = 3 ]; then
            log "nats-cluster ready: nats://127.0.0.1:14222,127.0.0.1:24222,127.0.0.1:34222"
            return 0
        fi
        sleep 0.2
    done
    fail nats-cluster "the three nodes were not all healthy within ${TIMEOUT}s" "$NC_DIR/*/nats.log"
}

nats_cluster_down() {
    local n
    for n in "${NC_NODES[@]}"; do stop_pid "nats-cluster node $n" "$NC_DIR/$n/pid" "$(nc_conf "$n")" 15; done
}

nats_cluster_status() {
    local n pid
    for n in "${NC_NODES[@]}"; do
        if pid="$(pid_alive "$NC_DIR/$n/pid" "$(nc_conf "$n")")"; then
            echo "nats-cluster node $n running  pid $pid  nats://127.0.0.1:${n}4222"
        else
            echo "nats-cluster node $n stopped  -  nats://127.0.0.1:${n}4222"
        fi
    done
}
