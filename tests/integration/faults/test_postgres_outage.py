"""PostgreSQL stopped and restarted under telemetry load: /health degrades then
recovers, ingestion answers 503 (never 500) while it is down, nothing acknowledged
before the outage is lost, and Cockpit recovers without a restart. A verdict draft
the engine takes while the database is down becomes its verdict once it is back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import websockets

from cockpit.events.verdict import Category, Severity, VerdictDrafted
from cockpit.platform.bus import Channel
from tests.integration.gateway.conftest import Harness, make_harness, settings_for


def _message(i: int) -> dict[str, object]:
    return {"message_id": f"pg-{i}", "source_agent_id": f"agent-{i % 7}",
            "target_agent_ids": [f"agent-{(i + 1) % 7}"], "content": f"status report {i}: all good"}


@pytest.mark.postgres
async def test_health_and_ingestion_through_a_postgres_outage(
    request: pytest.FixtureRequest, tmp_path: Path, service_ctl: Callable[[str, str], str]
) -> None:
    settings = settings_for("postgresql", tmp_path, request, db_pool_timeout=5.0)
    async for h in make_harness(settings):
        await _outage(h, service_ctl)


async def _outage(h: Harness, service_ctl: Callable[[str, str], str]) -> None:
    acknowledged: set[str] = set()
    statuses: list[int] = []
    stop = asyncio.Event()

    async def load() -> None:
        i = 0
        while not stop.is_set():
            batch = [_message(i + k) for k in range(20)]
            i += 20
            r = await h.client.post("/telemetry", json={"messages": batch}, headers=h.headers())
            statuses.append(r.status_code)
            if r.status_code == 202:
                acknowledged.update(m["message_id"] for m in batch)  # type: ignore[misc]
            else:
                assert r.status_code == 503, r.text
                assert "Traceback" not in r.text
            await asyncio.sleep(0.02)

    loader = asyncio.create_task(load())
    await asyncio.sleep(1.0)
    await asyncio.to_thread(service_ctl, "postgres", "stop")
    r = await h.client.get("/health")
    assert r.status_code == 503
    assert r.json()["status"] == "degraded" and "database" in r.json()["failing"]
    assert (await h.client.get("/health/verdict-engine")).status_code == 503
    await asyncio.sleep(1.0)
    assert 503 in statuses
    await asyncio.to_thread(service_ctl, "postgres", "start")
    for _ in range(100):
        r = await h.client.get("/health")
        if r.status_code == 200:
            break
        await asyncio.sleep(0.2)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    await asyncio.sleep(1.0)
    stop.set()
    await loader
    assert statuses[-1] == 202  # ingestion recovered without a restart
    await h.settle()
    stored = {m["message_id"] for m in await h.cockpit.filter.store.messages(sorted(acknowledged))}
    assert stored == acknowledged


@pytest.mark.postgres
async def test_a_draft_taken_while_postgres_is_down_becomes_its_verdict_once_it_is_back(
    request: pytest.FixtureRequest, tmp_path: Path, service_ctl: Callable[[str, str], str]
) -> None:
    # The filter has claimed the telemetry and drafted a verdict; the database goes
    # away before the engine writes it. The draft exists nowhere else: it must wait.
    draft = VerdictDrafted(
        fingerprint="outage-liar", fleet_id="outage", category=Category.DECEPTION, severity=Severity.HIGH,
        title="liar is lying", agents_involved=["liar"], evidence_chain=["o-1", "o-2"],
        confidence=0.8, recommended_action="ISOLATE",
    )
    settings = settings_for("postgresql", tmp_path, request, db_pool_timeout=2.0)
    async for h in make_harness(settings):
        async with websockets.connect(h.ws_url(agent_id="liar")) as ws:
            await asyncio.to_thread(service_ctl, "postgres", "stop")
            try:
                await h.cockpit.bus.publish(Channel.ANALYSIS, draft, key=draft.fleet_id)
                await asyncio.sleep(3.0)  # the engine tries, and fails, meanwhile
                assert (await h.client.get("/health/verdict-engine")).status_code == 503
            finally:
                await asyncio.to_thread(service_ctl, "postgres", "start")
            async with asyncio.timeout(30):
                while (message := json.loads(await ws.recv()))["type"] != "verdict.created":
                    pass
        assert message["data"]["agents_involved"] == ["liar"]
        assert message["data"]["evidence_chain"] == ["o-1", "o-2"]
        r = await h.client.get("/verdicts", params={"fleet_id": "outage"}, headers=h.headers("VIEWER"))
        assert r.status_code == 200
        assert [v["id"] for v in r.json()["items"]] == [message["data"]["id"]]
