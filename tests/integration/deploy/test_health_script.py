"""scripts/check_cockpit_health.sh against a running Cockpit: OK lines when every
module is healthy, the right FAIL lines (and a non-zero exit) when NATS, which
carries every module's channels without Kafka, goes away, and FAIL (status 000)
when nothing answers."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

from tests.integration.deploy.conftest import REPO_ROOT, CockpitServer, free_port, http_status

SCRIPT = REPO_ROOT / "scripts" / "check_cockpit_health.sh"
ALL_OK = [
    "✅ API Gateway: OK",
    "✅ Narrative Filter: OK",
    "✅ Verdict Engine: OK",
    "✅ Command Bus: OK",
]


def _check(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT)], check=False, env={**os.environ, "COCKPIT_URL": url},
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_all_modules_ok_then_every_module_fails_without_nats(
    cockpit_server: Callable[..., CockpitServer], nats_url: str, service_ctl: Callable[[str, str], str]
) -> None:
    server = cockpit_server(COCKPIT_NATS_URL=nats_url)
    result = _check(server.url)
    assert result.returncode == 0, result.stdout + server.log_tail()
    assert result.stdout.splitlines() == ALL_OK

    service_ctl("nats", "stop")
    deadline = time.monotonic() + 30
    while http_status(f"{server.url}/health/command-bus") != 503 and time.monotonic() < deadline:
        time.sleep(0.3)
    result = _check(server.url + "/")  # a trailing slash in COCKPIT_URL is fine
    assert result.returncode == 1, result.stdout
    # Before, the filter and the verdict engine said OK here: they were checked
    # against Kafka only, absent in this deployment, while their telemetry and
    # analysis were on the NATS that had gone.
    assert result.stdout.splitlines() == [
        "❌ API Gateway: FAIL (status 503)",
        "❌ Narrative Filter: FAIL (status 503)",
        "❌ Verdict Engine: FAIL (status 503)",
        "❌ Command Bus: FAIL (status 503)",
    ]
    assert server.process.poll() is None, "Cockpit must survive a NATS outage"


def test_nothing_listening_fails_every_check() -> None:
    result = _check(f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "❌ API Gateway: FAIL (status 000)",
        "❌ Narrative Filter: FAIL (status 000)",
        "❌ Verdict Engine: FAIL (status 000)",
        "❌ Command Bus: FAIL (status 000)",
    ]
