#!/usr/bin/env bash
# Build a minimal Debian bookworm base image without any image registry:
# debootstrap (minbase) from the host's apt mirror, then `docker import`.
# Usage: make-offline-base.sh [IMAGE_NAME]   (default coderx-base:bookworm)
# Idempotent: exits at once when the image already exists. Needs root.
set -euo pipefail

IMAGE="${1:-coderx-base:bookworm}"
SUITE=bookworm
FALLBACK_MIRROR=http://deb.debian.org/debian

log() { printf 'make-offline-base: %s\n' "$*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE already exists"
    exit 0
fi

# First mirror of a stanza/line serving the plain suite (not -security/-updates).
host_mirror() {
    local f=/etc/apt/sources.list.d/debian.sources
    if [[ -r $f ]]; then
        awk -v suite="$SUITE" '
            function flush() { if (uri != "" && ok && !found) { print uri; found = 1 } uri = ""; ok = 0 }
            /^[[:space:]]*$/ { flush(); next }
            tolower($1) == "uris:" { uri = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
            END { flush() }' "$f"
    fi
    if [[ -r /etc/apt/sources.list ]]; then
        awk -v suite="$SUITE" '
            $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                          if ($(i + 1) == suite) { print $i; exit } }' /etc/apt/sources.list
    fi
}

MIRROR="$(host_mirror | head -n1 || true)"
MIRROR="${MIRROR%/}"
MIRROR="${MIRROR:-$FALLBACK_MIRROR}"

if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

DIR="$(mktemp -d /tmp/coderx-base.XXXXXX)"
trap 'rm -rf --one-file-system "$DIR"' EXIT

log "debootstrap --variant=minbase $SUITE from $MIRROR"
debootstrap --variant=minbase "$SUITE" "$DIR" "$MIRROR" >"$DIR.log" 2>&1 || {
    tail -n 20 "$DIR.log" >&2
    log "debootstrap failed (full log: $DIR.log)"
    exit 1
}
rm -f "$DIR.log"
rm -rf "$DIR"/var/cache/apt/archives/*.deb "$DIR"/var/lib/apt/lists/* "$DIR"/tmp/* 2>/dev/null || true

log "importing as $IMAGE"
tar -C "$DIR" --numeric-owner -c . | docker import \
    -c 'CMD ["/bin/bash"]' \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -m "debootstrap --variant=minbase $SUITE $MIRROR" \
    - "$IMAGE" >/dev/null
log "done: $IMAGE"
