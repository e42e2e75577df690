#!/usr/bin/env bash
# Build a local Python 3.11 base image where no container registry is reachable.
#
#   bash scripts/build_base_image.sh [TAG]          # default TAG cockpit-base:3.11
#   docker build --build-arg BASE_IMAGE=cockpit-base:3.11 --network host -t cockpit .
#
# debootstraps a minimal Debian bookworm (python3 + python3-venv, Debian's own
# packages), tars it once into ${COCKPIT_SERVICES_DIR:-<repo>/.services}/base-image/
# (so it is built once per machine) and `docker import`s it.  Needs root and
# Debian's package mirror.  The engine is $DOCKER_HOST, else
# $COCKPIT_TEST_DOCKER_HOST, else the docker client's default.
#
# Knobs: DEBIAN_MIRROR (default: the machine's first deb.debian.org-style source,
# else http://deb.debian.org/debian), BASE_SUITE (default bookworm),
# REBUILD=1 (ignore the cached tarball).
set -euo pipefail

TAG=${1:-cockpit-base:3.11}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVICES_DIR=${COCKPIT_SERVICES_DIR:-$REPO_ROOT/.services}
CACHE_DIR="$SERVICES_DIR/base-image"
SUITE=${BASE_SUITE:-bookworm}
TARBALL="$CACHE_DIR/cockpit-base-$SUITE-python3.tar"
export DEBIAN_FRONTEND=noninteractive

log() { printf '[build_base_image] %s\n' "$*" >&2; }
die() { printf '[build_base_image] ERROR: %s\n' "$*" >&2; exit 1; }

docker_cli() {
    local host=${DOCKER_HOST:-${COCKPIT_TEST_DOCKER_HOST:-}}
    if [ -n "$host" ]; then docker -H "$host" "$@"; else docker "$@"; fi
}

mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
    local uri
    uri=$(grep -rhoE '(URIs:|^deb)\s+https?://[^ ]+/debian/?(\s|$)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
        | grep -oE 'https?://[^ ]+' | head -n1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

build_tarball() {
    [ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
    if ! command -v debootstrap >/dev/null; then
        log "apt-get install debootstrap"
        apt-get install -y -qq debootstrap >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1; apt-get install -y -qq debootstrap >/dev/null; } \
            || die "cannot install debootstrap"
    fi
    local root
    mkdir -p "$CACHE_DIR"
    root=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    log "debootstrap $SUITE (minbase + python3, python3-venv) from $(mirror); log: $CACHE_DIR/debootstrap.log"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$root" "$(mirror)" >"$CACHE_DIR/debootstrap.log" 2>&1 \
        || { tail -n 30 "$CACHE_DIR/debootstrap.log" >&2; die "debootstrap failed"; }
    # Slim it: no package caches, docs, man pages or locales.
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
        "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
    find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'C*' -exec rm -rf {} + 2>/dev/null || true
    chroot "$root" python3 -c 'import venv, ensurepip' || die "python3/venv missing from the rootfs"
    tar --numeric-owner -C "$root" -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
    rm -rf "$root"
    trap - EXIT
    log "rootfs cached at $TARBALL ($(du -h "$TARBALL" | cut -f1))"
}

docker_cli version >/dev/null 2>&1 || die "no Docker engine answers (set DOCKER_HOST)"
if [ "${REBUILD:-0}" != 1 ] && docker_cli image inspect "$TAG" >/dev/null 2>&1; then
    log "$TAG already present"
    exit 0
fi
if [ "${REBUILD:-0}" = 1 ] || [ ! -s "$TARBALL" ]; then
    build_tarball
fi
log "docker import $TARBALL as $TAG"
docker_cli import \
    --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    "$TARBALL" "$TAG" >/dev/null
docker_cli run --rm --network none "$TAG" python3 -c 'import sys, venv; assert sys.version_info >= (3, 11)' \
    || die "$TAG does not run python3 >= 3.11 with venv"
log "$TAG ready"
