#!/usr/bin/env bash
# Make the local base image the Dockerfiles build FROM (no registry is reachable here):
# a minimal Debian bookworm root with python3 made by debootstrap, imported into podman.
# The root filesystem is cached as a tarball outside the checkout, so later runs (and a wiped
# podman store) only re-import it. Prints the image name on stdout.
set -euo pipefail

CACHE_DIR="${CRAWLJOB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/crawljob}/images"
IMAGE="${CRAWLJOB_BASE_IMAGE:-localhost/crawljob-base:bookworm}"
SUITE=bookworm
TARBALL="$CACHE_DIR/base-$SUITE.tar"
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

log() { echo "base-image: $*" >&2; }

if podman image exists "$IMAGE"; then
    log "$IMAGE already present"
    echo "$IMAGE"
    exit 0
fi

if [[ ! -s "$TARBALL" ]]; then
    command -v debootstrap >/dev/null || { log "debootstrap is missing (apt-get install debootstrap)"; exit 1; }
    mkdir -p "$CACHE_DIR"
    root="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
    trap 'rm -rf "$root"' EXIT
    log "debootstrap $SUITE into $root (a few minutes, once)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$root" >&2
    # pip inside the build reaches PyPI through this host's TLS setup: trust the same CAs.
    if [[ -s "$CA_BUNDLE" ]]; then
        cp "$CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
    fi
    # Drop what an image never needs: apt lists and caches, docs, man pages.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
    tar --numeric-owner -C "$root" -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
fi

log "importing $TARBALL as $IMAGE"
podman import \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/usr/bin/python3"]' \
    "$TARBALL" "$IMAGE" >&2
echo "$IMAGE"
