"""The event bus every context uses, and the only module that knows concrete brokers.

One small interface (:class:`EventBus`): ``subscribe(channel, event_type, handler,
shared=...)`` before start, ``publish(channel, event, key=..., message_id=...)`` after.
Each logical :class:`Channel` is bound to a transport from settings:

- embedded: everything in-process (:class:`MemoryTransport`);
- ``nats_url``: FastStream ``NatsBroker`` with JetStream streams ``sovereign-commands``
  and ``sovereign-confirmations`` (created idempotently at start), plus telemetry and
  analysis streams when no Kafka is configured;
- ``kafka_url``: FastStream ``KafkaBroker`` for telemetry (``agent-communications``)
  and analysis (``narrative-analysis``, consumer group ``verdict-engine``).

``shared=True`` subscribers split the work between replicas (durable consumer /
consumer group); ``shared=False`` subscribers each see every event (fan-out).
``batch=True`` subscribers take a list of the events waiting (at most
:data:`MAX_BATCH`): one call, one transaction, for what arrived while the last call ran.

Telemetry is analysed with per-fleet state, so each fleet must stay on one replica.
Kafka does that with its consumer group (partitioned by key; a rebalance listener
reports the partitions). On NATS the telemetry stream files each fleet's subject
under a partition of the fleet (``cockpit.telemetry.<partition>.<fleet>``, a subject
transform: publishers are unchanged) and each partition is consumed by the replica
holding its lease (:class:`PartitionLeases`). A subscriber given ``on_assign`` hears
which partitions it owns before their messages reach it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol, TypeVar, overload

from loguru import logger
from pydantic import BaseModel, ValidationError

from cockpit.platform.batching import GroupCommit

__all__ = [
    "Assignment", "Channel", "EventBus", "EventTooLarge", "Handler", "MemoryTransport", "PublishFailed", "build_bus",
    "partition_of",
]

E = TypeVar("E", bound=BaseModel)
Handler = Callable[[Any], Awaitable[None]]


class PublishFailed(Exception):
    """The channel's broker did not take the event (unreachable, timed out): whatever
    the transport raised, under one name, so callers need not know the broker."""


class EventTooLarge(Exception):
    """The event, encoded, is more than the channel's broker takes in one message
    (NATS's ``max_payload``, 1 MiB by default; a Kafka request's size). Waiting will
    not help: the publisher splits it, or sends a reference instead."""


class Channel(StrEnum):
    """Logical channels (DESIGN.md section 3)."""

    TELEMETRY = "telemetry"
    ANALYSIS = "analysis"
    VERDICTS = "verdicts"
    COMMANDS = "commands"
    CONFIRMATIONS = "confirmations"
    DIRECTIVES = "directives"


#: consumer group / durable name of each channel's shared subscriber
GROUPS = {
    Channel.TELEMETRY: "narrative-filter",
    Channel.ANALYSIS: "verdict-engine",
    Channel.COMMANDS: "c2l-executor",
    Channel.VERDICTS: "gateway",
    Channel.CONFIRMATIONS: "gateway",
    Channel.DIRECTIVES: "agents",
}

KAFKA_TOPICS = {Channel.TELEMETRY: "agent-communications", Channel.ANALYSIS: "narrative-analysis"}

#: JetStream streams: name -> subjects
JS_STREAMS = {
    "sovereign-commands": ["sovereign.commands.>"],
    "sovereign-confirmations": ["sovereign.confirmations.>"],
    "cockpit-telemetry": ["cockpit.telemetry.>"],
    "cockpit-analysis": ["cockpit.analysis.>"],
}
JS_STREAM_OF = {
    Channel.COMMANDS: "sovereign-commands",
    Channel.CONFIRMATIONS: "sovereign-confirmations",
    Channel.TELEMETRY: "cockpit-telemetry",
    Channel.ANALYSIS: "cockpit-analysis",
}

#: channels whose events must be handled in publication order (per-fleet analysis)
ORDERED = frozenset({Channel.TELEMETRY, Channel.ANALYSIS})
#: channels whose shared consumers keep each key (fleet) on one replica
PARTITIONED = frozenset({Channel.TELEMETRY})

#: the most events one call of a ``batch=True`` handler receives
MAX_BATCH = 256
#: the largest encoded event published to Kafka: below aiokafka's request size and
#: the brokers' ``message.max.bytes`` (1 MiB by default), with room for the record
KAFKA_MAX_EVENT_BYTES = 1_000_000
#: room left in NATS's ``max_payload`` for a message's headers
_HEADERS_ROOM = 4096

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


def subject_token(value: str) -> str:
    """A key made safe as one NATS subject token."""
    return _UNSAFE.sub("_", value) or "_"


def partition_of(key: str, partitions: int) -> int:
    """The partition of ``key`` (a fleet id), as JetStream assigns it to the key's
    subject token (``{{partition(n,1)}}``: FNV-1a, 32 bits, modulo ``partitions``)."""
    h = 0x811C9DC5
    for byte in subject_token(key).encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % partitions


def nats_subject(channel: Channel, key: str | None) -> str:
    """The NATS subject of ``channel`` for ``key`` (``None`` = the wildcard)."""
    token = "*" if key is None else subject_token(key)
    return {
        Channel.TELEMETRY: f"cockpit.telemetry.{token}",
        Channel.ANALYSIS: f"cockpit.analysis.{token}",
        Channel.VERDICTS: "cockpit.verdicts.events",
        Channel.COMMANDS: f"sovereign.commands.{token}",
        Channel.CONFIRMATIONS: f"sovereign.confirmations.{token}",
        Channel.DIRECTIVES: f"sovereign.agents.{token}.directives",
    }[channel]


def _subject_prefix(channel: Channel) -> str:
    """The subject of a keyed channel without its key token."""
    return nats_subject(channel, None).rsplit(".", 1)[0]


def partition_transform(channel: Channel, partitions: int) -> tuple[str, str]:
    """The stream's subject transform that files ``<prefix>.<key>`` under
    ``<prefix>.<partition>.<key>``: publishers keep the plain subject."""
    prefix = _subject_prefix(channel)
    return f"{prefix}.*", f"{prefix}.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}"


def partition_durable(channel: Channel, partition: int) -> str:
    """The JetStream durable consumer of one partition."""
    return f"{GROUPS[channel]}-{partition}"


def partition_subject(channel: Channel, partition: int) -> str:
    """The stored subjects of one partition (after :func:`partition_transform`)."""
    return f"{_subject_prefix(channel)}.{partition}.*"


def kafka_partition_of(key: str, partitions: int) -> int:
    """The partition of ``key`` as Kafka producers place it (the Java client's and
    aiokafka's default partitioner: murmur2 of the key's bytes)."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Assignment:
    """The partitions of a keyed channel this replica consumes, and those it has just
    taken over (whose state it must rebuild before their messages arrive)."""

    owned: frozenset[int]
    gained: frozenset[int]
    #: the partition of a key (a fleet id)
    partition: Callable[[str], int]

    def owns(self, key: str) -> bool:
        return self.partition(key) in self.owned

    def gained_key(self, key: str) -> bool:
        return self.partition(key) in self.gained


Assigned = Callable[[Assignment], Awaitable[None]]
#: told the channel of each message that is not its channel's event (not JSON, or
#: against the schema: what an agent publishing straight onto the telemetry topic may
#: send); the message is acknowledged and dropped, never handed to a handler
Rejected = Callable[[Channel], None]


@dataclass(slots=True)
class Subscription:
    channel: Channel
    event_type: type[BaseModel]
    handler: Handler
    shared: bool
    key: str | None = None
    #: told which partitions this replica owns, on a transport that assigns them
    on_assign: Assigned | None = None
    #: the handler takes a list of events (those waiting, in order)
    batch: bool = False
    rejected: Rejected | None = None


class Transport(Protocol):
    name: str
    #: shared subscribers given ``on_assign`` are told their partitions (and wait for them)
    assigns_partitions: bool

    def add(self, sub: Subscription) -> None: ...
    async def publish(self, channel: Channel, event: BaseModel, key: str, message_id: str | None) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def ping(self) -> bool: ...


async def _dispatch(sub: Subscription, event: BaseModel | list[BaseModel]) -> None:
    # An event handler's error is logged and isolated; it never stops the consumer.
    try:
        await sub.handler(event)
    except Exception:  # noqa: BLE001
        logger.exception("event_handler_failed", channel=sub.channel.value)


async def _dispatch_group(sub: Subscription, events: list[BaseModel]) -> list[None]:
    await _dispatch(sub, events)
    return [None] * len(events)


class _KeyedQueue:
    """The queue of an ordered channel's subscriber (telemetry): events in order within
    a key (a fleet), handed out in turns between the keys with events waiting, so a
    quiet fleet's event waits for one event of each busy fleet, not for all of theirs.

    At most ``bound`` events wait in all, except that a key with none waiting may always
    add one: a busy fleet holds its publishers back without holding back the others.
    ``put(None)`` stops the consumer once everything before it is handed out.
    """

    def __init__(self, bound: int) -> None:
        self._bound = bound
        self._by_key: dict[str, collections.deque[BaseModel]] = {}
        self._turns: collections.deque[str] = collections.deque()
        self._size = 0
        self._stopping = False
        self._unfinished = 0
        self._changed = asyncio.Event()  # set whenever an event is added or taken
        self._finished = asyncio.Event()
        self._finished.set()

    async def put(self, event: BaseModel | None, key: str = "") -> None:
        if event is None:
            self._stopping = True
            self._unfinished += 1
            self._finished.clear()
            self._changed.set()
            return
        while self._size >= self._bound and self._by_key.get(key):
            self._changed.clear()
            await self._changed.wait()
        waiting = self._by_key.get(key)
        if waiting is None:
            waiting = self._by_key[key] = collections.deque()
            self._turns.append(key)
        waiting.append(event)
        self._size += 1
        self._unfinished += 1
        self._finished.clear()
        self._changed.set()

    async def get(self) -> BaseModel | None:
        while not self._turns:
            if self._stopping:
                return None
            self._changed.clear()
            await self._changed.wait()
        key = self._turns.popleft()
        waiting = self._by_key[key]
        event = waiting.popleft()
        if waiting:
            self._turns.append(key)  # its next event after the other keys' turn
        else:
            del self._by_key[key]
        self._size -= 1
        self._changed.set()
        return event

    def task_done(self) -> None:
        self._unfinished -= 1
        if self._unfinished <= 0:
            self._finished.set()

    async def join(self) -> None:
        await self._finished.wait()


_Queue = asyncio.Queue[BaseModel | None] | _KeyedQueue


class MemoryTransport:
    """In-process transport: one bounded queue and one worker per subscription, so
    each subscriber sees events in order (on an ordered channel, in order per key,
    the keys taking turns: :class:`_KeyedQueue`).

    The bound is back-pressure: when analysis falls behind ingestion, publishers (the
    telemetry group commit, the filter publishing drafts) wait for room instead of
    piling up a backlog. With 10,000 queued batches, a verdict could arrive tens of
    seconds after its telemetry under load (measured: p99 18 s) while memory grew;
    with a short queue the wait moves to the ingesting client, and telemetry ->
    verdict stays within about a second of analysis work. No handler publishes onto
    its own channel, so a full queue cannot block its own consumer."""

    name = "memory"
    assigns_partitions = False

    def __init__(self, queue_size: int = 16, stop_timeout: float = 10.0) -> None:
        self._subs: list[tuple[Subscription, _Queue]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._queue_size = queue_size
        self._stop_timeout = stop_timeout
        self._running = False

    def add(self, sub: Subscription) -> None:
        queue: _Queue = (_KeyedQueue(self._queue_size) if sub.channel in ORDERED and not sub.batch
                         else asyncio.Queue(self._queue_size))
        self._subs.append((sub, queue))
        if self._running:
            self._tasks.append(asyncio.create_task(self._work(sub, queue)))

    async def publish(self, channel: Channel, event: BaseModel, key: str, message_id: str | None) -> None:
        for sub, queue in self._subs:
            if sub.channel is channel and (sub.key is None or sub.key == key):
                if isinstance(queue, _KeyedQueue):
                    await queue.put(event, key)
                else:
                    await queue.put(event)

    async def _work(self, sub: Subscription, queue: _Queue) -> None:
        stopping = False
        while not stopping and (event := await queue.get()) is not None:
            if not sub.batch:
                await _dispatch(sub, event)
                queue.task_done()
                continue
            assert isinstance(queue, asyncio.Queue)  # batch subscribers take from a plain queue
            batch = [event]
            while len(batch) < MAX_BATCH and not queue.empty():
                more = queue.get_nowait()
                if more is None:  # stop once this batch is handled
                    stopping = True
                    break
                batch.append(more)
            await _dispatch(sub, batch)
            for _ in batch:
                queue.task_done()
        queue.task_done()

    async def start(self) -> None:
        self._running = True
        self._tasks = [asyncio.create_task(self._work(s, q)) for s, q in self._subs]

    async def drain(self) -> None:
        """Wait until every queued event has been handled (tests, shutdown)."""
        for _sub, queue in self._subs:
            await queue.join()

    async def stop(self) -> None:
        """Let each consumer finish what is queued, for at most ``stop_timeout``
        seconds in all, then cancel it. A queue still full after that long (its
        consumer waiting out a database outage) gets no stop marker: waiting for room
        in it hung the shutdown for as long as the outage lasted."""
        self._running = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._stop_timeout
        for sub, queue in self._subs:
            try:
                await asyncio.wait_for(queue.put(None), max(0.0, deadline - loop.time()))
            except TimeoutError:
                logger.warning("bus_consumer_stuck_at_stop", channel=sub.channel.value)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=max(0.01, deadline - loop.time()))
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    async def ping(self) -> bool:
        return True


@functools.cache
def _kafka_assignments() -> type:
    """The rebalance listener class (aiokafka is imported only with Kafka in use)."""
    from aiokafka.abc import ConsumerRebalanceListener

    class KafkaAssignments(ConsumerRebalanceListener):
        """Tells a subscriber which partitions of its topic the consumer group gave
        this replica, before their messages are fetched (aiokafka calls it within
        the rebalance)."""

        def __init__(self, sub: Subscription, topic: str) -> None:
            self.sub = sub
            self.topic = topic
            self.owned: frozenset[int] = frozenset()
            self.subscriber: Any = None

        async def on_partitions_revoked(self, revoked: Any) -> None:
            """Nothing to do: the assignment that follows says what stays here."""

        async def on_partitions_assigned(self, assigned: Any) -> None:
            owned = frozenset(tp.partition for tp in assigned if tp.topic == self.topic)
            known = self.subscriber.consumer.partitions_for_topic(self.topic) or owned
            gained, self.owned = owned - self.owned, owned
            assert self.sub.on_assign is not None
            try:
                await self.sub.on_assign(Assignment(owned, gained, functools.partial(
                    kafka_partition_of, partitions=max(known, default=0) + 1)))
            except Exception:  # noqa: BLE001 - the database is away: rebuilt at the next rebalance
                logger.opt(exception=True).warning("partitions_assignment_failed", topic=self.topic)
                self.owned = owned - gained
            logger.info("partitions_assigned", channel=self.sub.channel.value, owned=sorted(owned),
                        gained=sorted(gained))

    return KafkaAssignments


#: the JetStream key-value bucket holding partition leases and replica heartbeats
LEASE_BUCKET = "cockpit-leases"


@dataclass(slots=True)
class _Lease:
    revision: int
    #: local monotonic time until which this replica may consume the partition: the
    #: server lets the key expire a full lease after the last renewal, this a third earlier
    valid_until: float
    subscriber: Any = None
    renewing: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(slots=True)
class PartitionLeases:
    """Which replica consumes each partition of a keyed channel on NATS.

    A lease is a key of the JetStream key-value bucket ``cockpit-leases``
    (``<channel>.<partition>`` -> instance id), created only if absent and renewed
    with a compare-and-set on its revision every third of ``ttl``; the bucket lets
    a key expire ``ttl`` after its last write, so a dead replica's partitions free
    themselves. Each replica also keeps a ``replica.<instance>`` heartbeat there and
    holds at most its fair share, ``ceil(partitions / live replicas)``: it gives up
    its highest partitions when a replica joins, and takes free ones when one leaves.

    A lease that cannot be renewed (the key expired during an outage, another
    replica took it) stops its consumer at once, and a message of a partition whose
    lease is past ``valid_until`` is handed back to JetStream (nak) for the owner.
    """

    transport: NatsTransport
    sub: Subscription
    partitions: int
    ttl: float
    instance: str
    owned: dict[int, _Lease] = field(default_factory=dict)
    #: partitions being handed over: no longer consumed (``valid`` is false), but their
    #: leases are still renewed until their consumers have finished what they fetched,
    #: so the next owner cannot start on them meanwhile
    releasing: dict[int, _Lease] = field(default_factory=dict)
    #: messages of owned partitions being handled (or waiting their turn), by id
    in_flight: dict[int, Any] = field(default_factory=dict)
    _unadopted: set[int] = field(default_factory=set)
    _kv: Any = None
    _task: asyncio.Task[None] | None = None
    _keepalive_task: asyncio.Task[None] | None = None

    def _key(self, partition: int) -> str:
        return f"{self.sub.channel.value}.{partition}"

    def _valid_until(self, written: float) -> float:
        """Until when a lease written at ``written`` (before the request went out) may
        be used: a third of the lease before the server lets it expire."""
        return written + self.ttl * 2 / 3

    def valid(self, partition: int) -> bool:
        lease = self.owned.get(partition)
        return lease is not None and time.monotonic() < lease.valid_until

    async def start(self) -> None:
        from nats.js.errors import BadRequestError

        js = self.transport.broker.connection.jetstream()
        try:
            self._kv = await js.create_key_value(bucket=LEASE_BUCKET, ttl=self.ttl, history=1)
        except BadRequestError:  # the bucket exists with another lease length: this one's
            config = (await js.stream_info(f"KV_{LEASE_BUCKET}")).config
            config.max_age = config.duplicate_window = self.ttl
            await js.update_stream(config)
            self._kv = await js.key_value(LEASE_BUCKET)
        await self.tick()
        self._task = asyncio.create_task(self._run())
        self._keepalive_task = asyncio.create_task(self._keepalive())

    async def stop(self) -> None:
        """Stop consuming and free the leases at once (no waiting for them to expire)."""
        for task in (self._task, self._keepalive_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for partition in sorted(self.owned):
            await self._release(partition, delete=True)
        with contextlib.suppress(Exception):
            await self._kv.delete(f"replica.{self.instance}")

    async def touch(self) -> None:
        """Tell JetStream the messages in flight are still being worked on: past its
        acknowledgement deadline, a message can be delivered again even though its
        handler acknowledges it just before the next fetch."""
        for message in list(self.in_flight.values()):
            with contextlib.suppress(Exception):  # acknowledged meanwhile, or NATS away
                await message.in_progress()

    async def _keepalive(self) -> None:
        """The heartbeat, the renewals and the progress signals, every third of a lease,
        in a task of their own: a tick handing partitions over waits for their consumers
        to finish what they fetched (seconds under load), and meanwhile this replica
        must neither look gone to the others (they would take its share) nor let its
        other leases or in-flight messages lapse."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            await self.touch()
            try:
                await self._kv.put(f"replica.{self.instance}", b"")
                await asyncio.gather(*(self.renew(p) for p in sorted({*self.owned, *self.releasing})))
            except Exception as exc:  # noqa: BLE001 - NATS away: the tick releases what lapses
                logger.debug("partition_keepalive_failed", error=f"{type(exc).__name__}: {exc}")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.tick()
            except Exception as exc:  # noqa: BLE001 - NATS away: leases lapse, consumers stop
                logger.warning("partition_leases_unrenewed", error=f"{type(exc).__name__}: {exc}")
                lapsed = [p for p in self.owned if not self.valid(p)]
                for partition in lapsed:
                    await self._release(partition, delete=False)
                if lapsed:
                    await self._assigned(frozenset())

    async def tick(self) -> None:
        """Renew, give up or take leases so this replica holds its fair share."""
        await self._kv.put(f"replica.{self.instance}", b"")
        # Renewals side by side, whatever the number of partitions: under a saturated
        # loop, one after the other they could outlast the lease.
        owned = sorted(self.owned)
        live, *renewed = await asyncio.gather(self._live_replicas(), *(self.renew(p) for p in owned))
        fair = math.ceil(self.partitions / max(live, 1))
        changed = False
        for partition, ok in zip(owned, renewed, strict=True):
            if not ok and partition in self.owned:
                await self._release(partition, delete=False)  # expired, and maybe taken
                changed = True
        surplus = sorted(self.owned)[fair:]  # another replica joined: handed over side by side
        await asyncio.gather(*(self._release(p, delete=True) for p in surplus))
        changed = changed or bool(surplus)
        gained: set[int] = set()
        # Start from an instance-specific partition so joining replicas ask for different ones.
        first = partition_of(self.instance, self.partitions)
        for step in range(self.partitions):
            if len(self.owned) >= fair:
                break
            partition = (first + step) % self.partitions
            if partition in self.owned:
                continue
            sent = time.monotonic()
            revision = await self._take(partition)
            if revision is None:
                continue  # another replica's
            self.owned[partition] = _Lease(revision, self._valid_until(sent))
            gained.add(partition)
        # Partitions taken but not yet handed over (the rebuild failed: the database
        # was away) are handed over again, and consumed only once that succeeds.
        self._unadopted = {p for p in self._unadopted | gained if p in self.owned}
        if changed or self._unadopted:
            await self._assigned(frozenset(self._unadopted))
            self._unadopted = set()
        for partition, lease in sorted(self.owned.items()):
            if lease.subscriber is None:
                lease.subscriber = await self.transport.consume_partition(self, partition)
        if changed or gained:
            logger.info("partitions_assigned", channel=self.sub.channel.value, owned=sorted(self.owned),
                        gained=sorted(gained), replicas=live)

    async def renew(self, partition: int, *, lapsed_only: bool = False) -> bool:
        """Extend this replica's lease (``lapsed_only``: unless it is valid, which a
        concurrent renewal may have just made it); ``False`` if it is no longer this
        replica's."""
        from nats.js.errors import KeyWrongLastSequenceError

        # A partition being handed over is renewed by the keepalive only: a handler's
        # renewal (``lapsed_only``) would let its messages through again.
        lease = self.owned.get(partition) or (None if lapsed_only else self.releasing.get(partition))
        if lease is None:
            return False
        async with lease.renewing:  # one compare-and-set at a time (tick and handler)
            if lapsed_only and self.valid(partition):
                return True
            sent = time.monotonic()
            try:
                lease.revision = await self._kv.update(self._key(partition), self.instance.encode(),
                                                       last=lease.revision)
            except KeyWrongLastSequenceError:
                return False
            lease.valid_until = self._valid_until(sent)
            return True

    async def _live_replicas(self) -> int:
        """Replicas whose heartbeat has neither expired nor been deleted."""
        from nats.js.errors import NoKeysError

        try:
            return max(1, sum(1 for key in await self._kv.keys() if key.startswith("replica.")))
        except NoKeysError:
            return 1

    async def _take(self, partition: int) -> int | None:
        """Create the partition's lease; or take back one still under this instance's
        name (a restart, an outage shorter than the lease). ``None``: another's."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        me = self.instance.encode()
        try:
            return int(await self._kv.create(self._key(partition), me))
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await self._kv.get(self._key(partition))
            if entry.value != me:
                return None
            return int(await self._kv.update(self._key(partition), me, last=entry.revision))
        except (KeyNotFoundError, KeyWrongLastSequenceError):
            return None  # expired or taken in between: the next round tries again

    async def _assigned(self, gained: frozenset[int]) -> None:
        if self.sub.on_assign is not None:
            await self.sub.on_assign(Assignment(frozenset(self.owned), gained,
                                                functools.partial(partition_of, partitions=self.partitions)))

    async def _release(self, partition: int, *, delete: bool) -> None:
        """Stop consuming ``partition``; with ``delete``, hand it over: its lease is
        kept (renewed) until the consumer has finished the messages it fetched, then
        deleted, so the next owner starts after them, never beside them."""
        lease = self.owned.pop(partition)
        if delete:
            self.releasing[partition] = lease
        try:
            if lease.subscriber is not None:
                with contextlib.suppress(Exception):
                    await lease.subscriber.stop()
        finally:
            self.releasing.pop(partition, None)
        if delete:
            with contextlib.suppress(Exception):
                await self._kv.delete(self._key(partition), last=lease.revision)


class NatsTransport:
    """NATS (JetStream for durable channels) through FastStream's ``NatsBroker``."""

    name = "nats"
    assigns_partitions = True

    def __init__(self, url: str, instance_id: str, connect_timeout: float = 5.0, *,
                 partitions: int = 16, lease_seconds: float = 6.0) -> None:
        from faststream.nats import NatsBroker

        self.url = url
        self._instance = instance_id
        self.partitions = partitions
        self._lease_seconds = lease_seconds
        # Both in seconds: typed int by nats-py, which waits them with asyncio (floats work).
        self.broker = NatsBroker(
            url, connect_timeout=connect_timeout, max_reconnect_attempts=-1,  # type: ignore[arg-type]
            reconnect_time_wait=0.5, log_level=logging.DEBUG,  # type: ignore[arg-type]
        )
        self._connected = False
        self.leases: list[PartitionLeases] = []

    def _durable(self, subject: str, durable: str, stream_name: str, *, persistent: bool = True,
                 ack_wait: float | None = None) -> Any:
        from faststream.nats import JStream, PullSub
        from nats.js.api import ConsumerConfig

        return self.broker.subscriber(
            subject,
            # Declared in start() (with the partition transform), never by FastStream.
            stream=JStream(stream_name, declare=False),
            durable=durable,
            # Used when the consumer is created; start() sets it on existing partition consumers.
            config=ConsumerConfig(filter_subjects=[], ack_wait=ack_wait) if ack_wait else None,
            pull_sub=PullSub(batch_size=64, timeout=1.0),
            persistent=persistent,
        )

    def add(self, sub: Subscription) -> None:
        stream_name = JS_STREAM_OF.get(sub.channel)
        if sub.shared and sub.channel in PARTITIONED:
            # One durable consumer per partition, started while this replica holds its lease.
            self.leases.append(PartitionLeases(self, sub, self.partitions, self._lease_seconds, self._instance))
        elif sub.shared and stream_name:
            self._durable(nats_subject(sub.channel, sub.key), GROUPS[sub.channel], stream_name)(_decoded(sub))
        else:
            # Fan-out: a plain subscription; JetStream publishes reach it too.
            self.broker.subscriber(nats_subject(sub.channel, sub.key))(_decoded(sub))

    async def consume_partition(self, leases: PartitionLeases, partition: int) -> Any:
        """Start the durable consumer of one partition (its lease just taken).

        Its acknowledgement deadline is the lease's length: a message delivered to a
        replica that then stopped consuming the partition without handling it (in the
        pull request still open when it handed the partition over, or when it died)
        goes to the next owner after that long, not after JetStream's default 30 s.
        Messages being handled, or waiting their turn, are kept with a progress signal
        every third of a lease (:meth:`PartitionLeases.touch`)."""
        from faststream.exceptions import NackMessage

        sub = leases.sub
        subscriber = self._durable(partition_subject(sub.channel, partition), partition_durable(sub.channel, partition),
                                   JS_STREAM_OF[sub.channel], persistent=False, ack_wait=leases.ttl)
        decoded = _decoded(sub)
        context = self.broker.context
        # The messages of a fetch pass the lease check one at a time, in the order they
        # were fetched: one waiting for an overdue renewal is not overtaken by a later one
        # that finds the lease renewed meanwhile (by the tick) and goes straight on.
        # Leaving the check, a message reaches ``decoded``'s own ordering point (its FIFO
        # lock or its group commit) without yielding, so that order carries on.
        turn = asyncio.Lock()

        async def handler(body: Any) -> None:
            # The message being handled (for its progress signals), read from FastStream's
            # context in this task: an injected ``Context("message")`` parameter is
            # resolved in a worker thread, and those threads finishing out of order let
            # later messages of a fetch overtake earlier ones before the FIFO lock (a
            # promise analysed after the attack that broke it).
            message = context.get_local("message")
            leases.in_flight[id(message)] = message
            try:
                async with turn:
                    # A renewal overdue (a busy loop) is made now; a lease lost is handed
                    # back: JetStream redelivers the message, to the owner once there is one.
                    if not leases.valid(partition) and not await leases.renew(partition, lapsed_only=True):
                        raise NackMessage(delay=leases.ttl / 3)
                await decoded(body)
            finally:
                del leases.in_flight[id(message)]

        handler.__annotations__ = dict(decoded.__annotations__)
        handler.__name__ = decoded.__name__
        subscriber(handler)
        await subscriber.start()
        return subscriber

    async def publish(self, channel: Channel, event: BaseModel, key: str, message_id: str | None) -> None:
        subject = nats_subject(channel, key)
        body = event.model_dump_json().encode()
        # The server's limit counts the headers too.
        limit = self.broker.connection.max_payload - _HEADERS_ROOM
        if len(body) > limit:
            raise EventTooLarge(f"{len(body):,} bytes; the NATS server takes {limit:,} with headers")
        stream = JS_STREAM_OF.get(channel)
        headers = {"Nats-Msg-Id": message_id} if message_id else None
        await self.broker.publish(body, subject, stream=stream, headers=headers, timeout=5.0)

    async def start(self) -> None:
        await self.broker.connect()
        js = self.broker.connection.jetstream()
        from nats.js.api import StreamConfig, SubjectTransform
        from nats.js.errors import BadRequestError, NotFoundError

        for name, subjects in JS_STREAMS.items():
            config = StreamConfig(name=name, subjects=subjects, duplicate_window=120)
            channel = next((c for c in PARTITIONED if JS_STREAM_OF[c] == name), None)
            if channel is not None:
                src, dest = partition_transform(channel, self.partitions)
                config.subject_transform = SubjectTransform(src=src, dest=dest)
            try:
                await js.add_stream(config)
            except BadRequestError:
                await js.update_stream(config)
            if channel is not None:
                # The one durable consumer of releases before partitions: nobody reads it
                # any more, and the rows of what it still held unacknowledged are
                # unanalysed, so the filter's redispatch publishes them again.
                with contextlib.suppress(NotFoundError):
                    await js.delete_consumer(name, GROUPS[channel])
                    logger.info("nats_consumer_retired", stream=name, consumer=GROUPS[channel])
                # Partition consumers made by an earlier release (or with another lease
                # length) keep their acknowledgement deadline until it is changed here.
                for partition in range(self.partitions):
                    with contextlib.suppress(NotFoundError):
                        config = (await js.consumer_info(name, partition_durable(channel, partition))).config
                        if config.ack_wait != self._lease_seconds:
                            config.ack_wait = self._lease_seconds
                            await js.add_consumer(name, config=config)
        await self.broker.start()
        for leases in self.leases:
            await leases.start()
        self._connected = True

    async def stop(self) -> None:
        for leases in self.leases:
            with contextlib.suppress(Exception):
                await leases.stop()
        await self.broker.stop()

    async def ping(self) -> bool:
        try:
            return bool(self.broker.connection.is_connected)
        except Exception:  # noqa: BLE001
            return False


class KafkaTransport:
    """Kafka (or a Kafka-protocol broker) through FastStream's ``KafkaBroker``."""

    name = "kafka"
    assigns_partitions = True

    def __init__(self, url: str, instance_id: str, *, fetch_wait_ms: int = 20) -> None:
        from faststream.kafka import KafkaBroker

        self.url = url
        self._instance = instance_id
        # How long a fetch may wait for data. With aiokafka's default, 500 ms, on Tansu
        # telemetry -> verdict (two hops: telemetry, then drafts) took 240 ms at p50 on
        # an idle server, 28 ms with 20 ms (BENCHMARKS.md); the price is a fetch per
        # consumer every ``fetch_wait_ms`` while idle.
        self._fetch_wait_ms = fetch_wait_ms
        self.broker = KafkaBroker(url, request_timeout_ms=10_000, log_level=logging.DEBUG)

    def add(self, sub: Subscription) -> None:
        topic = KAFKA_TOPICS[sub.channel]
        group = GROUPS[sub.channel] if sub.shared else f"{GROUPS[sub.channel]}-{self._instance}"
        listener = _kafka_assignments()(sub, topic) if sub.shared and sub.on_assign is not None else None
        # A Kafka consumer hands messages over one at a time: a batch subscriber takes
        # what has been fetched at once instead (getmany returns as soon as any is
        # there; an idle poll ends, and the next starts, after the same wait as a fetch).
        batch: dict[str, Any] = (
            {"batch": True, "max_records": MAX_BATCH, "batch_timeout_ms": self._fetch_wait_ms}
            if sub.batch else {})
        subscriber = self.broker.subscriber(topic, group_id=group, auto_offset_reset="earliest", listener=listener,
                                            fetch_max_wait_ms=self._fetch_wait_ms, **batch)
        subscriber(_decoded_batch(sub) if sub.batch else _decoded(sub))
        if listener is not None:
            listener.subscriber = subscriber

    async def publish(self, channel: Channel, event: BaseModel, key: str, message_id: str | None) -> None:
        body = event.model_dump_json().encode()
        if len(body) > KAFKA_MAX_EVENT_BYTES:
            raise EventTooLarge(f"{len(body):,} bytes; a Kafka message here takes {KAFKA_MAX_EVENT_BYTES:,}")
        await self.broker.publish(body, KAFKA_TOPICS[channel], key=key.encode())

    async def start(self) -> None:
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop()

    async def ping(self) -> bool:
        try:
            return bool(await self.broker.ping(timeout=2.0))
        except Exception:  # noqa: BLE001
            return False



def _event(sub: Subscription, body: Any) -> BaseModel | None:
    """``body`` as ``sub``'s event; None (logged and counted) if it is not one: a
    message that can never be valid is dropped rather than failing its delivery, which
    the broker would only repeat or give up on without a word."""
    try:
        decode = getattr(sub.event_type, "from_broker", None)  # an Event's own reading, if it has one
        if decode is not None:
            return decode(body)
        if isinstance(body, bytes | str):
            return sub.event_type.model_validate_json(body)
        return sub.event_type.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        logger.warning("event_rejected", channel=sub.channel.value, error=f"{where}: {first['msg']}" if where
                       else first["msg"], bytes=len(body) if isinstance(body, bytes | str) else None)
        if sub.rejected is not None:
            sub.rejected(sub.channel)
        return None


def _decoded(sub: Subscription) -> Callable[..., Awaitable[None]]:
    """A FastStream handler that validates the decoded JSON body into ``sub``'s event.

    FastStream handles the messages of one JetStream pull batch concurrently; for
    ordered channels a FIFO lock serialises them in the order they were fetched
    (tasks start in order and ``asyncio.Lock`` wakes waiters first-in, first-out).
    A ``batch=True`` subscriber's messages join a :class:`GroupCommit` in that same
    order instead, and each is acknowledged (its delivery returns) once the call that
    took it is over. The annotation is a real object (not a string) because FastStream
    inspects the handler's signature when it is registered.
    """
    lock = asyncio.Lock() if sub.channel in ORDERED and not sub.batch else None
    group = (GroupCommit(functools.partial(_dispatch_group, sub), limit=MAX_BATCH, settle=True)
             if sub.batch else None)

    async def handler(body: Any) -> None:
        event = _event(sub, body)
        if event is None:
            return
        if group is not None:
            await group.submit(event)
        elif lock is None:
            await _dispatch(sub, event)
        else:
            async with lock:
                await _dispatch(sub, event)

    handler.__annotations__ = {"body": Any, "return": None}
    handler.__name__ = f"on_{sub.channel.value}"
    return handler


def _decoded_batch(sub: Subscription) -> Callable[..., Awaitable[None]]:
    """A FastStream batch handler (a list of decoded bodies) for a ``batch=True``
    subscriber."""

    async def handler(bodies: list[Any]) -> None:
        events = [event for body in bodies if (event := _event(sub, body)) is not None]
        if events:
            await _dispatch(sub, events)

    handler.__annotations__ = {"bodies": list[Any], "return": None}
    handler.__name__ = f"on_{sub.channel.value}_batch"
    return handler


class EventBus:
    """Publish/subscribe over logical channels; each channel bound to one transport."""

    def __init__(self, routes: dict[Channel, Transport]) -> None:
        self.routes = routes
        #: told of each message dropped as not its channel's event (set before subscribing)
        self.on_rejected: Rejected | None = None
        self._transports = list({id(t): t for t in routes.values()}.values())

    @overload
    def subscribe(
        self,
        channel: Channel,
        event_type: type[E],
        handler: Callable[[E], Awaitable[None]],
        *,
        shared: bool,
        key: str | None = None,
        on_assign: Assigned | None = None,
        batch: Literal[False] = False,
    ) -> None: ...

    @overload
    def subscribe(
        self,
        channel: Channel,
        event_type: type[E],
        handler: Callable[[list[E]], Awaitable[None]],
        *,
        shared: bool,
        key: str | None = None,
        on_assign: Assigned | None = None,
        batch: Literal[True],
    ) -> None: ...

    def subscribe(
        self,
        channel: Channel,
        event_type: type[E],
        handler: Callable[[E], Awaitable[None]] | Callable[[list[E]], Awaitable[None]],
        *,
        shared: bool,
        key: str | None = None,
        on_assign: Assigned | None = None,
        batch: bool = False,
    ) -> None:
        """Register ``handler`` for ``channel`` (before :meth:`start`). ``on_assign``
        hears which key partitions a shared subscriber owns whenever they change
        (Kafka's rebalances, NATS's leases); in-process, every key is its own. A
        ``batch`` handler takes a list of events, in order (see the module's text)."""
        self.routes[channel].add(Subscription(channel, event_type, handler, shared, key, on_assign, batch,
                                              self.on_rejected))

    def assigns_partitions(self, channel: Channel) -> bool:
        """True if ``channel``'s transport tells shared subscribers which partitions
        they own (``on_assign``) before delivering their events."""
        return self.routes[channel].assigns_partitions

    async def publish(
        self, channel: Channel, event: BaseModel, *, key: str, message_id: str | None = None
    ) -> None:
        """Publish ``event`` on ``channel`` keyed by ``key`` (fleet, agent or command id);
        ``message_id`` lets JetStream de-duplicate. Raises :class:`PublishFailed` if the
        broker did not take it, :class:`EventTooLarge` if it never could."""
        transport = self.routes[channel]
        try:
            await transport.publish(channel, event, key, message_id)
        except EventTooLarge:
            raise
        except Exception as exc:
            raise PublishFailed(f"{transport.name}: {type(exc).__name__}: {exc}") from exc

    async def start(self, timeout: float = 10.0) -> None:
        """Connect every transport; raises ``ConnectionError`` naming the one that failed."""
        for transport in self._transports:
            try:
                await asyncio.wait_for(transport.start(), timeout)
            except Exception as exc:  # noqa: BLE001 - reported as one clear line
                where = getattr(transport, "url", "")
                reason = type(exc).__name__ if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
                raise ConnectionError(f"{transport.name} at {where} did not answer within {timeout:g}s ({reason})"
                                      if isinstance(exc, TimeoutError)
                                      else f"{transport.name} at {where}: {reason}") from exc

    async def stop(self) -> None:
        for transport in reversed(self._transports):
            try:
                await transport.stop()
            except Exception:  # noqa: BLE001
                logger.exception("bus_stop_failed", transport=transport.name)

    async def drain(self) -> None:
        """Wait for in-process queues to empty (no-op for real brokers)."""
        for transport in self._transports:
            if isinstance(transport, MemoryTransport):
                await transport.drain()

    async def health(self) -> dict[str, bool]:
        """``{"nats_connected": ..., "kafka_connected": ...}`` for configured brokers."""
        out: dict[str, bool] = {}
        for transport in self._transports:
            if transport.name != "memory":
                out[f"{transport.name}_connected"] = await transport.ping()
        return out

    @property
    def transport_names(self) -> dict[str, str]:
        return {channel.value: t.name for channel, t in self.routes.items()}


def build_bus(
    nats_url: str | None,
    kafka_url: str | None,
    *,
    instance_id: str | None = None,
    connect_timeout: float = 5.0,
    nats_partitions: int = 16,
    nats_lease_seconds: float = 6.0,
    kafka_fetch_wait_ms: int = 20,
) -> EventBus:
    """Bind channels to transports: Kafka for telemetry/analysis when configured, NATS
    for commands/confirmations/directives (and telemetry when there is no Kafka),
    in-process for everything else."""
    instance = instance_id or uuid.uuid4().hex[:12]
    memory = MemoryTransport()
    nats = NatsTransport(nats_url, instance, connect_timeout, partitions=nats_partitions,
                         lease_seconds=nats_lease_seconds) if nats_url else None
    kafka = KafkaTransport(kafka_url, instance, fetch_wait_ms=kafka_fetch_wait_ms) if kafka_url else None
    routes: dict[Channel, Transport] = {c: memory for c in Channel}
    if nats:
        for channel in Channel:
            routes[channel] = nats
    if kafka:
        routes[Channel.TELEMETRY] = kafka
        routes[Channel.ANALYSIS] = kafka
    return EventBus(routes)
