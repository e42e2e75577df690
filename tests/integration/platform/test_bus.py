"""The same publish/subscribe behaviour on the in-process bus, NATS JetStream and Kafka."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest

from cockpit.events import (
    Category,
    ExecuteCommand,
    Severity,
    Telemetry,
    TelemetryReceived,
    VerdictDrafted,
    VerdictIssued,
)
from cockpit.platform.bus import (
    Channel,
    EventBus,
    build_bus,
    kafka_partition_of,
    partition_durable,
    partition_of,
    partition_subject,
)


async def _wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for the bus")
        await asyncio.sleep(0.05)


@pytest.fixture(params=["memory", "nats", "kafka"])
def bus_factory(request: pytest.FixtureRequest) -> tuple[str, Callable[[], EventBus]]:
    kind = request.param
    if kind == "memory":
        return kind, lambda: build_bus(None, None)
    if kind == "nats":
        url = request.getfixturevalue("nats_url")
        return kind, lambda: build_bus(url, None)
    url = request.getfixturevalue("kafka_url")
    return kind, lambda: build_bus(None, url)


def _telemetry(fleet: str, n: int) -> TelemetryReceived:
    return TelemetryReceived(
        fleet_id=fleet,
        messages=[
            Telemetry(message_id=f"{fleet}-{i}", fleet_id=fleet, source_agent_id="a", content=f"hello {i}")
            for i in range(n)
        ],
    )


async def test_telemetry_reaches_the_shared_consumer_in_order(bus_factory) -> None:
    kind, factory = bus_factory
    bus = factory()
    fleet = f"fleet-{uuid.uuid4().hex[:8]}"
    received: list[TelemetryReceived] = []

    async def on_telemetry(event: TelemetryReceived) -> None:
        if event.fleet_id == fleet:
            received.append(event)

    bus.subscribe(Channel.TELEMETRY, TelemetryReceived, on_telemetry, shared=True)
    await bus.start()
    try:
        assert all((await bus.health()).values())
        for i in range(3):
            await bus.publish(Channel.TELEMETRY, _telemetry(f"{fleet}", 2 + i), key=fleet)
        # Tansu's consumer-group join takes seconds; the events wait for it.
        await _wait_for(lambda: len(received) == 3, timeout=60 if kind == "kafka" else 10)
        assert [len(e.messages) for e in received] == [2, 3, 4]
        assert received[0].messages[0].content == "hello 0"
    finally:
        await bus.stop()


@pytest.mark.parametrize("kind", ["memory", "nats"])
async def test_fan_out_reaches_every_subscriber(kind: str, request: pytest.FixtureRequest) -> None:
    # Fan-out channels (verdicts, confirmations, directives) live on NATS or in-process.
    bus = build_bus(request.getfixturevalue("nats_url") if kind == "nats" else None, None)
    first: list[VerdictIssued] = []
    second: list[VerdictIssued] = []

    async def one(event: VerdictIssued) -> None:
        first.append(event)

    async def two(event: VerdictIssued) -> None:
        second.append(event)

    bus.subscribe(Channel.VERDICTS, VerdictIssued, one, shared=False)
    bus.subscribe(Channel.VERDICTS, VerdictIssued, two, shared=False)
    await bus.start()
    try:
        await asyncio.sleep(0.2)
        await bus.publish(Channel.VERDICTS, VerdictIssued(created=True, verdict={"id": "v1"}), key="f")
        await _wait_for(lambda: len(first) == 1 and len(second) == 1, timeout=10)
        assert first[0].verdict == {"id": "v1"}
    finally:
        await bus.stop()


@pytest.mark.nats
async def test_jetstream_deduplicates_commands_by_id(nats_url: str) -> None:
    bus = build_bus(nats_url, None)
    seen: list[str] = []
    command_id = uuid.uuid4().hex

    async def on_command(event: ExecuteCommand) -> None:
        seen.append(event.command_id)

    bus.subscribe(Channel.COMMANDS, ExecuteCommand, on_command, shared=True)
    await bus.start()
    try:
        event = ExecuteCommand(command_id=command_id, command_type="MUTE", target_agents=["agent-1"])
        for _ in range(3):
            await bus.publish(Channel.COMMANDS, event, key="agent-1", message_id=command_id)
        await _wait_for(lambda: command_id in seen, timeout=10)
        await asyncio.sleep(1.0)
        assert seen.count(command_id) == 1
        js = bus.routes[Channel.COMMANDS].broker.connection.jetstream()  # type: ignore[attr-defined]
        names = {s.config.name for s in await js.streams_info()}
        assert {"sovereign-commands", "sovereign-confirmations"} <= names
    finally:
        await bus.stop()


@pytest.mark.kafka
async def test_kafka_partition_of_matches_where_the_producer_puts_a_fleet(kafka_url: str) -> None:
    """The filter decides which fleets it owns after a rebalance with
    ``kafka_partition_of``: it must agree with the partition the producer chose."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"partition-check-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_url)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    finally:
        await admin.close()
    bus = build_bus(None, kafka_url)
    transport = bus.routes[Channel.TELEMETRY]
    await bus.start()
    fleets = [f"fleet-{i}" for i in range(24)]
    try:
        for fleet in fleets:
            await transport.broker.publish(b"{}", topic, key=fleet.encode())  # as KafkaTransport.publish
    finally:
        await bus.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_url, auto_offset_reset="earliest",
                                group_id=f"check-{topic}")
    await consumer.start()
    try:
        placed: dict[str, int] = {}
        deadline = asyncio.get_running_loop().time() + 60
        while len(placed) < len(fleets) and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                placed.update({r.key.decode(): r.partition for r in records})
    finally:
        await consumer.stop()
    assert placed == {fleet: kafka_partition_of(fleet, 4) for fleet in fleets}
    assert len(set(placed.values())) > 1  # the keys really were spread


async def test_a_batch_subscriber_takes_what_waits_in_order_and_once(bus_factory) -> None:
    """The verdict engine's subscription: events that queued up while it was busy (or
    before it started) arrive together, in publication order, each once."""
    kind, factory = bus_factory
    fleet = f"fleet-{uuid.uuid4().hex[:8]}"
    drafts = [
        VerdictDrafted(fingerprint=f"{fleet}-{i}", fleet_id=fleet, category=Category.DECEPTION,
                       severity=Severity.LOW, title=f"draft {i}", agents_involved=["a"], confidence=0.5)
        for i in range(120)
    ]
    batches: list[list[str]] = []

    async def on_drafts(events: list[VerdictDrafted]) -> None:
        ours = [e.fingerprint for e in events if e.fleet_id == fleet]
        if ours:
            batches.append(ours)
        await asyncio.sleep(0.01)  # a transaction's worth of work

    bus = factory()
    bus.subscribe(Channel.ANALYSIS, VerdictDrafted, on_drafts, shared=True, batch=True)
    publisher = bus if kind == "memory" else factory()
    await publisher.start()
    try:
        if publisher is not bus:  # brokers keep them until the subscriber comes
            for d in drafts:
                await publisher.publish(Channel.ANALYSIS, d, key=fleet)
        await bus.start()
        if publisher is bus:
            for d in drafts:
                await bus.publish(Channel.ANALYSIS, d, key=fleet)
        await _wait_for(lambda: sum(map(len, batches)) >= len(drafts), timeout=60 if kind == "kafka" else 10)
        assert [f for batch in batches for f in batch] == [d.fingerprint for d in drafts]
        assert max(map(len, batches)) > 1, batches
    finally:
        await bus.stop()
        if publisher is not bus:
            await publisher.stop()


@pytest.mark.nats
async def test_the_unpartitioned_telemetry_consumer_of_earlier_releases_is_retired(nats_url: str) -> None:
    """Before partitions, one durable consumer ``narrative-filter`` read all telemetry.
    After an upgrade nobody reads it: starting the bus deletes it."""
    from nats.js.api import ConsumerConfig
    from nats.js.errors import NotFoundError

    bus = build_bus(nats_url, None)
    await bus.start()
    js = bus.routes[Channel.TELEMETRY].broker.connection.jetstream()  # type: ignore[attr-defined]
    try:
        await js.add_consumer("cockpit-telemetry", ConsumerConfig(
            durable_name="narrative-filter", filter_subject="cockpit.telemetry.>"))
        assert (await js.consumer_info("cockpit-telemetry", "narrative-filter")).name == "narrative-filter"
    finally:
        await bus.stop()
    restarted = build_bus(nats_url, None)
    await restarted.start()
    try:
        js = restarted.routes[Channel.TELEMETRY].broker.connection.jetstream()  # type: ignore[attr-defined]
        with pytest.raises(NotFoundError):
            await js.consumer_info("cockpit-telemetry", "narrative-filter")
    finally:
        await restarted.stop()


@pytest.mark.nats
async def test_a_partition_message_a_vanished_consumer_held_reaches_the_next_owner_within_a_lease(
        nats_url: str) -> None:
    """A replica that fetched a fleet's message and stopped reading without handling it
    (it handed the partition over mid-pull, or died): the next owner gets the message
    once a lease has passed, not after JetStream's default 30 s, even from a consumer
    an earlier release made with that default. A message handled for longer than a
    lease is not delivered a second time meanwhile."""
    from nats.js.api import ConsumerConfig

    lease = 2.0
    fleet = f"fleet-{uuid.uuid4().hex[:8]}"
    stream, durable = "cockpit-telemetry", partition_durable(Channel.TELEMETRY, partition_of(fleet, 16))
    publisher = build_bus(nats_url, None, nats_lease_seconds=lease)
    await publisher.start()
    js = publisher.routes[Channel.TELEMETRY].broker.connection.jetstream()  # type: ignore[attr-defined]
    deliveries: list[float] = []

    async def on_telemetry(event: TelemetryReceived) -> None:
        if event.fleet_id == fleet:
            deliveries.append(asyncio.get_running_loop().time())
            await asyncio.sleep(3 * lease)  # longer than the acknowledgement deadline

    consumer = build_bus(nats_url, None, nats_lease_seconds=lease)
    consumer.subscribe(Channel.TELEMETRY, TelemetryReceived, on_telemetry, shared=True)
    try:
        await js.add_consumer(stream, ConsumerConfig(
            durable_name=durable, filter_subject=partition_subject(Channel.TELEMETRY, partition_of(fleet, 16)),
            ack_wait=30))
        await publisher.publish(Channel.TELEMETRY, _telemetry(fleet, 1), key=fleet)
        # The vanished replica: it pulls the message (and whatever else waited there)
        # and goes away without acknowledging it.
        pull = await js.pull_subscribe_bind(durable=durable, stream=stream)
        held: list[str] = []
        while not any(subject.endswith(f".{fleet}") for subject in held):
            held += [m.subject for m in await pull.fetch(batch=100, timeout=5)]
        await pull.unsubscribe()
        vanished = asyncio.get_running_loop().time()

        await consumer.start()
        assert (await js.consumer_info(stream, durable)).config.ack_wait == lease
        await _wait_for(lambda: len(deliveries) == 1, timeout=10)
        assert deliveries[0] - vanished < 2 * lease + 1.0
        await asyncio.sleep(4 * lease)  # its handling (3 leases) and one more
        assert len(deliveries) == 1
    finally:
        await consumer.stop()
        await publisher.stop()


@pytest.mark.nats
async def test_a_replica_handing_partitions_over_keeps_its_heartbeat_and_its_other_leases(
        nats_url: str) -> None:
    """While a replica hands partitions over to one that joined, it waits for their
    consumers to finish what they fetched (seconds under load). Meanwhile it must stay
    alive to the others and keep its own share: before, its heartbeat and renewals
    waited behind that handover, the heartbeat expired, and the newcomer, counting one
    replica, took every partition (the CI flake of the replicas' join test). And the
    partition being handed over stays its own until its consumer is done: its lease
    expired meanwhile, and the newcomer started on it beside the old owner."""
    from cockpit.platform.bus import LEASE_BUCKET, PartitionLeases

    lease, partitions = 1.5, 16
    fleet = next(f for f in (f"slow-{uuid.uuid4().hex[:8]}" for _ in range(1000))
                 if partition_of(f, partitions) >= partitions // 2)  # among those handed over
    gate, started = asyncio.Event(), asyncio.Event()

    async def on_telemetry(event: TelemetryReceived) -> None:
        if event.fleet_id == fleet:
            started.set()
            await gate.wait()

    def leases_of(bus: EventBus) -> PartitionLeases:
        return bus.routes[Channel.TELEMETRY].leases[0]  # type: ignore[attr-defined]

    a = build_bus(nats_url, None, instance_id=f"a-{uuid.uuid4().hex[:6]}", nats_lease_seconds=lease)
    b = build_bus(nats_url, None, instance_id=f"b-{uuid.uuid4().hex[:6]}", nats_lease_seconds=lease)
    for bus in (a, b):
        bus.subscribe(Channel.TELEMETRY, TelemetryReceived, on_telemetry, shared=True)
    await a.start()
    try:
        await _wait_for(lambda: len(leases_of(a).owned) == partitions, timeout=20)
        await a.publish(Channel.TELEMETRY, _telemetry(fleet, 1), key=fleet)
        await asyncio.wait_for(started.wait(), timeout=10)
        await b.start()
        kv = await a.routes[Channel.TELEMETRY].broker.connection.jetstream().key_value(  # type: ignore[attr-defined]
            LEASE_BUCKET)
        slow = partition_of(fleet, partitions)
        for _ in range(8):  # four leases' time, the handover blocked all along
            await asyncio.sleep(lease / 2)
            await kv.get(f"replica.{leases_of(a).instance}")  # raises once expired
            assert len(leases_of(b).owned) <= partitions // 2, sorted(leases_of(b).owned)
            assert set(leases_of(a).owned) == set(range(partitions // 2))
            # The partition whose consumer is still busy is not the newcomer's yet: it
            # would start on later messages beside the one being handled.
            assert slow not in leases_of(b).owned
        gate.set()
        await _wait_for(lambda: slow in leases_of(b).owned, timeout=20)
    finally:
        gate.set()
        await b.stop()
        await a.stop()


@pytest.mark.nats
async def test_a_partition_message_waiting_for_an_overdue_renewal_is_not_overtaken(
        nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two messages of a fleet in one fetch; the first finds its lease overdue and
    waits for the renewal, the second finds it renewed meanwhile (the tick got there
    first). The second still waits its turn: the fleet's messages are handled in the
    order they were published (a promise before the attack that breaks it)."""
    from cockpit.platform.bus import PartitionLeases

    fleet = f"fleet-{uuid.uuid4().hex[:8]}"
    partition = partition_of(fleet, 16)
    renewal = asyncio.Event()
    checks: list[int] = []
    valid, renew = PartitionLeases.valid, PartitionLeases.renew

    def overdue_once(self: PartitionLeases, p: int) -> bool:
        if p == partition:
            checks.append(p)
            if len(checks) == 1:  # the first message's check
                return False
        return valid(self, p)

    async def slow_renewal(self: PartitionLeases, p: int, *, lapsed_only: bool = False) -> bool:
        if p == partition and lapsed_only:
            await renewal.wait()
        return await renew(self, p, lapsed_only=lapsed_only)

    monkeypatch.setattr(PartitionLeases, "valid", overdue_once)
    monkeypatch.setattr(PartitionLeases, "renew", slow_renewal)
    publisher = build_bus(nats_url, None)
    await publisher.start()
    handled: list[str] = []

    async def on_telemetry(event: TelemetryReceived) -> None:
        if event.fleet_id == fleet:
            handled.append(event.messages[0].message_id)

    consumer = build_bus(nats_url, None)
    consumer.subscribe(Channel.TELEMETRY, TelemetryReceived, on_telemetry, shared=True)
    try:
        # Both wait in the stream: the consumer's first fetch takes them together.
        await publisher.publish(Channel.TELEMETRY, _telemetry(fleet, 1), key=fleet)
        await publisher.publish(Channel.TELEMETRY, TelemetryReceived(fleet_id=fleet, messages=[
            Telemetry(message_id=f"{fleet}-1", fleet_id=fleet, source_agent_id="a", content="then")]), key=fleet)
        await consumer.start()
        leases = consumer.routes[Channel.TELEMETRY].leases[0]  # type: ignore[attr-defined]
        # Both delivered: the first waits for its renewal, the second behind it (or,
        # overtaking it, already handled).
        await _wait_for(lambda: len(leases.in_flight) == 2 or bool(handled), timeout=10)
        assert handled == []
        renewal.set()
        await _wait_for(lambda: len(handled) == 2, timeout=10)
        assert handled == [f"{fleet}-0", f"{fleet}-1"]
    finally:
        await consumer.stop()
        await publisher.stop()


async def test_in_process_telemetry_takes_turns_between_fleets() -> None:
    """Embedded, a busy fleet holds back its own publishers, not the other fleets': a
    quiet fleet's event is queued at once and handled after one event of the busy
    fleet, not after all of them; each fleet's events stay in order."""
    bus = build_bus(None, None)
    handled: list[str] = []
    release = asyncio.Event()

    async def on_telemetry(event: TelemetryReceived) -> None:
        await release.wait()  # analysis is slower than ingestion
        handled.append(event.messages[0].message_id)

    bus.subscribe(Channel.TELEMETRY, TelemetryReceived, on_telemetry, shared=True)
    await bus.start()
    try:
        def event(fleet: str, i: int) -> TelemetryReceived:
            return TelemetryReceived(fleet_id=fleet, messages=[
                Telemetry(message_id=f"{fleet}-{i}", fleet_id=fleet, source_agent_id="a", content="hi")])

        # The busy fleet fills the queue (16) behind the event being handled...
        for i in range(17):
            await asyncio.wait_for(bus.publish(Channel.TELEMETRY, event("busy", i), key="busy"), 1)
        # ...so its next publisher waits for room,
        held = asyncio.create_task(bus.publish(Channel.TELEMETRY, event("busy", 17), key="busy"))
        await asyncio.sleep(0.05)
        assert not held.done()
        # while the quiet fleet's event is queued at once.
        await asyncio.wait_for(bus.publish(Channel.TELEMETRY, event("quiet", 0), key="quiet"), 1)
        release.set()
        await asyncio.wait_for(held, 5)
        await asyncio.wait_for(bus.drain(), 5)
        assert handled[:3] == ["busy-0", "busy-1", "quiet-0"]
        assert [m for m in handled if m.startswith("busy")] == [f"busy-{i}" for i in range(18)]
    finally:
        await bus.stop()


async def test_the_in_process_bus_stops_while_a_consumer_is_stuck_with_a_full_queue() -> None:
    """A consumer waiting on something that does not come back (the database, during
    an outage) with its queue full: stopping waits a bounded time, then cancels it.
    Before, the stop marker waited for room in the queue, and the shutdown hung for as
    long as the consumer did."""
    from cockpit.platform.bus import MemoryTransport

    transport = MemoryTransport(queue_size=1, stop_timeout=0.5)
    bus = EventBus(dict.fromkeys(Channel, transport))
    never, handling = asyncio.Event(), asyncio.Event()
    cancelled: list[bool] = []

    async def on_verdict(event: VerdictIssued) -> None:
        handling.set()
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    bus.subscribe(Channel.VERDICTS, VerdictIssued, on_verdict, shared=False)
    await bus.start()
    verdict = VerdictIssued(created=True, verdict={"id": "v"})
    await bus.publish(Channel.VERDICTS, verdict, key="f")  # being handled, for ever
    await handling.wait()
    await bus.publish(Channel.VERDICTS, verdict, key="f")  # fills the queue
    await asyncio.wait_for(bus.stop(), timeout=10)
    assert cancelled == [True]
