"""deploy/prometheus: promtool accepts the config and the rules, every alert rule
is unit-tested firing and not firing, the metric names they use are the ones
Cockpit really exports, and a real Prometheus scrapes a running Cockpit."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

from cockpit.platform.metrics import Metrics
from tests.integration.deploy.conftest import REPO_ROOT, CockpitServer

PROM_DIR = REPO_ROOT / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
REQUIRED_ALERTS = {"HighLatency", "CommandExecutionFailure", "KillSwitchFailure", "CockpitDown"}


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], check=False, cwd=PROM_DIR, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def exported_metric_names() -> set[str]:
    """Every sample name Cockpit's /metrics exposes (counters' _total, histograms' _bucket...)."""
    text = Metrics().render().decode()
    names = {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}
    # Families whose labels have no pre-created values show only their TYPE line.
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names |= {f"{name}{s}" for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
    return names


def metric_names_in(expr: str) -> set[str]:
    candidates = set(re.findall(r"\b([a-z_][a-z0-9_]*(?:_total|_bucket|_seconds|_clients))\b", expr))
    return {c for c in candidates if not c.startswith("__")}


def test_promtool_check_rules(promtool: str) -> None:
    result = _promtool(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_check_config(promtool: str) -> None:
    result = _promtool(promtool, "check", "config", str(PROM_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_is_unit_tested_firing_and_not_firing(promtool: str) -> None:
    rules = {rule["alert"] for rule in _rules()}
    assert REQUIRED_ALERTS <= rules
    tests = yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text())["tests"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert rules <= firing, f"rules never tested firing: {rules - firing}"
    assert rules <= silent, f"rules never tested silent: {rules - silent}"

    result = _promtool(promtool, "test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_runbook_rules_keep_their_promises() -> None:
    rules = {rule["alert"]: rule for rule in _rules()}
    assert "narrative_filter_processing_duration_seconds_bucket" in rules["HighLatency"]["expr"]
    assert rules["HighLatency"]["expr"].rstrip().endswith("> 2") and rules["HighLatency"]["for"] == "5m"
    assert 'status="FAILED"' in rules["CommandExecutionFailure"]["expr"]
    assert rules["CommandExecutionFailure"]["expr"].rstrip().endswith("> 0.01")
    assert "increase(command_bus_kill_switch_failures_total[5m])" in rules["KillSwitchFailure"]["expr"]
    assert rules["CockpitDown"]["expr"] == 'up{job="cockpit"} == 0'


def test_rules_only_use_metrics_cockpit_exports() -> None:
    exported = exported_metric_names()
    for rule in _rules():
        missing = metric_names_in(rule["expr"]) - exported
        assert not missing, f"{rule['alert']} uses metrics Cockpit does not export: {missing}"


def _query(prometheus_url: str, expr: str) -> list[dict]:
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_real_prometheus_scrapes_a_running_cockpit(
    cockpit_server: Callable[..., CockpitServer], prometheus_url: str, prometheus_targets_dir: Path
) -> None:
    server = cockpit_server()
    target = prometheus_targets_dir / f"test-{server.port}.json"
    instance = f"127.0.0.1:{server.port}"
    target.write_text(json.dumps([{"targets": [instance]}]))
    try:
        deadline = time.monotonic() + 60
        up: list[dict] = []
        while time.monotonic() < deadline:
            up = _query(prometheus_url, f'up{{job="cockpit", instance="{instance}"}}')
            if up and up[0]["value"][1] == "1":
                break
            time.sleep(1)
        assert up and up[0]["value"][1] == "1", f"Cockpit never scraped as up: {up}"
        # The pre-created series are there before the first event.
        series = _query(prometheus_url, f'command_bus_commands_executed_total{{instance="{instance}"}}')
        assert {s["metric"]["status"] for s in series} >= {"COMPLETED", "FAILED", "TIMEOUT"}
        # CockpitDown's expression sees this instance as healthy.
        assert not [r for r in _query(prometheus_url, 'up{job="cockpit"} == 0')
                    if r["metric"]["instance"] == instance]
    finally:
        target.unlink(missing_ok=True)
