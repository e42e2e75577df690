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
from tests.integration.gateway.conftest import Harness, make_harness, register, settings_for

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
             {"key": "gen_ai.operation.name", "value": {"stringValue": "invoke_agent"}},
             {"key": "gen_ai.input.messages", "value": {"stringValue": '[{"role": "user", "content": "status?"}]'}}]
    return {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": f"{i:032x}", "spanId": f"{i:016x}", "name": "invoke_agent", "attributes": attrs,
        "startTimeUnixNano": "1767614400000000000", "endTimeUnixNano": "1767614401000000000"}]}]}]}


def _waiting(agent: str, count: int) -> list[Telemetry]:
    """Telemetry stored but not yet delivered to analysis (as if the bus were far behind)."""
    return [Telemetry.model_validate({"message_id": f"{agent}-{i}", "source_agent_id": agent,
                                      "content": f"status report {i}"}) for i in range(count)]


async def test_ingestion_waits_for_analysis_to_catch_up(bounded: Harness) -> None:
    h = bounded
    narrative = h.cockpit.filter
    hard_limit = BOUND + BOUND // 4
    assert narrative.backlog_hard_limit == hard_limit
    await narrative.store.insert_new(_waiting("worker", BOUND + 50), ())
    assert await _until(h, "narrative_filter_backlog_messages", lambda v: v > hard_limit) == hard_limit + 1

    # Past the hard limit no one is admitted, not even a sender with nothing waiting
    # (refused before the body is read).
    item = {"message_id": "late", "source_agent_id": "worker", "content": "status nominal"}
    for sender in ("worker", "quiet"):
        r = await h.client.post("/telemetry", json={**item, "source_agent_id": sender}, headers=h.headers())
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        assert r.json()["detail"] == "analysis is behind, retry later"
        assert r.json()["extra"] == {"backlog": hard_limit + 1, "max_backlog": BOUND}
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
    assert await _metric(h, "narrative_filter_backlog_refusals_total") == 3


async def test_one_agents_backlog_does_not_silence_the_others(bounded: Harness) -> None:
    """Past the bound, an agent with its share of the backlog waiting is refused; the
    others are still admitted (and analysed), up to the hard limit."""
    h = bounded
    narrative = h.cockpit.filter
    flood_token = (await register(h, "flood", {"kind": "external"}))["token"]
    await narrative.store.insert_new(_waiting("flood", BOUND + 10), ())
    assert await _until(h, "narrative_filter_backlog_messages", lambda v: v >= BOUND) == BOUND + 10

    # The flooding agent: refused, with its own token before its body is read, and with
    # an operator's key whichever other agents share the batch.
    own = {"message_id": "f-new", "source_agent_id": "flood", "content": "more status"}
    r = await h.client.post("/telemetry", json=own, headers={"X-API-Key": flood_token})
    assert r.status_code == 503, r.text
    assert r.json()["extra"] == {"backlog": BOUND + 10, "max_backlog": BOUND, "share": BOUND,
                                 "over_share": {"flood": BOUND + 10}}
    batch = {"messages": [own, {"message_id": "q-0", "source_agent_id": "quiet-0", "content": "hello"}]}
    r = await h.client.post("/telemetry", json=batch, headers=h.headers())
    assert r.status_code == 503
    assert r.json()["extra"]["over_share"] == {"flood": BOUND + 10}

    # Agents below their share get through, one message after another, and are analysed.
    analysed = await _metric(h, "narrative_filter_requests_total")
    promise = {"message_id": "q-1", "source_agent_id": "quiet-1", "target_agent_ids": ["quiet-2"],
               "content": "I will support you in the north this turn"}
    r = await h.client.post("/telemetry", json=promise, headers=h.headers())
    assert r.status_code == 202, r.text
    r = await h.client.post("/v1/traces", json=_span(2), headers=h.headers())
    assert r.status_code == 200 and r.json() == {"partialSuccess": {}}, r.text
    attack = {"message_id": "q-2", "source_agent_id": "quiet-1", "target_agent_ids": ["quiet-2"],
              "kind": "action", "action": {"type": "attack", "target": "quiet-2"}}
    r = await h.client.post("/telemetry", json=attack, headers=h.headers())
    assert r.status_code == 202, r.text
    await h.settle()
    await _until(h, "narrative_filter_requests_total", lambda v: v == analysed + 3)
    stored = {m["message_id"] for m in await narrative.store.messages(["f-new", "q-0", "q-1", "q-2"])}
    assert stored == {"q-1", "q-2"}  # nothing refused was stored
    # The promise broken by the admitted agent is caught while the other one floods.
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        page = (await h.client.get("/verdicts", params={"agent_id": "quiet-1"}, headers=h.headers("VIEWER"))).json()
        if any(v["category"] == "INCONSISTENCY" for v in page["items"]):
            break
        assert asyncio.get_running_loop().time() < deadline, page
        await asyncio.sleep(0.1)

    # Up to the hard limit: then everyone waits.
    await narrative.store.insert_new(_waiting("flood-2", 20), ())
    await _until(h, "narrative_filter_backlog_messages", lambda v: v > narrative.backlog_hard_limit)
    r = await h.client.post("/telemetry", json={**promise, "message_id": "q-3", "source_agent_id": "quiet-3"},
                            headers=h.headers())
    assert r.status_code == 503


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
