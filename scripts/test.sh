#!/usr/bin/env bash
# The one test command: installs everything, starts every service the tests
# need, runs the import contracts, mypy and the whole pytest suite, and stops
# the services again whatever happens.
#
#   bash scripts/test.sh                       # the whole suite
#   bash scripts/test.sh tests/unit -x -k foo  # extra args go to pytest
#
# Works on a fresh Debian 12 as root with Python 3.11, pip and apt.  Safe to
# re-run: each run starts the services from clean state and stops them at exit.
#
# Knobs (environment):
#   CI=true                    a test whose service is missing fails (never skips)
#   COCKPIT_TEST_SERVICES      services to start (default: "postgres nats kafka prometheus
#                              docker chromium"; docker only if its script exists)
#   COCKPIT_SERVICES_DIR       state dir (default: <repo>/.services)
#   COCKPIT_SKIP_PIP=1         skip `pip install -e .[test]`
#   COCKPIT_SKIP_LINT=1        skip lint-imports and mypy
#   COCKPIT_KEEP_SERVICES=1    leave the services running at exit (debugging)
#   COCKPIT_PYTEST_TIMEOUT     wall-clock cap on pytest in seconds (default 1800)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

export COCKPIT_SERVICES_DIR=${COCKPIT_SERVICES_DIR:-$REPO_ROOT/.services}
export COCKPIT_PYTHON=${COCKPIT_PYTHON:-$(command -v python3 || command -v python)}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
export DEBIAN_FRONTEND=noninteractive
PY=$COCKPIT_PYTHON
START=$SECONDS

say() { printf '\n=== [test.sh +%ss] %s\n' "$((SECONDS - START))" "$*"; }
die() { printf '\n=== [test.sh] ERROR: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ] && ! { command -v sudo >/dev/null && sudo -n true 2>/dev/null; }; then
    die "installing the test services needs root (apt-get, the postgres user, dockerd): run as root or with password-less sudo"
fi

mkdir -p "$COCKPIT_SERVICES_DIR"

# --------------------------------------------------------------------------- services list
if [ -n "${COCKPIT_TEST_SERVICES:-}" ]; then
    read -r -a SERVICES <<<"$COCKPIT_TEST_SERVICES"
else
    SERVICES=(postgres nats kafka)
    [ -f scripts/services/docker.sh ] && SERVICES+=(docker)
    SERVICES+=(prometheus chromium)
fi
for svc in "${SERVICES[@]}"; do
    [ -f "scripts/services/$svc.sh" ] || die "no scripts/services/$svc.sh"
done

STARTED=()
CHILD_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$CHILD_PID" ] && kill -0 "$CHILD_PID" 2>/dev/null; then
        say "interrupted: stopping pytest (pid $CHILD_PID)"
        kill -TERM "$CHILD_PID" 2>/dev/null || true
        wait "$CHILD_PID" 2>/dev/null || true
    fi
    if [ "${COCKPIT_KEEP_SERVICES:-0}" = 1 ]; then
        say "COCKPIT_KEEP_SERVICES=1: leaving ${STARTED[*]:-nothing} running"
        exit "$rc"
    fi
    if [ "${#STARTED[@]}" -gt 0 ]; then
        say "stopping services: ${STARTED[*]}"
        local i
        for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
            timeout 90 bash "scripts/services/${STARTED[i]}.sh" stop </dev/null \
                || echo "WARNING: stopping ${STARTED[i]} failed" >&2
        done
    fi
    # Every service is down: no stale addresses for a later hand-run pytest.
    : >"$COCKPIT_SERVICES_DIR/env"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --------------------------------------------------------------------------- python deps
if [ "${COCKPIT_SKIP_PIP:-0}" != 1 ]; then
    say "pip install -e .[test]"
    t=$SECONDS
    "$PY" -m pip install -q -e '.[test]' >"$COCKPIT_SERVICES_DIR/pip-install.log" 2>&1 \
        || { tail -n 40 "$COCKPIT_SERVICES_DIR/pip-install.log" >&2; die "pip install -e .[test] failed (log: $COCKPIT_SERVICES_DIR/pip-install.log)"; }
    echo "done in $((SECONDS - t))s"
fi

# --------------------------------------------------------------------------- install + start
say "installing services: ${SERVICES[*]}"
for svc in "${SERVICES[@]}"; do
    t=$SECONDS
    bash "scripts/services/$svc.sh" install </dev/null || die "installing $svc failed"
    echo "  $svc installed/checked in $((SECONDS - t))s"
done

say "starting services: ${SERVICES[*]}"
: >"$COCKPIT_SERVICES_DIR/env"
for svc in "${SERVICES[@]}"; do
    t=$SECONDS
    # Clean state each run; also stops anything an aborted earlier run left behind.
    if [ "$svc" = docker ]; then
        bash scripts/services/docker.sh stop </dev/null >/dev/null 2>&1 || true
    else
        bash "scripts/services/$svc.sh" clean </dev/null >/dev/null 2>&1 || true
    fi
    STARTED+=("$svc")
    bash "scripts/services/$svc.sh" start </dev/null >/dev/null || die "starting $svc failed"
    echo "  $svc started in $((SECONDS - t))s: $(bash "scripts/services/$svc.sh" status 2>/dev/null | head -n1)"
done

set -a
# shellcheck disable=SC1091
source "$COCKPIT_SERVICES_DIR/env"
set +a
echo "services used (env from $COCKPIT_SERVICES_DIR/env):"
sed -e 's/ # svc:.*//' -e 's/^export /  /' -e 's#://\([^:/@]*\):[^@]*@#://\1:***@#' \
    "$COCKPIT_SERVICES_DIR/env"

# --------------------------------------------------------------------------- import contracts
LINT_RC=0
if [ "${COCKPIT_SKIP_LINT:-0}" != 1 ]; then
    say "lint-imports"
    LINT=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/lint-imports
    [ -x "$LINT" ] || LINT=$(command -v lint-imports || true)
    [ -n "$LINT" ] || die "lint-imports not found (import-linter is in the [test] extra)"
    "$LINT" || LINT_RC=$?
    [ "$LINT_RC" -eq 0 ] || echo "lint-imports FAILED (exit $LINT_RC); running the tests anyway" >&2
fi

# --------------------------------------------------------------------------- type check
MYPY_RC=0
if [ "${COCKPIT_SKIP_LINT:-0}" != 1 ]; then
    say "mypy"
    MYPY=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/mypy
    [ -x "$MYPY" ] || MYPY=$(command -v mypy || true)
    [ -n "$MYPY" ] || die "mypy not found (it is in the [test] extra)"
    "$MYPY" || MYPY_RC=$?
    [ "$MYPY_RC" -eq 0 ] || echo "mypy FAILED (exit $MYPY_RC); running the tests anyway" >&2
fi

# --------------------------------------------------------------------------- pytest
say "pytest ${*:-(whole suite)}  [CI=${CI:-}]"
# In the background + `wait`, so a SIGTERM/SIGINT to this script runs the trap
# at once (bash defers traps until a foreground child exits).
set +e
timeout -k 30 "${COCKPIT_PYTEST_TIMEOUT:-1800}" \
    "$PY" -m pytest -p no:cacheprovider -rfE "$@" </dev/null &
CHILD_PID=$!
wait "$CHILD_PID"
PYTEST_RC=$?
CHILD_PID=
set -e

case "$PYTEST_RC" in
    0) ;;
    5) echo "ERROR: pytest collected no tests (exit 5): treating as a failure" >&2; PYTEST_RC=1 ;;
    124) echo "ERROR: pytest exceeded COCKPIT_PYTEST_TIMEOUT=${COCKPIT_PYTEST_TIMEOUT:-1800}s" >&2 ;;
    *) echo "pytest failed (exit $PYTEST_RC)" >&2 ;;
esac

RC=$PYTEST_RC
[ "$RC" -eq 0 ] && RC=$LINT_RC
[ "$RC" -eq 0 ] && RC=$MYPY_RC
say "done: pytest exit $PYTEST_RC, lint-imports exit $LINT_RC, mypy exit $MYPY_RC, services: ${SERVICES[*]}"
exit "$RC"
