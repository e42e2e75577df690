"""Agents publishing telemetry straight onto the topic: a real Kafka-protocol broker
(``agent-communications``) and a real NATS JetStream server (``cockpit.telemetry.<fleet>``)
feed the same pipeline as ``POST /telemetry``; duplicates are not analysed twice."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from cockpit.platform.bus import partition_of
from tests.integration.gateway.conftest import Harness, make_harness, settings_for
from tests.integration.gateway.test_scenario import scenario as base_scenario


def scenario() -> tuple[list[dict[str, object]], dict[str, list[str]]]:
    """The acceptance scenario with ids unique to this run: the broker's stream
    outlives a test, and a previous run's leftovers must not mix in."""
    run = uuid.uuid4().hex[:8]
    items, labels = base_scenario()
    return [{**i, "message_id": f"{run}-{i['message_id']}"} for i in items], labels


async def _wait_for_verdicts(h: Harness, categories: set[str], rows: int, timeout: float) -> set[str]:
    seen: set[str] = set()
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        r = await h.client.get("/verdicts", params={"limit": 100}, headers=h.headers("VIEWER"))
        seen = {v["category"] for v in r.json()["items"]}
        if categories <= seen and await h.cockpit.filter.store.count() >= rows:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)  # let redelivered duplicates arrive, to prove they change nothing
    return seen


@pytest.mark.kafka
async def test_raw_telemetry_on_kafka_reaches_verdicts(
    request: pytest.FixtureRequest, tmp_path: Path, kafka_url: str
) -> None:
    from aiokafka import AIOKafkaProducer

    settings = settings_for("sqlite", tmp_path, request, kafka_url=kafka_url)
    async for h in make_harness(settings):
        items, _ = scenario()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_url)
        await producer.start()
        try:
            for item in items + items[:5]:  # the tail is redelivered
                await producer.send_and_wait("agent-communications", json.dumps(item).encode(), key=b"scenario")
        finally:
            await producer.stop()
        seen = await _wait_for_verdicts(h, {"COLLUSION", "INCONSISTENCY", "DECEPTION"}, len(items), 90)
        assert {"COLLUSION", "INCONSISTENCY", "DECEPTION"} <= seen
        assert await h.cockpit.filter.store.count() == len(items)
        metrics = (await h.client.get("/metrics")).text
        analysed = next(line for line in metrics.splitlines() if line.startswith("narrative_filter_requests_total"))
        assert float(analysed.split()[-1]) == len(items)
        assert (await h.client.get("/health")).json()["checks"]["kafka_connected"] is True


@pytest.mark.nats
async def test_raw_telemetry_on_nats_reaches_verdicts(
    request: pytest.FixtureRequest, tmp_path: Path, nats_url: str
) -> None:
    import nats

    settings = settings_for("sqlite", tmp_path, request, nats_url=nats_url)
    async for h in make_harness(settings):
        items, _ = scenario()
        client = await nats.connect(nats_url)
        try:
            js = client.jetstream()
            for item in items:
                await js.publish("cockpit.telemetry.scenario", json.dumps(item).encode())
            # A whole batch in one message, with duplicates inside and across.
            await js.publish("cockpit.telemetry.scenario", json.dumps(items[:10]).encode())
        finally:
            await client.drain()
        seen = await _wait_for_verdicts(h, {"COLLUSION", "INCONSISTENCY", "DECEPTION"}, len(items), 30)
        assert {"COLLUSION", "INCONSISTENCY", "DECEPTION"} <= seen
        assert await h.cockpit.filter.store.count() == len(items)
        assert (await h.client.get("/health")).json()["checks"]["nats_connected"] is True
        # The stream filed the plain subject under the fleet's partition, the one the
        # replicas' leases are computed with.
        client = await nats.connect(nats_url)
        try:
            partition = partition_of("scenario", settings.nats_partitions)
            stored = await client.jetstream().get_last_msg("cockpit-telemetry", f"cockpit.telemetry.{partition}.scenario")
            assert json.loads(stored.data) == items[:10]
        finally:
            await client.drain()


@pytest.mark.parametrize("broker", [pytest.param("nats", marks=pytest.mark.nats),
                                    pytest.param("kafka", marks=pytest.mark.kafka)])
async def test_telemetry_larger_than_a_broker_message_is_analysed(
    request: pytest.FixtureRequest, tmp_path: Path, broker: str
) -> None:
    """A batch whose messages of one fleet add up to more than the broker takes in one
    message (1 MiB), and a message larger than that on its own (within every field's
    limit: 100,000 characters of content and 1,000 target ids of 200, four bytes
    each): all are accepted and all analysed, once; the verdicts cite the large one."""
    url = request.getfixturevalue(f"{broker}_url")
    settings = settings_for("sqlite", tmp_path, request, **{f"{broker}_url": url})
    async for h in make_harness(settings):
        items, labels = scenario()
        for item in items:
            item["attributes"] = {"transcript": "x" * 50_000}  # 2 MB for the fleet
        giant = next(i for i in items if i["message_id"].endswith(labels["d_promise"][0]))
        wide = "\U0001f4e1"  # four bytes in UTF-8
        giant["content"] = f"{giant['content']} {wide * 99_000}"
        giant["target_agent_ids"] = [*giant["target_agent_ids"], *(f"w{i:03d}" + wide * 190 for i in range(950))]
        r = await h.client.post("/telemetry", json={"messages": items}, headers=h.headers())
        assert r.status_code == 202, r.text
        assert r.json() == {"accepted": len(items), "duplicates": 0}

        seen = await _wait_for_verdicts(h, {"COLLUSION", "INCONSISTENCY", "DECEPTION"}, len(items), 60)
        assert {"COLLUSION", "INCONSISTENCY", "DECEPTION"} <= seen
        metrics = (await h.client.get("/metrics")).text
        analysed = next(line for line in metrics.splitlines() if line.startswith("narrative_filter_requests_total"))
        assert float(analysed.split()[-1]) == len(items)
        verdict = (await h.client.get("/verdicts", params={"category": "INCONSISTENCY"},
                                      headers=h.headers("VIEWER"))).json()["items"][0]
        evidence = (await h.client.get(f"/verdicts/{verdict['id']}/evidence", headers=h.headers("VIEWER"))).json()
        cited = {m["message_id"]: m for m in evidence["items"]}
        assert giant["message_id"] in cited
        assert cited[giant["message_id"]]["content"] == giant["content"]
        assert cited[giant["message_id"]]["target_agent_ids"] == giant["target_agent_ids"]


@pytest.mark.parametrize("broker", [pytest.param("nats", marks=pytest.mark.nats),
                                    pytest.param("kafka", marks=pytest.mark.kafka)])
async def test_a_malformed_message_on_the_topic_holds_nothing_back(
    request: pytest.FixtureRequest, tmp_path: Path, broker: str
) -> None:
    """Agents publishing straight onto the topic are not validated at an HTTP edge:
    what is not JSON, or not telemetry (an unknown field, attributes over 64 KiB), is
    dropped and counted, and the telemetry published after it, in the same fleet and
    so the same ordered partition, is analysed as usual."""
    url = request.getfixturevalue(f"{broker}_url")
    settings = settings_for("sqlite", tmp_path, request, **{f"{broker}_url": url})
    async for h in make_harness(settings):
        items, _ = scenario()
        bad = [b"{not json", json.dumps({"message_id": "m", "source_agent_id": "a", "content": "x",
                                         "fleet_id": "scenario", "sneaky": 1}).encode(),
               json.dumps({"message_id": "big", "source_agent_id": "a", "content": "x", "fleet_id": "scenario",
                           "attributes": {"blob": "x" * 70_000}}).encode()]
        bodies = [*bad, *(json.dumps(i).encode() for i in items)]
        if broker == "kafka":
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=url)
            await producer.start()
            try:
                for body in bodies:
                    await producer.send_and_wait("agent-communications", body, key=b"scenario")
            finally:
                await producer.stop()
        else:
            import nats

            client = await nats.connect(url)
            try:
                for body in bodies:
                    await client.jetstream().publish("cockpit.telemetry.scenario", body)
            finally:
                await client.drain()
        seen = await _wait_for_verdicts(h, {"COLLUSION", "INCONSISTENCY", "DECEPTION"}, len(items), 60)
        assert {"COLLUSION", "INCONSISTENCY", "DECEPTION"} <= seen
        assert await h.cockpit.filter.store.count() == len(items)
        metrics = (await h.client.get("/metrics")).text
        rejected = next(line for line in metrics.splitlines()
                        if line.startswith("cockpit_bus_events_rejected_total") and 'channel="telemetry"' in line)
        assert float(rejected.split()[-1]) == len(bad)


@pytest.mark.nats
async def test_an_agent_on_the_topic_cannot_supply_its_own_scores(
    request: pytest.FixtureRequest, tmp_path: Path, nats_url: str
) -> None:
    """Raw telemetry on the topic arrives unstored; Layer 1 results or by-id messages
    in such an envelope are the agent's word, not ingestion's: they are ignored and the
    messages scored here. Before, an agent could file a deception score of 0, or an
    intent no code knows (the batch then claimed and never analysed)."""
    import nats

    settings = settings_for("sqlite", tmp_path, request, nats_url=nats_url)
    async for h in make_harness(settings):
        run = uuid.uuid4().hex[:8]
        lie = {"message_id": f"{run}-lie", "source_agent_id": "mallory", "fleet_id": "forged",
               "target_agent_ids": ["victim"], "content": "I will support you, trust me, I never lie"}
        envelope = {"fleet_id": "forged", "stored": False, "messages": [lie], "stored_ids": [f"{run}-ghost"],
                    "analysis": [{"intent": "x", "intent_confidence": 1.0, "deception_score": 0.0}]}
        client = await nats.connect(nats_url)
        try:
            await client.jetstream().publish("cockpit.telemetry.forged", json.dumps(envelope).encode())
        finally:
            await client.drain()
        for _ in range(100):
            stored = await h.cockpit.filter.store.messages([lie["message_id"]])
            if stored and stored[0]["intent"] is not None:
                break
            await asyncio.sleep(0.1)
        assert stored[0]["intent"] in {"COOPERATIVE", "COMPETITIVE", "NEUTRAL", "AMBIGUOUS"}, stored
        metrics = (await h.client.get("/metrics")).text
        analysed = next(line for line in metrics.splitlines() if line.startswith("narrative_filter_requests_total"))
        assert float(analysed.split()[-1]) == 1
        assert not any(line.startswith("narrative_filter_errors_total ") and float(line.split()[-1]) > 0
                       for line in metrics.splitlines())


@pytest.mark.nats
async def test_a_muted_agents_topic_telemetry_is_quarantined(
    request: pytest.FixtureRequest, tmp_path: Path, nats_url: str
) -> None:
    """A MUTED agent's messages published straight onto the topic are stored
    quarantined and not analysed, as its HTTP telemetry is; before, the topic path
    analysed them."""
    import nats

    from tests.integration.gateway.conftest import register

    settings = settings_for("sqlite", tmp_path, request, nats_url=nats_url)
    async for h in make_harness(settings):
        run = uuid.uuid4().hex[:8]
        agent = f"muted-{run}"
        await register(h, agent, {"kind": "external"})
        r = await h.client.post("/commands", headers=h.headers(), json={
            "command_type": "MUTE", "target_agents": [agent], "parameters": {"duration_seconds": 600}})
        assert r.status_code == 202, r.text
        for _ in range(100):
            if (await h.client.get(f"/commands/{r.json()['command_id']}", headers=h.headers())).json()["status"] \
                    == "COMPLETED":
                break
            await asyncio.sleep(0.1)
        said = {"message_id": f"{run}-muted", "source_agent_id": agent, "fleet_id": f"f-{run}",
                "content": "We attack charlie at dawn"}
        client = await nats.connect(nats_url)
        try:
            await client.jetstream().publish(f"cockpit.telemetry.f-{run}", json.dumps(said).encode())
        finally:
            await client.drain()
        for _ in range(100):
            stored = await h.cockpit.filter.store.messages([said["message_id"]])
            if stored:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        assert stored and stored[0]["quarantined"] is True, stored
        metrics = (await h.client.get("/metrics")).text
        analysed = next(line for line in metrics.splitlines() if line.startswith("narrative_filter_requests_total"))
        assert float(analysed.split()[-1]) == 0


@pytest.mark.nats
async def test_topic_telemetry_with_an_id_another_agent_holds_is_refused(
    request: pytest.FixtureRequest, tmp_path: Path, nats_url: str
) -> None:
    """A message on the topic whose id is already another agent's is neither stored
    nor analysed as that agent's: it is logged and counted as a conflict, while the
    rest of its envelope is taken."""
    import nats

    settings = settings_for("sqlite", tmp_path, request, nats_url=nats_url)
    async for h in make_harness(settings):
        run = uuid.uuid4().hex[:8]
        fleet = f"f-{run}"
        r = await h.client.post("/telemetry", headers=h.headers(), json={
            "message_id": f"{run}-held", "source_agent_id": "first", "fleet_id": fleet, "content": "hi"})
        assert r.status_code == 202
        envelope = [{"message_id": f"{run}-held", "source_agent_id": "second", "fleet_id": fleet,
                     "content": "We attack charlie"},
                    {"message_id": f"{run}-free", "source_agent_id": "second", "fleet_id": fleet,
                     "content": "We attack charlie"}]
        client = await nats.connect(nats_url)
        try:
            await client.jetstream().publish(f"cockpit.telemetry.{fleet}", json.dumps(envelope).encode())
        finally:
            await client.drain()
        for _ in range(100):
            stored = {m["message_id"]: m for m in await h.cockpit.filter.store.messages(
                [f"{run}-held", f"{run}-free"])}
            if len(stored) == 2 and stored[f"{run}-free"]["intent"] is not None:
                break
            await asyncio.sleep(0.1)
        assert stored[f"{run}-held"]["source_agent_id"] == "first"
        assert stored[f"{run}-free"]["source_agent_id"] == "second"
        metrics = (await h.client.get("/metrics")).text
        conflicts = next(line for line in metrics.splitlines()
                         if line.startswith('cockpit_telemetry_ingested_total{outcome="conflict",path="bus"}'))
        assert float(conflicts.split()[-1]) == 1
