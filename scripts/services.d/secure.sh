# shellcheck shell=bash
# Sourced by scripts/services (after common.sh; uses kafka.sh's and postgres.sh's helpers).
# Secured servers NEXT TO the plaintext ones, for the security tests (issue 11) and for
# trying Tidings as it runs in production.  Nothing here changes the plaintext servers.
#
#   kafka-secure     kafka://admin@127.0.0.1:9192   SASL_SSL, SCRAM-SHA-512, StandardAuthorizer
#                    (allow.everyone.if.no.acl.found=false; super user: admin); its own
#                    single KRaft node and data (.services/kafka-secure), the jars of 'kafka'
#   nats-secure      nats://admin@127.0.0.1:4322    TLS; users with per-subject permissions
#                    from .services/nats-secure/authorization.conf ('tidings acl apply'
#                    rewrites it and reloads the server); JetStream on
#   postgres-secure  postgresql://postgres@127.0.0.1:5433/tidings?sslmode=verify-full
#                    hostssl + scram-sha-256 only (a second cluster; no trust on TCP)
#
# A throwaway CA and one server certificate (127.0.0.1, localhost) are made with openssl
# under .services/secure/ on first 'up'; the admin passwords are random, in
# .services/secure/<service>-admin.pw (mode 600).  Clients: see docs/security.md, e.g.
#   kafka://admin@127.0.0.1:9192?tls_ca=.services/secure/ca.pem&password_file=.services/secure/kafka-admin.pw

SERVICES+=(kafka-secure nats-secure postgres-secure)
DEFAULT+=(kafka-secure nats-secure postgres-secure)

SEC_DIR="$SVC/secure"
SEC_CA="$SEC_DIR/ca.pem"
ENV_LINES+=(
    "export TIDINGS_SECURE_CA=$SEC_DIR/ca.pem"
    "export TIDINGS_KAFKA_SECURE_URL='kafka://admin@127.0.0.1:9192?tls_ca=$SEC_DIR/ca.pem&password_file=$SEC_DIR/kafka-admin.pw'"
    "export TIDINGS_NATS_SECURE_URL='nats://admin@127.0.0.1:4322?tls_ca=$SEC_DIR/ca.pem&password_file=$SEC_DIR/nats-admin.pw'"
    "export TIDINGS_POSTGRES_SECURE_URL='postgresql://postgres@127.0.0.1:5433/tidings?sslmode=verify-full&sslrootcert=$SEC_DIR/ca.pem&password_file=$SEC_DIR/postgres-admin.pw'"
)

# The CA and server certificate, once (parallel 'up's share them: made under a lock).
secure_certs() {
    mkdir -p "$SEC_DIR"
    chmod 755 "$SEC_DIR"   # postgres (its own OS user) reads its copies from here
    (
        flock 9
        [ -s "$SEC_DIR/server.pem" ] && exit 0
        log "secure: making a throwaway CA and server certificate in $SEC_DIR"
        local ext="$SEC_DIR/server.ext"
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$ext"
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$SEC_DIR/ca.key" 2>/dev/null &&
            openssl req -x509 -new -key "$SEC_DIR/ca.key" -subj "/CN=tidings throwaway CA" \
                -days 3650 -out "$SEC_DIR/ca.pem" 2>/dev/null &&
            openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$SEC_DIR/server.key" 2>/dev/null &&
            openssl req -new -key "$SEC_DIR/server.key" -subj "/CN=tidings-secure-node" \
                -out "$SEC_DIR/server.csr" 2>/dev/null &&
            openssl x509 -req -in "$SEC_DIR/server.csr" -CA "$SEC_DIR/ca.pem" -CAkey "$SEC_DIR/ca.key" \
                -CAcreateserial -days 3650 -extfile "$ext" -out "$SEC_DIR/server.pem.tmp" 2>/dev/null ||
            exit 1
        chmod 600 "$SEC_DIR/ca.key" "$SEC_DIR/server.key"
        mv "$SEC_DIR/server.pem.tmp" "$SEC_DIR/server.pem"
    ) 9>"$SEC_DIR/.lock" || fail secure "openssl could not make the CA and certificate" "$SEC_DIR"
}

secure_password() { # secure_password NAME -> the path of a random password kept in $SEC_DIR
    local file="$SEC_DIR/$1.pw"
    if [ ! -s "$file" ]; then
        (umask 077 && openssl rand -hex 16 >"$file.tmp" && mv "$file.tmp" "$file")
    fi
    echo "$file"
}

# ---------------------------------------------------------------- kafka-secure

KS_DIR="$SVC/kafka-secure"
KS_PORT=9192
KS_CONTROLLER_PORT=9193
KS_LOG="$KS_DIR/kafka.log"
KS_PID="$KS_DIR/pid"

ks_config() {
    local pw
    pw="$(cat "$(secure_password kafka-admin)")"
    mkdir -p "$KS_DIR"
    # One PEM key store: the private key (PKCS#8, unencrypted) then the certificate.
    cat "$SEC_DIR/server.key" "$SEC_DIR/server.pem" >"$KS_DIR/keystore.pem"
    chmod 600 "$KS_DIR/keystore.pem"
    # The controller listener takes TLS with a client certificate (the node's own): its
    # principal, User:CN=tidings-secure-node, is the only super user besides admin, so no
    # unauthenticated client can use the controller port.
    (umask 077 && cat >"$KS_DIR/server.properties" <<EOF
# written by scripts/services (secure.sh)
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KS_CONTROLLER_PORT
listeners=SASL_SSL://127.0.0.1:$KS_PORT,CONTROLLER://127.0.0.1:$KS_CONTROLLER_PORT
advertised.listeners=SASL_SSL://127.0.0.1:$KS_PORT,CONTROLLER://127.0.0.1:$KS_CONTROLLER_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$pw";
listener.name.controller.ssl.client.auth=required
ssl.keystore.type=PEM
ssl.keystore.location=$KS_DIR/keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$SEC_CA
ssl.principal.mapping.rules=RULE:^CN=([^,]+)\$/\$1/,DEFAULT
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:tidings-secure-node
log.dirs=$KS_DIR/data
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
    )
    (umask 077 && cat >"$KS_DIR/admin.properties" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$pw";
ssl.truststore.type=PEM
ssl.truststore.location=$SEC_CA
EOF
    )
    java_log4j "$KS_DIR/log4j2.properties" "$KS_LOG" 20 2 state.change.logger WARN \
        kafka.request.logger WARN
}

kafka_secure_up() {
    kafka_install   # the plaintext node's jars (.services/kafka/lib); maven_lib locks them
    secure_certs
    ks_config
    if pid_alive "$KS_PID" "$KS_DIR/server.properties" >/dev/null; then
        log "kafka-secure already running (pid $(pid_alive "$KS_PID" "$KS_DIR/server.properties"))"
    else
        port_open "$KS_PORT" && fail kafka-secure "port $KS_PORT is already taken by another process" "$KS_LOG"
        port_open "$KS_CONTROLLER_PORT" &&
            fail kafka-secure "port $KS_CONTROLLER_PORT is already taken by another process" "$KS_LOG"
        if [ ! -s "$KS_DIR/data/meta.properties" ]; then
            local cid
            cid="$(kafka_tool kafka.tools.StorageTool random-uuid 2>>"$KS_LOG")" ||
                fail kafka-secure "StorageTool random-uuid failed" "$KS_LOG"
            log "kafka-secure: formatting $KS_DIR/data with SCRAM user admin"
            kafka_tool kafka.tools.StorageTool format -t "$cid" -c "$KS_DIR/server.properties" --standalone \
                --add-scram "SCRAM-SHA-512=[name=admin,password=$(cat "$SEC_DIR/kafka-admin.pw")]" \
                >>"$KS_LOG" 2>&1 || fail kafka-secure "StorageTool format failed" "$KS_LOG"
        fi
        SPAWNED=("$KS_PID" "$KS_DIR/server.properties")
        # shellcheck disable=SC2086
        spawn "$KS_PID" "$KS_DIR/stdout.log" java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} \
            -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
            -Dlog4j2.configurationFile="$KS_DIR/log4j2.properties" \
            -cp "$KAFKA_LIB/*" kafka.Kafka "$KS_DIR/server.properties" ||
            fail kafka-secure "could not launch the JVM" "$KS_DIR/stdout.log"
    fi
    local deadline=$((SECONDS + TIMEOUT)) out
    while [ "$SECONDS" -lt "$deadline" ]; do
        pid_alive "$KS_PID" "$KS_DIR/server.properties" >/dev/null ||
            fail kafka-secure "broker JVM exited during startup" "$KS_DIR/stdout.log, $KS_LOG"
        if port_open "$KS_PORT"; then
            out="$(TOOL_TIMEOUT=20 kafka_tool org.apache.kafka.tools.BrokerApiVersionsCommand \
                --bootstrap-server "127.0.0.1:$KS_PORT" --command-config "$KS_DIR/admin.properties" 2>/dev/null)" || out=""
            if [[ "$out" == *"(id: 1 "* && "$out" != *"isFenced: true"* ]]; then
                log "kafka-secure ready: kafka://admin@127.0.0.1:$KS_PORT SASL_SSL (pid $(pid_alive "$KS_PID" "$KS_DIR/server.properties"))"
                SPAWNED=()
                return 0
            fi
        fi
        sleep 0.5
    done
    fail kafka-secure "broker did not answer an authenticated ApiVersions request on 127.0.0.1:$KS_PORT within ${TIMEOUT}s" "$KS_LOG"
}

kafka_secure_down() { stop_pid kafka-secure "$KS_PID" "$KS_DIR/server.properties" 30; }

kafka_secure_status() {
    local pid
    if pid="$(pid_alive "$KS_PID" "$KS_DIR/server.properties")"; then
        echo "kafka-secure  running  pid $pid  kafka://admin@127.0.0.1:$KS_PORT (SASL_SSL)"
    else
        echo "kafka-secure  stopped  -  kafka://admin@127.0.0.1:$KS_PORT (SASL_SSL)"
    fi
}

# ---------------------------------------------------------------- nats-secure

NS_DIR="$SVC/nats-secure"
NS_PORT=4322
NS_MON=8322
NS_LOG="$NS_DIR/nats.log"
NS_PID="$NS_DIR/pid"

nats_secure_up() {
    [ -x "$(nats_bin)" ] || apt_install nats-server
    need_cmd curl curl
    secure_certs
    mkdir -p "$NS_DIR/store"
    local pw
    pw="$(cat "$(secure_password nats-admin)")"
    # The users and their permissions: 'tidings acl apply' rewrites this file (keeping the
    # admin) and reloads the server; only the admin until then.
    if [ ! -s "$NS_DIR/authorization.conf" ]; then
        (umask 077 && printf '# written by scripts/services; rewritten by tidings acl apply\nauthorization: {"users": [{"user": "admin", "password": "%s"}]}\n' \
            "$pw" >"$NS_DIR/authorization.conf")
    fi
    cat >"$NS_DIR/nats.conf" <<EOF
# written by scripts/services (secure.sh)
listen: 127.0.0.1:$NS_PORT
http: 127.0.0.1:$NS_MON
jetstream { store_dir: "$NS_DIR/store" }
tls {
  cert_file: "$SEC_DIR/server.pem"
  key_file: "$SEC_DIR/server.key"
  ca_file: "$SEC_CA"
  timeout: 2
}
include ./authorization.conf
EOF
    if pid_alive "$NS_PID" "$NS_DIR/nats.conf" >/dev/null; then
        log "nats-secure already running (pid $(pid_alive "$NS_PID" "$NS_DIR/nats.conf"))"
    else
        port_open "$NS_PORT" && fail nats-secure "port $NS_PORT is already taken by another process" "$NS_LOG"
        SPAWNED=("$NS_PID" "$NS_DIR/nats.conf")
        spawn "$NS_PID" "$NS_LOG" "$(nats_bin)" -c "$NS_DIR/nats.conf" ||
            fail nats-secure "could not launch nats-server" "$NS_LOG"
    fi
    local _ health
    for _ in $(seq $((TIMEOUT * 5))); do
        pid_alive "$NS_PID" "$NS_DIR/nats.conf" >/dev/null || fail nats-secure "nats-server exited during startup" "$NS_LOG"
        health="$(curl -fsS -m 2 "http://127.0.0.1:$NS_MON/healthz" 2>/dev/null)" || health=""
        if [[ "$health" == *'"ok"'* ]]; then
            log "nats-secure ready: nats://admin@127.0.0.1:$NS_PORT, TLS (pid $(pid_alive "$NS_PID" "$NS_DIR/nats.conf"))"
            SPAWNED=()
            return 0
        fi
        sleep 0.2
    done
    fail nats-secure "no healthy answer on http://127.0.0.1:$NS_MON within ${TIMEOUT}s" "$NS_LOG"
}

nats_secure_down() { stop_pid nats-secure "$NS_PID" "$NS_DIR/nats.conf" 15; }

nats_secure_status() {
    local pid
    if pid="$(pid_alive "$NS_PID" "$NS_DIR/nats.conf")"; then
        echo "nats-secure   running  pid $pid  nats://admin@127.0.0.1:$NS_PORT (TLS)"
    else
        echo "nats-secure   stopped  -  nats://admin@127.0.0.1:$NS_PORT (TLS)"
    fi
}

# ---------------------------------------------------------------- postgres-secure

PS_DIR="$SVC/postgres-secure"
PS_DATA="$PS_DIR/data"
PS_LOG="$PS_DIR/postgres.log"
PS_PORT=5433

ps_pid() {
    [ -s "$PS_DATA/postmaster.pid" ] || return 1
    local pid
    pid="$(head -n1 "$PS_DATA/postmaster.pid")"
    [ -n "$pid" ] && cmdline_has "$pid" "$PS_DATA" || return 1
    echo "$pid"
}

postgres_secure_up() {
    pg_install
    secure_certs
    local pwfile
    pwfile="$(secure_password postgres-admin)"
    mkdir -p "$PS_DIR"
    chown postgres:postgres "$PS_DIR"
    touch "$PS_LOG" && chown postgres:postgres "$PS_LOG"
    if [ ! -s "$PS_DATA/PG_VERSION" ]; then
        log "postgres-secure: initdb $PS_DATA (scram-sha-256)"
        rm -rf "$PS_DATA"
        install -o postgres -m 600 "$pwfile" "$PS_DIR/initdb.pw"
        pg_as "$PG_BIN/initdb" -D "$PS_DATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
            --pwfile="$PS_DIR/initdb.pw" -E UTF8 --no-locale >>"$PS_LOG" 2>&1 ||
            fail postgres-secure "initdb failed" "$PS_LOG"
        rm -f "$PS_DIR/initdb.pw"
        echo "include_if_exists = 'tidings.conf'" >>"$PS_DATA/postgresql.conf"
    fi
    install -o postgres -m 600 "$SEC_DIR/server.key" "$PS_DATA/server.key"
    install -o postgres -m 644 "$SEC_DIR/server.pem" "$PS_DATA/server.pem"
    # TCP only with TLS and a SCRAM password; the socket (peer) for root's setup below.
    cat >"$PS_DATA/pg_hba.conf" <<EOF
# written by scripts/services (secure.sh)
local   all  all                  peer map=tidings
hostssl all  all  127.0.0.1/32    scram-sha-256
EOF
    printf 'tidings root postgres\ntidings postgres postgres\n' >"$PS_DATA/pg_ident.conf"
    cat >"$PS_DATA/tidings.conf" <<EOF
# written by scripts/services (secure.sh)
listen_addresses = '127.0.0.1'
port = $PS_PORT
unix_socket_directories = '$PS_DIR'
max_connections = 100
logging_collector = off
log_min_messages = warning
ssl = on
ssl_cert_file = 'server.pem'
ssl_key_file = 'server.key'
ssl_min_protocol_version = 'TLSv1.2'
password_encryption = 'scram-sha-256'
EOF
    chown postgres:postgres "$PS_DATA"/{pg_hba.conf,pg_ident.conf,tidings.conf}
    if ps_pid >/dev/null; then
        log "postgres-secure already running (pid $(ps_pid)); reloading its configuration"
        pg_as "$PG_BIN/pg_ctl" reload -D "$PS_DATA" >/dev/null 2>&1 || true
    else
        port_open "$PS_PORT" && fail postgres-secure "port $PS_PORT is already taken by another process" "$PS_LOG"
        pg_as "$PG_BIN/pg_ctl" start -D "$PS_DATA" -l "$PS_LOG" -w -t "$TIMEOUT" >/dev/null 2>&1 ||
            fail postgres-secure "server did not start within ${TIMEOUT}s" "$PS_LOG"
    fi
    pg_as "$PG_BIN/psql" -h "$PS_DIR" -p "$PS_PORT" -U postgres -d postgres -qAtX -v ON_ERROR_STOP=1 >>"$PS_LOG" 2>&1 <<'EOF' ||
SELECT 'CREATE DATABASE tidings OWNER postgres' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'tidings')\gexec
EOF
        fail postgres-secure "could not create database tidings" "$PS_LOG"
    log "postgres-secure ready: postgresql://postgres@127.0.0.1:$PS_PORT/tidings (hostssl, scram) (pid $(ps_pid))"
}

postgres_secure_down() {
    if ps_pid >/dev/null; then
        local pid
        pid="$(ps_pid)"
        pg_as "$PG_BIN/pg_ctl" stop -D "$PS_DATA" -m fast -w -t 60 >/dev/null
        log "postgres-secure stopped (pid $pid)"
    else
        log "postgres-secure not running"
    fi
}

postgres_secure_status() {
    if [ -d "$PS_DATA" ] && ! [ -r "$PS_DATA" ]; then
        echo "postgres-secure  unknown  -  postgresql://postgres@127.0.0.1:$PS_PORT/tidings (run as root to see)"
    elif ps_pid >/dev/null; then
        echo "postgres-secure  running  pid $(ps_pid)  postgresql://postgres@127.0.0.1:$PS_PORT/tidings (hostssl)"
    else
        echo "postgres-secure  stopped  -  postgresql://postgres@127.0.0.1:$PS_PORT/tidings (hostssl)"
    fi
}
