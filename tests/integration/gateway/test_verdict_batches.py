"""The verdict engine takes drafts in batches: a batch has the same outcome as its
drafts applied one by one, each situation is written and announced once, in its
final state, and a WebSocket client sees that state."""

from __future__ import annotations

import json

import websockets

from cockpit.events.verdict import Category, Severity, VerdictDrafted
from tests.integration.gateway.conftest import Harness


def draft(agent: str, evidence: list[str], severity: Severity = Severity.MEDIUM,
          confidence: float = 0.6) -> VerdictDrafted:
    return VerdictDrafted(
        fingerprint=f"batch-{agent}", fleet_id="batches", category=Category.DECEPTION, severity=severity,
        title=f"{agent} is lying", agents_involved=[agent], evidence_chain=evidence,
        confidence=confidence, recommended_action="MONITOR",
    )


async def test_a_batch_writes_and_announces_each_situation_once_in_its_final_state(harness: Harness) -> None:
    h = harness
    engine = h.cockpit.verdicts
    await engine.on_drafts([draft("old", ["o-1"]), draft("same", ["s-1"])])
    await h.settle()
    async with websockets.connect(h.ws_url()) as ws:
        await engine.on_drafts([
            draft("new", ["n-1"]),
            draft("old", ["o-1", "o-2"]),
            draft("new", ["n-1", "n-2"], Severity.CRITICAL, 0.9),
            draft("same", ["s-1"]),  # adds nothing
            draft("new", ["n-3"], Severity.LOW, 0.7),  # evidence appended, severity kept
        ])
        await h.settle()
        events = []
        while len(events) < 2:
            message = json.loads(await ws.recv())
            if message["type"].startswith("verdict."):
                events.append(message)

    assert [(e["type"], e["data"]["agents_involved"]) for e in events] == [
        ("verdict.created", ["new"]), ("verdict.updated", ["old"]),
    ]
    created = events[0]["data"]
    assert created["evidence_chain"] == ["n-1", "n-2", "n-3"]
    assert created["severity"] == "CRITICAL" and created["confidence"] == 0.7
    r = await h.client.get("/verdicts", params={"fleet_id": "batches"}, headers=h.headers("VIEWER"))
    stored = {v["agents_involved"][0]: v for v in r.json()["items"]}
    assert r.json()["total"] == 3  # one verdict per situation
    assert stored["new"] == created
    assert stored["old"]["evidence_chain"] == ["o-1", "o-2"] == events[1]["data"]["evidence_chain"]
    assert stored["same"]["evidence_chain"] == ["s-1"]
    r = await h.client.get("/verdicts", params={"agent_id": "new"}, headers=h.headers("VIEWER"))
    assert [v["id"] for v in r.json()["items"]] == [created["id"]]


async def test_a_draft_observed_before_its_verdict_was_closed_does_not_reopen_it(harness: Harness) -> None:
    """An operator dismisses a verdict while a draft of its situation is on its way (or
    is redelivered after an outage): that draft is late news of what was dismissed.
    Before, it opened a new ACTIVE verdict with the evidence just dismissed. A draft
    from telemetry received after the dismissal is a new occurrence and opens one."""
    from datetime import timedelta

    from cockpit.platform.db import utcnow

    h = harness
    engine = h.cockpit.verdicts
    before = utcnow()
    await engine.on_drafts([draft("liar", ["l-1"]).model_copy(update={"observed_at": before})])

    async def active() -> list[dict]:
        r = await h.client.get("/verdicts", params={"status": "ACTIVE", "agent_id": "liar"},
                               headers=h.headers("VIEWER"))
        return r.json()["items"]

    (verdict,) = await active()
    r = await h.client.patch(f"/verdicts/{verdict['id']}", json={"status": "DISMISSED"}, headers=h.headers())
    assert r.status_code == 200, r.text
    await engine.on_drafts([draft("liar", ["l-1", "l-2"]).model_copy(update={"observed_at": before})])
    assert await active() == []
    await engine.on_drafts([draft("liar", ["l-3"]).model_copy(
        update={"observed_at": utcnow() + timedelta(milliseconds=1)})])
    (reopened,) = await active()
    assert reopened["id"] != verdict["id"] and reopened["evidence_chain"] == ["l-3"]
