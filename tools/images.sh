#!/usr/bin/env bash
# Build both images with podman from the debootstrap base image (tools/base-image.sh):
#   localhost/crawljob-operator:<version>  (operator/Dockerfile: `crawljob receiver|operator`)
#   localhost/crawljob-worker:<version>    (job-image/Dockerfile: `crawljob-worker`)
# Prints a table: build time, and each image's size before (the image its tag named until now, if
# any) and after this build. No registry is reachable here, hence the local base image.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/podman.sh

VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
podman_ready || { echo "images: FAILED: podman is not usable, no image was built" >&2; exit 1; }

start=$SECONDS
BASE_IMAGE="$(tools/base-image.sh)"
timings=("base image ($BASE_IMAGE)|$((SECONDS - start))")

for image in operator worker; do
    dockerfile=$([[ $image == operator ]] && echo operator/Dockerfile || echo job-image/Dockerfile)
    tag="localhost/crawljob-$image:$VERSION"
    previous="$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
    before_size="$(podman image inspect --format '{{.Size}}' "$tag" 2>/dev/null || true)"
    start=$SECONDS
    echo "images: building $tag from $dockerfile" >&2
    pod build --network=host "${ULIMITS[@]}" --layers \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$VERSION" \
        -f "$dockerfile" -t "$tag" . >&2
    # The image this tag named before is now unused: drop it (only ours, never a global prune).
    if [[ -n "$previous" && "$previous" != "$(podman image inspect --format '{{.Id}}' "$tag")" ]]; then
        podman rmi "$previous" >/dev/null 2>&1 || true
    fi
    size="$(podman image inspect --format '{{.Size}}' "$tag")"
    timings+=("$tag|$((SECONDS - start))|${before_size:+$((before_size / 1000000))}|$((size / 1000000))")
done

printf '\n%-45s %8s %10s %8s\n' image "build s" "before MB" "MB" >&2
for row in "${timings[@]}"; do
    IFS='|' read -r name seconds before megabytes <<<"$row"
    printf '%-45s %8s %10s %8s\n' "$name" "$seconds" "${before:--}" "${megabytes:--}" >&2
done
