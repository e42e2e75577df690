"""A WebSocket client is never skipped ahead: when it missed more than one replay
reads, or reads slower than events arrive (its queue full), the rest comes from the
stream log, in order and without a gap, once it has taken what was queued. The
replay limit (which also bounds a client's queue) is set to 5 here."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from cockpit.settings import load_settings
from tests.integration.gateway.conftest import Harness, make_harness

LIMIT = 5


@pytest.fixture
async def narrow(tmp_path: Path) -> AsyncIterator[Harness]:
    async for h in make_harness(load_settings(data_dir=tmp_path, gateway={"ws_replay_limit": LIMIT})):
        yield h


async def _append(h: Harness, count: int, category: str = "ALLIANCE") -> list[int]:
    """``count`` verdict events stored and pushed at once, as the verdict engine's
    batches are; their seqs."""
    run = uuid.uuid4().hex[:6]
    stored = await h.cockpit.stream.append_many([
        ("verdict.created", f"{run}-{n}", {"id": f"{run}-{n}", "category": category, "severity": "LOW",
                                          "agents_involved": ["alpha"], "target": None})
        for n in range(count)
    ])
    return [e["seq"] for e in stored]


async def _events(ws: Any, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while len(events) < count:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message["type"].startswith("verdict."):
            events.append(message)
    return events


async def _nothing_more(ws: Any) -> None:
    await ws.send(json.dumps({"type": "ping"}))
    while (message := json.loads(await asyncio.wait_for(ws.recv(), 10)))["type"] != "pong":
        assert not message["type"].startswith("verdict."), f"unexpected {message}"


async def test_a_resume_past_the_replay_limit_gets_every_missed_event(narrow: Harness) -> None:
    seqs = await _append(narrow, 4 * LIMIT + 3)
    async with websockets.connect(narrow.ws_url(since_seq=0)) as ws:
        received = await _events(ws, len(seqs))
        await _nothing_more(ws)
    assert [e["seq"] for e in received] == seqs


async def test_a_client_slower_than_the_stream_misses_nothing(narrow: Harness) -> None:
    async with websockets.connect(narrow.ws_url()) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "hello"
        # Stored and offered in one go: more than its queue holds.
        seqs = await _append(narrow, 4 * LIMIT + 3)
        seqs += await _append(narrow, 2)
        received = await _events(ws, len(seqs))
        await _nothing_more(ws)
    assert [e["seq"] for e in received] == seqs
    # The operator sees it happened: 23 events through a queue of 5, caught up from the log.
    metrics = (await narrow.client.get("/metrics")).text
    line = next(x for x in metrics.splitlines() if x.startswith("cockpit_ws_catch_ups_total"))
    assert float(line.split()[-1]) >= 1


async def test_a_filtered_resume_reads_on_past_replays_with_no_match(narrow: Harness) -> None:
    await _append(narrow, 3 * LIMIT)
    wanted = await _append(narrow, 1, category="COLLUSION")
    async with websockets.connect(narrow.ws_url(since_seq=0, category="COLLUSION")) as ws:
        received = await _events(ws, 1)
        await _nothing_more(ws)
    assert [e["seq"] for e in received] == wanted
