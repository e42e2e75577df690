"""Concurrent single-message requests are stored together, and each still gets its
own honest answer (accepted vs duplicate), with nothing lost."""

from __future__ import annotations

import asyncio

from tests.integration.gateway.conftest import Harness


async def test_concurrent_requests_share_commits_and_count_correctly(harness: Harness) -> None:
    ids = [f"gc-{i % 40}" for i in range(100)]  # 40 distinct ids, 60 repeats across requests

    async def post(mid: str) -> dict[str, int]:
        r = await harness.client.post(
            "/telemetry", headers=harness.headers(),
            json={"message_id": mid, "source_agent_id": "agent-x", "content": f"status {mid}"},
        )
        assert r.status_code == 202, r.text
        return r.json()

    answers = await asyncio.gather(*(post(mid) for mid in ids))
    assert sum(a["accepted"] for a in answers) == 40
    assert sum(a["duplicates"] for a in answers) == 60
    assert all(a["accepted"] + a["duplicates"] == 1 for a in answers)
    await harness.settle()
    assert await harness.cockpit.filter.store.count() == 40
    stored = await harness.cockpit.filter.store.messages(sorted(set(ids)))
    assert all(m["intent"] is not None for m in stored)
