"""The totals of ``GET /verdicts`` and the counts of ``GET /verdicts/stats`` come from
``verdict_counts``, kept in the transactions that write verdicts: whatever creates a
verdict, raises its severity or changes its status (here or in another replica),
every filter's total still equals the number of verdicts it lists."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from cockpit.events.verdict import Category, Severity, VerdictDrafted
from cockpit.platform.metrics import Metrics
from cockpit.verdict.models import VerdictRow
from cockpit.verdict.service import VerdictEngine
from tests.integration.gateway.conftest import Harness, make_harness, settings_for

_CATEGORIES = (Category.ALLIANCE, Category.DECEPTION, Category.THREAT)
_SEVERITIES = (Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)


def draft(n: int, severity: Severity, evidence: str) -> VerdictDrafted:
    category = _CATEGORIES[n % 3]
    return VerdictDrafted(
        fingerprint=f"count-{n}", fleet_id=f"fleet-{n % 2}", category=category, severity=severity,
        title=f"situation {n}", agents_involved=[f"agent-{n % 4}"], evidence_chain=[evidence],
        confidence=0.7, recommended_action="MONITOR",
    )


async def listed(h: Harness, **params: Any) -> tuple[set[str], int]:
    """Every verdict id the filter lists (page by page) and the total it reports."""
    ids: set[str] = set()
    total = None
    for offset in itertools.count(0, 7):
        r = await h.client.get("/verdicts", params={**params, "limit": 7, "offset": offset},
                               headers=h.headers("VIEWER"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert total is None or body["total"] == total
        total = body["total"]
        ids |= {v["id"] for v in body["items"]}
        if not body["items"]:
            return ids, total


async def stored(h: Harness, **where: str) -> int:
    async with h.cockpit.db.reader.connect() as conn:
        table = VerdictRow.__table__
        return int(await conn.scalar(select(func.count()).select_from(table).where(
            *(table.c[k] == v for k, v in where.items()))) or 0)


async def check(h: Harness) -> None:
    for params in ({}, {"status": "ACTIVE"}, {"status": "DISMISSED"}, {"severity": "CRITICAL"},
                   {"category": "DECEPTION", "status": "ACTIVE"}, {"fleet_id": "fleet-1", "severity": "LOW"},
                   {"status": "MITIGATED", "severity": "HIGH", "category": "ALLIANCE", "fleet_id": "fleet-0"}):
        ids, total = await listed(h, **params)
        assert total == len(ids) == await stored(h, **params), params
    stats = (await h.client.get("/verdicts/stats", headers=h.headers("VIEWER"))).json()
    assert stats["total"] == await stored(h)
    assert stats["by_status"] == {s: await stored(h, status=s) for s in ("ACTIVE", "MITIGATED", "DISMISSED")}
    assert stats["active_by_severity"] == {s.value: await stored(h, status="ACTIVE", severity=s.value)
                                           for s in _SEVERITIES}
    assert stats["active_by_category"] == {c.value: n for c in _CATEGORIES
                                           if (n := await stored(h, status="ACTIVE", category=c.value))}
    async with h.cockpit.db.reader.connect() as conn:
        table = VerdictRow.__table__
        deceptive = (await conn.scalars(select(table.c.agent_id).distinct().where(
            table.c.status == "ACTIVE", table.c.category == "DECEPTION"))).all()
    assert stats["deceptive_agents"] == sorted(deceptive) and deceptive


async def test_totals_and_stats_follow_every_change_to_the_verdicts(harness: Harness) -> None:
    h = harness
    rng = random.Random(7)
    engine = h.cockpit.verdicts
    other = VerdictEngine(h.cockpit.db, h.cockpit.bus, Metrics())  # another replica
    await engine.on_drafts([draft(n, rng.choice(_SEVERITIES[:2]), f"m-{n}") for n in range(40)])
    await check(h)

    # Later drafts raise some severities (in batches, one of them from the other replica).
    await engine.on_drafts([draft(n, Severity.HIGH, f"m-{n}-b") for n in range(0, 40, 3)])
    await other.on_drafts([draft(n, Severity.CRITICAL, f"m-{n}-c") for n in range(0, 40, 5)])
    await check(h)

    # Operators resolve some, the kill switch mitigates others; resolved situations
    # drafted again open new ACTIVE verdicts.
    ids, _ = await listed(h, status="ACTIVE")
    for i, verdict_id in enumerate(sorted(ids)[:25]):
        body = {"status": "DISMISSED"} if i % 2 else {"status": "MITIGATED", "mitigation_command_id": f"cmd-{i}"}
        r = await h.client.patch(f"/verdicts/{verdict_id}", json=body, headers=h.headers())
        assert r.status_code == 200, r.text
    r = await h.client.patch(f"/verdicts/{min(ids)}", json={"status": "DISMISSED"}, headers=h.headers())
    assert r.status_code == 409  # a refused change counts nothing
    await other.on_drafts([draft(n, Severity.MEDIUM, f"m-{n}-d") for n in range(10)])
    await check(h)

    # A page past the end is empty and still says how many there are.
    r = await h.client.get("/verdicts", params={"status": "ACTIVE", "offset": 1000}, headers=h.headers("VIEWER"))
    assert r.json()["items"] == [] and r.json()["total"] == await stored(h, status="ACTIVE")


async def test_recount_after_verdicts_changed_by_hand_in_sql(harness: Harness) -> None:
    h = harness
    await h.cockpit.verdicts.on_drafts([draft(n, _SEVERITIES[n % 4], f"r-{n}") for n in range(30)])
    await check(h)
    # A bulk dismissal in SQL, behind the engine's back: the totals no longer agree.
    async with h.cockpit.db.engine.begin() as conn:
        await conn.execute(update(VerdictRow.__table__).where(VerdictRow.__table__.c.severity == "LOW")
                           .values(status="DISMISSED"))
    _, total = await listed(h, status="ACTIVE")
    assert total != await stored(h, status="ACTIVE")

    # ... and one verdict's updated_at moved ahead: an agent's page is ordered by it.
    r = await h.client.get("/verdicts", params={"agent_id": "agent-1", "limit": 100}, headers=h.headers("VIEWER"))
    oldest = r.json()["items"][-1]["id"]
    table = VerdictRow.__table__
    async with h.cockpit.db.engine.begin() as conn:
        await conn.execute(update(table).where(table.c.id == oldest).values(
            updated_at=datetime.now(UTC) + timedelta(hours=1)))

    verdicts, rows = await h.cockpit.verdicts.recount()
    assert verdicts == await stored(h) == 30 and 0 < rows <= 30
    await check(h)
    r = await h.client.get("/verdicts", params={"agent_id": "agent-1", "limit": 1}, headers=h.headers("VIEWER"))
    assert [v["id"] for v in r.json()["items"]] == [oldest]  # now the newest


@pytest.mark.postgres
async def test_a_status_change_is_never_overwritten_by_the_engine(postgres_url: str, tmp_path: Path,
                                                                   request: pytest.FixtureRequest) -> None:
    """The engine's batch and an operator's MITIGATED meet on one verdict (PostgreSQL,
    where they are separate transactions): the batch waits for the change, then finds
    the situation no longer ACTIVE and opens a new verdict for it. Before, its read did
    not wait, and its update landed on the MITIGATED row (evidence folded into a closed
    verdict)."""
    async for h in make_harness(settings_for("postgresql", tmp_path, request)):
        engine = h.cockpit.verdicts
        await engine.on_drafts([draft(0, Severity.LOW, "first")])
        (verdict,) = (await h.client.get("/verdicts", headers=h.headers("VIEWER"))).json()["items"]
        table = VerdictRow.__table__
        async with h.cockpit.db.engine.connect() as operator:  # set_status, caught mid-transaction
            await operator.execute(select(table.c.id).where(table.c.id == verdict["id"]).with_for_update())
            await operator.execute(update(table).where(table.c.id == verdict["id"]).values(
                status="MITIGATED", updated_at=datetime.now(UTC)))
            batch = asyncio.create_task(engine.on_drafts([draft(0, Severity.HIGH, "second")]))
            await asyncio.sleep(0.5)
            await operator.commit()
        await batch
        rows = (await h.client.get("/verdicts", params={"limit": 10}, headers=h.headers("VIEWER"))).json()["items"]
        by_status = {v["status"]: v for v in rows}
        assert set(by_status) == {"ACTIVE", "MITIGATED"}, rows
        assert by_status["MITIGATED"]["evidence_chain"] == ["first"]
        assert by_status["ACTIVE"]["evidence_chain"] == ["second"] and by_status["ACTIVE"]["severity"] == "HIGH"
