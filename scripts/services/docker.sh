#!/usr/bin/env bash
# A private Docker engine for the integration tests (the kill switch's
# DockerRuntime is tested against it).
#
# Debian's docker.io runs as root with its own API socket, data root, exec root
# and pidfile under the state dir, so it never touches a system engine:
#   dockerd --iptables=false --bridge=none --storage-driver=overlay2 (vfs fallback)
# No registry is reachable, so the test image `cockpit-test/busybox:latest` is
# `docker import`ed from a rootfs built out of Debian's busybox-static.
# With --bridge=none containers get only `none`/`host` by default, so `start`
# creates a user-defined network `cockpit-test-net` (a plain bridge works without
# iptables; an internal bridge, ipvlan and macvlan are tried after it) and
# checks a container can join it, so network quarantine is proven on a real
# attachment.
#
# Exports:
#   COCKPIT_TEST_DOCKER_HOST     unix://<state dir>/docker.sock
#   COCKPIT_TEST_DOCKER_NETWORK  cockpit-test-net (only if a network could be made)
SVC_NAME=docker
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

IMAGE="cockpit-test/busybox:latest"
NETWORK="cockpit-test-net"

# Unix socket paths are capped at 108 bytes and the exec root holds sockets too:
# a deep checkout gets them under /run instead, named after the state dir.
short_dir() {
    if [ "${#SVC_DIR}" -le 60 ]; then
        echo "$SVC_DIR"
    else
        echo "/run/cockpit-docker-$(printf '%s' "$SVC_DIR" | sha1sum | cut -c1-12)"
    fi
}
SOCK_DIR=$(short_dir)
SOCK="$SOCK_DIR/docker.sock"
HOST="unix://$SOCK"
EXEC_ROOT="$SOCK_DIR/exec"
LOG="$SVC_DIR/dockerd.log"

docker_cli() {
    # Debian's client matches Debian's engine; any other client negotiates down.
    local cli
    cli=$(command -v /usr/bin/docker || command -v docker) || svc_die "no docker client"
    "$cli" -H "$HOST" "$@"
}

engine_answers() { docker_cli info >/dev/null 2>&1; }

svc_install() {
    apt_install docker.io busybox-static docker-compose
}

launch() {
    local driver=$1
    mkdir -p "$SVC_DIR/data" "$EXEC_ROOT" "$SOCK_DIR"
    echo "$driver" >"$SVC_DIR/driver"
    svc_log "starting dockerd (storage driver $driver) on $HOST"
    # The engine starts its own containerd under the exec root.
    svc_spawn "$LOG" dockerd \
        -H "$HOST" \
        --data-root "$SVC_DIR/data" \
        --exec-root "$EXEC_ROOT" \
        --pidfile "$SVC_DIR/dockerd.pid" \
        --iptables=false --ip-masq=false --ip-forward=false \
        --bridge=none \
        --storage-driver="$driver"
}

import_image() {
    docker_cli image inspect "$IMAGE" >/dev/null 2>&1 && return 0
    local rootfs applet
    rootfs=$(mktemp -d)
    mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,tmp,proc,sys,dev,etc,root}
    chmod 1777 "$rootfs/tmp"
    cp /bin/busybox "$rootfs/bin/busybox"
    # Relative links resolve inside the image's own root.
    for applet in $("$rootfs/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
    done
    echo "root:x:0:0:root:/root:/bin/sh" >"$rootfs/etc/passwd"
    echo "root:x:0:" >"$rootfs/etc/group"
    tar -C "$rootfs" -c . | docker_cli import --change 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
    rm -rf "$rootfs"
}

smoke_test() { docker_cli run --rm --network none "$IMAGE" /bin/true; }

create_network() {
    docker_cli network inspect "$NETWORK" >/dev/null 2>&1 && return 0
    local args
    for args in "--driver bridge" "--driver bridge --internal" \
        "--driver ipvlan --internal" "--driver macvlan --internal"; do
        # shellcheck disable=SC2086
        docker_cli network create $args "$NETWORK" >>"$LOG" 2>&1 || continue
        if docker_cli run --rm --network "$NETWORK" "$IMAGE" /bin/true >>"$LOG" 2>&1; then
            echo "$args" >"$SVC_DIR/network_driver"
            svc_log "test network $NETWORK: $args"
            return 0
        fi
        docker_cli network rm "$NETWORK" >/dev/null 2>&1 || true
    done
    svc_log "WARNING: no attachable network could be created (see $LOG); quarantine tests will skip"
    return 1
}

env_lines() {
    echo "export COCKPIT_TEST_DOCKER_HOST=$HOST"
    if docker_cli network inspect "$NETWORK" >/dev/null 2>&1; then
        echo "export COCKPIT_TEST_DOCKER_NETWORK=$NETWORK"
    fi
}

svc_start() {
    command -v dockerd >/dev/null || svc_die "dockerd not found; run '$0 install' first"
    if ! svc_running; then
        local driver started=0
        for driver in $(cat "$SVC_DIR/driver" 2>/dev/null) overlay2 vfs; do
            launch "$driver"
            # overlay2 may start yet fail to mount layers (overlay on overlay):
            # only a container that actually ran proves the driver.
            if wait_until 60 "engine" engine_answers && import_image && smoke_test >>"$LOG" 2>&1; then
                started=1
                break
            fi
            svc_log "storage driver $driver failed; see $LOG"
            svc_stop
            rm -rf "$SVC_DIR/data" "$SVC_DIR/driver"
        done
        [ "$started" = 1 ] || svc_fail_start "$LOG" "dockerd did not start with overlay2 or vfs"
    fi
    wait_until 60 "engine" engine_answers || svc_fail_start "$LOG" "dockerd does not answer on $HOST"
    import_image
    create_network || true
    mapfile -t lines < <(env_lines)
    svc_write_env "${lines[@]}"
}

svc_stop() {
    local pid
    pid=$(svc_pid)
    # dockerd stops its containers and its containerd on TERM; allow for that.
    stop_pid "$pid" 45
    rm -f "$SVC_DIR/pid" "$SVC_DIR/dockerd.pid"
}

svc_status() {
    if svc_running && engine_answers; then
        echo "running (pid $(svc_pid), $HOST, driver $(cat "$SVC_DIR/driver" 2>/dev/null || echo '?'))"
        return 0
    fi
    echo "stopped"
    return 3
}

svc_clean() {
    # Containers' overlay mounts are gone once dockerd has stopped; the data
    # root may still hold root-owned files only root can delete.
    rm -rf "$SVC_DIR/data" "$SOCK_DIR/exec"
}

svc_main "$@"
