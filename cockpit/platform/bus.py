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
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from loguru import logger
from pydantic import BaseModel

__all__ = ["Channel", "EventBus", "Handler", "MemoryTransport", "build_bus"]

E = TypeVar("E", bound=BaseModel)
Handler = Callable[[Any], Awaitable[None]]


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

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


def subject_token(value: str) -> str:
    """A key made safe as one NATS subject token."""
    return _UNSAFE.sub("_", value) or "_"


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


@dataclass(slots=True)
class Subscription:
    channel: Channel
    event_type: type[BaseModel]
    handler: Handler
    shared: bool
    key: str | None = None


class Transport(Protocol):
    name: str

    def add(self, sub: Subscription) -> None: ...
    async def publish(self, channel: Channel, event: BaseModel, key: str, message_id: str | None) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def ping(self) -> bool: ...


async def _dispatch(sub: Subscription, event: BaseModel) -> None:
    # An event handler's error is logged and isolated; it never stops the consumer.
    try:
        await sub.handler(event)
    except Exception:  # noqa: BLE001
        logger.exception("event_handler_failed", channel=sub.channel.value)


class MemoryTransport:
    """In-process transport: one bounded queue and one worker per subscription, so
    each subscriber sees events in order.

    The bound is back-pressure: when analysis falls behind ingestion, publishers (the
    telemetry group commit, the filter publishing drafts) wait for room instead of
    piling up a backlog. With 10,000 queued batches, a verdict could arrive tens of
    seconds after its telemetry under load (measured: p99 18 s) while memory grew;
    with a short queue the wait moves to the ingesting client, and telemetry ->
    verdict stays within about a second of analysis work. No handler publishes onto
    its own channel, so a full queue cannot block its own consumer."""

    name = "memory"

    def __init__(self, queue_size: int = 16) -> None:
        self._subs: list[tuple[Subscription, asyncio.Queue[BaseModel | None]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._queue_size = queue_size
        self._running = False

    def add(self, sub: Subscription) -> None:
        queue: asyncio.Queue[BaseModel | None] = asyncio.Queue(self._queue_size)
        self._subs.append((sub, queue))
        if self._running:
            self._tasks.append(asyncio.create_task(self._work(sub, queue)))

    async def publish(self, channel: Channel, event: BaseModel, key: str, message_id: str | None) -> None:
        for sub, queue in self._subs:
            if sub.channel is channel and (sub.key is None or sub.key == key):
                await queue.put(event)

    async def _work(self, sub: Subscription, queue: asyncio.Queue[BaseModel | None]) -> None:
        while (event := await queue.get()) is not None:
            await _dispatch(sub, event)
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
        self._running = False
        for _sub, queue in self._subs:
            await queue.put(None)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    async def ping(self) -> bool:
        return True


class NatsTransport:
    """NATS (JetStream for durable channels) through FastStream's ``NatsBroker``."""

    name = "nats"

    def __init__(self, url: str, instance_id: str, connect_timeout: float = 5.0) -> None:
        from faststream.nats import NatsBroker

        self.url = url
        self._instance = instance_id
        self.broker = NatsBroker(
            url, connect_timeout=connect_timeout, max_reconnect_attempts=-1,
            reconnect_time_wait=0.5, log_level=logging.DEBUG,
        )
        self._connected = False

    def add(self, sub: Subscription) -> None:
        from faststream.nats import JStream, PullSub

        subject = nats_subject(sub.channel, sub.key)
        stream_name = JS_STREAM_OF.get(sub.channel)
        if sub.shared and stream_name:
            durable = GROUPS[sub.channel]
            decorator = self.broker.subscriber(
                subject,
                stream=JStream(stream_name, subjects=JS_STREAMS[stream_name], duplicate_window=120),
                durable=durable,
                pull_sub=PullSub(batch_size=64, timeout=1.0),
            )
        else:
            # Fan-out: a plain subscription; JetStream publishes reach it too.
            decorator = self.broker.subscriber(subject)
        decorator(_decoded(sub))

    async def publish(self, channel: Channel, event: BaseModel, key: str, message_id: str | None) -> None:
        subject = nats_subject(channel, key)
        body = event.model_dump_json().encode()
        stream = JS_STREAM_OF.get(channel)
        headers = {"Nats-Msg-Id": message_id} if message_id else None
        await self.broker.publish(body, subject, stream=stream, headers=headers, timeout=5.0)

    async def start(self) -> None:
        await self.broker.connect()
        js = self.broker.connection.jetstream()
        from nats.js.errors import BadRequestError

        for name, subjects in JS_STREAMS.items():
            try:
                await js.add_stream(name=name, subjects=subjects, duplicate_window=120)
            except BadRequestError:
                await js.update_stream(name=name, subjects=subjects, duplicate_window=120)
        await self.broker.start()
        self._connected = True

    async def stop(self) -> None:
        await self.broker.stop()

    async def ping(self) -> bool:
        try:
            return bool(self.broker.connection.is_connected)
        except Exception:  # noqa: BLE001
            return False


class KafkaTransport:
    """Kafka (or a Kafka-protocol broker) through FastStream's ``KafkaBroker``."""

    name = "kafka"

    def __init__(self, url: str, instance_id: str) -> None:
        from faststream.kafka import KafkaBroker

        self.url = url
        self._instance = instance_id
        self.broker = KafkaBroker(url, request_timeout_ms=10_000, log_level=logging.DEBUG)

    def add(self, sub: Subscription) -> None:
        topic = KAFKA_TOPICS[sub.channel]
        group = GROUPS[sub.channel] if sub.shared else f"{GROUPS[sub.channel]}-{self._instance}"
        self.broker.subscriber(topic, group_id=group, auto_offset_reset="earliest")(_decoded(sub))

    async def publish(self, channel: Channel, event: BaseModel, key: str, message_id: str | None) -> None:
        await self.broker.publish(
            event.model_dump_json().encode(), KAFKA_TOPICS[channel], key=key.encode()
        )

    async def start(self) -> None:
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop()

    async def ping(self) -> bool:
        try:
            return bool(await self.broker.ping(timeout=2.0))
        except Exception:  # noqa: BLE001
            return False


#: channels whose events must be handled in publication order (per-fleet analysis)
ORDERED = frozenset({Channel.TELEMETRY, Channel.ANALYSIS})


def _decoded(sub: Subscription) -> Callable[..., Awaitable[None]]:
    """A FastStream handler that validates the decoded JSON body into ``sub``'s event.

    FastStream handles the messages of one JetStream pull batch concurrently; for
    ordered channels a FIFO lock serialises them in the order they were fetched
    (tasks start in order and ``asyncio.Lock`` wakes waiters first-in, first-out).
    The annotation is a real object (not a string) because FastStream inspects the
    handler's signature when it is registered.
    """
    event_type = sub.event_type
    lock = asyncio.Lock() if sub.channel in ORDERED else None

    async def handler(body: Any) -> None:
        if isinstance(body, bytes | str):
            event = event_type.model_validate_json(body)
        else:
            event = event_type.model_validate(body)
        if lock is None:
            await _dispatch(sub, event)
            return
        async with lock:
            await _dispatch(sub, event)

    handler.__annotations__ = {"body": Any, "return": None}
    handler.__name__ = f"on_{sub.channel.value}"
    return handler


class EventBus:
    """Publish/subscribe over logical channels; each channel bound to one transport."""

    def __init__(self, routes: dict[Channel, Transport]) -> None:
        self.routes = routes
        self._transports = list({id(t): t for t in routes.values()}.values())

    def subscribe(
        self,
        channel: Channel,
        event_type: type[E],
        handler: Callable[[E], Awaitable[None]],
        *,
        shared: bool,
        key: str | None = None,
    ) -> None:
        """Register ``handler`` for ``channel`` (before :meth:`start`)."""
        self.routes[channel].add(Subscription(channel, event_type, handler, shared, key))

    async def publish(
        self, channel: Channel, event: BaseModel, *, key: str, message_id: str | None = None
    ) -> None:
        """Publish ``event`` on ``channel`` keyed by ``key`` (fleet, agent or command id);
        ``message_id`` lets JetStream de-duplicate."""
        await self.routes[channel].publish(channel, event, key, message_id)

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
) -> EventBus:
    """Bind channels to transports: Kafka for telemetry/analysis when configured, NATS
    for commands/confirmations/directives (and telemetry when there is no Kafka),
    in-process for everything else."""
    instance = instance_id or uuid.uuid4().hex[:12]
    memory = MemoryTransport()
    nats = NatsTransport(nats_url, instance, connect_timeout) if nats_url else None
    kafka = KafkaTransport(kafka_url, instance) if kafka_url else None
    routes: dict[Channel, Transport] = {c: memory for c in Channel}
    if nats:
        for channel in Channel:
            routes[channel] = nats
    if kafka:
        routes[Channel.TELEMETRY] = kafka
        routes[Channel.ANALYSIS] = kafka
    return EventBus(routes)
