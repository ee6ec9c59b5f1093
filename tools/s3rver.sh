#!/usr/bin/env bash
# s3rver (npm), a loopback S3 server that keeps objects as files and serves a ranged GET from a file
# stream, for benchmarks whose cost model needs S3's O(range) GETs (moto reads the whole object for
# every request: ~1 s per GET of a 1.6 GB object). Installs Node.js/npm from Debian (as root) and
# s3rver into ~/.cache/crawljob/s3rver when missing, then prints the path of its executable.
set -euo pipefail

VERSION=3.7.1
PREFIX="${CRAWLJOB_CACHE:-$HOME/.cache/crawljob}/s3rver-$VERSION"
BIN="$PREFIX/node_modules/.bin/s3rver"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        echo "s3rver: node and npm are missing and cannot be installed here (needs root and apt-get):" \
            "apt-get install nodejs npm" >&2
        exit 1
    fi
    echo "s3rver: installing nodejs and npm from Debian" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >&2; }
fi
if [[ ! -x "$BIN" ]]; then
    echo "s3rver: installing s3rver@$VERSION into $PREFIX" >&2
    mkdir -p "$PREFIX"
    npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "s3rver@$VERSION" >&2
fi
echo "$BIN"
