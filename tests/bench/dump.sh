#!/usr/bin/env bash
# Benchmark of the dump job, side by side with the shell pipeline it replaces
# and with the physical limit, in one run, against the same database and the
# same GCS emulator:
#
#   backstop dump                     (release build)
#   pg_dump -Fc | gpg --encrypt --compress-algo none -r KEY | curl -T - <GCS upload>
#   pg_dump -Fc -Z0 --no-sync -f /dev/null  (the limit: pg_dump reading the database,
#                                            nothing compressed, encrypted or uploaded)
#
# Prints the wall time of each, backstop's ratio to the pipeline and to the
# limit, the object sizes and the peak RSS of `backstop dump` (/usr/bin/time
# -v). Targets: backstop at least as fast as the pipeline, peak RSS under
# 64 MiB whatever the database size.
#
# Then a compression-level table: `backstop dump --compression-level L` for
# each L of BENCH_LEVELS (default "0 1 3 6 9"; empty skips the table): wall
# time, object size, object / archive size and the ratio to the limit.
#
#   tests/stack/stack.sh run -- tests/bench/dump.sh [SIZE_MIB]     (default 1024)
#
# MB/s is the database's size on disk per second. The pipeline is bound by
# pg_dump's own zlib compression (one core); backstop runs pg_dump -Z0 and
# deflates in its encryption on every core (same level by default, about
# the same object size). BENCH_REPEAT=N (default 2) runs each side, and each
# level, N times, alternating, and compares the fastest runs. Each uploaded
# object is deleted from the emulator (it keeps objects in memory) once its
# size is read.
#
# The database (one table of md5 text, which compresses about 2:1) is created
# once per stack; set BENCH_KEEP_DB=1 to keep it after the run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh
SIZE_MIB="${1:-${BENCH_SIZE_MIB:-1024}}"
log() { printf '[bench] %s\n' "$*" >&2; }
die() {
    printf '[bench] ERROR: %s\n' "$*" >&2
    exit 1
}

[ -n "${BACKSTOP_STACK:-}" ] || die "run inside the local stack: tests/stack/stack.sh run -- $0 $*"
for tool in gpg curl psql /usr/bin/time; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
PG_DUMP="${PG_BINDIR:+$PG_BINDIR/}pg_dump"
PSQL=(psql -X -q -v ON_ERROR_STOP=1)

log "building backstop (release)"
cargo build --release -q -p backstop-cli
BIN="${CARGO_TARGET_DIR:-target}/release/backstop"
[ -x "$BIN" ] || die "$BIN not built"

WORK="$(mktemp -d)"
export GNUPGHOME="$WORK/gnupg"
DB="bench_dump_${SIZE_MIB}m"
URL="${BACKSTOP_TEST_DATABASE_URL%/*}/$DB"
cleanup() {
    gpgconf --kill gpg-agent >/dev/null 2>&1 || true
    rm -rf "$WORK"
    if [ "${BENCH_KEEP_DB:-0}" != 1 ]; then
        "${PSQL[@]}" "$BACKSTOP_TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

# ---- the database -----------------------------------------------------------
if [ "$("${PSQL[@]}" -tA "$BACKSTOP_TEST_DATABASE_URL" -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    # ~190 bytes per row on disk (4 md5 strings, 128 characters, plus overheads).
    ROWS=$((SIZE_MIB * 1024 * 1024 / 190))
    log "creating database $DB: $ROWS rows (~${SIZE_MIB} MiB), two loaders in parallel"
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
    # Left UNLOGGED (pg_dump dumps its data all the same): no WAL, half the disk.
    "${PSQL[@]}" "$URL" -c "VACUUM ANALYZE blobs"
    log "created in $((SECONDS - t0)) s"
fi
DB_BYTES="$("${PSQL[@]}" -tA "$URL" -c "SELECT pg_database_size(current_database())")"
log "database $DB: $((DB_BYTES / 1024 / 1024)) MiB; warming the cache"
"${PSQL[@]}" -tA "$URL" -c "SELECT count(*) FROM blobs" >/dev/null

# ---- keys (stock gpg, no passphrase) ----------------------------------------
mkdir -m 700 "$GNUPGHOME"
G=(gpg --batch --quiet --no-tty --pinentry-mode loopback --passphrase '')
"${G[@]}" --quick-gen-key 'Bench backup <backup@bench.invalid>' ed25519 cert never
BACKUP_FPR="$(gpg --list-keys --with-colons 'backup@bench.invalid' 2>/dev/null | awk -F: '/^fpr/ {print $10; exit}')"
"${G[@]}" --quick-add-key "$BACKUP_FPR" cv25519 encr never
"${G[@]}" --quick-gen-key 'Bench signing <sign@bench.invalid>' ed25519 sign never
SIGN_FPR="$(gpg --list-keys --with-colons 'sign@bench.invalid' 2>/dev/null | awk -F: '/^fpr/ {print $10; exit}')"
gpg --armor --export "$BACKUP_FPR" >"$WORK/backup.pub.asc"
"${G[@]}" --armor --export-secret-keys "$SIGN_FPR" >"$WORK/signing.sec.asc"

GCS="${STORAGE_EMULATOR_HOST%/}"
case "$GCS" in http://* | https://*) ;; *) GCS="http://$GCS" ;; esac
BUCKET="$BACKSTOP_GCS_BUCKET"
NS="bench-$(date +%s)"
now() { date +%s.%N; }
# gcs_delete OBJECT: deletes an uploaded object (gs://bucket/ prefix optional).
gcs_delete() {
    local name="${1#gs://"$BUCKET"/}"
    curl -fsS -o /dev/null -X DELETE "$GCS/storage/v1/b/$BUCKET/o/${name//\//%2F}" ||
        log "could not delete $name from the emulator (left in its memory)"
}

# backstop_dump_timed LEVEL: one `backstop dump` (LEVEL empty: the default or
# $BACKSTOP_COMPRESSION_LEVEL; else --compression-level LEVEL), its data
# object deleted afterwards. Sets D_SECS, D_RSS_KIB (ru_maxrss of backstop;
# its pg_dump child is smaller and counted apart), D_OBJ_BYTES, PLAIN_BYTES.
backstop_dump_timed() {
    local t0 t1 level=()
    [ -z "$1" ] || level=(--compression-level "$1")
    t0="$(now)"
    BACKSTOP_DATABASE_URL="$URL" BACKSTOP_NAMESPACE="$NS" \
        BACKSTOP_RECIPIENTS="file:$WORK/backup.pub.asc" BACKSTOP_SIGNING_KEY="file:$WORK/signing.sec.asc" \
        BACKSTOP_PG_BINDIR="${PG_BINDIR:-}" RUST_LOG="${RUST_LOG:-info}" \
        /usr/bin/time -v -o "$WORK/time.txt" "$BIN" dump "${level[@]}" >"$WORK/result.json" 2>"$WORK/backstop.log" ||
        {
            cat "$WORK/backstop.log" >&2
            die "backstop dump failed"
        }
    t1="$(now)"
    D_SECS="$(echo "$t1 - $t0" | bc -l)"
    D_RSS_KIB="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")"
    D_OBJ_BYTES="$(sed -n 's/.*"ciphertext_bytes": \([0-9]*\).*/\1/p' "$WORK/result.json")"
    PLAIN_BYTES="$(sed -n 's/.*"plaintext_bytes": \([0-9]*\).*/\1/p' "$WORK/result.json")"
    gcs_delete "$(sed -n 's/.*"data_object": "\([^"]*\)".*/\1/p' "$WORK/result.json")"
    printf '[bench]   %.2f s, object %d MiB, peak RSS %d KiB, load %s\n' "$D_SECS" $((D_OBJ_BYTES / 1048576)) \
        "$D_RSS_KIB" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2
}

# ---- the three sides ------------------------------------------------------------
# Each side runs BENCH_REPEAT times (default 2), alternating (A B C, C B A
# ...), and the fastest run of each is compared: the machine may be shared.
REPEAT="${BENCH_REPEAT:-2}"
BEST_BACKSTOP=""
BEST_BASE=""
BEST_LIMIT=""
RSS_KIB=0

run_backstop() {
    log "backstop dump (run $1)"
    backstop_dump_timed ""
    BEST_BACKSTOP="$(min "$BEST_BACKSTOP" "$D_SECS")"
    [ "$D_RSS_KIB" -gt "$RSS_KIB" ] && RSS_KIB="$D_RSS_KIB"
    BACKSTOP_OBJ_BYTES="$D_OBJ_BYTES"
    grep -h 'dump complete' "$WORK/backstop.log" >"$WORK/complete.log" || true
}

run_baseline() {
    log "pg_dump -Fc | gpg --encrypt | curl -T - (run $1)"
    local t0 t1 name="$NS/baseline-$1/data.pgdump.gpg"
    t0="$(now)"
    "$PG_DUMP" -Fc --no-password "--dbname=$URL" |
        /usr/bin/time -f '%M' -o "$WORK/gpg_rss.txt" \
            gpg --batch --quiet --trust-model always --compress-algo none --cipher-algo AES256 -r "$BACKUP_FPR" --encrypt |
        curl -sS -f -X POST -H 'Content-Type: application/octet-stream' -T - \
            "$GCS/upload/storage/v1/b/$BUCKET/o?uploadType=media&name=$(printf %s "$name" | sed 's,/,%2F,g')" \
            -o "$WORK/baseline.json"
    t1="$(now)"
    BEST_BASE="$(min "$BEST_BASE" "$(echo "$t1 - $t0" | bc -l)")"
    BASE_OBJ_BYTES="$(sed -n 's/.*"size": *"\{0,1\}\([0-9]*\).*/\1/p' "$WORK/baseline.json" | head -n 1)"
    gcs_delete "$name"
    printf '[bench]   %.2f s, load %s\n' "$(echo "$t1 - $t0" | bc -l)" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2
}

run_limit() {
    log "pg_dump -Fc -Z0 --no-sync -f /dev/null (run $1)"
    local t0 t1
    t0="$(now)"
    # --no-sync: pg_dump cannot fsync /dev/null (and backstop's pg_dump writes to a pipe).
    "$PG_DUMP" -Fc -Z0 --no-sync --no-password "--dbname=$URL" -f /dev/null
    t1="$(now)"
    BEST_LIMIT="$(min "$BEST_LIMIT" "$(echo "$t1 - $t0" | bc -l)")"
    printf '[bench]   %.2f s, load %s\n' "$(echo "$t1 - $t0" | bc -l)" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2
}

alternate_sides "$REPEAT" run_backstop run_baseline run_limit
cat "$WORK/complete.log" >&2

# ---- compression levels ---------------------------------------------------------
# Each level BENCH_REPEAT times, the levels in order on odd rounds and
# reversed on even rounds; the fastest run of each level is kept.
LEVELS_LIST="${BENCH_LEVELS-0 1 3 6 9}" # "0,1,3" as well as "0 1 3"
read -r -a LEVELS <<<"${LEVELS_LIST//,/ }"
declare -A LEVEL_SECS=() LEVEL_BYTES=() LEVEL_RSS=()
for l in "${LEVELS[@]}"; do
    case "$l" in [0-9]) ;; *) die "BENCH_LEVELS: '$l' is not a level 0..9" ;; esac
done
level_run() {
    log "backstop dump --compression-level $1 (round $2)"
    backstop_dump_timed "$1"
    LEVEL_SECS[$1]="$(min "${LEVEL_SECS[$1]:-}" "$D_SECS")"
    LEVEL_BYTES[$1]="$D_OBJ_BYTES"
    [ "$D_RSS_KIB" -gt "${LEVEL_RSS[$1]:-0}" ] && LEVEL_RSS[$1]="$D_RSS_KIB"
    return 0
}
if [ "${#LEVELS[@]}" -gt 0 ]; then
    for i in $(seq 1 "$REPEAT"); do
        if [ $((i % 2)) = 1 ]; then
            for ((j = 0; j < ${#LEVELS[@]}; j++)); do level_run "${LEVELS[j]}" "$i"; done
        else
            for ((j = ${#LEVELS[@]} - 1; j >= 0; j--)); do level_run "${LEVELS[j]}" "$i"; done
        fi
    done
fi

# ---- report ------------------------------------------------------------------
MIB=1048576
# Throughput is the database's size on disk over wall time, the same for
# every side (backstop's pg_dump runs with -Z0 and compresses in the
# encryption, so the sides' pg_dump outputs differ).
printf '\n== dump benchmark: database %s (%d MiB on disk; backstop pg_dump -Fc -Z0 output %d MiB), %s cores, best of %d ==\n' \
    "$DB" $((DB_BYTES / MIB)) $((PLAIN_BYTES / MIB)) "$(nproc)" "$REPEAT"
printf '%-40s %8.2f s  %6.1f MB/s  object %5d MiB  peak RSS %5.1f MiB\n' \
    "backstop dump (level ${BACKSTOP_COMPRESSION_LEVEL:-6})" "$BEST_BACKSTOP" "$(echo "$DB_BYTES / $BEST_BACKSTOP / 1000000" | bc -l)" \
    $((BACKSTOP_OBJ_BYTES / MIB)) "$(echo "$RSS_KIB / 1024" | bc -l)"
printf '%-40s %8.2f s  %6.1f MB/s  object %5d MiB  (gpg peak RSS %.1f MiB)\n' \
    "pg_dump -Fc | gpg --encrypt | curl" "$BEST_BASE" "$(echo "$DB_BYTES / $BEST_BASE / 1000000" | bc -l)" \
    $((${BASE_OBJ_BYTES:-0} / MIB)) "$(echo "$(cat "$WORK/gpg_rss.txt") / 1024" | bc -l)"
printf '%-40s %8.2f s  %6.1f MB/s  (the limit: no compression, encryption or upload)\n' \
    "pg_dump -Fc -Z0 --no-sync -f /dev/null" "$BEST_LIMIT" "$(echo "$DB_BYTES / $BEST_LIMIT / 1000000" | bc -l)"
printf 'ratio backstop / pipeline wall time: %.3f (<= 1.0 is the target)\n' "$(echo "$BEST_BACKSTOP / $BEST_BASE" | bc -l)"
printf 'ratio backstop / limit wall time: %.3f (pipeline / limit: %.3f)\n' \
    "$(echo "$BEST_BACKSTOP / $BEST_LIMIT" | bc -l)" "$(echo "$BEST_BASE / $BEST_LIMIT" | bc -l)"
printf 'backstop peak RSS: %.1f MiB (target < 64 MiB)\n' "$(echo "$RSS_KIB / 1024" | bc -l)"

if [ "${#LEVELS[@]}" -gt 0 ]; then
    printf '\n== backstop dump by compression level (same database, best of %d; limit %.2f s) ==\n' "$REPEAT" "$BEST_LIMIT"
    printf '%-6s %9s %8s %11s %17s %15s %13s\n' level 'wall s' 'MB/s' 'object MiB' 'object/archive' 'ratio to limit' 'peak RSS MiB'
    for l in "${LEVELS[@]}"; do
        printf '%-6s %9.2f %8.1f %11.1f %17.3f %15.3f %13.1f\n' "$l" "${LEVEL_SECS[$l]}" \
            "$(echo "$DB_BYTES / ${LEVEL_SECS[$l]} / 1000000" | bc -l)" \
            "$(echo "${LEVEL_BYTES[$l]} / $MIB" | bc -l)" "$(echo "${LEVEL_BYTES[$l]} / $PLAIN_BYTES" | bc -l)" \
            "$(echo "${LEVEL_SECS[$l]} / $BEST_LIMIT" | bc -l)" "$(echo "${LEVEL_RSS[$l]} / 1024" | bc -l)"
    done
fi
