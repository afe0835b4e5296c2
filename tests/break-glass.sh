#!/usr/bin/env bash
# Break-glass restore: the newest backup of a namespace into an EMPTY database,
# with nothing but curl, gpg, sha256sum and pg_restore (no Backstop binary).
# The README's break-glass section quotes these steps; the restore test runs
# this very script, so the documented procedure is tested.
#
#   tests/break-glass.sh NAMESPACE TARGET_DATABASE_URL [BACKUP_ID]
#
#   GCS_BUCKET    the backups bucket (required)
#   GCS_ENDPOINT  default https://storage.googleapis.com (the local stack: $STORAGE_EMULATOR_HOST)
#   GCS_TOKEN     OAuth token for real GCS: GCS_TOKEN=$(gcloud auth print-access-token)
#   GNUPGHOME     a keyring holding the backup SECRET key (e.g. the offline break-glass
#                 key) and the manifest signing PUBLIC key:
#                   gpg --import backup.sec.asc signing.pub.asc
#   WORKDIR       where the downloaded objects go (default: a new temporary directory;
#                 the data object needs as much disk as the backup)
#
# The target database must exist and be empty: createdb -h HOST -U USER NAME
set -euo pipefail

NAMESPACE="${1:?usage: break-glass.sh NAMESPACE TARGET_DATABASE_URL [BACKUP_ID]}"
TARGET="${2:?usage: break-glass.sh NAMESPACE TARGET_DATABASE_URL [BACKUP_ID]}"
BACKUP_ID="${3:-}"
: "${GCS_BUCKET:?set GCS_BUCKET to the backups bucket}"
GCS_ENDPOINT="${GCS_ENDPOINT:-https://storage.googleapis.com}"
GCS_ENDPOINT="${GCS_ENDPOINT%/}"
WORKDIR="${WORKDIR:-$(mktemp -d)}"
AUTH=()
[ -n "${GCS_TOKEN:-}" ] && AUTH=(-H "Authorization: Bearer $GCS_TOKEN")
API="$GCS_ENDPOINT/storage/v1/b/$GCS_BUCKET/o"
cd "$WORKDIR"

# 1. Find the newest backup: object names sort by time, a manifest marks a
#    complete backup. (Or pass a BACKUP_ID such as production/app/20261127T030000Z-1a2b3c.)
if [ -z "$BACKUP_ID" ]; then
    page=""
    : > names.txt
    while :; do
        curl -fsS "${AUTH[@]}" -o list.json "$API?prefix=$NAMESPACE/&fields=items(name),nextPageToken${page:+&pageToken=$page}"
        grep -o '"name": *"[^"]*"' list.json | sed 's/"name": *"\(.*\)"/\1/' >> names.txt
        page="$(grep -o '"nextPageToken": *"[^"]*"' list.json | sed 's/.*: *"\(.*\)"/\1/' || true)"
        [ -n "$page" ] || break
    done
    BACKUP_ID="$(grep '/manifest\.json$' names.txt | sort | tail -n 1 | sed 's|/manifest\.json$||')"
    [ -n "$BACKUP_ID" ] || { echo "no complete backup under $NAMESPACE/" >&2; exit 1; }
fi
echo "backup: $BACKUP_ID" >&2

# 2. Download the manifest, its signature and the encrypted data.
#    The object name goes into the URL path percent-encoded: '%' first (an
#    encoded database segment such as %C3%9Cn%C3%AF%20app holds them), then '/'.
for f in manifest.json manifest.json.sig data.pgdump.pgp; do
    obj="$BACKUP_ID/$f"
    obj="${obj//'%'/%25}"
    curl -fsS "${AUTH[@]}" -o "$f" "$API/${obj//\//%2F}?alt=media"
done

# 3. The manifest must carry a good signature by the signing key, and describe this backup.
gpg --batch --verify manifest.json.sig manifest.json
grep -q "\"backup_id\": \"$BACKUP_ID\"" manifest.json

# 4. The data must be exactly what the signed manifest describes. Check this
#    BEFORE decrypting: gpg writes plaintext before it can check integrity, and
#    pg_restore commits when its input ends.
sha="$(sed -n 's/.*"sha256": *"\([0-9a-f]\{64\}\)".*/\1/p' manifest.json | head -n 1)"
echo "$sha  data.pgdump.pgp" | sha256sum -c -

# 5. Decrypt straight into pg_restore, all in one transaction.
gpg --batch --decrypt data.pgdump.pgp |
    pg_restore --single-transaction --no-owner --no-acl --exit-on-error --dbname="$TARGET"
echo "restored $BACKUP_ID" >&2
