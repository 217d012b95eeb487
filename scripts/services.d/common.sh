# shellcheck shell=bash
# Helpers shared by every service file; sourced first by scripts/services.

log() { echo "services: $*" >&2; }

# The one line a caller (CI, a developer) needs when something does not come up.
# A process this very run launched but that never became ready is stopped again,
# so a failed 'up' leaves nothing half-started behind.
SPAWNED=()   # pidfile + marker of the process launched by this run, if any
fail() { # fail SERVICE REASON LOGFILE
    echo "services: $1 FAILED: $2 (log: $3)" >&2
    if [ "${#SPAWNED[@]}" = 2 ]; then stop_pid "$1" "${SPAWNED[0]}" "${SPAWNED[1]}" 10 2>/dev/null || true; fi
    exit 1
}

APT_UPDATED=0
apt_install() {
    # apt-get update only once per run, and only when we really install something.
    local aptlog="$SVC/apt.log"
    mkdir -p "$SVC"
    log "installing $* (apt-get, log: $aptlog)"
    if [ "$APT_UPDATED" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq -o DPkg::Lock::Timeout=600 >>"$aptlog" 2>&1 ||
            fail "$*" "apt-get update failed" "$aptlog"
        APT_UPDATED=1
    fi
    # The lock timeout lets services started in parallel install one after the other.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "$@" >>"$aptlog" 2>&1 ||
        fail "$*" "apt-get install $* failed" "$aptlog"
}

need_cmd() { # need_cmd COMMAND DEBIAN_PACKAGE
    command -v "$1" >/dev/null 2>&1 || apt_install "$2"
}

port_open() { # port_open PORT  -> true when something accepts TCP on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# (No `producer | grep -q` anywhere: with pipefail, grep quitting early can make the
# producer die of SIGPIPE and the whole test fail at random.  Capture, then match.)
cmdline_has() { # cmdline_has PID MARKER -> true if process PID is alive and its argv contains MARKER
    local argv
    argv="$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline")" || return 1
    [[ "$argv" == *"$2"* ]]
}

# A pid file is only trusted if that process is alive AND its command line still
# contains MARKER (our config path), so a recycled pid is never killed or reported.
pid_alive() { # pid_alive PIDFILE MARKER -> prints pid, true if it is ours and running
    local pid
    [ -s "$1" ] || return 1
    pid="$(head -n1 "$1")"
    [ -n "$pid" ] && cmdline_has "$pid" "$2" || return 1
    echo "$pid"
}

# Start a long-running process detached from this shell (own session, so a Ctrl-C
# or the caller's exit does not take it down) and record its pid.  The inner bash
# writes its own pid then execs, so the pid file is right whether or not setsid forks.
spawn() { # spawn PIDFILE LOGFILE CMD...
    local pidfile="$1" logfile="$2"
    shift 2
    rm -f "$pidfile"
    # shellcheck disable=SC2016  # $$ and $@ are for the inner bash
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >>"$logfile" 2>&1 </dev/null &
    for _ in $(seq 50); do [ -s "$pidfile" ] && return 0; sleep 0.1; done
    return 1
}

stop_pid() { # stop_pid NAME PIDFILE MARKER GRACE_SECONDS
    local pid
    if ! pid="$(pid_alive "$2" "$3")"; then
        rm -f "$2"
        log "$1 not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    # cmdline_has, not kill -0: a child of this very run lingers as a zombie (empty argv).
    for _ in $(seq $(($4 * 5))); do
        cmdline_has "$pid" "$3" || break
        sleep 0.2
    done
    if cmdline_has "$pid" "$3"; then
        log "$1 (pid $pid) ignored SIGTERM for $4s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$2"
    log "$1 stopped (pid $pid)"
}

# Jars from Maven Central for a Java server (Kafka, Connect): POM's runtime dependencies
# copied into LIB.  LIB is complete when its stamp matches the pom it was built from; a
# changed pom (e.g. a version bump) rebuilds it.  Servers sharing a LIB (kafka,
# kafka-secure, kafka-cluster) start in parallel: a lock file makes the second wait for
# the first's fetch instead of fetching into the same directory at once.
maven_lib() { # maven_lib SERVICE POM LIB
    local name="$1" pom="$2" lib="$3"
    need_cmd java openjdk-17-jre-headless   # Kafka 4 and Connect need Java 17+
    need_cmd mvn maven
    mkdir -p "$(dirname "$lib")"
    (
        flock 9
        want="$(sha256sum "$pom" | cut -d' ' -f1)"
        [ "$(cat "$lib/.complete" 2>/dev/null)" != "$want" ] || exit 0
        log "$name: fetching jars from Maven Central into $lib"
        rm -rf "$lib" "$lib.tmp"
        mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
            -DoutputDirectory="$lib.tmp" >"$(dirname "$lib")/maven.log" 2>&1 || exit 1
        echo "$want" >"$lib.tmp/.complete"
        mv "$lib.tmp" "$lib"   # atomic: a half-copied lib never looks complete
    ) 9>"$lib.lock" ||
        fail "$name" "maven could not resolve ${pom#"$REPO"/}" "$(dirname "$lib")/maven.log"
}

# log4j2 for a Java server: INFO to a size-capped rolling LOGFILE (these servers are
# chatty), then any "logger level" pairs given, e.g. state.change.logger WARN.
java_log4j() { # java_log4j CONFIG LOGFILE SIZE_MB FILES [LOGGER LEVEL]...
    local config="$1" logfile="$2" size="$3" files="$4" i=0
    shift 4
    {
        cat <<LOG4J
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = $logfile
appender.file.filePattern = $logfile.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = ${size}MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = $files
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
LOG4J
        while [ $# -ge 2 ]; do
            i=$((i + 1))
            echo "logger.l$i.name = $1"
            echo "logger.l$i.level = $2"
            shift 2
        done
    } >"$config"
}
