"""deploy/grafana: the provisioned datasource and dashboard fit together, the
dashboard shows what operators need, and every PromQL expression in it parses
and runs in a real Prometheus (with Grafana's variables substituted)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import yaml

from tests.integration.deploy.conftest import REPO_ROOT
from tests.integration.deploy.test_prometheus import exported_metric_names, metric_names_in

GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "cockpit.json"

#: what Grafana would put in place of its variables
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "${__rate_interval}": "1m",
    "${instance}": ".*",
    "$instance": ".*",
    "${layer}": ".*",
    "$layer": ".*",
}


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def expressions() -> list[tuple[str, str]]:
    out = []
    for panel in _panels(_dashboard()["panels"]):
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def substitute(expr: str) -> str:
    for name in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(name, SUBSTITUTIONS[name])
    assert "$" not in expr, f"unsubstituted Grafana variable in {expr!r}"
    return expr


def test_provisioning_points_at_the_dashboard_and_datasource() -> None:
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [ds] = datasource["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "cockpit.yml").read_text())
    [prov] = provider["providers"]
    assert prov["type"] == "file"
    # compose.yaml mounts deploy/grafana/dashboards there.
    compose = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{prov['options']['path']}:ro" in mounts

    dash = _dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == ds["uid"]
    for panel in _panels(dash["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in (ds["uid"], "${datasource}")


def test_dashboard_shows_what_operators_need() -> None:
    exprs = " ".join(expr for _, expr in expressions())
    for needed in (
        "narrative_filter_requests_total",
        "narrative_filter_errors_total",
        'narrative_filter_processing_duration_seconds_bucket{layer=~"$layer"',
        "sum by (severity) (rate(verdict_engine_verdicts_generated_total",
        "sum by (type, status) (increase(command_bus_commands_executed_total",
        "command_bus_kill_switch_failures_total",
        "cockpit_ws_clients",
    ):
        assert needed in exprs, f"no panel uses {needed}"
    layer_var = next(v for v in _dashboard()["templating"]["list"] if v["name"] == "layer")
    assert set(layer_var["query"].split(",")) == {"semantic", "strategic", "synthesis", "total"}
    ids = [p["id"] for p in _panels(_dashboard()["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_dashboard_only_uses_metrics_cockpit_exports() -> None:
    exported = exported_metric_names()
    for title, expr in expressions():
        missing = metric_names_in(expr) - exported
        assert not missing, f"panel {title!r} uses metrics Cockpit does not export: {missing}"


def test_every_expression_runs_in_a_real_prometheus(prometheus_url: str) -> None:
    bad = []
    for title, expr in expressions():
        query = substitute(expr)
        url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
                status = resp.status
        except urllib.error.HTTPError as exc:
            status, body = exc.code, json.loads(exc.read() or b"{}")
        if status != 200 or body.get("status") != "success":
            bad.append(f"{title}: {query} -> {status} {body.get('errorType')}: {body.get('error')}")
    assert not bad, "\n".join(bad)
    assert len(expressions()) >= 10


def test_a_broken_expression_is_caught(prometheus_url: str) -> None:
    """The check above can fail: Prometheus answers 400 bad_data to a parse error."""
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": "sum(rate(x[1m])"})
    try:
        urllib.request.urlopen(url, timeout=10)
        raise AssertionError("a broken query was accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400 and json.loads(exc.read())["errorType"] == "bad_data"


def test_no_unknown_grafana_variables() -> None:
    known = {"datasource", "instance", "layer", "__rate_interval", "__interval", "__range"}
    for _, expr in expressions():
        for name in re.findall(r"\$\{?(\w+)", expr):
            assert name in known, f"unknown variable ${name} in {expr}"
