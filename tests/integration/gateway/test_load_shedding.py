"""Load shedding: past the bound on bulk requests in flight, telemetry and read queries
get a fast 503 with Retry-After; commands, directives and health are still served;
everything acknowledged is stored, nothing refused is; service resumes at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cockpit.gateway.admission import is_sheddable
from cockpit.settings import load_settings
from tests.integration.gateway.conftest import Harness, make_harness
from tests.integration.security.conftest import final, register


@pytest.fixture
async def narrow(tmp_path: Path) -> AsyncIterator[Harness]:
    """At most two telemetry or read requests in progress."""
    async for h in make_harness(load_settings(data_dir=tmp_path, gateway={"max_inflight": 2})):
        yield h


def _batch(prefix: str, n: int = 500) -> bytes:
    return json.dumps({"messages": [
        {"message_id": f"{prefix}-{i}", "source_agent_id": "worker", "content": f"status report {i}"}
        for i in range(n)
    ]}).encode()


async def _fill_the_bound(h: Harness, headers: dict[str, str], prefix: str,
                          release: asyncio.Event) -> list[asyncio.Task[Any]]:
    """Two telemetry posts whose bodies trickle in until ``release``: the bound of two
    requests in progress is full while they last."""

    async def trickle(body: bytes) -> AsyncIterator[bytes]:
        yield body[:100]
        await release.wait()
        yield body[100:]

    slow = [asyncio.create_task(h.client.post("/telemetry", content=trickle(_batch(f"{prefix}{i}")),
                                              headers=headers)) for i in range(2)]
    for _ in range(500):
        if h.cockpit.metrics.registry.get_sample_value("cockpit_http_requests_in_flight") == 2:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the two trickling requests never filled the bound")
    return slow


async def test_past_the_bound_bulk_is_shed_and_the_kill_switch_is_not(narrow: Harness) -> None:
    h = narrow
    token = await register(h, "worker")
    agent = {"X-API-Key": token, "content-type": "application/json"}
    release = asyncio.Event()
    slow = await _fill_the_bound(h, agent, "slow", release)
    try:
        shed = await h.client.post("/telemetry", content=_batch("shed"), headers=agent)
        assert shed.status_code == 503, shed.text
        assert shed.headers["retry-after"] == "1"
        assert shed.json() == {"status_code": 503, "detail": "overloaded, retry later"}
        assert (await h.client.get("/verdicts", headers=h.headers("VIEWER"))).status_code == 503

        # Never shed: the kill switch and what it needs.
        r = await h.client.post("/commands", headers=h.headers(),
                                json={"command_type": "MUTE", "target_agents": ["worker"]})
        assert r.status_code == 202, r.text
        assert (await final(h, r.json()["command_id"]))["status"] == "COMPLETED"
        assert (await h.client.get("/agents/worker/directives", headers={"X-API-Key": token})).status_code == 200
        assert (await h.client.get("/commands", headers=h.headers("VIEWER"))).status_code == 200
        assert (await h.client.get("/health")).status_code == 200
    finally:
        release.set()
    assert [(await t).status_code for t in slow] == [202, 202]

    # The refused batch was not stored; its retry is.
    assert not await _stored("shed", h)
    r = await h.client.post("/telemetry", content=_batch("shed"), headers=agent)
    assert r.status_code == 202 and r.json()["accepted"] == 500
    assert await _stored("shed", h) == 500 and await _stored("slow0", h) == 500
    metrics = (await h.client.get("/metrics")).text
    assert 'cockpit_http_shed_total{method="POST"} 1.0' in metrics
    assert 'cockpit_http_shed_total{method="GET"} 1.0' in metrics


async def _stored(prefix: str, h: Harness) -> int:
    from sqlalchemy import text

    async with h.cockpit.db.reader.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM telemetry WHERE message_id LIKE :p"),
                                     {"p": f"{prefix}-%"}) or 0)


async def test_a_burst_gets_stored_whole_or_refused_whole(narrow: Harness) -> None:
    h = narrow
    headers = {**h.headers(), "content-type": "application/json"}
    answers = await asyncio.gather(*(h.client.post("/telemetry", content=_batch(f"b{i}"), headers=headers)
                                     for i in range(12)))
    assert {r.status_code for r in answers} <= {202, 503} and any(r.status_code == 202 for r in answers)
    for i, r in enumerate(answers):
        assert await _stored(f"b{i}", h) == (500 if r.status_code == 202 else 0)


async def test_the_agent_sdk_retries_a_shed_message_after_retry_after(narrow: Harness) -> None:
    from cockpit.c2l.client import AsyncCockpitAgentClient

    h = narrow
    release = asyncio.Event()
    slow = await _fill_the_bound(h, {**h.headers(), "content-type": "application/json"}, "hold", release)
    agent = AsyncCockpitAgentClient(h.base_url, api_key=h.keys["SOVEREIGN_OPERATOR"])
    try:
        await agent.register("sdk-agent", runtime={"kind": "external"})  # it runs in Cockpit's process
        sending = asyncio.create_task(agent.send("status nominal", message_id="sdk-1"))
        for _ in range(500):  # the first attempt is refused...
            if h.cockpit.metrics.registry.get_sample_value("cockpit_http_shed_total", {"method": "POST"}):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the SDK's first attempt was never shed: its retry went untested")
        release.set()  # ...and the retry, a second later, finds room
        assert await sending == {"accepted": 1, "duplicates": 0}
    finally:
        release.set()
        await agent.aclose()
        await asyncio.gather(*slow)
    assert await _stored("sdk", h) == 1


def test_what_is_sheddable() -> None:
    assert is_sheddable("POST", "/telemetry") and is_sheddable("POST", "/v1/traces")
    assert is_sheddable("GET", "/verdicts") and is_sheddable("GET", "/verdicts/abc/evidence")
    assert is_sheddable("GET", "/audits") and is_sheddable("GET", "/stats") and is_sheddable("GET", "/alliances/graph")
    for method, path in (("POST", "/commands"), ("POST", "/commands/x/approve"), ("GET", "/agents/a/directives"),
                         ("POST", "/agents"), ("GET", "/health"), ("GET", "/metrics"), ("PATCH", "/verdicts/x"),
                         ("GET", "/audits/verify"), ("GET", "/commands/x")):
        assert not is_sheddable(method, path), (method, path)


def test_which_answers_the_sdk_retries() -> None:
    import httpx

    from cockpit.c2l.client import SEND_ATTEMPTS, _retry_wait

    def answer(status: int, **headers: str) -> httpx.Response:
        return httpx.Response(status, headers=headers)

    assert _retry_wait(answer(503, **{"retry-after": "1"}), 0) == 1.0
    assert _retry_wait(answer(503, **{"retry-after": "3600"}), 0) == 10.0  # capped
    assert _retry_wait(answer(503), 2) == 2.0  # no Retry-After: exponential backoff
    assert _retry_wait(answer(503), SEND_ATTEMPTS - 1) is None  # out of attempts
    for settled in (202, 400, 403, 413, 429, 500):
        assert _retry_wait(answer(settled), 0) is None
