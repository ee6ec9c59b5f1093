#!/usr/bin/env bash
# podman as it works on these machines: the runc runtime and explicit ulimits (the defaults fail
# here). Sourced by tools/images.sh; `podman_ready` installs podman/runc/debootstrap when missing
# (as root, from Debian) and fails loudly when containers can't run at all.
set -euo pipefail

PODMAN_FLAGS=(--runtime runc)
ULIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

podman_ready() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if ((${#missing[@]})); then
        if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
            echo "images: ${missing[*]} missing and cannot be installed here (needs root and apt-get)" >&2
            return 1
        fi
        echo "images: installing ${missing[*]} from Debian" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 \
            || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; }
    fi
    if ! podman "${PODMAN_FLAGS[@]}" info >/dev/null 2>&1; then
        echo "images: podman cannot run on this machine:" >&2
        podman "${PODMAN_FLAGS[@]}" info >&2 || true
        return 1
    fi
}

pod() { podman "${PODMAN_FLAGS[@]}" "$@"; }
