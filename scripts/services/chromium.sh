#!/usr/bin/env bash
# Headless Chromium for the dashboard's browser tests: Debian's chromium driven by
# Playwright (pip).  No `playwright install`: its browser download cannot be
# fetched here, so tests launch Debian's binary through `executable_path`.
# There is no daemon: start only checks the binary and exports its path.
SVC_NAME=chromium
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CHROMIUM_BIN=${COCKPIT_CHROMIUM_BIN:-/usr/bin/chromium}

svc_install() {
    apt_install chromium
    pip_install_unless_importable playwright.async_api 'playwright>=1.45'
}

svc_start() {
    [ -x "$CHROMIUM_BIN" ] || svc_die "$CHROMIUM_BIN not found; run '$0 install' first"
    "$CHROMIUM_BIN" --version >"$SVC_DIR/version" 2>"$SVC_DIR/version.err" \
        || svc_fail_start "$SVC_DIR/version.err" "$CHROMIUM_BIN --version failed"
    svc_log "$(cat "$SVC_DIR/version")"
    touch "$SVC_DIR/ready"
    svc_write_env "export COCKPIT_TEST_CHROMIUM=$CHROMIUM_BIN"
}

svc_stop() { rm -f "$SVC_DIR/ready"; }

svc_status() {
    if [ -f "$SVC_DIR/ready" ] && [ -x "$CHROMIUM_BIN" ]; then echo "ready ($CHROMIUM_BIN)"; return 0; fi
    echo "stopped"; return 3
}

svc_kill() { svc_stop; }

svc_env() { [ -f "$SVC_DIR/ready" ] && cat "$SVC_DIR/env" || return 3; }

svc_main "$@"
