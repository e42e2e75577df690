"""Back-pressure from analysis: while more telemetry waits for analysis than the
bound allows, ingestion answers 503 with Retry-After and stores nothing; once
analysis catches up, the same request is accepted and analysed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from cockpit.events import Telemetry
from cockpit.filter.ingest import backlog_query
from tests.integration.gateway.conftest import Harness, make_harness, settings_for

BOUND = 100


@pytest.fixture(params=["sqlite", "postgresql+nats"])
async def bounded(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    """A backlog bound of 100 messages, on the embedded default and on PostgreSQL
    with telemetry on NATS JetStream (where nothing else holds ingestion back)."""
    extra = {"nats_url": request.getfixturevalue("nats_url")} if request.param.endswith("nats") else {}
    kind = request.param.split("+")[0]
    async for h in make_harness(settings_for(kind, tmp_path, request, filter={"max_backlog": BOUND}, **extra)):
        yield h


async def _metric(h: Harness, name: str) -> float:
    text = (await h.client.get("/metrics")).text
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


async def _until(h: Harness, name: str, ok: object, timeout: float = 15.0) -> float:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await _metric(h, name)
        if ok(value):  # type: ignore[operator]
            return value
        assert asyncio.get_running_loop().time() < deadline, f"{name} stayed at {value}"
        await asyncio.sleep(0.1)


def _span(i: int) -> dict[str, object]:
    attrs = [{"key": "gen_ai.agent.id", "value": {"stringValue": "collector"}},
             {"key": "gen_ai.operation.name", "value": {"stringValue": "invoke_agent"}}]
    return {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": f"{i:032x}", "spanId": f"{i:016x}", "name": "invoke_agent", "attributes": attrs,
        "startTimeUnixNano": "1767614400000000000", "endTimeUnixNano": "1767614401000000000"}]}]}]}


async def test_ingestion_waits_for_analysis_to_catch_up(bounded: Harness) -> None:
    h = bounded
    narrative = h.cockpit.filter
    # Stored but not yet delivered to analysis (as if the bus were far behind).
    waiting = [Telemetry.model_validate({"message_id": f"w-{i}", "source_agent_id": "worker",
                                         "content": f"status report {i}"}) for i in range(BOUND + 50)]
    await narrative.store.insert_new(waiting, ())
    assert await _until(h, "narrative_filter_backlog_messages", lambda v: v >= BOUND) == BOUND + 1

    item = {"message_id": "late", "source_agent_id": "worker", "content": "status nominal"}
    r = await h.client.post("/telemetry", json=item, headers=h.headers())
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1"
    assert r.json()["detail"] == "analysis is behind, retry later"
    assert r.json()["extra"] == {"backlog": BOUND + 1, "max_backlog": BOUND}
    r = await h.client.post("/v1/traces", json=_span(1), headers=h.headers())
    assert r.status_code == 503
    # Everything else is served: operators read, the kill switch acts.
    assert (await h.client.get("/verdicts", headers=h.headers("VIEWER"))).status_code == 200
    assert await narrative.store.count() == BOUND + 50  # nothing refused was stored

    # Analysis catches up; the gate opens again by itself.
    assert await narrative.redispatch_once(older_than=timedelta(0)) == BOUND + 50
    await h.settle()
    await _until(h, "narrative_filter_backlog_messages", lambda v: v == 0)
    r = await h.client.post("/telemetry", json=item, headers=h.headers())
    assert r.status_code == 202 and r.json() == {"accepted": 1, "duplicates": 0}, r.text
    await h.settle()
    await _until(h, "narrative_filter_requests_total", lambda v: v == BOUND + 51)
    assert await _metric(h, "narrative_filter_backlog_refusals_total") == 2


async def test_quarantined_telemetry_never_waits_nor_is_walked(harness: Harness) -> None:
    """A MUTED agent's telemetry is stored but never analysed: it is not backlog, and
    the backlog count and the redispatch scan walk an index that leaves it out (so
    their cost does not grow with every message a muted agent ever sent)."""
    db = harness.cockpit.db
    store = harness.cockpit.filter.store
    muted = [Telemetry.model_validate({"message_id": f"q-{i}", "source_agent_id": "muted", "content": "hello"})
             for i in range(20)]
    result = await store.insert_new(muted, {"muted"})
    assert result.quarantined == 20
    assert await store.backlog(100) == 0
    assert await harness.cockpit.filter.redispatch_once(older_than=timedelta(0)) == 0
    async with db.reader.connect() as conn:
        if db.dialect == "sqlite":
            definition = (await conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_telemetry_unanalysed'")).scalar_one()
            sql = str(backlog_query(100).compile(db.engine, compile_kwargs={"literal_binds": True}))
            plan = " ".join(str(r[-1]) for r in (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")).all())
            assert "USING INDEX ix_telemetry_unanalysed" in plan, plan
        else:
            definition = (await conn.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_telemetry_unanalysed'")).scalar_one()
    assert "quarantined" in definition, definition
