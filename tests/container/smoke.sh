#!/usr/bin/env bash
# Smoke test of the dump job's image (Dockerfile): builds it with podman and
# runs its default command, `backstop dump`, against the local stack, then
# checks that the backup landed in GCS and verifies, and that the job ran as
# a non-root user on a read-only root filesystem.
#
#   tests/stack/stack.sh run -- tests/container/smoke.sh   (tests/run-all does this)
#   tests/container/smoke.sh                               (starts the stack itself)
#
# No container registry is reachable here, so the base image is made from
# Debian packages (mmdebstrap, the mirror apt already uses) and imported as
# localhost/base:bookworm; the build points BASE_IMAGE at it. The rootfs
# tarball is cached in $BACKSTOP_CONTAINER_CACHE (default
# ~/.cache/backstop-container) and the imported image stays in podman's
# storage, so only the first run pays for mmdebstrap (~20-35 s).
# The binary is the debug build, ${CARGO_TARGET_DIR:-target}/debug/backstop
# (BACKSTOP_BIN overrides), stripped into the build context. The base is
# Debian 12 because the binary is built on Debian 12 (README "Set-up"): it
# needs a glibc at least as new as the one it was linked against.
# Podman runs as root with runc and explicit ulimits from a CONTAINERS_CONF
# file in a temporary directory (crun fails on this machine's hybrid cgroup
# setup; /etc is left alone). Skipped, with the reason printed, only when
# podman, runc or mmdebstrap cannot be installed; every other failure fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT="$(pwd)"

if [ -z "${BACKSTOP_STACK:-}" ]; then
    exec tests/stack/stack.sh run -- "$0" "$@"
fi

log() { printf '[container-smoke] %s\n' "$*" >&2; }
fail() {
    printf '[container-smoke] FAILED: %s\n' "$*" >&2
    exit 1
}
skip() {
    printf '[container-smoke] SKIPPED: %s\n' "$*"
    exit 0
}

BIN="${BACKSTOP_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/backstop}"
BASE_IMAGE="localhost/base:bookworm"
IMAGE="localhost/backstop:smoke-$$"
CACHE="${BACKSTOP_CONTAINER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/backstop-container}"
# The package list is part of the cache key: another list makes another tarball.
BASE_PACKAGES="postgresql-client-15,ca-certificates"
ROOTFS="$CACHE/rootfs-bookworm-$(printf '%s' "$BASE_PACKAGES" | sha256sum | cut -c1-12).tar"
# The image's user (Dockerfile: USER 10001:10001).
IMAGE_UID=10001

[ -x "$BIN" ] || fail "$BIN not found: build it first (cargo build -p backstop-cli)"

# --- podman, runc, mmdebstrap ------------------------------------------------
missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || skip "needs root to install ${missing[*]} with apt-get (and to run podman with runc as this test does)"
    command -v apt-get >/dev/null 2>&1 || skip "${missing[*]} missing and no apt-get to install them"
    log "installing Debian packages: ${missing[*]}"
    if ! { apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null; }; then
        skip "apt-get could not install ${missing[*]}"
    fi
fi
[ "$(id -u)" -eq 0 ] || skip "podman with runc and host networking is set up here for root only"

WORK="$(mktemp -d /tmp/backstop-container-smoke.XXXXXX)"
cleanup() {
    podman rmi --force "$IMAGE" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

export CONTAINERS_CONF="$WORK/containers.conf"
cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF

# --- the base image -----------------------------------------------------------
debian_mirror() {
    # The first archive (not security) URI apt uses, deb822 or one-line format.
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '/^URIs:/ {u = $2} /^Suites:/ && / bookworm( |$)/ && u != "" {print u; exit}' "$f"
    done | head -n 1 | grep . && return 0
    awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        head -n 1 | grep . && return 0
    echo "http://deb.debian.org/debian"
}

if podman image exists "$BASE_IMAGE"; then
    log "base image $BASE_IMAGE present"
else
    if [ ! -s "$ROOTFS" ]; then
        mirror="$(debian_mirror)"
        log "making the base rootfs with mmdebstrap ($BASE_PACKAGES from $mirror)"
        mkdir -p "$CACHE"
        # Written under another name first, so that an interrupted run leaves
        # no truncated tarball to reuse.
        part="${ROOTFS%.tar}.part.tar"
        rm -rf "$part"
        mmdebstrap --quiet --format=tar --variant=apt --include="$BASE_PACKAGES" bookworm "$part" "$mirror" ||
            fail "mmdebstrap could not make the base rootfs from $mirror"
        mv "$part" "$ROOTFS"
    fi
    log "importing $ROOTFS as $BASE_IMAGE"
    podman import --quiet "$ROOTFS" "$BASE_IMAGE" >/dev/null || fail "podman import of $ROOTFS failed"
fi

# --- build --------------------------------------------------------------------
mkdir -p "$WORK/context"
strip -o "$WORK/context/backstop" "$BIN"
log "building $IMAGE from Dockerfile (binary: $BIN, stripped)"
podman build --quiet --network host \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg BACKSTOP_BIN=backstop \
    -f "$ROOT/Dockerfile" -t "$IMAGE" "$WORK/context" >/dev/null ||
    fail "podman build failed"
size="$(podman image inspect --format '{{.Size}}' "$IMAGE")"
log "image size: $((size / 1000000)) MB"

user="$(podman image inspect --format '{{.Config.User}}' "$IMAGE")"
entrypoint="$(podman image inspect --format '{{json .Config.Entrypoint}} {{json .Config.Cmd}}' "$IMAGE")"
[ "$user" = "$IMAGE_UID:$IMAGE_UID" ] || fail "image user is '$user', expected $IMAGE_UID:$IMAGE_UID"
[ "$entrypoint" = '["/usr/local/bin/backstop"] ["dump"]' ] || fail "entrypoint and command are $entrypoint"

# --- a seeded database, keys, the job's settings ---------------------------------
DB="container_smoke"
NAMESPACE="container-smoke-$$"
createdb "$DB"
psql -q -v ON_ERROR_STOP=1 -d "$DB" -f tests/fixtures/seed.sql >/dev/null

"$BIN" keygen --out "$WORK/keys" >/dev/null
# What the job gets, as a Kubernetes Secret would hand it over: read-only
# files that only the job's user can read.
mkdir "$WORK/job-keys"
cp "$WORK/keys/backup.pub.asc" "$WORK/keys/signing.sec.asc" "$WORK/job-keys/"
chown -R "$IMAGE_UID:$IMAGE_UID" "$WORK/job-keys"
chmod 0500 "$WORK/job-keys"
chmod 0400 "$WORK/job-keys/"*

# The settings go in an env file (0600), not on the command line.
(
    umask 077
    cat >"$WORK/job.env" <<EOF
BACKSTOP_DATABASE_URL=postgres://$PGUSER@$PGHOST:$PGPORT/$DB
BACKSTOP_NAMESPACE=$NAMESPACE
BACKSTOP_GCS_BUCKET=$BACKSTOP_GCS_BUCKET
STORAGE_EMULATOR_HOST=$STORAGE_EMULATOR_HOST
BACKSTOP_RECIPIENTS=file:/etc/backstop/keys/backup.pub.asc
BACKSTOP_SIGNING_KEY=file:/etc/backstop/keys/signing.sec.asc
EOF
)

run_job() { # podman run as the job runs in infra/k8s: read-only root, /tmp writable, no capabilities
    podman run --rm --network host --env-file "$WORK/job.env" \
        --read-only --tmpfs /tmp:rw,size=64m --cap-drop all --security-opt no-new-privileges \
        -v "$WORK/job-keys:/etc/backstop/keys:ro" "$@"
}

uid="$(run_job --entrypoint /usr/bin/id "$IMAGE" -u)"
[ "$uid" = "$IMAGE_UID" ] || fail "the container ran as uid $uid, expected $IMAGE_UID"
log "the container runs as uid $uid"

# --- the job ---------------------------------------------------------------------
log "running the image's default command (backstop dump) against the stack"
run_job "$IMAGE" >"$WORK/dump.json" 2>"$WORK/dump.log" || {
    tail -n 20 "$WORK/dump.log" >&2
    fail "backstop dump in the container failed"
}
backup_id="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["backup_id"])' "$WORK/dump.json")" ||
    fail "dump printed no backup_id: $(cat "$WORK/dump.json")"
log "backup $backup_id"

# --- it landed, and it verifies ------------------------------------------------
listing="$(curl -sf "$STORAGE_EMULATOR_HOST/storage/v1/b/$BACKSTOP_GCS_BUCKET/o?prefix=$NAMESPACE/")" ||
    fail "could not list gs://$BACKSTOP_GCS_BUCKET/$NAMESPACE/"
names="$(printf '%s' "$listing" | python3 -c 'import json, sys; print("\n".join(sorted(o["name"] for o in json.load(sys.stdin).get("items", []))))')"
expected="$(printf '%s/%s\n' "$backup_id" data.pgdump.pgp "$backup_id" manifest.json "$backup_id" manifest.json.sig)"
[ "$names" = "$expected" ] || fail "objects under $NAMESPACE/ are:
$names
expected:
$expected"

mkdir "$WORK/backup"
for f in data.pgdump.pgp manifest.json manifest.json.sig; do
    object="$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$backup_id/$f")"
    curl -sf -o "$WORK/backup/$f" "$STORAGE_EMULATOR_HOST/storage/v1/b/$BACKSTOP_GCS_BUCKET/o/$object?alt=media" ||
        fail "could not download $backup_id/$f"
done
"$BIN" verify --manifest "$WORK/backup/manifest.json" --signature "$WORK/backup/manifest.json.sig" \
    --data "$WORK/backup/data.pgdump.pgp" --signing-key "$WORK/keys/signing.pub.asc" \
    --recipient "$WORK/keys/backup.pub.asc" >"$WORK/verify.json" ||
    fail "backstop verify rejected the container's backup: $(cat "$WORK/verify.json")"
database="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["database"])' "$WORK/backup/manifest.json")"
[ "$database" = "$DB" ] || fail "the manifest's database is '$database', expected $DB"

dropdb "$DB"
log "ok: the image's backstop dump wrote $backup_id (verified), as uid $uid; image $((size / 1000000)) MB"
