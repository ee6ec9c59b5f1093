#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager from Debian's `kubernetes` source package,
# offline (vendored modules, GOPROXY=off), with Debian's golang-go, and cache them outside the
# checkout keyed by the source package version. Prints the directory holding the binaries.
#
# deb-src access comes from a private apt configuration derived from this machine's own apt
# sources (same URIs, Types: deb-src), so no mirror host is written anywhere in the repository.
#
# Environment:
#   CRAWLJOB_CACHE_DIR   cache root (default: ${XDG_CACHE_HOME:-~/.cache}/crawljob)
#   CRAWLJOB_KUBE_REFRESH=1  re-read the apt source index (otherwise a stored index is reused)
set -euo pipefail

cache_root="${CRAWLJOB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/crawljob}"
apt_dir="$cache_root/apt"
reflect2_src=/usr/share/gocode/src/github.com/modern-go/reflect2

log() { printf 'cluster-build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_tools() {
  local missing=()
  command -v go >/dev/null || missing+=(golang-go)
  command -v dpkg-source >/dev/null || missing+=(dpkg-dev)
  command -v apt-get >/dev/null || missing+=(apt)
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v openssl >/dev/null || missing+=(openssl)
  [[ -f "$reflect2_src/reflect2.go" ]] || missing+=(golang-github-modern-go-reflect2-dev)
  ((${#missing[@]})) || return 0
  local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}")
  local update=(apt-get update -q)
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      install=(sudo -n "${install[@]}")
      update=(sudo -n "${update[@]}")
    else
      die "the real control plane needs Debian packages ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}"
    fi
  fi
  log "installing missing Debian packages: ${missing[*]}"
  # A fresh machine has no package lists yet: update once, then install.
  "${install[@]}" >&2 2>/dev/null || { "${update[@]}" >&2 && "${install[@]}" >&2; } ||
    die "apt-get install ${missing[*]} failed"
  command -v go >/dev/null && command -v etcd >/dev/null && [[ -f "$reflect2_src/reflect2.go" ]] ||
    die "installed ${missing[*]}, but go, etcd or reflect2's sources are still missing"
}

# Rewrite the machine's enabled apt sources as deb-src entries in a private directory.
write_private_apt_config() {
  mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  rm -f "$apt_dir"/sources.list.d/*
  local found=0 f base
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    base="$(basename "$f")"
    sed -E 's/^Types:.*$/Types: deb-src/' "$f" >"$apt_dir/sources.list.d/$base"
    found=1
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    base="$(basename "$f")"
    sed -nE 's/^[[:space:]]*deb[[:space:]]+/deb-src /p' "$f" >"$apt_dir/sources.list.d/$base"
    [[ -s "$apt_dir/sources.list.d/$base" ]] && found=1
  done
  ((found)) || die "no apt sources found under /etc/apt to derive deb-src entries from"
  cat >"$apt_dir/apt.conf" <<CONF
Dir::Etc::SourceList "/dev/null";
Dir::Etc::SourceParts "$apt_dir/sources.list.d";
Dir::State::Lists "$apt_dir/lists";
Dir::State::status "/var/lib/dpkg/status";
Dir::Cache "$apt_dir/cache";
Debug::NoLocking "true";
APT::Sandbox::User "root";
CONF
}

private_apt() { APT_CONFIG="$apt_dir/apt.conf" "$@"; }

source_version() {
  private_apt apt-cache showsrc kubernetes 2>/dev/null |
    awk '/^Package: kubernetes$/ {p=1} p && /^Version:/ {print $2; exit}'
}

in_gopath() {
  local work="$1"
  shift
  (cd "$work/gopath/src/k8s.io/kubernetes" &&
    GOPATH="$work/gopath" GO111MODULE=off GOFLAGS= GOPROXY=off CGO_ENABLED=0 nice -n 10 "$@")
}

# pkg/generated/openapi is not in the source tree: `make` generates it (Makefile.generated_files,
# gen_openapi for KUBE) before building. Do the same: every directory with a +k8s:openapi-gen tag,
# staging directories named as their vendor/ equivalents, minus code-generator and sample-apiserver.
generate_openapi() {
  local work="$1" src="$1/src" dirs
  log "generating pkg/generated/openapi (openapi-gen, as make does)"
  in_gopath "$work" go build -o "$work/bin/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen >&2 ||
    die "building openapi-gen failed"
  dirs="$(cd "$src" &&
    find -H . \( -path './_*' -o -path './.*' -o -path ./vendor -o -path ./debian \) -prune \
      -o -type f -name '*.go' -print |
    { xargs grep -l '^// *+k8s:' || true; } |
    { xargs grep -l '+k8s:openapi-gen=' || true; } |
    sed -e 's|^\./staging/src|vendor|' -e 's|^\./||' |
    xargs -n1 dirname | LC_ALL=C sort -u |
    grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' |
    sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)"
  [[ -n "$dirs" ]] || die "no +k8s:openapi-gen packages found"
  in_gopath "$work" "$work/bin/openapi-gen" --logtostderr \
    -i "$dirs" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$work/openapi-violations.report" >&2 ||
    die "openapi-gen failed"
  [[ -f "$src/pkg/generated/openapi/zz_generated.openapi.go" ]] || die "openapi-gen wrote no output"
}

main() {
  need_tools
  local version
  if [[ "${CRAWLJOB_KUBE_REFRESH:-0}" != 1 && -f "$apt_dir/apt.conf" ]]; then
    version="$(source_version || true)"
  fi
  if [[ -z "${version:-}" ]]; then
    write_private_apt_config
    log "reading deb-src indexes (private apt configuration in $apt_dir)"
    private_apt apt-get update -qq >&2 || die "apt-get update for deb-src failed (no network to the Debian mirror?)"
    version="$(source_version)"
    [[ -n "$version" ]] || die "no 'kubernetes' source package in this machine's apt sources"
  fi

  local out="$cache_root/kubernetes-$version"
  if [[ -x "$out/bin/kube-apiserver" && -x "$out/bin/kube-controller-manager" ]]; then
    log "cached: $out/bin (kubernetes $version)"
    printf '%s\n' "$out/bin"
    return 0
  fi

  local work="$out/src-work"
  rm -rf "$work"
  mkdir -p "$work"
  log "downloading kubernetes $version sources"
  (cd "$work" && private_apt apt-get source --download-only -qq "kubernetes=$version" >&2) ||
    die "apt-get source kubernetes=$version failed"
  log "unpacking"
  (cd "$work" && dpkg-source --no-check -x kubernetes_*.dsc src >/dev/null) || die "dpkg-source -x failed"
  local src="$work/src"
  [[ -d "$src/vendor" ]] || die "the source package has no vendor/ directory; an offline build is impossible"

  # reflect2 v1.0.1 (vendored) crashes the apiserver on the first custom-resource create under
  # Go >= 1.18; Debian's packaged reflect2 (1.0.2) has the fix.
  log "replacing vendored github.com/modern-go/reflect2 with Debian's $(dpkg-query -W -f '${Version}' golang-github-modern-go-reflect2-dev)"
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  mkdir -p "$src/vendor/github.com/modern-go/reflect2"
  find "$reflect2_src" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' \
    -exec cp {} "$src/vendor/github.com/modern-go/reflect2/" \;

  local upstream="${version#*really}"
  upstream="${upstream%%-*}"
  upstream="${upstream%%+*}"
  local major="${upstream%%.*}" minor="${upstream#*.}"
  minor="${minor%%.*}"
  local ldflags="-s -w"
  local pkg
  # 1.20 builds in GOPATH mode (hack/lib/init.sh sets GO111MODULE=off), so vendored packages
  # carry the k8s.io/kubernetes/vendor/ prefix, as in hack/lib/version.sh.
  for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=v$upstream -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done

  mkdir -p "$work/bin" "$work/gopath/src/k8s.io"
  ln -s ../../../src "$work/gopath/src/k8s.io/kubernetes"
  local started=$SECONDS
  generate_openapi "$work"

  log "building kube-apiserver and kube-controller-manager $upstream with $(go version) (takes ~10 min cold on 2 cores)"
  # -trimpath keeps the build directory out of Go's cache keys: the next Debian version (another
  # directory) reuses every unchanged package from the Go cache (~2 min instead of ~11).
  in_gopath "$work" go build -trimpath -ldflags "$ldflags" -o "$work/bin/" ./cmd/kube-apiserver ./cmd/kube-controller-manager >&2 ||
    die "go build failed"
  log "built in $((SECONDS - started)) s"
  mkdir -p "$out/bin"
  mv "$work/bin/kube-apiserver" "$work/bin/kube-controller-manager" "$out/bin/"
  printf '%s\n' "$version" >"$out/VERSION"
  rm -rf "$work"
  printf '%s\n' "$out/bin"
}

main "$@"
