"""Telemetry stored but lost on the bus is published again and analysed once."""

from __future__ import annotations

from datetime import timedelta

from cockpit.events import Telemetry
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
