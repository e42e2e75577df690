"""Schemathesis over the live OpenAPI schema of a real, populated ``cockpit serve``:
every operation with generated inputs (valid and not) under every built-in check (no
5xx, documented status codes, content types and headers, schema-valid answers, bad
input refused, valid input taken, the key required where the schema says so); every
read once more with real ids; and stateful sequences chained through the links
schemathesis infers from the typed answers.

Bounded: ~30 examples per operation (``COCKPIT_SCHEMATHESIS_EXAMPLES`` to change).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.integration.gateway.test_scenario import scenario

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = int(os.environ.get("COCKPIT_SCHEMATHESIS_EXAMPLES", "30"))

#: the processes generated agents may name (see ``map_body``)
_decoys: list[subprocess.Popen[bytes]] = []


def _decoy_pid() -> int:
    """A live process of this test's own, started again once the generated commands
    have terminated the last one."""
    if not _decoys or _decoys[-1].poll() is not None:
        _decoys.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"],
                                        stdin=subprocess.DEVNULL, start_new_session=True))
    return _decoys[-1].pid


@schemathesis.hook
def map_body(ctx: Any, body: Any) -> Any:
    """A generated process agent names a process of the test's own: the kill switch
    is real, and a generated pid can be any process of the machine (pid 1 once was)."""
    if isinstance(body, dict) and isinstance(runtime := body.get("runtime"), dict) \
            and runtime.get("kind") == "process" and isinstance(runtime.get("pid"), int):
        runtime["pid"] = _decoy_pid()
    return body


def _bench_server() -> Any:
    spec = importlib.util.spec_from_file_location("cockpit_bench_server", REPO / "bench" / "server.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _populate(base_url: str, key: str) -> dict[str, str]:
    """Real content, so lists answer with items and the schemas of the items are
    checked too: the acceptance scenario's verdicts, an agent with a sub-agent, a
    MUTE that completes. The ids of one of each."""
    headers = {"X-API-Key": key}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        http.post("/agents", json={"agent_id": "delta", "name": "delta"}).raise_for_status()
        http.post("/agents", json={"agent_id": "delta-sub", "name": "delta's helper", "parent_id": "delta"}
                  ).raise_for_status()
        http.post("/telemetry", json={"messages": scenario()[0]}).raise_for_status()
        command = http.post("/commands", json={"command_type": "MUTE", "target_agents": ["delta"],
                                               "parameters": {"duration_seconds": 600}, "reason": "schema check"})
        command.raise_for_status()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            verdicts = http.get("/verdicts").json()["items"]
            done = http.get(f"/commands/{command.json()['command_id']}").json()["status"] == "COMPLETED"
            if len({v["category"] for v in verdicts}) >= 5 and done:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the scenario produced no verdicts, or the MUTE did not complete")
    return {"verdict_id": verdicts[0]["id"], "agent_id": "delta", "command_id": command.json()["command_id"]}


@pytest.fixture(scope="module")
def live_cockpit() -> Iterator[Any]:
    # Generous rate limits: the generated MUTE/TERMINATE traffic would otherwise be
    # all 429s and exercise nothing past the limiter.
    limits = '{"MUTE": "100000/minute", "ISOLATE": "100000/minute", "TERMINATE": "100000/minute"}'
    server = _bench_server().start_server({"COCKPIT_C2L__RATE_LIMITS": limits})
    try:
        server.ids = _populate(server.base_url, server.key)  # type: ignore[attr-defined]
        yield server
    finally:
        server.stop()
        for decoy in _decoys:
            decoy.kill()
            decoy.wait()


@pytest.fixture(scope="module")
def api_schema(live_cockpit: Any) -> Any:
    schema = schemathesis.openapi.from_url(f"{live_cockpit.base_url}/schema/openapi.json")
    schema.config.update(base_url=live_cockpit.base_url, headers={"X-API-Key": live_cockpit.key})
    checks = schema.config.checks
    # 422 is the API's answer to a schema-valid request it refuses on the facts (the
    # target agents do not exist, no process has that pid, a NUL cannot be stored).
    # Schema violations are 400, which schema-valid input must never get.
    checks.positive_data_acceptance.expected_statuses = [*checks.positive_data_acceptance.expected_statuses, "422"]
    # Invalid data so large that its body is over the limit is refused before it is
    # read: 413 (generated once a thousand long strings make a batch over 8 MB).
    checks.negative_data_rejection.expected_statuses = [*checks.negative_data_rejection.expected_statuses, "413"]
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: Any, live_cockpit: Any) -> None:
    response = case.call_and_validate(headers={"X-API-Key": live_cockpit.key}, timeout=30)
    assert "Traceback" not in response.text


@pytest.mark.parametrize("path", [
    "/verdicts", "/verdicts/{verdict_id}", "/verdicts/{verdict_id}/evidence", "/verdicts/stats", "/alliances/graph",
    "/stats", "/agents", "/agents/{agent_id}", "/agents/{agent_id}/tree", "/agents/{agent_id}/directives",
    "/commands", "/commands/{command_id}", "/audits", "/audits/verify", "/me", "/health",
])
def test_answers_with_real_content_conform(api_schema: Any, live_cockpit: Any, path: str) -> None:
    """Every read answers 200 with the populated content, and every field of it
    (verdicts, evidence messages, agents, directives, commands, audit rows) is as the
    published schema says."""
    params = {name: value for name, value in live_cockpit.ids.items() if "{" + name + "}" in path}
    case = api_schema[path]["GET"].Case(path_parameters=params)
    response = case.call_and_validate(headers={"X-API-Key": live_cockpit.key}, timeout=30)
    assert response.status_code == 200
    body = response.json()
    if "items" in body:
        assert body["items"], f"{path} answered no items: nothing of its schema was checked"


def test_stateful_workflows(api_schema: Any) -> None:
    """Sequences of calls chained through the links schemathesis infers from the
    typed answers (register an agent, then read, command and poll it; list
    verdicts, then read, patch and open one...), every answer checked as above."""
    machine = api_schema.as_state_machine()
    machine.run(settings=settings(
        max_examples=EXAMPLES, stateful_step_count=8, deadline=None, derandomize=True,
        suppress_health_check=list(HealthCheck),
    ))
