#!/usr/bin/env bash
# Prometheus + promtool (Debian's `prometheus` package) for the deploy tests.
#
# Installed without recommends (no node-exporter daemon).  Debian's postinst
# would start the packaged daemon on :9090 through invoke-rc.d; a temporary
# policy-rc.d forbids that during the install, and any packaged daemon that
# runs anyway (config /etc/prometheus/prometheus.yml) is stopped afterwards.
#
# `start` runs a private Prometheus on a spare loopback port, storage in the
# state dir, with the repo's alert rules (deploy/prometheus/alerts.yml) loaded
# and a file_sd directory to scrape: a test writes
#   [{"targets": ["127.0.0.1:<port>"], "labels": {...}}]
# to $COCKPIT_TEST_PROMETHEUS_TARGETS_DIR/<name>.json and Prometheus scrapes it
# (job "cockpit", every 2 s) within ~2 s; the file's removal stops the scrape.
# PROMETHEUS_TARGET=host:port (or `start host:port`) adds a static target too.
#
# Exports:
#   COCKPIT_TEST_PROMETHEUS_URL          http://127.0.0.1:<port>
#   COCKPIT_TEST_PROMETHEUS_TARGETS_DIR  the file_sd directory for job "cockpit"
#   COCKPIT_TEST_PROMTOOL                /usr/bin/promtool
SVC_NAME=prometheus
SVC_PROC_MATCH=prometheus
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PROM_BIN=${COCKPIT_PROMETHEUS_BIN:-/usr/bin/prometheus}
PROMTOOL=${COCKPIT_PROMTOOL_BIN:-/usr/bin/promtool}
RULES="$COCKPIT_REPO_ROOT/deploy/prometheus/alerts.yml"

# The packaged daemon (not ours): Debian's unit/init script runs /usr/bin/prometheus
# with its default config (/etc/prometheus/prometheus.yml, no --config.file flag).
# Called only right after this script installed the package, so it never stops a
# daemon that was deliberately running before; private instances (ours, or any
# other started with --config.file elsewhere) are left alone.
stop_packaged_daemon() {
    local f pid cmd
    for f in /proc/[0-9]*/cmdline; do
        cmd=$(tr '\0' ' ' <"$f" 2>/dev/null) || continue
        case "$cmd" in /usr/bin/prometheus\ *|/usr/bin/prometheus) ;; *) continue ;; esac
        case "$cmd" in *--config.file=*) case "$cmd" in *--config.file=/etc/prometheus/*) ;; *) continue ;; esac ;; esac
        pid=${f#/proc/}; pid=${pid%/cmdline}
        svc_log "stopping the packaged daemon the install started (pid $pid)"
        stop_pid "$pid" 10 TERM
    done
}

svc_install() {
    if ! deb_installed prometheus; then
        mkdir -p "$COCKPIT_SERVICES_DIR"
        (
            flock 9
            apt_update_once
            # No daemon start from maintainer scripts while we install.
            local made_policy=0
            if [ ! -e /usr/sbin/policy-rc.d ]; then
                printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
                as_root chmod 755 /usr/sbin/policy-rc.d
                made_policy=1
            fi
            svc_log "apt-get install --no-install-recommends prometheus"
            local rc=0
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
                prometheus >"$COCKPIT_SERVICES_DIR/apt-install-$SVC_NAME.log" 2>&1 || rc=$?
            [ "$made_policy" = 1 ] && as_root rm -f /usr/sbin/policy-rc.d
            if [ "$rc" -ne 0 ]; then
                tail -n 40 "$COCKPIT_SERVICES_DIR/apt-install-$SVC_NAME.log" >&2
                svc_die "apt-get install prometheus failed"
            fi
        ) 9>"$COCKPIT_SERVICES_DIR/.apt.lock"
        stop_packaged_daemon
    fi
    [ -x "$PROM_BIN" ] && [ -x "$PROMTOOL" ] || svc_die "$PROM_BIN or $PROMTOOL missing after install"
}

ready() {
    "$COCKPIT_PYTHON" - "$1" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/-/ready", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}

env_lines() {
    printf '%s\n' "export COCKPIT_TEST_PROMETHEUS_URL=http://127.0.0.1:$1" \
        "export COCKPIT_TEST_PROMETHEUS_TARGETS_DIR=$SVC_DIR/targets" \
        "export COCKPIT_TEST_PROMTOOL=$PROMTOOL"
}

write_config() {
    local target=${1:-} conf="$SVC_DIR/prometheus.yml"
    mkdir -p "$SVC_DIR/targets"
    {
        echo "global: {scrape_interval: 2s, evaluation_interval: 2s}"
        if [ -f "$RULES" ] && "$PROMTOOL" check rules "$RULES" >/dev/null 2>&1; then
            echo "rule_files: ['$RULES']"
        else
            svc_log "WARNING: $RULES missing or invalid; starting without alert rules"
        fi
        echo "scrape_configs:"
        echo "  - job_name: cockpit"
        echo "    file_sd_configs: [{files: ['$SVC_DIR/targets/*.json'], refresh_interval: 2s}]"
        if [ -n "$target" ]; then
            echo "    static_configs: [{targets: ['$target']}]"
        fi
        echo "  - job_name: prometheus"
        echo "    static_configs: [{targets: ['127.0.0.1:$(cat "$SVC_DIR/port")']}]"
    } >"$conf"
    "$PROMTOOL" check config "$conf" >"$SVC_DIR/check-config.log" 2>&1 \
        || svc_fail_start "$SVC_DIR/check-config.log" "generated config is invalid"
}

svc_start() {
    [ -x "$PROM_BIN" ] || svc_die "$PROM_BIN not found; run '$0 install' first"
    local port log
    if svc_running; then
        port=$(cat "$SVC_DIR/port")
        svc_log "already running on port $port"
        mapfile -t lines < <(env_lines "$port")
        svc_write_env "${lines[@]}"
        return 0
    fi
    port=$(svc_port)
    log="$SVC_DIR/prometheus.log"
    write_config "${1:-${PROMETHEUS_TARGET:-}}"
    mkdir -p "$SVC_DIR/data"
    svc_log "starting $PROM_BIN on 127.0.0.1:$port"
    svc_spawn "$log" "$PROM_BIN" --config.file="$SVC_DIR/prometheus.yml" \
        --storage.tsdb.path="$SVC_DIR/data" --web.listen-address="127.0.0.1:$port" \
        --web.enable-lifecycle --storage.tsdb.retention.time=1d
    if ! wait_until 60 "ready" ready "$port"; then
        svc_running || svc_fail_start "$log" "prometheus exited during start"
        svc_fail_start "$log" "prometheus not ready on port $port after 60 s"
    fi
    mapfile -t lines < <(env_lines "$port")
    svc_write_env "${lines[@]}"
}

svc_stop() {
    local pid
    pid=$(svc_pid)
    if pid_is_ours "$pid"; then
        stop_pid "$pid" 15 TERM
        svc_log "stopped"
    fi
    rm -f "$SVC_DIR/pid"
}

svc_main "$@"
