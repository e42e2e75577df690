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
