#!/usr/bin/env bash
# Benchmark of the restore job, side by side with the shell pipeline it
# replaces, in one run, from the same backup object on the same GCS emulator
# into the same PostgreSQL server:
#
#   backstop restore          (release build: list, verify manifest, download,
#                              digest check, decrypt, pg_restore, row-count drill)
#   curl <object> | gpg --decrypt | pg_restore --single-transaction ...
#
# Prints the wall time of each, their ratio, the backup's size and the peak RSS
# of the backstop process (sampled VmHWM) and of /usr/bin/time -v (which is the
# max over backstop and its pg_restore child). Targets: backstop at least as
# fast as the pipeline, backstop's peak RSS under 64 MiB whatever the size.
#
#   tests/stack/stack.sh run -- tests/bench/restore.sh [DUMP_MIB]     (default 1024)
#
# DUMP_MIB is the approximate size of the pg_dump -Fc output (the backup); the
# database (one table of md5 text, which pg_dump compresses about 2.4:1) is
# 2.5 times that. It is created once per stack; BENCH_KEEP_DB=1 keeps it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh
DUMP_MIB="${1:-${BENCH_SIZE_MIB:-1024}}"
DB_MIB=$((DUMP_MIB * 5 / 2))
log() { printf '[bench] %s\n' "$*" >&2; }
die() {
    printf '[bench] ERROR: %s\n' "$*" >&2
    exit 1
}

[ -n "${BACKSTOP_STACK:-}" ] || die "run inside the local stack: tests/stack/stack.sh run -- $0 $*"
for tool in gpg curl psql bc /usr/bin/time; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
PG_RESTORE="${PG_BINDIR:+$PG_BINDIR/}pg_restore"
PSQL=(psql -X -q -v ON_ERROR_STOP=1)

log "building backstop (release)"
cargo build --release -q -p backstop-cli
BIN="${CARGO_TARGET_DIR:-target}/release/backstop"
[ -x "$BIN" ] || die "$BIN not built"

WORK="$(mktemp -d)"
export GNUPGHOME="$WORK/gnupg"
DB="bench_restore_src_${DB_MIB}m"
URL="${BACKSTOP_TEST_DATABASE_URL%/*}/$DB"
DST_A="bench_restore_backstop"
DST_B="bench_restore_gpg"
dropdb_() { "${PSQL[@]}" "$BACKSTOP_TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null 2>&1 || true; }
cleanup() {
    [ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null || true
    gpgconf --kill gpg-agent >/dev/null 2>&1 || true
    rm -rf "$WORK"
    dropdb_ "$DST_A"
    dropdb_ "$DST_B"
    [ "${BENCH_KEEP_DB:-0}" = 1 ] || dropdb_ "$DB"
}
trap cleanup EXIT

# ---- the source database ------------------------------------------------------
if [ "$("${PSQL[@]}" -tA "$BACKSTOP_TEST_DATABASE_URL" -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    # ~190 bytes per row on disk (4 md5 strings, 128 characters, plus overheads).
    ROWS=$((DB_MIB * 1024 * 1024 / 190))
    log "creating database $DB: $ROWS rows (~${DB_MIB} MiB), two loaders in parallel"
    t0=$SECONDS
    "${PSQL[@]}" "$BACKSTOP_TEST_DATABASE_URL" -c "CREATE DATABASE $DB"
    "${PSQL[@]}" "$URL" -c "CREATE UNLOGGED TABLE blobs (id bigint, a text, b text, c text, d text)"
    half=$((ROWS / 2))
    load() {
        "${PSQL[@]}" "$URL" -c "INSERT INTO blobs
            SELECT i, md5(i::text), md5((i + 1)::text || 'b'), md5((i + 2)::text || 'c'), md5((i + 3)::text || 'd')
            FROM generate_series($1, $2) AS i"
    }
    load 1 "$half" &
    p1=$!
    load $((half + 1)) "$ROWS" &
    p2=$!
    wait "$p1"
    wait "$p2"
    "${PSQL[@]}" "$URL" -c "ALTER TABLE blobs SET LOGGED" -c "VACUUM ANALYZE blobs"
    log "created in $((SECONDS - t0)) s"
fi

# ---- keys (stock gpg, no passphrase) ------------------------------------------
mkdir -m 700 "$GNUPGHOME"
G=(gpg --batch --quiet --no-tty --pinentry-mode loopback --passphrase '')
"${G[@]}" --quick-gen-key 'Bench backup <backup@bench.invalid>' ed25519 cert never
BACKUP_FPR="$(gpg --list-keys --with-colons 'backup@bench.invalid' | awk -F: '/^fpr/ {print $10; exit}')"
"${G[@]}" --quick-add-key "$BACKUP_FPR" cv25519 encr never
"${G[@]}" --quick-gen-key 'Bench signing <sign@bench.invalid>' ed25519 sign never
SIGN_FPR="$(gpg --list-keys --with-colons 'sign@bench.invalid' | awk -F: '/^fpr/ {print $10; exit}')"
gpg --armor --export "$BACKUP_FPR" >"$WORK/backup.pub.asc"
"${G[@]}" --armor --export-secret-keys "$BACKUP_FPR" >"$WORK/backup.sec.asc"
gpg --armor --export "$SIGN_FPR" >"$WORK/signing.pub.asc"
"${G[@]}" --armor --export-secret-keys "$SIGN_FPR" >"$WORK/signing.sec.asc"

GCS="${STORAGE_EMULATOR_HOST%/}"
case "$GCS" in http://* | https://*) ;; *) GCS="http://$GCS" ;; esac
BUCKET="$BACKSTOP_GCS_BUCKET"
NS="bench-restore-$(date +%s)"
now() { date +%s.%N; }

# ---- the backup (backstop dump) ------------------------------------------------
log "backstop dump of $DB into namespace $NS"
BACKSTOP_DATABASE_URL="$URL" BACKSTOP_NAMESPACE="$NS" \
    BACKSTOP_RECIPIENTS="file:$WORK/backup.pub.asc" BACKSTOP_SIGNING_KEY="file:$WORK/signing.sec.asc" \
    BACKSTOP_PG_BINDIR="${PG_BINDIR:-}" RUST_LOG=warn \
    "$BIN" dump >"$WORK/dump.json" || die "backstop dump failed"
BACKUP_ID="$(sed -n 's/.*"backup_id": "\([^"]*\)".*/\1/p' "$WORK/dump.json")"
CIPHER_BYTES="$(sed -n 's/.*"ciphertext_bytes": \([0-9]*\).*/\1/p' "$WORK/dump.json")"
PLAIN_BYTES="$(sed -n 's/.*"plaintext_bytes": \([0-9]*\).*/\1/p' "$WORK/dump.json")"
OBJ="$BACKUP_ID/data.pgdump.pgp"
OBJ_URL="$GCS/storage/v1/b/$BUCKET/o/${OBJ//\//%2F}?alt=media"
log "backup $BACKUP_ID: $((CIPHER_BYTES / 1048576)) MiB; warming the emulator's cache"
curl -fsS -o /dev/null "$OBJ_URL"

# ---- the two sides --------------------------------------------------------------
# Each side runs BENCH_REPEAT times (default 2), alternating (A B B A ...), each
# into a fresh database after a CHECKPOINT (so no run pays for the previous
# one's dirty buffers), and the fastest run of each is compared. Creating the
# target database is inside both timings: backstop restore creates it.
REPEAT="${BENCH_REPEAT:-2}"
BEST_BACKSTOP=""
BEST_BASE=""
HWM_KIB=0
TIME_RSS_KIB=0
fresh_start() {
    dropdb_ "$1"
    "${PSQL[@]}" "$BACKSTOP_TEST_DATABASE_URL" -c CHECKPOINT
}

run_backstop() {
    log "backstop restore (run $1)"
    local t0 t1 hwm rss
    fresh_start "$DST_A"
    rm -f "$WORK/hwm.txt"
    t0="$(now)"
    BACKSTOP_BACKUP_KEY="file:$WORK/backup.sec.asc" BACKSTOP_SIGNING_PUBLIC_KEY="file:$WORK/signing.pub.asc" \
        BACKSTOP_PG_BINDIR="${PG_BINDIR:-}" BACKSTOP_S3_BUCKET= RUST_LOG=warn \
        /usr/bin/time -v -o "$WORK/time.txt" "$BIN" restore --namespace "$NS" \
        --server-url "$BACKSTOP_TEST_DATABASE_URL" --target-db "$DST_A" --no-drill-record \
        >"$WORK/restore.json" 2>"$WORK/restore.log" &
    TIME_PID=$!
    # Sample the backstop process's own peak RSS (VmHWM), without its pg_restore child.
    (
        hwm=0
        while kill -0 "$TIME_PID" 2>/dev/null; do
            pid="$(pgrep -P "$TIME_PID" -x backstop || true)"
            if [ -n "$pid" ]; then
                v="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
                [ -n "$v" ] && [ "$v" -gt "$hwm" ] && hwm="$v" && echo "$hwm" >"$WORK/hwm.txt"
            fi
            sleep 0.1
        done
    ) &
    SAMPLER=$!
    wait "$TIME_PID" || {
        cat "$WORK/restore.log" "$WORK/restore.json" >&2
        die "backstop restore failed"
    }
    t1="$(now)"
    wait "$SAMPLER" 2>/dev/null || true
    SAMPLER=
    grep -q '"success": true' "$WORK/restore.json" || die "restore drill failed: $(cat "$WORK/restore.json")"
    BEST_BACKSTOP="$(min "$BEST_BACKSTOP" "$(echo "$t1 - $t0" | bc -l)")"
    hwm="$(cat "$WORK/hwm.txt" 2>/dev/null || echo 0)"
    [ "$hwm" -gt "$HWM_KIB" ] && HWM_KIB="$hwm"
    rss="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")"
    [ "$rss" -gt "$TIME_RSS_KIB" ] && TIME_RSS_KIB="$rss"
    printf '[bench]   %.2f s (%s), peak RSS %d KiB, load %s\n' "$(echo "$t1 - $t0" | bc -l)" \
        "$(sed -n 's/.*"\(restore_secs\|verify_secs\)": \([0-9.]*\).*/\1 \2/p' "$WORK/restore.json" | tr '\n' ' ')" \
        "$hwm" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2
}

run_baseline() {
    log "createdb; curl | gpg --decrypt | pg_restore (run $1)"
    local t0 t1
    fresh_start "$DST_B"
    t0="$(now)"
    "${PSQL[@]}" "$BACKSTOP_TEST_DATABASE_URL" -c "CREATE DATABASE $DST_B TEMPLATE template0"
    curl -fsS "$OBJ_URL" |
        /usr/bin/time -f '%M' -o "$WORK/gpg_rss.txt" gpg --batch --quiet --decrypt |
        "$PG_RESTORE" --single-transaction --no-owner --no-acl --exit-on-error --no-password \
            "--dbname=${BACKSTOP_TEST_DATABASE_URL%/*}/$DST_B"
    t1="$(now)"
    BEST_BASE="$(min "$BEST_BASE" "$(echo "$t1 - $t0" | bc -l)")"
    printf '[bench]   %.2f s, load %s\n' "$(echo "$t1 - $t0" | bc -l)" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2
}

alternate "$REPEAT"
BACKSTOP_SECS="$BEST_BACKSTOP"
BASE_SECS="$BEST_BASE"
ROWS_A="$("${PSQL[@]}" -tA "${BACKSTOP_TEST_DATABASE_URL%/*}/$DST_A" -c "SELECT count(*) FROM blobs")"
ROWS_B="$("${PSQL[@]}" -tA "${BACKSTOP_TEST_DATABASE_URL%/*}/$DST_B" -c "SELECT count(*) FROM blobs")"
[ "$ROWS_A" = "$ROWS_B" ] || die "row counts differ: backstop $ROWS_A, pipeline $ROWS_B"

# ---- report ----------------------------------------------------------------------
MIB=1048576
printf '\n== restore benchmark: backup %d MiB (pg_dump archive inside: %d MiB, %s rows), %s cores, best of %d ==\n' \
    $((CIPHER_BYTES / MIB)) $((PLAIN_BYTES / MIB)) "$ROWS_A" "$(nproc)" "$REPEAT"
printf '%-40s %9.2f s  %8.1f MB/s  peak RSS %6.1f MiB (backstop process; with pg_restore child %.1f MiB)\n' \
    "backstop restore" "$BACKSTOP_SECS" "$(echo "$CIPHER_BYTES / $BACKSTOP_SECS / 1000000" | bc -l)" \
    "$(echo "$HWM_KIB / 1024" | bc -l)" "$(echo "$TIME_RSS_KIB / 1024" | bc -l)"
printf '%-40s %9.2f s  %8.1f MB/s  (gpg peak RSS %.1f MiB)\n' \
    "curl | gpg --decrypt | pg_restore" "$BASE_SECS" "$(echo "$CIPHER_BYTES / $BASE_SECS / 1000000" | bc -l)" \
    "$(echo "$(cat "$WORK/gpg_rss.txt") / 1024" | bc -l)"
printf 'ratio backstop / pipeline wall time: %.3f (<= 1.0 is the target)\n' "$(echo "$BACKSTOP_SECS / $BASE_SECS" | bc -l)"
printf 'backstop peak RSS: %.1f MiB (target < 64 MiB)\n' "$(echo "$HWM_KIB / 1024" | bc -l)"
sed -n 's/.*"\(select_secs\|restore_secs\|verify_secs\|total_secs\)": \([0-9.]*\).*/backstop \1 \2/p' "$WORK/restore.json"
