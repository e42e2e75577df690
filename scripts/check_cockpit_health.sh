#!/usr/bin/env bash
# The runbook's health checker, for Cockpit's one process and its modules.
#
#   COCKPIT_URL=http://cockpit.internal:8000 bash scripts/check_cockpit_health.sh
#
# Prints one line per check ("✅ Name: OK" / "❌ Name: FAIL (status N)"; status 000
# = no answer) and exits 1 when any check fails.  Needs curl, or falls back to
# python3.  COCKPIT_HEALTH_TIMEOUT (seconds, default 5) bounds each request.
set -uo pipefail

BASE=${COCKPIT_URL:-http://localhost:8000}
BASE=${BASE%/}
TIMEOUT=${COCKPIT_HEALTH_TIMEOUT:-5}

checks=(
    "/health|API Gateway"
    "/health/narrative-filter|Narrative Filter"
    "/health/verdict-engine|Verdict Engine"
    "/health/command-bus|Command Bus"
)

http_status() {
    local url=$1 code
    if command -v curl >/dev/null 2>&1; then
        code=$(curl -s -o /dev/null -m "$TIMEOUT" -w '%{http_code}' "$url") || true
        echo "${code:-000}"
    else
        python3 - "$url" "$TIMEOUT" <<'PY'
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
PY
    fi
}

failed=0
for check in "${checks[@]}"; do
    path=${check%%|*}
    name=${check#*|}
    status=$(http_status "$BASE$path")
    if [ "$status" = 200 ]; then
        echo "✅ $name: OK"
    else
        echo "❌ $name: FAIL (status $status)"
        failed=1
    fi
done
exit "$failed"
