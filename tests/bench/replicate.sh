#!/usr/bin/env bash
# Benchmark of the replicator, side by side with `rclone copyto` between the
# same endpoints, in one run, on the local stack (fake-gcs-server -> moto S3):
#
#   replicator --event finalize.json       (release build; verifies the manifest
#                                           signature, streams the data object once
#                                           checking size, SHA-256, CRC32C and the
#                                           OpenPGP structure, multipart upload to S3,
#                                           then signature and manifest)
#   rclone copyto gcs:<data object> s3:<elsewhere>    (the data object only; MD5 check)
#
# Prints for both: wall time, throughput (MB/s of ciphertext), peak RSS
# (/usr/bin/time -v); their ratio; and the replicator's cold start: p50 of
# BENCH_COLD_RUNS (20) runs on an already-replicated backup (the handler does
# its reads and checks but copies nothing): exec -> handler entered (the
# function's init, what Lambda reports as Init Duration), exec -> event
# handled, and exec -> process exit.
# Targets (issue 5): throughput >= rclone's, peak RSS < 128 MiB whatever the
# size, cold start p50 < 20 ms. BENCH_RESUME=1 adds the resumable path forced
# to pause (issue 21): >= 0.9x the uninterrupted copy, >= 1.0x rclone.
#
#   tests/stack/stack.sh run -- tests/bench/replicate.sh [SIZE_MIB]     (default 1024)
#
# The synthetic backup (SIZE_MIB of pseudo-random plaintext, encrypted and
# signed with throwaway keys) is written by the `bench-backup` helper
# (tests/src/bin/bench-backup.rs) into a namespace of its own, and removed
# from both buckets at the end.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SIZE_MIB="${1:-${BENCH_SIZE_MIB:-1024}}"
COLD_RUNS="${BENCH_COLD_RUNS:-20}"
log() { printf '[bench] %s\n' "$*" >&2; }
die() {
    printf '[bench] ERROR: %s\n' "$*" >&2
    exit 1
}

[ -n "${BACKSTOP_STACK:-}" ] || die "run inside the local stack: tests/stack/stack.sh run -- $0 $*"
for tool in rclone python3 /usr/bin/time; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (tests/stack/stack.sh install)"
done

log "building replicator and bench-backup (release)"
cargo build --release -q -p replicator -p backstop-tests --bin replicator --bin bench-backup
BIN_DIR="${CARGO_TARGET_DIR:-target}/release"
REPLICATOR="$BIN_DIR/replicator"
[ -x "$REPLICATOR" ] || die "$REPLICATOR not built"

WORK="$(mktemp -d)"
NS="bench-$(date +%s)-$((RANDOM % 10000))"
cleanup() {
    rclone purge "gcs:$BACKSTOP_GCS_BUCKET/$NS" >/dev/null 2>&1 || true
    rclone purge "s3:$BACKSTOP_S3_BUCKET/$NS" >/dev/null 2>&1 || true
    rclone purge "s3:$BACKSTOP_S3_BUCKET/rclone-bench/$NS" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# rclone remotes for the same two endpoints, from the environment. rclone's
# S3 client (aws-sdk-go v1) cannot combine AWS_CA_BUNDLE with its own HTTP
# transport ("LoadCustomCABundleError"), and plain-HTTP endpoints need no CA.
RCLONE_BIN="$(command -v rclone)"
rclone() { env -u AWS_CA_BUNDLE "$RCLONE_BIN" -q "$@"; }
export RCLONE_CONFIG_GCS_TYPE="google cloud storage"
export RCLONE_CONFIG_GCS_ENDPOINT="$STORAGE_EMULATOR_HOST/storage/v1/"
export RCLONE_CONFIG_GCS_ANONYMOUS=true
export RCLONE_CONFIG_GCS_BUCKET_POLICY_ONLY=true
export RCLONE_CONFIG_S3_TYPE=s3
export RCLONE_CONFIG_S3_PROVIDER=Other
export RCLONE_CONFIG_S3_ENDPOINT="$AWS_ENDPOINT_URL_S3"
export RCLONE_CONFIG_S3_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID"
export RCLONE_CONFIG_S3_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"
export RCLONE_CONFIG_S3_REGION="${AWS_REGION:-us-east-1}"
export RCLONE_CONFIG_S3_FORCE_PATH_STYLE=true

# ---- the backup ---------------------------------------------------------------
log "writing a ${SIZE_MIB} MiB backup to gcs:$BACKSTOP_GCS_BUCKET/$NS/"
"$BIN_DIR/bench-backup" "$NS" "$SIZE_MIB" "$WORK"
# shellcheck disable=SC1091
. "$WORK/backup.env"
log "backup $BENCH_BACKUP_ID: $BENCH_DATA_BYTES bytes of ciphertext"

# The replicator's configuration (docs: README, "Replicator").
export BACKSTOP_RECIPIENTS="file:$WORK/backup.pub.asc"
export BACKSTOP_SIGNING_PUBLIC_KEY="file:$WORK/signing.pub.asc"
export BACKSTOP_REPLICATE_NAMESPACES="$NS"
export BACKSTOP_OIDC_AUDIENCE="https://replicator.example.invalid/"
export BACKSTOP_OIDC_SERVICE_ACCOUNT="push@example.invalid"
export BACKSTOP_LOG_FORMAT=json
unset BACKSTOP_ALERT_TOPIC

# field NAME FILE: a /usr/bin/time -v field.
field() { sed -n "s/^[[:space:]]*$1: //p" "$2"; }
now_ns() { date +%s%N; }

# ---- (a) the replicator ------------------------------------------------------
log "replicator --event (release) ..."
t0=$(now_ns)
/usr/bin/time -v -o "$WORK/rep.time" "$REPLICATOR" --event "$WORK/finalize.json" >"$WORK/rep.out" 2>"$WORK/rep.err" || {
    tail -n 20 "$WORK/rep.err" >&2
    die "replicator failed: $(cat "$WORK/rep.out")"
}
t1=$(now_ns)
REP_S="$(python3 -c "print(($t1 - $t0) / 1e9)")"
REP_RSS_KB="$(field 'Maximum resident set size (kbytes)' "$WORK/rep.time")"
python3 - "$WORK/rep.out" "$BENCH_DATA_SHA256" "$BENCH_DATA_BYTES" <<'EOF' || die "unexpected replicator result: $(cat "$WORK/rep.out")"
import json, sys
r = json.load(open(sys.argv[1]))["result"]
assert r["outcome"] == "replicated", r
assert r["sha256"] == sys.argv[2] and r["bytes"] == int(sys.argv[3]), r
EOF
REP_HANDLER_S="$(python3 -c "import json; print(json.load(open('$WORK/rep.out'))['result']['seconds'])")"

# ---- (b) rclone copyto -----------------------------------------------------------
log "rclone copyto ..."
t0=$(now_ns)
/usr/bin/time -v -o "$WORK/rclone.time" env -u AWS_CA_BUNDLE rclone -q copyto \
    "gcs:$BACKSTOP_GCS_BUCKET/$BENCH_DATA_KEY" "s3:$BACKSTOP_S3_BUCKET/rclone-bench/$BENCH_DATA_KEY" \
    2>"$WORK/rclone.err" || {
    tail -n 20 "$WORK/rclone.err" >&2
    die "rclone copyto failed"
}
t1=$(now_ns)
RCLONE_S="$(python3 -c "print(($t1 - $t0) / 1e9)")"
RCLONE_RSS_KB="$(field 'Maximum resident set size (kbytes)' "$WORK/rclone.time")"
RCLONE_BYTES="$(rclone size --json "s3:$BACKSTOP_S3_BUCKET/rclone-bench/$BENCH_DATA_KEY" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')"
[ "$RCLONE_BYTES" = "$BENCH_DATA_BYTES" ] || die "rclone copied $RCLONE_BYTES bytes, expected $BENCH_DATA_BYTES"

# ---- (b2) the resumable path, forced to pause --------------------------------------
# With BENCH_RESUME=1 the same backup is copied again (the S3 copy removed
# first) by deliveries of a deadline a fifth of the uninterrupted copy's
# wall time, as Pub/Sub would redeliver them (without its backoff): every
# delivery stops at a part boundary before its deadline and the next
# continues from the parts in S3.
RES_S=0 RES_RUNS=0 RES_RSS_KB=0
if [ "${BENCH_RESUME:-0}" = 1 ]; then
    WINDOW="$(python3 -c "print(max(3, int($REP_S / 5)))")"
    log "resumable: deliveries of BACKSTOP_REPLICATE_DEADLINE=${WINDOW}s ..."
    rclone purge "s3:$BACKSTOP_S3_BUCKET/$NS" >/dev/null 2>&1 || true
    rclone purge "s3:$BACKSTOP_S3_BUCKET/_replication/$NS" >/dev/null 2>&1 || true
    t0=$(now_ns)
    while :; do
        RES_RUNS=$((RES_RUNS + 1))
        [ "$RES_RUNS" -le 200 ] || die "the resumable copy does not finish"
        status=0
        BACKSTOP_REPLICATE_DEADLINE="${WINDOW}s" /usr/bin/time -v -o "$WORK/res.time" \
            "$REPLICATOR" --event "$WORK/finalize.json" >"$WORK/res.out" 2>"$WORK/res.err" || status=$?
        rss="$(field 'Maximum resident set size (kbytes)' "$WORK/res.time")"
        [ "$rss" -gt "$RES_RSS_KB" ] && RES_RSS_KB="$rss"
        if grep -q '"replicated"' "$WORK/res.out"; then break; fi
        grep -q '"status":503' "$WORK/res.out" || die "unexpected delivery result: $(cat "$WORK/res.out")"
    done
    t1=$(now_ns)
    RES_S="$(python3 -c "print(($t1 - $t0) / 1e9)")"
    log "resumable: $RES_RUNS deliveries, $RES_S s"
fi

# ---- (c) cold start ----------------------------------------------------------------
# Timed from Python (a shell's `date` costs ~5 ms per call here): t0 just
# before the exec, the handler's entry from its JSON "event handled" log line
# (timestamp minus elapsed_ms), the process end when it has exited.
log "cold start: $COLD_RUNS runs of replicator --event on the replicated backup ..."
python3 - "$REPLICATOR" "$WORK/finalize.json" "$COLD_RUNS" >"$WORK/cold.txt" <<'EOF'
import datetime, json, subprocess, sys, time
binary, event, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(runs):
    t0 = time.time_ns()
    p = subprocess.run([binary, "--event", event], capture_output=True)
    t1 = time.time_ns()
    if p.returncode != 0 or b'"already_replicated"' not in p.stdout:
        sys.exit(f"unexpected result: {p.stdout!r} {p.stderr[-2000:]!r}")
    for line in p.stderr.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if "elapsed_ms" in e:
            ts = datetime.datetime.strptime(e["timestamp"][:26], "%Y-%m-%dT%H:%M:%S.%f")
            handled = ts.replace(tzinfo=datetime.timezone.utc).timestamp() * 1e3 - t0 / 1e6
            print(f"{handled - e['elapsed_ms']:.3f} {handled:.3f} {(t1 - t0) / 1e6:.3f} {e['elapsed_ms']:.3f}")
            break
    else:
        sys.exit("no 'event handled' log line with elapsed_ms")
EOF

# ---- report -------------------------------------------------------------------------
python3 - "$BENCH_DATA_BYTES" "$REP_S" "$REP_HANDLER_S" "$REP_RSS_KB" "$RCLONE_S" "$RCLONE_RSS_KB" "$WORK/cold.txt" "$SIZE_MIB" "$RES_S" "$RES_RUNS" "$RES_RSS_KB" <<'EOF'
import statistics, sys
size = int(sys.argv[1])
rep_s, rep_handler_s, rep_rss = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
rc_s, rc_rss = float(sys.argv[5]), int(sys.argv[6])
cold = [tuple(map(float, l.split())) for l in open(sys.argv[7]) if l.strip()]
mb = size / 1e6
rep_mbs, rc_mbs = mb / rep_s, mb / rc_s
p50 = lambda i: statistics.median(c[i] for c in cold)
print()
print(f"replicate {sys.argv[8]} MiB of plaintext = {size} bytes of ciphertext, fake-gcs-server -> moto S3")
print(f"  {'':28} {'wall s':>8} {'MB/s':>8} {'peak RSS MiB':>13}")
print(f"  {'replicator --event':28} {rep_s:8.2f} {rep_mbs:8.1f} {rep_rss / 1024:13.1f}   (handler {rep_handler_s:.2f} s)")
print(f"  {'rclone copyto':28} {rc_s:8.2f} {rc_mbs:8.1f} {rc_rss / 1024:13.1f}")
res_s, res_runs, res_rss = float(sys.argv[9]), int(sys.argv[10]), int(sys.argv[11])
if res_runs:
    res_mbs = mb / res_s
    print(f"  {'resumable, ' + str(res_runs) + ' deliveries':28} {res_s:8.2f} {res_mbs:8.1f} {res_rss / 1024:13.1f}")
    print(f"  resumable / uninterrupted: {res_mbs / rep_mbs:.2f}x (target >= 0.9); resumable / rclone: {res_mbs / rc_mbs:.2f}x (target >= 1.0); {res_runs - 1} resumptions")
print(f"  throughput ratio replicator/rclone: {rep_mbs / rc_mbs:.2f}x   (target >= 1.0)")
print(f"  peak RSS replicator: {rep_rss / 1024:.1f} MiB   (target < 128)")
print(f"  cold start, p50 of {len(cold)} runs of the process (exec -> ...):")
print(f"    ready, handler entered (init)   {p50(0):6.1f} ms   (target < 20 ms)")
print(f"    first event handled             {p50(1):6.1f} ms   (handler {p50(3):.1f} ms: reads from both emulators)")
print(f"    process exited                  {p50(2):6.1f} ms")
EOF
