"""Telemetry stored but lost on the bus is published again and analysed once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from cockpit.events import Telemetry, TelemetryKind
from cockpit.events.base import utcnow
from tests.integration.gateway.conftest import Harness
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


async def test_a_message_stored_before_the_size_limits_is_still_analysed(harness: Harness) -> None:
    """Rows accepted before ``attributes`` and listed ids were bounded are read back as
    they are: a redispatch that re-validated them would fail on each pass, for ever."""
    narrative = harness.cockpit.filter
    old = Telemetry.model_construct(
        message_id="old", fleet_id="default", source_agent_id="a", target_agent_ids=["b" * 300],
        conversation_id=None, kind=TelemetryKind.MESSAGE, content="I will support you, count on me.",
        action=None, timestamp=utcnow(), provenance_chain=[], attributes={"blob": "x" * 100_000},
    )
    with pytest.raises(ValidationError):
        Telemetry.model_validate(old.model_dump())
    await narrative.store.insert_new([old], (), {})
    assert await narrative.redispatch_once(older_than=timedelta(0)) == 1
    await harness.settle()
    assert await narrative.redispatch_once(older_than=timedelta(0)) == 0  # analysed, not waiting
    metrics = (await harness.client.get("/metrics")).text
    line = next(x for x in metrics.splitlines() if x.startswith("narrative_filter_requests_total"))
    assert float(line.split()[-1]) == 1
