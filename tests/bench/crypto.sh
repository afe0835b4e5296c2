#!/usr/bin/env bash
# Benchmark of `backstop encrypt` / `backstop decrypt`, side by side with
# `gpg --encrypt` / `gpg --decrypt`, with the same key and the same generated
# input (tests/src/bin/bench-gpg.rs). Prints MB/s, the ratio to gpg, CPU time
# and the peak RSS of each side (each runs as a child under /usr/bin/time).
#
#   tests/bench/crypto.sh [--sizes 64M,1G,4G] [--runs N] [--dir DIR] [--gpg gpg]
#
# Needs gpg and /usr/bin/time, not the local stack. Builds both release
# binaries (backstop and bench-gpg) first.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
log() { printf '[bench] %s\n' "$*" >&2; }
die() {
    printf '[bench] ERROR: %s\n' "$*" >&2
    exit 1
}

for tool in gpg gpgconf /usr/bin/time; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done

log "building backstop and bench-gpg (release)"
cargo build --release -q -p backstop-cli -p backstop-tests --bin backstop --bin bench-gpg
TARGET="${CARGO_TARGET_DIR:-target}/release"
[ -x "$TARGET/backstop" ] || die "$TARGET/backstop not built"
exec "$TARGET/bench-gpg" --backstop "$TARGET/backstop" "$@"
