"""A WebSocket client cut off for 10 s while telemetry keeps producing verdicts comes
back with ``{"type": "subscribe", "since_seq": last}`` and receives every event it
missed, in order, exactly as a client that stayed connected saw them (real
``cockpit serve`` on PostgreSQL + NATS JetStream)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets

from tests.integration.faults.conftest import CockpitProcess, eventually, headers, register_agent

pytestmark = [pytest.mark.postgres, pytest.mark.nats]

EVENT_TYPES = {"verdict.created", "verdict.updated", "command.confirmed"}
OFFLINE_SECONDS = 10.0


def _round(run: str, i: int) -> list[dict[str, Any]]:
    """Telemetry that makes new verdicts (a liar switching between support and threats)."""
    liar, victim = f"liar-{i}", f"victim-{i}"
    out = []
    for n in range(4):
        out.append({"message_id": f"{run}-{i}-s{n}", "source_agent_id": liar, "target_agent_ids": [victim],
                    "fleet_id": f"ws-{run}", "content": f"You can count on my support, friend ({n})"})
        out.append({"message_id": f"{run}-{i}-a{n}", "source_agent_id": liar, "target_agent_ids": [victim],
                    "fleet_id": f"ws-{run}", "content": f"I will attack you and destroy you ({n})"})
    return out


class Recorder:
    """Reads one WebSocket connection into ``events`` until cancelled."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if message.get("type") in EVENT_TYPES:
                self.events.append(message)

    async def close(self) -> None:
        self.task.cancel()
        await self.ws.close()


def _key(e: dict[str, Any]) -> tuple[int, str, str]:
    data = e["data"]
    return e["seq"], e["type"], str(data.get("id") or data.get("command_id"))


async def test_a_client_offline_for_ten_seconds_resumes_without_losing_an_event(
    cockpit_process: Callable[..., CockpitProcess], postgres_url: str, nats_url: str,
) -> None:
    cockpit = cockpit_process("ws-resume", database_url=postgres_url, nats_url=nats_url,
                              COCKPIT_C2L__RATE_LIMITS=json.dumps({"MUTE": "1000/minute"}))
    key, run = cockpit.key, uuid.uuid4().hex[:8]
    url = f"{cockpit.ws_base}?api_key={key}"
    stop = asyncio.Event()
    posted = 0

    async with httpx.AsyncClient(base_url=cockpit.base_url, timeout=30) as client:
        await register_agent(client, key, "ws-target")

        async def load() -> None:
            nonlocal posted
            i = 0
            while not stop.is_set():
                r = await client.post("/telemetry", headers=headers(key), json={"messages": _round(run, i)})
                assert r.status_code == 202, r.text
                if i % 5 == 4:  # an operator dismisses a verdict: verdict.updated
                    active = (await client.get("/verdicts", params={"status": "ACTIVE", "limit": 1},
                                               headers=headers(key))).json()["items"]
                    if active:
                        r = await client.patch(f"/verdicts/{active[0]['id']}", headers=headers(key),
                                               json={"status": "DISMISSED"})
                        assert r.status_code == 200, r.text
                if i % 8 == 7:  # and acts: command.confirmed
                    r = await client.post("/commands", headers=headers(key), json={
                        "command_type": "MUTE", "target_agents": ["ws-target"],
                        "parameters": {"duration_seconds": 1}})
                    assert r.status_code == 202, r.text
                posted += 1
                i += 1
                await asyncio.sleep(0.1)

        steady = Recorder(await websockets.connect(url))
        flaky = Recorder(await websockets.connect(url))
        loader = asyncio.create_task(load())
        try:
            await eventually(lambda: _some(flaky, 5), 15, "the first verdicts on the flaky client")
            await flaky.close()
            before = list(flaky.events)
            last = before[-1]["seq"]
            await asyncio.sleep(OFFLINE_SECONDS)
            # Back: a new connection, which is sent live events at once; the client
            # resumes with a subscribe message after the first one ("at any time").
            ws = await websockets.connect(url)
            resumed = Recorder(ws)
            await eventually(lambda: _some(resumed, 1), 5, "a live event on the new connection",
                             interval=0.01)
            await ws.send(json.dumps({"type": "subscribe", "since_seq": last}))
            await asyncio.sleep(2.0)  # live again, under load
        finally:
            stop.set()
            await loader

        # Everything the steady client saw, the resumed one must have too.
        async def caught_up() -> bool:
            return bool(steady.events) and resumed.events[-1]["seq"] >= steady.events[-1]["seq"]
        await eventually(caught_up, 15, "the resumed client to catch up")
        await asyncio.sleep(1.0)
        await steady.close()
        await resumed.close()

    missed = [e for e in steady.events if e["seq"] > last]
    assert len(missed) >= 10, f"the load produced too few events while offline: {len(missed)}"
    assert {e["type"] for e in missed} == EVENT_TYPES
    got = resumed.events
    # Live events sent before the subscribe took effect come first; then the stream
    # restarts right after ``last``: every missed event, in order, nothing skipped.
    start = next((i for i, e in enumerate(got) if e["seq"] == missed[0]["seq"]), None)
    assert start is not None, f"the first missed event (seq {missed[0]['seq']}) never came: " \
                              f"{[e['seq'] for e in got][:20]}"
    assert all(e["seq"] > last for e in got[:start])
    replayed = got[start:]
    assert [e["seq"] for e in replayed] == sorted({e["seq"] for e in replayed})
    assert [_key(e) for e in replayed] == [_key(e) for e in missed]
    assert [e["data"] for e in replayed] == [e["data"] for e in missed]
    # And before the cut, the flaky client had seen exactly what the steady one had.
    assert [_key(e) for e in before] == [_key(e) for e in steady.events if e["seq"] <= last]
    print(f"\nws resume: {posted} telemetry posts, {len(before)} events before the cut, "
          f"{len(missed)} after it: {sorted(Counter(e['type'] for e in missed).items())}")


async def _some(recorder: Recorder, n: int) -> bool:
    return len(recorder.events) >= n
