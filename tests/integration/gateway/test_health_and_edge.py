"""Health, metrics, OpenAPI and the error contract of the HTTP edge."""

from __future__ import annotations

from tests.integration.gateway.conftest import Harness

RUNBOOK_METRICS = (
    "narrative_filter_requests_total",
    "narrative_filter_errors_total",
    "narrative_filter_processing_duration_seconds",
    "verdict_engine_verdicts_generated_total",
    "command_bus_commands_executed_total",
    "command_bus_kill_switch_failures_total",
)


async def test_health_reports_ok_with_real_probes(harness: Harness) -> None:
    r = await harness.client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["services"] == ["narrative-filter", "verdict-engine", "command-bus"]
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["database"]["dialect"] == harness.cockpit.db.dialect
    for module in ("narrative-filter", "verdict-engine", "command-bus"):
        r = await harness.client.get(f"/health/{module}")
        assert r.status_code == 200 and r.json()["status"] == "healthy"
    assert (await harness.client.get("/health/nope")).status_code == 404


async def test_metrics_expose_the_runbook_names_from_start(embedded: Harness) -> None:
    r = await embedded.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    for name in RUNBOOK_METRICS:
        assert f"\n{name}" in r.text or r.text.startswith(name) or f"# TYPE {name}" in r.text
    assert 'command_bus_commands_executed_total{status="COMPLETED",type="MUTE"} 0.0' in r.text


async def test_openapi_schema_is_served(embedded: Harness) -> None:
    r = await embedded.client.get("/schema/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    paths = doc["paths"]
    for path in ("/telemetry", "/verdicts", "/verdicts/{verdict_id}", "/commands", "/agents", "/audits"):
        assert path in paths
    # Open operations say so; the others need the key and document 401/403.
    assert "security" not in doc and not paths["/health"]["get"].get("security")
    assert not paths["/metrics"]["get"].get("security")
    assert paths["/verdicts"]["get"]["security"] == [{"ApiKey": []}]
    assert {"401", "403", "503"} <= set(paths["/verdicts"]["get"]["responses"])
    assert {"404", "409"} <= set(paths["/verdicts/{verdict_id}"]["patch"]["responses"])
    assert {"413", "422", "503"} <= set(paths["/telemetry"]["post"]["responses"])
    assert "429" in paths["/commands"]["post"]["responses"]
    # Answers are described field by field, and the raw-read telemetry body too.
    verdict = doc["components"]["schemas"]["VerdictWire"]
    assert {"id", "severity", "evidence_chain", "recommended_action"} <= set(verdict["required"])
    body = paths["/telemetry"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/Telemetry"} in body["oneOf"]
    telemetry = doc["components"]["schemas"]["Telemetry"]
    assert telemetry["properties"]["timestamp"]["format"] == "date-time"


async def test_options_lists_every_method_of_a_path(embedded: Harness) -> None:
    # Paths served by two handlers list both (Litestar 2 alone lists the first one's).
    expected = {"/agents": "GET, OPTIONS, POST", "/commands": "GET, OPTIONS, POST",
                "/verdicts/some-id": "GET, OPTIONS, PATCH", "/telemetry": "OPTIONS, POST"}
    for path, allow in expected.items():
        r = await embedded.client.options(path)
        assert (r.status_code, r.headers.get("allow")) == (204, allow), path
    r = await embedded.client.options("/commands", params={"allow": "DELETE"})
    assert r.headers.get("allow") == "GET, OPTIONS, POST"


async def test_no_key_is_401_and_wrong_role_is_403(embedded: Harness) -> None:
    r = await embedded.client.get("/verdicts")
    assert r.status_code == 401
    assert r.json()["status_code"] == 401
    r = await embedded.client.get("/verdicts", headers={"X-API-Key": "ck_not-a-key"})
    assert r.status_code == 401
    r = await embedded.client.post(
        "/telemetry", json={"message_id": "x", "source_agent_id": "a", "content": "hi"},
        headers=embedded.headers("VIEWER"),
    )
    assert r.status_code == 403


async def test_malformed_input_gets_clear_4xx_never_500(embedded: Harness) -> None:
    h = embedded.headers()
    cases = [
        (b"{not json", 400),
        (b"\xff\xfe\x00garbage", 400),
        (b"[1, 2, 3]", 400),
        (b'{"messages": "nope"}', 400),
        (b'{"message_id": "m", "source_agent_id": "a"}', 400),  # message without content
        (b'{"message_id": "m", "source_agent_id": "a", "content": "x", "surprise": 1}', 400),
        (b"[" * 100_000 + b"]" * 100_000, 400),
    ]
    for body, status in cases:
        r = await embedded.client.post("/telemetry", content=body, headers={**h, "content-type": "application/json"})
        assert r.status_code == status, (body[:40], r.status_code, r.text[:200])
        assert "Traceback" not in r.text
    r = await embedded.client.post(
        "/telemetry", json={"message_id": "m", "source_agent_id": "a", "kind": "action"}, headers=h
    )
    assert r.status_code == 400 and "action" in r.json()["detail"]


async def test_oversized_batch_and_body_are_413(embedded: Harness) -> None:
    h = embedded.headers()
    limit = embedded.cockpit.settings.filter.max_batch
    batch = [{"message_id": f"m{i}", "source_agent_id": "a", "content": "x"} for i in range(limit + 1)]
    r = await embedded.client.post("/telemetry", json={"messages": batch}, headers=h)
    assert r.status_code == 413
    huge = b'{"message_id": "m", "source_agent_id": "a", "content": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    r = await embedded.client.post("/telemetry", content=huge, headers={**h, "content-type": "application/json"})
    assert r.status_code == 413
    assert (await embedded.cockpit.filter.store.count()) == 0


async def test_me_tells_the_caller_its_role(embedded: Harness) -> None:
    r = await embedded.client.get("/me", headers=embedded.headers("VIEWER"))
    assert r.status_code == 200
    assert r.json()["role"] == "VIEWER" and r.json()["can_command"] is False
    r = await embedded.client.get("/me", headers=embedded.headers("CHIEF_ARCHITECT"))
    assert r.json()["can_command"] is True
    assert (await embedded.client.get("/me")).status_code == 401


async def test_the_dashboard_cannot_be_framed_and_is_revalidated(embedded: Harness) -> None:
    """Headers a <meta> cannot give: no framing (an operator's Approve clicked through
    another site's page), no content-type guessing, and revalidation, so an upgrade
    never runs new modules beside cached old ones."""
    for path in ("/ui/index.html", "/ui/app.js"):
        r = await embedded.client.get(path)
        assert r.status_code == 200
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        assert "no-cache" in r.headers["cache-control"]
