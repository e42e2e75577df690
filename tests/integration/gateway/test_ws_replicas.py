"""Two replicas on one PostgreSQL, each relaying every event to its own WebSocket
clients: a client is sent every event, in seq order, whichever replica stored it
first. Before, a replica pushed the events of its own batches only: an event another
replica had stored first (a lower seq) reached this replica's clients after a later
one, and was dropped as "already sent", for good."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.integration.gateway.conftest import Harness, make_harness, settings_for


@contextlib.asynccontextmanager
async def _replica(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> AsyncIterator[Harness]:
    generator = make_harness(settings_for("postgresql", tmp_path / name, request))
    try:
        yield await anext(generator)
    finally:
        await generator.aclose()


def _event(name: str) -> tuple[str, str, dict[str, Any]]:
    return ("verdict.created", name, {"id": name, "category": "ALLIANCE", "severity": "LOW",
                                      "agents_involved": ["alpha"], "target": None})


async def test_a_client_gets_events_another_replica_stored_first_in_seq_order(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:6]
    first, later = _event(f"{run}-first"), _event(f"{run}-later")
    async with _replica(request, tmp_path, "a") as a, _replica(request, tmp_path, "b") as b:
        async with websockets.connect(b.ws_url()) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "hello"
            # Replica A stores `first`; replica B, which has not received it yet,
            # stores `later`, then receives `first` (already stored: A's seq).
            (stored_first,) = await a.cockpit.stream.append_many([first])
            (stored_later,) = await b.cockpit.stream.append_many([later])
            await b.cockpit.stream.append_many([first])
            assert stored_first["seq"] < stored_later["seq"]
            received = []
            while len(received) < 2:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if message["type"].startswith("verdict."):
                    received.append((message["seq"], message["data"]["id"]))
    assert received == [(stored_first["seq"], first[1]), (stored_later["seq"], later[1])]
