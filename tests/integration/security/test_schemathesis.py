"""Schemathesis over the live OpenAPI schema of a real ``cockpit serve``: every
operation, generated inputs (valid and not), no 5xx and every documented answer
conforms to the schema the server publishes.

Bounded: ~30 examples per operation (``COCKPIT_SCHEMATHESIS_EXAMPLES`` to change).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = int(os.environ.get("COCKPIT_SCHEMATHESIS_EXAMPLES", "30"))


def _bench_server() -> Any:
    spec = importlib.util.spec_from_file_location("cockpit_bench_server", REPO / "bench" / "server.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def live_cockpit() -> Iterator[Any]:
    # Generous rate limits: the generated MUTE/TERMINATE traffic would otherwise be
    # all 429s and exercise nothing past the limiter.
    limits = '{"MUTE": "100000/minute", "ISOLATE": "100000/minute", "TERMINATE": "100000/minute"}'
    server = _bench_server().start_server({"COCKPIT_C2L__RATE_LIMITS": limits})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_schema(live_cockpit: Any) -> Any:
    schema = schemathesis.openapi.from_url(f"{live_cockpit.base_url}/schema/openapi.json")
    schema.config.update(base_url=live_cockpit.base_url, headers={"X-API-Key": live_cockpit.key})
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: Any, live_cockpit: Any) -> None:
    response = case.call(headers={"X-API-Key": live_cockpit.key}, timeout=30)
    assert "Traceback" not in response.text
    case.validate_response(
        response, checks=[not_a_server_error, response_schema_conformance]
    )
