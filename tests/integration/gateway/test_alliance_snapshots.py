"""The alliance graph snapshots other replicas draw from: a fleet's rows are written
again only when the fleet analysed telemetry since, or when they would age out of the
window other replicas read; an idle server does not rewrite every fleet it has seen."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from cockpit.filter.models import AllianceRow
from tests.integration.gateway.conftest import Harness


def _chat(fleet: str, n: int, run: str) -> list[dict[str, Any]]:
    return [{"message_id": f"{fleet}-{run}-{i}", "fleet_id": fleet, "source_agent_id": a, "target_agent_ids": [b],
             "content": f"Great idea {b}, let's work together on this, I fully support you"}
            for i, (a, b) in enumerate([("ann", "bob"), ("bob", "ann")] * n)]


async def _written(h: Harness) -> dict[str, set[Any]]:
    """fleet -> the times its rows were last written."""
    async with h.cockpit.db.sessions() as session:
        rows = (await session.scalars(select(AllianceRow))).all()
    out: dict[str, set[Any]] = {}
    for row in rows:
        out.setdefault(row.fleet_id, set()).add(row.updated_at)
    return out


async def test_only_fleets_with_new_telemetry_are_written_again(harness: Harness) -> None:
    pipeline = harness.cockpit.filter
    await pipeline.stop()  # its background round (every 5 s) writes snapshots too: only the test's rounds here
    for fleet in ("quiet", "busy"):
        r = await harness.client.post("/telemetry", json={"messages": _chat(fleet, 3, "a")}, headers=harness.headers())
        assert r.status_code == 202, r.text
    await harness.settle()
    await pipeline.persist_alliances()
    first = await _written(harness)
    assert set(first) == {"quiet", "busy"}

    assert await pipeline.persist_alliances() == 0  # nothing analysed since
    assert await _written(harness) == first

    r = await harness.client.post("/telemetry", json={"messages": _chat("busy", 1, "b")}, headers=harness.headers())
    assert r.status_code == 202, r.text
    await harness.settle()
    assert await pipeline.persist_alliances() == 1
    second = await _written(harness)
    assert second["quiet"] == first["quiet"] and second["busy"] != first["busy"]

    # A fleet handed to another replica is no longer written by this one.
    pipeline.strategic.release("busy")
    assert await pipeline.persist_alliances() == 0

    # Unchanged rows are still written before they would leave the window replicas read.
    pipeline._rebuild_window = timedelta(0)
    assert await pipeline.persist_alliances() == 1
    assert (await _written(harness))["quiet"] != first["quiet"]
