"""A message id belongs to the first agent that used it: another agent's message with
that id is refused (409, OTLP rejected span) and reported, never acknowledged as a
duplicate. Before, it was answered ``duplicates: 1`` and silently never stored, so an
agent that used another's ids first made that agent's messages vanish."""

from __future__ import annotations

import asyncio
import uuid

from tests.integration.gateway.conftest import Harness, register


async def test_an_id_held_by_another_agent_is_refused_not_taken_for_a_duplicate(harness: Harness) -> None:
    h = harness
    run = uuid.uuid4().hex[:8]
    squatter = (await register(h, f"mallory-{run}", {"kind": "external"}))["token"]
    victim = (await register(h, f"alice-{run}", {"kind": "external"}))["token"]
    taken = f"{run}-1"
    r = await h.client.post("/telemetry", headers={"X-API-Key": squatter},
                            json={"message_id": taken, "source_agent_id": f"mallory-{run}", "content": "noise"})
    assert r.status_code == 202 and r.json() == {"accepted": 1, "duplicates": 0}

    mine = {"message_id": taken, "source_agent_id": f"alice-{run}", "content": "We attack charlie at dawn"}
    r = await h.client.post("/telemetry", headers={"X-API-Key": victim}, json=mine)
    assert r.status_code == 409, r.text
    assert r.json()["extra"] == [{"key": "message_id", "message": "message_id already used by another agent's message"}]

    # In a batch: the conflicting message is named by its place; the others are stored.
    batch = [{**mine, "message_id": f"{run}-2"}, mine, {**mine, "message_id": f"{run}-3"}]
    r = await h.client.post("/telemetry", headers={"X-API-Key": victim}, json={"messages": batch})
    assert r.status_code == 409, r.text
    assert [e["key"] for e in r.json()["extra"]] == ["messages.1.message_id"]
    assert "stored: 2" in r.json()["detail"]
    stored = {m["message_id"]: m["source_agent_id"]
              for m in await h.cockpit.filter.store.messages([taken, f"{run}-2", f"{run}-3"])}
    assert stored == {taken: f"mallory-{run}", f"{run}-2": f"alice-{run}", f"{run}-3": f"alice-{run}"}

    # The owner's own re-send stays an idempotent duplicate; so does the victim's.
    r = await h.client.post("/telemetry", headers={"X-API-Key": squatter},
                            json={"message_id": taken, "source_agent_id": f"mallory-{run}", "content": "noise"})
    assert r.status_code == 202 and r.json() == {"accepted": 0, "duplicates": 1}
    r = await h.client.post("/telemetry", headers={"X-API-Key": victim}, json=batch[0])
    assert r.status_code == 202 and r.json() == {"accepted": 0, "duplicates": 1}

    metrics = (await h.client.get("/metrics")).text
    conflicts = next(line for line in metrics.splitlines()
                     if line.startswith('cockpit_telemetry_ingested_total{outcome="conflict",path="http"}'))
    assert float(conflicts.split()[-1]) == 2


async def test_concurrent_requests_with_one_id_from_two_agents(harness: Harness) -> None:
    """Single requests stored together (group commit) are told apart by their sender:
    one is stored, the other refused, whatever the order."""
    h = harness
    run = uuid.uuid4().hex[:8]

    async def post(agent: str) -> int:
        r = await h.client.post("/telemetry", headers=h.headers(),
                                json={"message_id": f"{run}-same", "source_agent_id": agent, "content": "hi"})
        return r.status_code

    codes = await asyncio.gather(*(post(f"agent-{i % 2}") for i in range(20)))
    stored = await h.cockpit.filter.store.messages([f"{run}-same"])
    assert len(stored) == 1
    owner = stored[0]["source_agent_id"]
    assert [c for i, c in enumerate(codes) if f"agent-{i % 2}" == owner] == [202] * 10
    assert [c for i, c in enumerate(codes) if f"agent-{i % 2}" != owner] == [409] * 10


async def test_an_otlp_span_with_a_held_id_is_a_rejected_span(harness: Harness) -> None:
    h = harness
    trace = uuid.uuid4().hex
    r = await h.client.post("/telemetry", headers=h.headers(), json={
        "message_id": f"otlp-{trace}-eee19b7ec3c1b174", "source_agent_id": "first", "content": "x"})
    assert r.status_code == 202
    span = {
        "traceId": trace, "spanId": "eee19b7ec3c1b174", "name": "chat",
        "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000",
        "attributes": [
            {"key": "gen_ai.agent.id", "value": {"stringValue": "second"}},
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.input.messages", "value": {"stringValue": "we attack at dawn"}},
        ],
    }
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    r = await h.client.post("/v1/traces", headers=h.headers(), json=body)
    assert r.status_code == 200, r.text
    assert r.json()["partialSuccess"]["rejectedSpans"] == 1, r.text
    assert "already used by another agent" in r.json()["partialSuccess"]["errorMessage"]
