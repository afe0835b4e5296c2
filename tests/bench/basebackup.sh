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
#   C  backstop basebackup (the server's zstd at BACKSTOP_COMPRESSION_LEVEL,
#      default 1, on BACKSTOP_BASEBACKUP_WORKERS threads, default 2)
# For B and C it reports when the server's walsender exited (the stream's
# end) and the emulator's CPU seconds: fake-gcs-server holds a streamed
# upload in memory and hashes, copies and writes it only after its last
# byte, a tail that grows with the object and that GCS does not have. It
# also reports the CPU seconds of the whole machine (all processes: the
# server's compression is on the database host's cores).
# Then, as the emulator's own share: curl uploading a file of the size of
# Backstop's object to the same emulator the way Backstop does (one
# resumable upload, one request), best of ROUNDS.
# BENCH_DATA=random adds 4 million rows of random md5 text (~600 MB that
# compress ~2:1) to pgbench's tables, which compress ~20:1.
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
if [ "${BENCH_DATA:-}" = random ]; then
    log "adding 4 million rows of random text"
    "${PSQL[@]}" -d bench -c "CREATE TABLE noise AS SELECT g, md5(random()::text) || md5(random()::text) AS t FROM generate_series(1, 4000000) g"
fi

export BACKSTOP_NAMESPACE="bbbench-$(date +%s)"
export BACKSTOP_RECIPIENTS="file:$WORK/keys/backup.pub.asc"
export BACKSTOP_SIGNING_KEY="file:$WORK/keys/signing.sec.asc"
export GNUPGHOME=$WORK/gnupg; mkdir -p -m 700 "$GNUPGHOME"
GCS_PID=$(pgrep -f 'fake-gcs-server-linux' | head -1)
gcs_cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$GCS_PID/stat"; }
basebackup() { "$PGBIN/pg_basebackup" -h "$RUN" -p "$PGPORT" -U postgres -Ft -D - -X none -c fast 2> /dev/null; }
machine_cpu() { awk '/^cpu /{printf "%.2f", ($2 + $3 + $4 + $7 + $8) / 100}' /proc/stat; }
# Polls for the walsender serving PID; prints seconds from T0 to its exit.
stream_end() { # PID T0
    local seen=0 end=
    while kill -0 "$1" 2> /dev/null; do
        if pgrep -f '^postgres: walsender' > /dev/null; then seen=1; elif [ $seen = 1 ] && [ -z "$end" ]; then end=$(now); fi
        sleep 0.1
    done
    python3 -c "print(round(${end:-$(now)} - $2, 2))"
}
run() { # KIND ROUND
    "${PSQL[@]}" -d postgres -c checkpoint > /dev/null
    local t0 t1 g0 g1 m0 m1 pid end=
    g0=$(gcs_cpu); m0=$(machine_cpu); t0=$(now)
    case $1 in
        plain) basebackup | wc -c > "$R/plain-$2.bytes" & pid=$! ;;
        gpg) { basebackup | gpg --batch -q -z 0 --trust-model always --recipient-file "$WORK/keys/backup.pub.asc" --encrypt > /dev/null; } & pid=$! ;;
        backstop) BACKSTOP_COMPRESSION_LEVEL=$LEVEL /usr/bin/time -f '%M' -o "$R/backstop-$2.rss" "$BACKSTOP" basebackup \
            --database-url "postgres://postgres@/postgres?host=$RUN&port=$PGPORT" > "$R/backstop-$2.json" 2> "$R/backstop-$2.log" & pid=$! ;;
    esac
    [ "$1" = plain ] || end=$(stream_end "$pid" "$t0")
    wait "$pid" || die "$1 (round $2) failed"
    t1=$(now); g1=$(gcs_cpu); m1=$(machine_cpu)
    python3 -c "import json; print(json.dumps({'kind': '$1', 'round': $2, 'wall_s': round($t1 - $t0, 2), 'stream_end_s': ${end:-None}, 'emulator_cpu_s': round($g1 - $g0, 2), 'machine_cpu_s': round($m1 - $m0, 2)}))" >> "$R/runs.jsonl"
    log "$(tail -n 1 "$R/runs.jsonl")"
}
for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order="plain gpg backstop"; else order="backstop gpg plain"; fi
    for kind in $order; do run "$kind" "$round"; done
done
# The emulator alone: a file of the object's size, uploaded as Backstop does.
size=$(python3 -c "import json; print(json.load(open('$R/backstop-1.json'))['ciphertext_bytes'])")
head -c "$size" /dev/urandom > "$WORK/upload.bin"
GCS=${STORAGE_EMULATOR_HOST%/}
for round in $(seq 1 "$ROUNDS"); do
    loc=$(curl -sf -D - -o /dev/null -X POST -H 'Content-Type: application/json' -d "{\"name\": \"$BACKSTOP_NAMESPACE/upload-$round\"}" \
        "$GCS/upload/storage/v1/b/$BACKSTOP_GCS_BUCKET/o?uploadType=resumable" | tr -d '\r' | awk -F': ' 'tolower($1) == "location" {print $2}')
    t=$(curl -sf -o /dev/null -w '%{time_total}' -X PUT -H 'Expect:' -T "$WORK/upload.bin" "$loc")
    echo "{\"kind\": \"upload\", \"round\": $round, \"wall_s\": $t}" >> "$R/runs.jsonl"
done
rm -f "$WORK/upload.bin"
python3 - "$R" <<'EOF'
import json, sys
r = sys.argv[1]
runs = [json.loads(l) for l in open(f'{r}/runs.jsonl')]
best = {k: min((x for x in runs if x['kind'] == k), key=lambda x: x['wall_s']) for k in ('plain', 'gpg', 'backstop', 'upload')}
rss = max(int(open(f"{r}/backstop-{x['round']}.rss").read().split()[-1]) for x in runs if x['kind'] == 'backstop') / 1024
size = json.load(open(f"{r}/backstop-{best['backstop']['round']}.json"))
plain = best['plain']['wall_s']
print()
tar = int(open(f"{r}/plain-{best['plain']['round']}.bytes").read().split()[0])
print('Base backup, best of %d rounds each (tar %.2f GB, Backstop object %.1f MB)' % (
    max(x['round'] for x in runs), tar / 1e9, size['ciphertext_bytes'] / 1e6))
print('| path | wall s | / pg_basebackup alone | stream end s | emulator CPU s | machine CPU s |')
print('|---|---|---|---|---|---|')
for k, name in (('plain', 'pg_basebackup | wc -c'), ('gpg', 'pg_basebackup | gpg -z 0 --encrypt'), ('backstop', 'backstop basebackup')):
    x = best[k]
    print('| %s | %.2f | %.2fx | %s | %s | %.2f |' % (name, x['wall_s'], x['wall_s'] / plain, x['stream_end_s'] or '', x['emulator_cpu_s'] if k != 'plain' else '', x['machine_cpu_s']))
b = best['backstop']
print('the stream of backstop basebackup: %.2f s, %.2fx pg_basebackup alone' % (b['stream_end_s'], b['stream_end_s'] / plain))
print('curl uploading a file of the object\'s size to the same emulator alone: %.2f s' % best['upload']['wall_s'])
print('backstop peak RSS %.1f MiB; every run: %s/runs.jsonl' % (rss, r))
EOF
