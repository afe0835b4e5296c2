#!/usr/bin/env bash
# Base backups side by side in one run, on this machine:
#
#   BACKSTOP_STACK_NOTIFICATIONS=0 BACKSTOP_GCS_BACKEND=filesystem \
#     tests/stack/stack.sh run -- tests/bench/basebackup.sh [WORKDIR]
#
# A pgbench cluster (SCALE=100, ~1.6 GB), then ROUNDS (default 2) rounds of,
# alternating order (A B C, C B A, ...):
#   A  pg_basebackup -Ft -D - -X none -c fast | wc -c         (the floor)
#   B  the same | gpg -z 0 --encrypt > /dev/null (the reference harness's
#      pg_basebackup/gpg pipeline: encryption only, no compression or upload)
#   C  backstop basebackup (BACKSTOP_COMPRESSION_LEVEL, default 1)
# For B and C it reports when pg_basebackup exited (the stream's end) and
# the emulator's CPU seconds: fake-gcs-server holds a streamed upload in
# memory and hashes, copies and writes it only after its last byte, a tail
# that grows with the object and that GCS does not have.
# BACKSTOP_BIN: a release binary (else built now). Prints one table.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$(pwd)
WORK=${1:-$(mktemp -d /tmp/backstop-bbbench.XXXXXX)}
SCALE=${SCALE:-100} ROUNDS=${ROUNDS:-2} LEVEL=${BACKSTOP_COMPRESSION_LEVEL:-1}
PGBIN=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
[ -n "${BACKSTOP_STACK:-}" ] || die "run inside the local stack: BACKSTOP_STACK_NOTIFICATIONS=0 BACKSTOP_GCS_BACKEND=filesystem tests/stack/stack.sh run -- $0"
[ "$(id -u)" = 0 ] || die "run as root (the cluster runs as the postgres user)"
BACKSTOP=${BACKSTOP_BIN:-}
if [ -z "$BACKSTOP" ]; then
    log "building backstop (release)"
    cargo build --release -q -p backstop-cli --bin backstop
    BACKSTOP="$REPO/target/release/backstop"
fi
mkdir -p "$WORK"; chmod 755 "$WORK"
RUN=$WORK/run PGDATA=$WORK/pgdata PGPORT=${BENCH_PGPORT:-57433} R=$WORK/results
mkdir -p "$RUN" "$R"
asp() { runuser -u postgres -- "$@"; }
"$BACKSTOP" keygen --out "$WORK/keys" > /dev/null 2> "$WORK/keygen.log" || { cat "$WORK/keygen.log" >&2; die "keygen failed"; }
chown -R postgres:postgres "$WORK"
log "initdb, pgbench -i -s $SCALE"
asp "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust > "$WORK/initdb.log"
cat >> "$PGDATA/postgresql.conf" <<EOF
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$RUN'
shared_buffers = 512MB
wal_level = replica
max_wal_size = 1GB
max_wal_senders = 4
archive_mode = on
archive_command = '/bin/true'
EOF
asp "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/pg.log" -w start > /dev/null
trap 'asp "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true' EXIT
PSQL=(psql -X -q -h "$RUN" -p "$PGPORT" -U postgres)
"${PSQL[@]}" -d postgres -c 'create database bench'
asp "$PGBIN/pgbench" -h "$RUN" -p "$PGPORT" -U postgres -i -s "$SCALE" -q bench > "$WORK/pgbench.log" 2>&1

export BACKSTOP_NAMESPACE="bbbench-$(date +%s)"
export BACKSTOP_RECIPIENTS="file:$WORK/keys/backup.pub.asc"
export BACKSTOP_SIGNING_KEY="file:$WORK/keys/signing.sec.asc"
export GNUPGHOME=$WORK/gnupg; mkdir -p -m 700 "$GNUPGHOME"
GCS_PID=$(pgrep -f 'fake-gcs-server-linux' | head -1)
gcs_cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$GCS_PID/stat"; }
basebackup() { "$PGBIN/pg_basebackup" -h "$RUN" -p "$PGPORT" -U postgres -Ft -D - -X none -c fast 2> /dev/null; }
# Polls for the pg_basebackup child of PID; prints seconds from T0 to its exit.
stream_end() { # PID T0
    local seen=0 end=
    while kill -0 "$1" 2> /dev/null; do
        if pgrep -x pg_basebackup > /dev/null; then seen=1; elif [ $seen = 1 ] && [ -z "$end" ]; then end=$(now); fi
        sleep 0.02
    done
    python3 -c "print(round(${end:-$(now)} - $2, 2))"
}
run() { # KIND ROUND
    "${PSQL[@]}" -d postgres -c checkpoint > /dev/null
    local t0 t1 g0 g1 pid end=
    g0=$(gcs_cpu); t0=$(now)
    case $1 in
        plain) basebackup | wc -c > "$R/plain-$2.bytes" & pid=$! ;;
        gpg) { basebackup | gpg --batch -q -z 0 --trust-model always --recipient-file "$WORK/keys/backup.pub.asc" --encrypt > /dev/null; } & pid=$! ;;
        backstop) BACKSTOP_COMPRESSION_LEVEL=$LEVEL /usr/bin/time -f '%M' -o "$R/backstop-$2.rss" "$BACKSTOP" basebackup \
            --database-url "postgres://postgres@/postgres?host=$RUN&port=$PGPORT" > "$R/backstop-$2.json" 2> "$R/backstop-$2.log" & pid=$! ;;
    esac
    [ "$1" = plain ] || end=$(stream_end "$pid" "$t0")
    wait "$pid" || die "$1 (round $2) failed"
    t1=$(now); g1=$(gcs_cpu)
    python3 -c "import json; print(json.dumps({'kind': '$1', 'round': $2, 'wall_s': round($t1 - $t0, 2), 'stream_end_s': ${end:-None}, 'emulator_cpu_s': round($g1 - $g0, 2)}))" >> "$R/runs.jsonl"
    log "$(tail -n 1 "$R/runs.jsonl")"
}
for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order="plain gpg backstop"; else order="backstop gpg plain"; fi
    for kind in $order; do run "$kind" "$round"; done
done
python3 - "$R" <<'EOF'
import json, sys
r = sys.argv[1]
runs = [json.loads(l) for l in open(f'{r}/runs.jsonl')]
best = {k: min((x for x in runs if x['kind'] == k), key=lambda x: x['wall_s']) for k in ('plain', 'gpg', 'backstop')}
rss = max(int(open(f"{r}/backstop-{x['round']}.rss").read().split()[-1]) for x in runs if x['kind'] == 'backstop') / 1024
size = json.load(open(f"{r}/backstop-{best['backstop']['round']}.json"))
plain = best['plain']['wall_s']
print()
print('Base backup, best of %d rounds each (plaintext tar %.2f GB, Backstop object %.1f MB)' % (
    max(x['round'] for x in runs), size['plaintext_bytes'] / 1e9, size['ciphertext_bytes'] / 1e6))
print('| path | wall s | / pg_basebackup alone | stream end s | emulator CPU s |')
print('|---|---|---|---|---|')
for k, name in (('plain', 'pg_basebackup | wc -c'), ('gpg', 'pg_basebackup | gpg -z 0 --encrypt'), ('backstop', 'backstop basebackup')):
    x = best[k]
    print('| %s | %.2f | %.2fx | %s | %s |' % (name, x['wall_s'], x['wall_s'] / plain, x['stream_end_s'] or '', x['emulator_cpu_s'] if k != 'plain' else ''))
print('backstop peak RSS %.1f MiB; every run: %s/runs.jsonl' % (rss, r))
EOF
