#!/usr/bin/env bash
# WAL archiving and base backups, Backstop side by side with pgBackRest 2.45
# (Debian package) in one run, on this machine:
#
#   BACKSTOP_STACK_NOTIFICATIONS=0 BACKSTOP_GCS_BACKEND=filesystem \
#     tests/stack/stack.sh run -- tests/bench/wal.sh [WORKDIR]
#
# 1. pgBackRest: the reference harness ../shared/reference/pgbackrest-baseline.sh
#    (PGBR_BASELINE to point elsewhere) with REPO_TYPE=gcs (fake-gcs-server
#    over https, filesystem backend): pgbench load, a sync and an async
#    phase, backlog drain with archiving paused then re-enabled, a full
#    backup, pg_basebackup alone.
# 2. Backstop, the same cluster settings and workload: archive_command =
#    'backstop wal-push %p' into the stack's fake-gcs-server (filesystem
#    backend, notifications off: in GCS a notification costs the writer
#    nothing), the same phases measured by the same sampler and analysis
#    (taken from the reference harness), then `backstop basebackup`.
#
# Targets (issue 18): backlog drain >= pgBackRest async; per-segment latency
# p50 <= pgBackRest sync; wal-push peak RSS < 64 MiB; base backup <= 1.0x
# `pgbackrest backup` and <= 1.5x pg_basebackup alone. BENCH_DATA=random
# adds a phase on less compressible data (Backstop only).
# Tunables: SCALE=100 DURATION=60 CLIENTS=4 JOBS=2 BACKLOG_SECONDS=30
# BENCH_SKIP_PGBACKREST=1 (Backstop only).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$(pwd)
WORK=${1:-$(mktemp -d /tmp/backstop-walbench.XXXXXX)}
SCALE=${SCALE:-100} DURATION=${DURATION:-60} CLIENTS=${CLIENTS:-4} JOBS=${JOBS:-2}
BACKLOG_SECONDS=${BACKLOG_SECONDS:-30}
BASELINE=${PGBR_BASELINE:-$REPO/../shared/reference/pgbackrest-baseline.sh}
PGBIN=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
export PATH="$PGBIN:$PATH"
log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
[ -n "${BACKSTOP_STACK:-}" ] || die "run inside the local stack: BACKSTOP_STACK_NOTIFICATIONS=0 BACKSTOP_GCS_BACKEND=filesystem tests/stack/stack.sh run -- $0"
[ "$(id -u)" = 0 ] || die "run as root (the clusters run as the postgres user, as in the reference harness)"
[ -f "$BASELINE" ] || die "reference harness not found at $BASELINE (set PGBR_BASELINE)"
mkdir -p "$WORK"; chmod 755 "$WORK"

# BACKSTOP_BIN: a release binary built beforehand (it must be readable by
# the postgres user); else built now.
BACKSTOP=${BACKSTOP_BIN:-}
if [ -z "$BACKSTOP" ]; then
    log "building backstop (release)"
    cargo build --release -q -p backstop-cli --bin backstop
    BACKSTOP="$REPO/target/release/backstop"
fi

# ---- 1. pgBackRest ------------------------------------------------------------
if [ "${BENCH_SKIP_PGBACKREST:-0}" != 1 ]; then
    log "pgBackRest: $BASELINE (REPO_TYPE=gcs, scale $SCALE), about 6 minutes"
    env -u PGUSER -u PGHOST -u PGDATABASE -u PGPASSWORD PGPORT=${BENCH_PGBR_PORT:-55432} RESTORE_PORT=${BENCH_PGBR_RESTORE_PORT:-55433} REPO_TYPE=gcs SCALE=$SCALE DURATION=$DURATION CLIENTS=$CLIENTS JOBS=$JOBS BACKLOG_SECONDS=$BACKLOG_SECONDS \
        PHASE_ORDER="async sync" bash "$BASELINE" "$WORK/pgbackrest" > "$WORK/pgbackrest.log" 2>&1 ||
        { tail -n 30 "$WORK/pgbackrest.log" >&2; die "the pgBackRest baseline failed"; }
fi

# ---- 2. Backstop ----------------------------------------------------------------
W=$WORK/backstop; R=$W/results; L=$W/log; B=$W/bin; RUN=$W/run
mkdir -p "$R" "$L" "$B" "$RUN" "$W/keys"
PGPORT=${BENCH_PGPORT:-56432}
PGDATA=$W/pgdata
asp() { runuser -u postgres -- "$@"; }
PSQL=(psql -X -q -h "$RUN" -p "$PGPORT" -U postgres)
# The reference harness's sampler and analysis, so both sides are measured alike.
for f in sampler analyze; do
    sed -n "/^cat > \"\$B\/$f.py\" <<'PYEOF'\$/,/^PYEOF\$/p" "$BASELINE" | sed '1d;$d' > "$B/$f.py"
    [ -s "$B/$f.py" ] || die "could not take $f.py from $BASELINE"
done
rm -rf "$W/keys"; "$BACKSTOP" keygen --out "$W/keys" > "$W/keygen.json" 2>"$L/keygen.log" ||
    { cat "$L/keygen.log" >&2; die "keygen failed"; }
chown -R postgres:postgres "$W"; chmod 755 "$W"
NS="walbench-$(date +%s)"
export BACKSTOP_NAMESPACE=$NS
export BACKSTOP_RECIPIENTS="file:$W/keys/backup.pub.asc"
export BACKSTOP_SIGNING_KEY="file:$W/keys/signing.sec.asc"

log "initdb + start on :$PGPORT"
asp "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust > "$L/initdb.log"
cat >> "$PGDATA/postgresql.conf" <<EOF
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$RUN'
shared_buffers = 512MB
wal_level = replica
max_wal_size = 256MB
min_wal_size = 80MB
max_wal_senders = 4
archive_mode = on
archive_command = '/usr/bin/time -a -o $L/archive-push-time.log -f "%M %e %x %C" $BACKSTOP wal-push %p'
log_line_prefix = '%m [%p] '
EOF
asp "$PGBIN/pg_ctl" -D "$PGDATA" -l "$L/pg.log" -w start > /dev/null
trap 'asp "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true' EXIT
"${PSQL[@]}" -d postgres -c 'create database bench'

ready_count() { ls "$PGDATA/pg_wal/archive_status" 2>/dev/null | grep -c '\.ready$' || true; }
wait_drain() {
    local t0; t0=$(date +%s)
    while [ "$(ready_count)" -gt 0 ]; do
        [ $(($(date +%s) - t0)) -gt 900 ] && { log "drain timeout"; break; }
        sleep 0.5
    done
    now
}
sampler_start() {
    rm -f "$W/sampler.stop"
    nohup python3 "$B/sampler.py" "$1/samples.csv" "$1/rss.json" "$W/sampler.stop" "$PGDATA" \
        "$W/none" "$RUN" "$PGPORT" "--none--" > "$1/sampler.log" 2>&1 &
    echo $! > "$W/sampler.pid"
    sleep 1.5
}
sampler_stop() { touch "$W/sampler.stop"; wait "$(cat "$W/sampler.pid")" 2>/dev/null || true; }
fg_lines() { [ -f "$L/archive-push-time.log" ] && wc -l < "$L/archive-push-time.log" || echo 0; }
fg_slice() { tail -n +"$(($1 + 1))" "$L/archive-push-time.log" 2>/dev/null | grep -E '^[0-9]+ ' > "$2" || true; }
phase_json() {
    python3 - "$@" <<'EOF'
import json, re, sys
d, name, s, e, de, pgl = sys.argv[1:7]
pb = {}
try:
    m = re.search(r'tps = ([\d.]+)', open(pgl).read())
    if m: pb['tps'] = float(m.group(1))
except OSError:
    pass
json.dump({'name': name, 'start': float(s), 'end': float(e), 'drain_end': float(de), 'pgbench': pb}, open(d + '/phase.json', 'w'))
EOF
}
finish_phase() { # DIR NAME T0 T1 TD N0 PGBENCH_LOG
    sampler_stop; fg_slice "$6" "$1/archive-push-time.log"
    phase_json "$1" "$2" "$3" "$4" "$5" "$7"
    python3 "$B/analyze.py" "$1" > /dev/null
}

D=$R/load; mkdir -p "$D"
log "pgbench -i -s $SCALE (archiving on)"
sampler_start "$D"; n0=$(fg_lines); t0=$(now)
asp "$PGBIN/pgbench" -h "$RUN" -p "$PGPORT" -U postgres -i -s "$SCALE" -q bench > "$D/pgbench.log" 2>&1
t1=$(now); td=$(wait_drain)
finish_phase "$D" load "$t0" "$t1" "$td" "$n0" /dev/null

D=$R/basebackup; mkdir -p "$D"
"${PSQL[@]}" -d postgres -c checkpoint > /dev/null
log "backstop basebackup"
t0=$(now)
/usr/bin/time -v -o "$D/time-v.txt" "$BACKSTOP" basebackup --database-url "postgres://postgres@/postgres?host=$RUN&port=$PGPORT" \
    > "$D/summary.json" 2> "$D/stderr.log" || { tail -n 20 "$D/stderr.log" >&2; die "backstop basebackup failed"; }
t1=$(now)
# The stream's end: the server's notice that the backup's WAL is archived,
# its last word before the end position (then the emulator commits).
python3 - "$D" "$t0" "$t1" > "$D/metrics.json" <<'PY'
import json, sys, datetime
d, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
rss = int([l.split(': ')[1] for l in open(f'{d}/time-v.txt') if 'Maximum resident' in l][0])
ends = [l.split()[0] for l in open(f'{d}/stderr.log') if 'all required WAL segments have been archived' in l]
stream = None
if ends:
    at = datetime.datetime.fromisoformat(ends[0].replace('Z', '+00:00')).timestamp()
    stream = round(at - t0, 2)
print(json.dumps({'seconds': round(t1 - t0, 2), 'stream_seconds': stream, 'max_rss_kb': rss}))
PY
t0=$(now); "$PGBIN/pg_basebackup" -h "$RUN" -p "$PGPORT" -U postgres -Ft -D - -X none -c fast | wc -c > "$D/plain-bytes"; t1=$(now)
python3 -c "import json; print(round($t1 - $t0, 2))" > "$D/plain-seconds"

# Markers, one committed per second through the workload phases: the
# restore target lies between two of them (as in the reference harness).
"${PSQL[@]}" -d bench -c 'create table marker (id bigserial primary key, ts timestamptz not null default clock_timestamp(), phase text)' > /dev/null
cat > "$B/marker.sh" <<EOF
#!/bin/bash
while [ ! -e "$W/marker.stop" ]; do
  psql -X -q -h "$RUN" -p "$PGPORT" -U postgres -d bench -c "insert into marker (phase) values ('run')" > /dev/null 2>&1
  sleep 1
done
EOF
chmod 755 "$B/marker.sh"
nohup "$B/marker.sh" > /dev/null 2>&1 &
MARKER_PID=$!

run_phase() { # NAME [SQL FILE]
    local D=$R/$1; mkdir -p "$D"
    "${PSQL[@]}" -d postgres -c checkpoint > /dev/null; wait_drain > /dev/null; sleep 2
    local extra=(); [ -n "${2:-}" ] && extra=(-n -f "$2")
    log "phase $1: pgbench -c $CLIENTS -j $JOBS -T $DURATION ${2:-}"
    sampler_start "$D"; local n0 t0 t1 td; n0=$(fg_lines); t0=$(now)
    asp "$PGBIN/pgbench" -h "$RUN" -p "$PGPORT" -U postgres -c "$CLIENTS" -j "$JOBS" -T "$DURATION" -P 10 "${extra[@]}" bench > "$D/pgbench.log" 2>&1
    t1=$(now); td=$(wait_drain)
    finish_phase "$D" "$1" "$t0" "$t1" "$td" "$n0" "$D/pgbench.log"
}
run_backlog() { # NAME
    local D=$R/$1; mkdir -p "$D"
    "${PSQL[@]}" -d postgres -c checkpoint > /dev/null; wait_drain > /dev/null
    "${PSQL[@]}" -d postgres -c "alter system set archive_command = ''" -c "select pg_reload_conf()" > /dev/null
    sleep 1
    log "backlog: archiving paused for a ${BACKLOG_SECONDS} s pgbench run, then re-enabled"
    sampler_start "$D"; local n0 t0 t1 td nr; n0=$(fg_lines); t0=$(now)
    asp "$PGBIN/pgbench" -h "$RUN" -p "$PGPORT" -U postgres -c "$CLIENTS" -j "$JOBS" -T "$BACKLOG_SECONDS" bench > "$D/pgbench.log" 2>&1
    sleep 1; nr=$(ready_count); t1=$(now); echo "$nr" > "$D/queued"
    "${PSQL[@]}" -d postgres -c "alter system reset archive_command" -c "select pg_reload_conf()" > /dev/null
    td=$(wait_drain)
    sleep 1
    finish_phase "$D" "$1" "$t0" "$t1" "$td" "$n0" "$D/pgbench.log"
    log "backlog: $nr segments drained in $(python3 -c "print(round($td - $t1, 1))") s"
}
run_phase sync
run_backlog backlog
if [ "${BENCH_DATA:-}" = random ]; then
    "${PSQL[@]}" -d bench -c "create table if not exists noise (id bigserial, payload text)" > /dev/null
    echo "insert into noise (payload) select string_agg(md5(random()::text), '') from generate_series(1, 64);" > "$W/noise.sql"
    chmod 644 "$W/noise.sql"
    run_phase random "$W/noise.sql"
fi

# ---- PITR: the base backup and the WAL since, restored to a time between
# two markers, timed until promoted: "mid", in the middle of the first phase
# after the base backup (where the reference harness puts its target), and
# "end", near the end (all the phases' WAL).
touch "$W/marker.stop"; wait "$MARKER_PID" 2>/dev/null || true
"${PSQL[@]}" -d postgres -c "select pg_switch_wal()" > /dev/null; sleep 1; wait_drain > /dev/null
cat > "$B/rss.py" <<'EOF'
import os, re, sys, time
stop, out = sys.argv[1:3]
peak, seen = 0, set()
while not os.path.exists(stop):
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            cmd = open(f'/proc/{d}/cmdline', 'rb').read()
            if b'wal-fetch' not in cmd:
                continue
            m = re.search(r'VmHWM:\s+(\d+)', open(f'/proc/{d}/status').read())
        except OSError:
            continue
        if m:
            peak = max(peak, int(m.group(1))); seen.add(d)
    time.sleep(0.05)
open(out, 'w').write(f'{peak} {len(seen)}\n')
EOF
pitr_restore() { # NAME MARKER_ID_SQL PORT
    local D=$R/$1 MK_ID TARGET; mkdir -p "$D"
    IFS='|' read -r MK_ID TARGET < <("${PSQL[@]}" -d bench -At -F'|' -c "
      select id, to_char((ts + interval '0.5 s') at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
      from marker where id = ($2)")
    log "restore-cluster ($1) --to-time $TARGET (marker $MK_ID present, $((MK_ID + 1)) absent)"
    rm -f "$W/rss.stop"
    python3 "$B/rss.py" "$W/rss.stop" "$D/wal-fetch-rss.txt" &
    local sampler=$! t0 t1
    # Earlier phases' dirty pages out first (not timed): in this VM a burst
    # of writes right behind another pays for both (1.6 GB written twice in
    # a row by Python: 0.46 s then 9.18 s of system time).
    sync
    t0=$(now)
    BACKSTOP_BACKUP_KEY="file:$W/keys/backup.sec.asc" BACKSTOP_SIGNING_PUBLIC_KEY="file:$W/keys/signing.pub.asc" \
        /usr/bin/time -v -o "$D/time-v.txt" "$BACKSTOP" restore-cluster --namespace "$NS" --to-time "$TARGET" \
        --pgdata "$W/$1-data" --start --port "$3" --user postgres > "$D/report.json" 2> "$D/stderr.log" ||
        { tail -n 20 "$D/stderr.log" >&2; die "restore-cluster failed"; }
    t1=$(now)
    touch "$W/rss.stop"; wait "$sampler" 2>/dev/null || true
    local has_k has_n
    has_k=$(psql -X -At -h 127.0.0.1 -p "$3" -U postgres -d bench -c "select count(*) from marker where id = $MK_ID")
    has_n=$(psql -X -At -h 127.0.0.1 -p "$3" -U postgres -d bench -c "select count(*) from marker where id = $((MK_ID + 1))")
    asp "$PGBIN/pg_ctl" -D "$W/$1-data" -m immediate -w stop > /dev/null 2>&1 || true
    rm -rf "$W/$1-data"
    python3 - "$D" "$t0" "$t1" "$has_k" "$has_n" <<'EOF'
import json, sys
d, t0, t1, k, n = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
r = json.load(open(d + '/report.json'))
rss = int([l.split(': ')[1] for l in open(d + '/time-v.txt') if 'Maximum resident' in l][0])
wf_peak, wf_n = map(int, open(d + '/wal-fetch-rss.txt').read().split())
m = {'total_wall_s': round(t1 - t0, 2), 'segments': r.get('wal_segments_fetched'), 'timings': r['timings'],
     'target_reached': r.get('target_reached'), 'marker_before_present': k == '1', 'marker_after_present': n == '1',
     'restore_cluster_max_rss_kb': rss, 'wal_fetch_max_rss_kb_sampled': wf_peak, 'wal_fetch_processes_seen': wf_n,
     'bytes': r.get('bytes')}
json.dump(m, open(d + '/metrics.json', 'w'), indent=1)
EOF
}
MID=$(python3 -c "import json; p = json.load(open('$R/sync/phase.json')); print((p['start'] + p['end']) / 2)")
pitr_restore restore_mid "select max(id) from marker where ts <= to_timestamp($MID)" "${BENCH_RESTORE_PORT:-56433}"
pitr_restore restore "select max(id) - 3 from marker" "${BENCH_RESTORE_PORT:-56433}"

# ---- 3. report -------------------------------------------------------------------
python3 - "$WORK" <<'EOF'
import json, os, sys
work = sys.argv[1]
def load(p):
    try:
        return json.load(open(p))
    except OSError:
        return None
bs = {ph: load(f'{work}/backstop/results/{ph}/metrics.json') for ph in ('load', 'sync', 'backlog', 'random')}
bb = load(f'{work}/backstop/results/basebackup/metrics.json')
plain = float(open(f'{work}/backstop/results/basebackup/plain-seconds').read())
pg = load(f'{work}/pgbackrest/results/summary.json') or {}
def lat(m):
    return m['segment_archive_latency_s']['p50'] if m else None
def fg_rss(*ms):
    return max((m['foreground_archive_push']['max_rss_kb'] or 0) for m in ms if m) / 1024
print()
print('WAL archiving and base backup, one run (pgbench scale %s)' % os.environ.get('SCALE', '100'))
print('| measure | Backstop | pgBackRest sync | pgBackRest async | target |')
print('|---|---|---|---|---|')
drain = bs['backlog']['drain_rate_segments_per_s']
print('| backlog drain, segments/s | %s (%s queued) | %s | %s | >= async |' % (
    drain, bs['backlog']['queued_at_end_of_run'],
    (pg.get('backlog_sync') or {}).get('drain_rate_segments_per_s'), (pg.get('backlog_async') or {}).get('drain_rate_segments_per_s')))
print('| per-segment latency .ready->.done p50 / p95 s (under pgbench) | %s / %s | %s | %s | p50 <= sync |' % (
    lat(bs['sync']), bs['sync']['segment_archive_latency_s']['p95'], lat(pg.get('sync')), lat(pg.get('async'))))
print('| segments archived/s during the run | %s | %s | %s | |' % (
    bs['sync']['segments_archived_per_s_during_run'], (pg.get('sync') or {}).get('segments_archived_per_s_during_run'),
    (pg.get('async') or {}).get('segments_archived_per_s_during_run')))
print('| push peak RSS MiB (largest process) | %.1f | %.1f (fg) | %.1f (fg) | < 64 |' % (
    fg_rss(*bs.values()), fg_rss(pg.get('sync')) if pg.get('sync') else 0, fg_rss(pg.get('async')) if pg.get('async') else 0))
print('| failed archive_command calls | %s | %s | %s | 0 |' % (
    sum(m['failed_count_delta'] for m in bs.values() if m), (pg.get('sync') or {}).get('failed_count_delta'), (pg.get('async') or {}).get('failed_count_delta')))
pgb = (pg.get('backup') or {}).get('seconds')
print('| base backup s (peak RSS MiB) | %s (%.1f) | pgbackrest backup %s | pg_basebackup alone %s (this run), %s (harness) | <= 1.0x backup, <= 1.5x pg_basebackup |' % (
    bb['seconds'], bb['max_rss_kb'] / 1024, pgb, plain, ((pg.get('basebackup') or {}).get('plain_tar') or {}).get('seconds')))
if pgb:
    print('  base backup ratios: %.2fx pgbackrest backup, %.2fx pg_basebackup alone' % (bb['seconds'] / pgb, bb['seconds'] / plain))
if bb.get('stream_seconds'):
    print('  base backup stream (until the server sent its end): %s s, %.2fx pg_basebackup alone; the rest is the emulator committing the upload' % (
        bb['stream_seconds'], bb['stream_seconds'] / plain))
pr = pg.get('restore')
for name in ('restore_mid', 'restore'):
    rs = load(f'{work}/backstop/results/{name}/metrics.json')
    if not rs:
        continue
    print('  %s:' % name)
    segs = rs['segments'] or 0
    print('| PITR restore to a time, until promoted: wall s (WAL segments, segments/s) | %s (%s, %.1f/s) | %s (%s, %.1f/s) | | Backstop <= pgBackRest |' % (
        rs['total_wall_s'], segs, segs / rs['total_wall_s'],
        pr['total_wall_s'] if pr else None, pr['wal_segments_restored_by_postgres'] if pr else None,
        (pr['wal_segments_restored_by_postgres'] / pr['total_wall_s']) if pr else 0))
    print('  Backstop restore: %s; %s; marker before the target present %s, after it present %s; peak RSS restore-cluster %.1f MiB, wal-fetch %.1f MiB (sampled, %s processes)' % (
        rs['timings'], rs['target_reached'], rs['marker_before_present'], rs['marker_after_present'],
        rs['restore_cluster_max_rss_kb'] / 1024, rs['wal_fetch_max_rss_kb_sampled'] / 1024, rs['wal_fetch_processes_seen']))
    if pr:
        print('  pgBackRest restore: %.1f s restore + %.1f s to promoted, peak RSS %.1f MiB' % (pr['restore_cmd_s'], pr['start_to_promoted_s'], pr['restore_max_rss_kb_tree'] / 1024))
if bs['random']:
    m = bs['random']
    print('| less compressible data (md5 text): archived/s, latency p50 | %s, %s | | | |' % (m['segments_archived_per_s_during_run'], lat(m)))
EOF
log "results in $WORK"
