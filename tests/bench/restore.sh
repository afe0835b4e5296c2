#!/usr/bin/env bash
# Benchmark of the restore job, side by side with the shell pipeline it
# replaces, in one run, from the same backup object on the same GCS emulator
# into the same PostgreSQL server:
#
#   backstop restore          (release build: list, verify manifest, download,
#                              authenticate each 8 MiB chunk, decrypt,
#                              pg_restore, row-count drill)
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
#
# The --jobs part (BENCH_JOBS=N, N >= 2) runs after the first part, on a
# multi-table database (BENCH_JOBS_TABLES tables, default 24, each with a
# primary key and an index on a text column; BENCH_JOBS_DB_MIB on disk,
# indexes included, default 1024), created once per stack from
# tests/bench/restore-jobs.sql and reused (BENCH_KEEP_DB=1 keeps it too). One
# `backstop dump` of it, then three sides, alternating (A B C, C B A, ...):
#
#   backstop restore --jobs N  (spools the decrypted archive, pg_restore -j N)
#   backstop restore           (single stream, one transaction)
#   curl <object> | gpg --decrypt | pg_restore --single-transaction ...
#
# Prints their wall times (MB/s: the database's size on disk per second), the
# ratio jobs N / single stream (target <= 0.8), peak RSS, the peak size of the
# spool (du -sb every 0.1 s of a new directory under BENCH_SPOOL_DIR, default
# under the run's mktemp -d), when it was full, and what is left in it after
# the run (should be 0). DUMP_MIB=0 skips the first part:
#
#   BENCH_JOBS=2 tests/stack/stack.sh run -- tests/bench/restore.sh 0
#
# BENCH_REPEAT=N (default 2) runs each side N times; the fastest runs are compared.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh
DUMP_MIB="${1:-${BENCH_SIZE_MIB:-1024}}"
DB_MIB=$((DUMP_MIB * 5 / 2))
JOBS="${BENCH_JOBS:-}"
JOBS_DB_MIB="${BENCH_JOBS_DB_MIB:-1024}"
JOBS_TABLES="${BENCH_JOBS_TABLES:-24}"
log() { printf '[bench] %s\n' "$*" >&2; }
die() {
    printf '[bench] ERROR: %s\n' "$*" >&2
    exit 1
}

[ -n "${BACKSTOP_STACK:-}" ] || die "run inside the local stack: tests/stack/stack.sh run -- $0 $*"
for tool in gpg curl psql bc du /usr/bin/time; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
case "$DUMP_MIB" in '' | *[!0-9]*) die "DUMP_MIB must be a number of MiB (0 skips the first part), not '$DUMP_MIB'" ;; esac
if [ -n "$JOBS" ]; then
    case "$JOBS" in '' | *[!0-9]* | 0 | 1) die "BENCH_JOBS must be a number of pg_restore jobs >= 2, not '$JOBS'" ;; esac
    [ "$JOBS_TABLES" -ge 1 ] && [ "$JOBS_DB_MIB" -ge 1 ] || die "BENCH_JOBS_TABLES and BENCH_JOBS_DB_MIB must be >= 1"
fi
[ "$DUMP_MIB" -gt 0 ] || [ -n "$JOBS" ] || die "nothing to run: DUMP_MIB is 0 and BENCH_JOBS is unset"
PG_RESTORE="${PG_BINDIR:+$PG_BINDIR/}pg_restore"
PSQL=(psql -X -q -v ON_ERROR_STOP=1)

log "building backstop (release)"
cargo build --release -q -p backstop-cli
BIN="${CARGO_TARGET_DIR:-target}/release/backstop"
[ -x "$BIN" ] || die "$BIN not built"

WORK="$(mktemp -d)"
export GNUPGHOME="$WORK/gnupg"
SERVER="${BACKSTOP_TEST_DATABASE_URL%/*}"
DB="bench_restore_src_${DB_MIB}m"
URL="$SERVER/$DB"
DST_A="bench_restore_backstop"
DST_B="bench_restore_gpg"
JDB="bench_restore_jobs_src_${JOBS_DB_MIB}m_${JOBS_TABLES}t"
JURL="$SERVER/$JDB"
DST_J="bench_restore_jobs"
DST_S="bench_restore_single"
DST_P="bench_restore_jobs_gpg"
# The spool: a directory of its own (so du sees only this restore's files),
# in BENCH_SPOOL_DIR if set, else in the run's work directory.
if [ -n "${BENCH_SPOOL_DIR:-}" ]; then
    SPOOL="$(mktemp -d "$BENCH_SPOOL_DIR/bench-spool.XXXXXX")"
else
    SPOOL="$WORK/spool"
    mkdir "$SPOOL"
fi
dropdb_() { "${PSQL[@]}" "$BACKSTOP_TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null 2>&1 || true; }
cleanup() {
    [ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null || true
    gpgconf --kill gpg-agent >/dev/null 2>&1 || true
    rm -rf "$WORK" "$SPOOL"
    local d
    for d in "$DST_A" "$DST_B" "$DST_J" "$DST_S" "$DST_P"; do dropdb_ "$d"; done
    if [ "${BENCH_KEEP_DB:-0}" != 1 ]; then
        dropdb_ "$DB"
        dropdb_ "$JDB"
    fi
}
trap cleanup EXIT
db_exists() { [ "$("${PSQL[@]}" -tA "$BACKSTOP_TEST_DATABASE_URL" -c "SELECT 1 FROM pg_database WHERE datname = '$1'")" = 1 ]; }

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
secs() { echo "$2 - $1" | bc -l; }
json_num() { sed -n "s/.*\"$1\": \\([0-9.]*\\).*/\\1/p" "$2" | head -n 1; }

# backstop_dump DBURL NAMESPACE: one backup (default compression level) into
# NAMESPACE. Sets BACKUP_ID, CIPHER_BYTES, PLAIN_BYTES and OBJ_URL (a plain
# GET of the data object from the emulator), and warms the emulator's cache.
backstop_dump() {
    log "backstop dump of ${1##*/} into namespace $2"
    BACKSTOP_DATABASE_URL="$1" BACKSTOP_NAMESPACE="$2" \
        BACKSTOP_RECIPIENTS="file:$WORK/backup.pub.asc" BACKSTOP_SIGNING_KEY="file:$WORK/signing.sec.asc" \
        BACKSTOP_PG_BINDIR="${PG_BINDIR:-}" RUST_LOG=warn \
        "$BIN" dump >"$WORK/dump.json" || die "backstop dump failed"
    BACKUP_ID="$(sed -n 's/.*"backup_id": "\([^"]*\)".*/\1/p' "$WORK/dump.json")"
    CIPHER_BYTES="$(json_num ciphertext_bytes "$WORK/dump.json")"
    PLAIN_BYTES="$(json_num plaintext_bytes "$WORK/dump.json")"
    local obj="$BACKUP_ID/data.pgdump.pgp"
    OBJ_URL="$GCS/storage/v1/b/$BUCKET/o/${obj//\//%2F}?alt=media"
    log "backup $BACKUP_ID: $((CIPHER_BYTES / 1048576)) MiB; warming the emulator's cache"
    curl -fsS -o /dev/null "$OBJ_URL"
}

# Each side starts from a fresh database after a CHECKPOINT (so no run pays
# for the previous one's dirty buffers). Creating the target database is
# inside every timing: backstop restore creates it.
fresh_start() {
    dropdb_ "$1"
    "${PSQL[@]}" "$BACKSTOP_TEST_DATABASE_URL" -c CHECKPOINT
}

# timed_restore NAMESPACE DST JOBS: backstop restore of NAMESPACE's newest
# backup into a new database DST, with JOBS pg_restore jobs (1: streamed into
# one transaction; more: spooled to $SPOOL). Sets R_SECS, R_HWM_KIB (the
# backstop process's own peak RSS, sampled VmHWM, without its children),
# R_RSS_KIB (/usr/bin/time -v: the max over backstop and its children),
# R_SPOOL_PEAK and R_SPOOL_LEFT (bytes in $SPOOL at the peak and after).
timed_restore() {
    local ns="$1" dst="$2" jobs="$3" t0 t1 base
    fresh_start "$dst"
    rm -f "$WORK/hwm.txt" "$WORK/spool.txt"
    base="$(du -sb "$SPOOL" | cut -f1)"
    t0="$(now)"
    BACKSTOP_BACKUP_KEY="file:$WORK/backup.sec.asc" BACKSTOP_SIGNING_PUBLIC_KEY="file:$WORK/signing.pub.asc" \
        BACKSTOP_PG_BINDIR="${PG_BINDIR:-}" BACKSTOP_S3_BUCKET= RUST_LOG=warn \
        /usr/bin/time -v -o "$WORK/time.txt" "$BIN" restore --namespace "$ns" \
        --server-url "$BACKSTOP_TEST_DATABASE_URL" --target-db "$dst" --no-drill-record \
        --jobs "$jobs" --spool-dir "$SPOOL" \
        >"$WORK/restore.json" 2>"$WORK/restore.log" &
    TIME_PID=$!
    # Sample the backstop process's own peak RSS (VmHWM), without its
    # pg_restore child, and the bytes in the spool directory.
    (
        hwm=0
        peak=0
        while kill -0 "$TIME_PID" 2>/dev/null; do
            pid="$(pgrep -P "$TIME_PID" -x backstop || true)"
            if [ -n "$pid" ]; then
                v="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
                [ -n "$v" ] && [ "$v" -gt "$hwm" ] && hwm="$v" && echo "$hwm" >"$WORK/hwm.txt"
            fi
            s="$(du -sb "$SPOOL" 2>/dev/null | cut -f1 || true)"
            s=$((${s:-$base} - base))
            [ "$s" -gt "$peak" ] && peak="$s" && echo "$peak $(now)" >"$WORK/spool.txt"
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
    R_SECS="$(secs "$t0" "$t1")"
    R_HWM_KIB="$(cat "$WORK/hwm.txt" 2>/dev/null || echo 0)"
    R_RSS_KIB="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")"
    # The spool's last growth: when the download, authentication, decryption
    # and spooling were done and pg_restore -j started (to 0.1 s).
    R_SPOOL_PEAK=0
    R_SPOOL_AT="$t0"
    [ ! -s "$WORK/spool.txt" ] || read -r R_SPOOL_PEAK R_SPOOL_AT <"$WORK/spool.txt"
    R_SPOOL_SECS="$(secs "$t0" "$R_SPOOL_AT")"
    R_SPOOL_LEFT=$(($(du -sb "$SPOOL" | cut -f1) - base))
    local spooled="spool unused"
    [ "$R_SPOOL_PEAK" = 0 ] || spooled="$(printf 'spool peak %d MiB, full after %.1f s' $((R_SPOOL_PEAK / 1048576)) "$R_SPOOL_SECS")"
    printf '[bench]   %.2f s (%s), peak RSS %d KiB, %s, load %s\n' "$R_SECS" \
        "$(sed -n 's/.*"\(restore_secs\|verify_secs\)": \([0-9.]*\).*/\1 \2/p' "$WORK/restore.json" | tr '\n' ' ')" \
        "$R_HWM_KIB" "$spooled" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2
}

# timed_pipeline DST: createdb DST; curl $OBJ_URL | gpg --decrypt | pg_restore
# --single-transaction. Sets P_SECS; gpg's peak RSS is in $WORK/gpg_rss.txt.
timed_pipeline() {
    local dst="$1" t0 t1
    fresh_start "$dst"
    t0="$(now)"
    "${PSQL[@]}" "$BACKSTOP_TEST_DATABASE_URL" -c "CREATE DATABASE $dst TEMPLATE template0"
    curl -fsS "$OBJ_URL" |
        /usr/bin/time -f '%M' -o "$WORK/gpg_rss.txt" gpg --batch --quiet --decrypt |
        "$PG_RESTORE" --single-transaction --no-owner --no-acl --exit-on-error --no-password \
            "--dbname=$SERVER/$dst"
    t1="$(now)"
    P_SECS="$(secs "$t0" "$t1")"
    printf '[bench]   %.2f s, load %s\n' "$P_SECS" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2
}

MIB=1048576
REPEAT="${BENCH_REPEAT:-2}"
mib() { echo "$1 / 1024" | bc -l; }
mbs() { echo "$1 / $2 / 1000000" | bc -l; }
ratio() { echo "$1 / $2" | bc -l; }
maxi() { if [ "$2" -gt "$1" ]; then echo "$2"; else echo "$1"; fi; }

# ==== part 1: one table, streamed restore vs the pipeline =========================
if [ "$DUMP_MIB" -gt 0 ]; then
    if ! db_exists "$DB"; then
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

    backstop_dump "$URL" "$NS"

    # Each side runs BENCH_REPEAT times, alternating (A B B A ...), and the
    # fastest run of each is compared.
    BEST_BACKSTOP=""
    BEST_BASE=""
    HWM_KIB=0
    TIME_RSS_KIB=0
    run_backstop() {
        log "backstop restore (run $1)"
        timed_restore "$NS" "$DST_A" 1
        [ "$(min "$BEST_BACKSTOP" "$R_SECS")" != "$R_SECS" ] || cp "$WORK/restore.json" "$WORK/restore-a.json"
        BEST_BACKSTOP="$(min "$BEST_BACKSTOP" "$R_SECS")"
        HWM_KIB="$(maxi "$HWM_KIB" "$R_HWM_KIB")"
        TIME_RSS_KIB="$(maxi "$TIME_RSS_KIB" "$R_RSS_KIB")"
    }
    run_baseline() {
        log "createdb; curl | gpg --decrypt | pg_restore (run $1)"
        timed_pipeline "$DST_B"
        BEST_BASE="$(min "$BEST_BASE" "$P_SECS")"
    }
    alternate "$REPEAT"
    ROWS_A="$("${PSQL[@]}" -tA "$SERVER/$DST_A" -c "SELECT count(*) FROM blobs")"
    ROWS_B="$("${PSQL[@]}" -tA "$SERVER/$DST_B" -c "SELECT count(*) FROM blobs")"
    [ "$ROWS_A" = "$ROWS_B" ] || die "row counts differ: backstop $ROWS_A, pipeline $ROWS_B"

    printf '\n== restore benchmark: backup %d MiB (pg_dump archive inside: %d MiB, %s rows), %s cores, best of %d ==\n' \
        $((CIPHER_BYTES / MIB)) $((PLAIN_BYTES / MIB)) "$ROWS_A" "$(nproc)" "$REPEAT"
    printf '%-40s %9.2f s  %8.1f MB/s  peak RSS %6.1f MiB (backstop process; with pg_restore child %.1f MiB)\n' \
        "backstop restore" "$BEST_BACKSTOP" "$(mbs "$CIPHER_BYTES" "$BEST_BACKSTOP")" \
        "$(mib "$HWM_KIB")" "$(mib "$TIME_RSS_KIB")"
    printf '%-40s %9.2f s  %8.1f MB/s  (gpg peak RSS %.1f MiB)\n' \
        "curl | gpg --decrypt | pg_restore" "$BEST_BASE" "$(mbs "$CIPHER_BYTES" "$BEST_BASE")" \
        "$(mib "$(cat "$WORK/gpg_rss.txt")")"
    printf 'ratio backstop / pipeline wall time: %.3f (<= 1.0 is the target)\n' "$(ratio "$BEST_BACKSTOP" "$BEST_BASE")"
    printf 'backstop peak RSS: %.1f MiB (target < 64 MiB)\n' "$(mib "$HWM_KIB")"
    sed -n 's/.*"\(select_secs\|restore_secs\|verify_secs\|total_secs\)": \([0-9.]*\).*/backstop (fastest run) \1 \2/p' "$WORK/restore-a.json"
    # The first part's databases are not needed any more (disk space).
    dropdb_ "$DST_A"
    dropdb_ "$DST_B"
fi

# ==== part 2: many tables, --jobs N vs single stream vs the pipeline ==============
[ -n "$JOBS" ] || exit 0

if ! db_exists "$JDB"; then
    # ~270 bytes per row on disk: the heap (~190, as above), the primary key
    # on id (~22) and the index on a (md5 text, ~58).
    JROWS=$((JOBS_DB_MIB * 1024 * 1024 / 270 / JOBS_TABLES))
    [ "$JROWS" -ge 1 ] || JROWS=1
    log "creating database $JDB: $JOBS_TABLES tables of $JROWS rows, 2 indexes each (~${JOBS_DB_MIB} MiB), two loaders in parallel"
    t0=$SECONDS
    "${PSQL[@]}" "$BACKSTOP_TEST_DATABASE_URL" -c "CREATE DATABASE $JDB"
    half=$(((JOBS_TABLES + 1) / 2))
    "${PSQL[@]}" -v lo=1 -v hi="$half" -v rows="$JROWS" -f tests/bench/restore-jobs.sql "$JURL" &
    p1=$!
    p2=
    if [ "$JOBS_TABLES" -gt "$half" ]; then
        "${PSQL[@]}" -v lo=$((half + 1)) -v hi="$JOBS_TABLES" -v rows="$JROWS" -f tests/bench/restore-jobs.sql "$JURL" &
        p2=$!
    fi
    wait "$p1"
    [ -z "$p2" ] || wait "$p2"
    log "created in $((SECONDS - t0)) s"
fi
JDB_BYTES="$("${PSQL[@]}" -tA "$JURL" -c "SELECT pg_database_size(current_database())")"
JIDX_BYTES="$("${PSQL[@]}" -tA "$JURL" -c "SELECT coalesce(sum(pg_indexes_size(oid)), 0) FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace")"
# Every table's count(*), summed (the same query for the source and the targets).
COUNT_SQL="SELECT $(for i in $(seq 1 "$JOBS_TABLES"); do printf '(SELECT count(*) FROM t%d) + ' "$i"; done)0"
INDEX_SQL="SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'"
JSRC_ROWS="$("${PSQL[@]}" -tA "$JURL" -c "$COUNT_SQL")"
log "database $JDB: $((JDB_BYTES / MIB)) MiB on disk ($((JIDX_BYTES / MIB)) MiB of indexes), $JSRC_ROWS rows"

backstop_dump "$JURL" "$NS-jobs"

BEST_J=""
BEST_S=""
BEST_P=""
J_HWM=0
J_RSS=0
J_SPOOL=0
J_LEFT=0
J_SPOOL_SECS=0
S_HWM=0
S_RSS=0
S_SPOOL=0
run_jobs() {
    log "backstop restore --jobs $JOBS (run $1)"
    timed_restore "$NS-jobs" "$DST_J" "$JOBS"
    if [ "$(min "$BEST_J" "$R_SECS")" = "$R_SECS" ]; then
        J_SPOOL_SECS="$R_SPOOL_SECS"
        cp "$WORK/restore.json" "$WORK/restore-jobs.json"
    fi
    BEST_J="$(min "$BEST_J" "$R_SECS")"
    J_HWM="$(maxi "$J_HWM" "$R_HWM_KIB")"
    J_RSS="$(maxi "$J_RSS" "$R_RSS_KIB")"
    J_SPOOL="$(maxi "$J_SPOOL" "$R_SPOOL_PEAK")"
    J_LEFT="$(maxi "$J_LEFT" "$R_SPOOL_LEFT")"
}
run_single() {
    log "backstop restore, single stream (run $1)"
    timed_restore "$NS-jobs" "$DST_S" 1
    [ "$(min "$BEST_S" "$R_SECS")" != "$R_SECS" ] || cp "$WORK/restore.json" "$WORK/restore-single.json"
    BEST_S="$(min "$BEST_S" "$R_SECS")"
    S_HWM="$(maxi "$S_HWM" "$R_HWM_KIB")"
    S_RSS="$(maxi "$S_RSS" "$R_RSS_KIB")"
    S_SPOOL="$(maxi "$S_SPOOL" "$R_SPOOL_PEAK")"
}
run_pipe() {
    log "createdb; curl | gpg --decrypt | pg_restore --single-transaction (run $1)"
    timed_pipeline "$DST_P"
    BEST_P="$(min "$BEST_P" "$P_SECS")"
}
alternate_sides "$REPEAT" run_jobs run_single run_pipe

for d in "$DST_J" "$DST_S" "$DST_P"; do
    rows="$("${PSQL[@]}" -tA "$SERVER/$d" -c "$COUNT_SQL")"
    [ "$rows" = "$JSRC_ROWS" ] || die "$d holds $rows rows, the source $JSRC_ROWS"
    idx="$("${PSQL[@]}" -tA "$SERVER/$d" -c "$INDEX_SQL")"
    [ "$idx" = $((2 * JOBS_TABLES)) ] || die "$d has $idx indexes, not $((2 * JOBS_TABLES))"
done

printf '\n== restore --jobs benchmark: database %s (%d MiB on disk, %d MiB of it indexes; %d tables, 2 indexes each, %s rows), backup %d MiB (pg_dump archive inside: %d MiB), %s cores, best of %d ==\n' \
    "$JDB" $((JDB_BYTES / MIB)) $((JIDX_BYTES / MIB)) "$JOBS_TABLES" "$JSRC_ROWS" \
    $((CIPHER_BYTES / MIB)) $((PLAIN_BYTES / MIB)) "$(nproc)" "$REPEAT"
printf '%-40s %9.2f s  %8.1f MB/s  peak RSS %6.1f MiB (backstop process; with children %.1f MiB)  spool peak %7.1f MiB (left after: %d bytes)\n' \
    "backstop restore --jobs $JOBS" "$BEST_J" "$(mbs "$JDB_BYTES" "$BEST_J")" \
    "$(mib "$J_HWM")" "$(mib "$J_RSS")" "$(echo "$J_SPOOL / $MIB" | bc -l)" "$J_LEFT"
printf '%-40s %9.2f s  %8.1f MB/s  peak RSS %6.1f MiB (backstop process; with children %.1f MiB)  spool peak %7.1f MiB\n' \
    "backstop restore (single stream)" "$BEST_S" "$(mbs "$JDB_BYTES" "$BEST_S")" \
    "$(mib "$S_HWM")" "$(mib "$S_RSS")" "$(echo "$S_SPOOL / $MIB" | bc -l)"
printf '%-40s %9.2f s  %8.1f MB/s  (gpg peak RSS %.1f MiB)\n' \
    "curl | gpg --decrypt | pg_restore" "$BEST_P" "$(mbs "$JDB_BYTES" "$BEST_P")" \
    "$(mib "$(cat "$WORK/gpg_rss.txt")")"
printf 'ratio jobs %d / single stream wall time: %.3f (<= 0.8 is the target)\n' "$JOBS" "$(ratio "$BEST_J" "$BEST_S")"
printf 'ratio jobs %d / pipeline wall time: %.3f\n' "$JOBS" "$(ratio "$BEST_J" "$BEST_P")"
printf 'ratio single stream / pipeline wall time: %.3f (<= 1.0 is the target)\n' "$(ratio "$BEST_S" "$BEST_P")"
printf 'spool peak / pg_dump archive: %.3f; in the fastest --jobs %d run the spool was full after %.1f s (select, create the database, download, authenticate, decrypt, write), the rest (pg_restore -j %d, drill) took %.1f s\n' \
    "$(echo "$J_SPOOL / $PLAIN_BYTES" | bc -l)" "$JOBS" "$J_SPOOL_SECS" "$JOBS" "$(secs "$J_SPOOL_SECS" "$BEST_J")"
sed -n "s/.*\"\\(select_secs\\|restore_secs\\|verify_secs\\|total_secs\\)\": \\([0-9.]*\\).*/backstop --jobs $JOBS (fastest run) \\1 \\2/p" "$WORK/restore-jobs.json"
sed -n 's/.*"\(select_secs\|restore_secs\|verify_secs\|total_secs\)": \([0-9.]*\).*/backstop single stream (fastest run) \1 \2/p' "$WORK/restore-single.json"
