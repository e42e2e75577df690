"""The stream log keeps events for a retention period (``stream_retention_hours``):
older ones are dropped, and a client resuming from before the cut is sent a
``stream.reset`` (reload the current state) rather than silently skipped past what it
missed. Before, ``stream_events`` grew for ever, and every filtered resume from an
old seq read all of it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import websockets
from sqlalchemy import text

from cockpit.platform.db import utcnow
from tests.integration.gateway.conftest import Harness, make_harness, settings_for


@pytest.fixture(params=["sqlite", "postgresql"])
async def kept_an_hour(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in make_harness(settings_for(request.param, tmp_path, request,
                                             gateway={"stream_retention_hours": 1})):
        yield h


async def _append(h: Harness, run: str, names: range) -> list[int]:
    stored = await h.cockpit.stream.append_many([
        ("verdict.created", f"{run}-{n}", {"id": f"{run}-{n}", "category": "ALLIANCE", "severity": "LOW",
                                          "agents_involved": ["alpha"], "target": None})
        for n in names
    ])
    return [e["seq"] for e in stored]


async def _received(ws: Any, count: int) -> list[dict[str, Any]]:
    """``count`` events, then whatever else comes before the answer to a ping."""
    out: list[dict[str, Any]] = []
    while len(out) < count:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message["type"] not in ("hello", "ping"):
            out.append(message)
    await ws.send(json.dumps({"type": "ping"}))
    while (message := json.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] != "pong":
        if message["type"] not in ("hello", "ping"):
            out.append(message)
    return out


async def test_old_events_are_dropped_and_a_resume_from_before_them_is_told(kept_an_hour: Harness) -> None:
    h = kept_an_hour
    run = uuid.uuid4().hex[:6]
    start = await h.cockpit.stream.last_seq()
    old = await _append(h, run, range(5))
    async with h.cockpit.db.engine.begin() as conn:  # as if stored two hours ago
        await conn.execute(text("UPDATE stream_events SET ts = :ts WHERE seq >= :first AND seq <= :last"),
                           {"ts": utcnow() - timedelta(hours=2), "first": old[0], "last": old[-1]})
    new = await _append(h, run, range(5, 8))

    assert await h.cockpit.stream.prune() == 4  # the newest old one stays, as the marker
    assert await h.cockpit.stream.prune() == 0
    async with h.cockpit.db.engine.connect() as conn:
        kept = (await conn.execute(text("SELECT seq, type FROM stream_events WHERE seq > :s ORDER BY seq"),
                                   {"s": start})).all()
    assert [tuple(r) for r in kept] == [(old[-1], "stream.pruned"), *((s, "verdict.created") for s in new)]

    async with websockets.connect(h.ws_url(since_seq=start)) as ws:  # from before the cut
        got = await _received(ws, 4)
    assert [(e["type"], e["seq"]) for e in got] == [("stream.reset", old[-1]),
                                                    *(("verdict.created", s) for s in new)]
    assert got[0]["data"]["since_seq"] == start
    async with websockets.connect(h.ws_url(since_seq=old[-1], severity="LOW")) as ws:  # from the cut on
        got = await _received(ws, 3)
    assert [(e["type"], e["seq"]) for e in got] == [("verdict.created", s) for s in new]
