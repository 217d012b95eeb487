# shellcheck shell=bash
# Sourced by scripts/services (which sets REPO, SVC, TIMEOUT and the helpers in common.sh).
# moto's AWS emulator (SNS, SQS, EventBridge) in server mode, in its own venv.

SERVICES+=(aws); DEFAULT+=(aws)
ALIAS[moto]=aws; ALIAS[sqs]=aws; ALIAS[sns]=aws

AWS_DIR="$SVC/aws"
AWS_LOG="$AWS_DIR/moto.log"
AWS_PID="$AWS_DIR/pid"
AWS_VENV="$AWS_DIR/venv"
AWS_PORT=4566
MOTO_PIN="moto[server]==5.2.5"   # bump here; 'up' reinstalls when the pin changes
ENV_LINES+=("export TIDINGS_AWS_URL=sqs+sns://127.0.0.1:$AWS_PORT?region=us-east-1")

aws_install() {
    # Its own venv: moto[server] (Flask, boto3, ...) stays out of the project's dependencies.
    if [ "$(cat "$AWS_VENV/.complete" 2>/dev/null)" != "$MOTO_PIN" ]; then
        mkdir -p "$AWS_DIR"
        log "aws: installing $MOTO_PIN into $AWS_VENV"
        rm -rf "$AWS_VENV"
        python3 -m venv "$AWS_VENV" >>"$AWS_DIR/pip.log" 2>&1 ||
            fail aws "python3 -m venv failed (Debian: apt-get install python3-venv)" "$AWS_DIR/pip.log"
        "$AWS_VENV/bin/pip" install -q "$MOTO_PIN" >>"$AWS_DIR/pip.log" 2>&1 ||
            fail aws "pip install $MOTO_PIN failed" "$AWS_DIR/pip.log"
        echo "$MOTO_PIN" >"$AWS_VENV/.complete"
    fi
}

aws_up() {
    aws_install
    need_cmd curl curl
    if pid_alive "$AWS_PID" "$AWS_VENV" >/dev/null; then
        log "aws already running (pid $(pid_alive "$AWS_PID" "$AWS_VENV"))"
    else
        if port_open "$AWS_PORT"; then
            fail aws "port $AWS_PORT is already taken by another process" "$AWS_LOG"
        fi
        SPAWNED=("$AWS_PID" "$AWS_VENV")
        # moto_server through scripts/moto/serve.py: the same server with a cheaper clock
        # (the file says why: publishing to a filling FIFO queue slows down without it).
        spawn "$AWS_PID" "$AWS_LOG" "$AWS_VENV/bin/python" "$REPO/scripts/moto/serve.py" \
            -H 127.0.0.1 -p "$AWS_PORT" ||
            fail aws "could not launch moto_server" "$AWS_LOG"
    fi
    # Ready when moto's own API answers with its state (a request without an AWS
    # signature is routed to its S3 emulation, so no SQS call is used here).
    local out
    for _ in $(seq $((TIMEOUT * 4))); do
        pid_alive "$AWS_PID" "$AWS_VENV" >/dev/null || fail aws "moto_server exited during startup" "$AWS_LOG"
        out="$(curl -fsS -m 2 "http://127.0.0.1:$AWS_PORT/moto-api/data.json" 2>/dev/null)" || out=""
        if [[ "$out" == "{"* ]]; then
            log "aws ready: sqs+sns://127.0.0.1:$AWS_PORT?region=us-east-1 (moto, pid $(pid_alive "$AWS_PID" "$AWS_VENV"))"
            SPAWNED=()
            return 0
        fi
        sleep 0.25
    done
    fail aws "no answer from /moto-api/data.json on http://127.0.0.1:$AWS_PORT within ${TIMEOUT}s" "$AWS_LOG"
}

aws_down() { stop_pid aws "$AWS_PID" "$AWS_VENV" 10; }

aws_status() {
    local pid
    if pid="$(pid_alive "$AWS_PID" "$AWS_VENV")"; then
        echo "aws       running  pid $pid  sqs+sns://127.0.0.1:$AWS_PORT?region=us-east-1"
    else
        echo "aws       stopped  -  sqs+sns://127.0.0.1:$AWS_PORT?region=us-east-1"
    fi
}

