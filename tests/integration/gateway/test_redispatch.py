"""Telemetry stored but lost on the bus is published again and analysed once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from cockpit.events import Telemetry, TelemetryKind
from cockpit.events.base import utcnow
from tests.integration.gateway.conftest import Harness, make_harness, settings_for
from tests.integration.gateway.test_scenario import scenario


async def test_stored_but_undelivered_telemetry_is_redispatched(harness: Harness) -> None:
    items, _ = scenario()
    messages = [Telemetry.model_validate(i) for i in items]
    narrative = harness.cockpit.filter
    # Stored as ingestion does, but the publish "was lost" (never made).
    analysis = narrative.analyse_messages(messages)
    by_id = {m.message_id: a for m, a in zip(messages, analysis, strict=True) if a is not None}
    await narrative.store.insert_new(messages, (), by_id)
    await harness.settle()
    assert (await harness.client.get("/verdicts", headers=harness.headers("VIEWER"))).json()["total"] == 0

    assert await narrative.redispatch_once(older_than=timedelta(0)) == len(items)
    await harness.settle()
    verdicts = (await harness.client.get("/verdicts", headers=harness.headers("VIEWER"))).json()["items"]
    assert {"COLLUSION", "INCONSISTENCY", "DECEPTION"} <= {v["category"] for v in verdicts}
    # Everything is claimed now: a second pass finds nothing, nothing is analysed twice.
    assert await narrative.redispatch_once(older_than=timedelta(0)) == 0
    metrics = (await harness.client.get("/metrics")).text
    line = next(x for x in metrics.splitlines() if x.startswith("narrative_filter_requests_total"))
    assert float(line.split()[-1]) == len(items)



@pytest.mark.parametrize("broker", ["memory", pytest.param("nats", marks=pytest.mark.nats),
                                    pytest.param("kafka", marks=pytest.mark.kafka)])
async def test_a_message_stored_before_the_size_limits_is_still_analysed(
        request: pytest.FixtureRequest, tmp_path: Path, broker: str) -> None:
    """Rows accepted before ``attributes`` and listed ids were bounded are read back
    as they are, from the database and from the broker: a redispatch whose event failed
    validation would be dropped, and the rows published again, on every pass."""
    urls = {} if broker == "memory" else {f"{broker}_url": request.getfixturevalue(f"{broker}_url")}
    async for harness in make_harness(settings_for("sqlite", tmp_path, request, **urls)):
        narrative = harness.cockpit.filter
        old = Telemetry.model_construct(
            message_id=f"old-{uuid.uuid4().hex[:8]}", fleet_id="default", source_agent_id="a",
            target_agent_ids=["b" * 300], conversation_id=None, kind=TelemetryKind.MESSAGE,
            content="I will support you, count on me.", action=None, timestamp=utcnow(), provenance_chain=[],
            attributes={"blob": "x" * 100_000},
        )
        with pytest.raises(ValidationError):
            Telemetry.model_validate(old.model_dump())
        await narrative.store.insert_new([old], (), {})
        assert await narrative.redispatch_once(older_than=timedelta(0)) == 1

        async def analysed(h: Harness = harness) -> tuple[float, str]:
            metrics = (await h.client.get("/metrics")).text
            line = next(x for x in metrics.splitlines() if x.startswith("narrative_filter_requests_total"))
            return float(line.split()[-1]), metrics

        for _ in range(100):
            if (await analysed())[0] >= 1:
                break
            await asyncio.sleep(0.1)
        count, metrics = await analysed()
        assert count == 1
        assert "cockpit_bus_events_rejected_total{" not in metrics
        assert await narrative.redispatch_once(older_than=timedelta(0)) == 0
