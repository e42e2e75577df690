"""The live event stream behind ``WS /ws``: a durable, ordered log plus fan-out.

Every relayed event is appended to ``stream_events`` (its ``seq`` orders the whole
stream, across restarts and replicas) and pushed to connected clients, each with its
own filters. A client that reconnects with its last ``seq`` is replayed what it missed.
A client that falls behind (its queue full, or more missed than one replay reads) is
not skipped ahead: once it has taken what is queued, the rest is replayed from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from loguru import logger
from sqlalchemy import bindparam, delete, func, select, text, update

from cockpit.events import CommandConfirmed, VerdictIssued
from cockpit.gateway.models import StreamEventRow
from cockpit.platform.bus import Channel, EventBus
from cockpit.platform.db import Database, insert_ignoring_duplicates, utcnow
from cockpit.platform.metrics import Metrics
from cockpit.platform.retry import until_done

__all__ = ["StreamClient", "StreamFilters", "StreamHub"]

_EVENTS = StreamEventRow.__table__
_STORED = select(_EVENTS.c.seq, _EVENTS.c.ts).where(_EVENTS.c.source_event_id == bindparam("source_event_id"))
_AFTER = (select(_EVENTS.c.seq, _EVENTS.c.type, _EVENTS.c.ts, _EVENTS.c.data)
          .where(_EVENTS.c.seq > bindparam("after")).order_by(_EVENTS.c.seq))
#: the type of the row left where the retention cut the log: a client resuming from
#: before it missed events no longer kept, and is sent a ``stream.reset`` instead
PRUNED = "stream.pruned"
RESET = "stream.reset"
_PRUNE_CHUNK = 10_000

#: PostgreSQL: replicas append one transaction at a time (the lock's key: "cockpit-stream"
#: as a 63-bit int), so seqs commit in order and a reader never sees seq n+1 before seq n
_PG_LOCK = text("SELECT pg_advisory_xact_lock(:key)").bindparams(
    key=int.from_bytes(hashlib.sha256(b"cockpit-stream").digest()[:8], "big") >> 1)


@dataclass(slots=True)
class StreamFilters:
    """Server-side filters a client chooses (empty = everything)."""

    severity: frozenset[str] = frozenset()
    category: frozenset[str] = frozenset()
    agent_id: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, raw: Any) -> StreamFilters:
        """From ``{"severity": [...], "category": [...], "agent_id": [...]}``; raises
        ``ValueError`` on a malformed value."""
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise ValueError("filters must be an object")

        def values(name: str) -> frozenset[str]:
            value = raw.get(name) or []
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"filters.{name} must be a list of strings")
            return frozenset(value)

        return cls(values("severity"), values("category"), values("agent_id"))

    def matches(self, envelope: dict[str, Any]) -> bool:
        data = envelope.get("data") or {}
        if envelope["type"].startswith("verdict."):
            if self.severity and data.get("severity") not in self.severity:
                return False
            if self.category and data.get("category") not in self.category:
                return False
            agents = set(data.get("agents_involved") or []) | {data.get("target")}
        else:
            agents = set(data.get("target_agents") or [])
        return not self.agent_id or bool(self.agent_id & agents)


@dataclass(eq=False)
class StreamClient:
    """One connected WebSocket: its filters, its queue and the last seq it was sent."""

    filters: StreamFilters = field(default_factory=StreamFilters)
    #: ``(generation, envelope)``: a resume starts a new generation, and the writer
    #: drops what was queued (or already taken) before it; the replay covers it
    queue: asyncio.Queue[tuple[int, dict[str, Any]]] = field(default_factory=lambda: asyncio.Queue(10_000))
    last_seq: int = 0
    generation: int = 0
    #: while a replay is read from the database, live events wait here
    pending: list[dict[str, Any]] | None = None
    #: events were left out of the queue (it was full, or a replay stopped at its
    #: limit): nothing more is queued until the writer has sent what is, then the rest
    #: is replayed from the log after ``replay_from``
    behind: bool = False
    replay_from: int = 0
    #: the seq of the last event queued in this generation
    queued_to: int = 0
    #: one resume at a time (the client's subscribe, the writer's catching up)
    resuming: asyncio.Lock = field(default_factory=asyncio.Lock)

    def offer(self, envelope: dict[str, Any]) -> None:
        if not self.filters.matches(envelope):
            return
        if self.pending is not None:
            self.pending.append(envelope)
            return
        self.enqueue(envelope)

    def enqueue(self, envelope: dict[str, Any]) -> None:
        """Queue ``envelope`` for sending, unless the client is behind: then it is
        sent later, from the log, in its place."""
        if self.behind:
            return
        try:
            self.queue.put_nowait((self.generation, envelope))
        except asyncio.QueueFull:
            logger.warning("ws_client_lagging", last_seq=self.last_seq, queued_to=self.queued_to)
            self.behind, self.replay_from = True, self.queued_to
            return
        self.queued_to = envelope["seq"]


class StreamHub:
    """Appends bus events to the stream log and fans them out to clients."""

    def __init__(self, db: Database, bus: EventBus, metrics: Metrics, replay_limit: int = 10_000,
                 retention_hours: float = 0.0) -> None:
        self._db = db
        self._bus = bus
        self._metrics = metrics
        self._replay_limit = replay_limit
        self._retention = timedelta(hours=retention_hours)
        self._pruning: asyncio.Task[None] | None = None
        # Built once: every verdict event runs it, and building costs more than running.
        self._insert = insert_ignoring_duplicates(db.dialect, _EVENTS).returning(_EVENTS.c.seq, _EVENTS.c.ts)
        self._clients: set[StreamClient] = set()
        self._lock = asyncio.Lock()
        #: the seq of the last stored event pushed to this replica's clients
        self._pushed = 0

    async def start(self) -> None:
        """Live from the stream's current end (call before the bus delivers events);
        the retention's pruning in the background."""
        self._pushed = await self.last_seq()
        if self._retention and self._pruning is None:
            self._pruning = asyncio.create_task(self._prune_forever())

    async def stop(self) -> None:
        if self._pruning is not None:
            self._pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruning
            self._pruning = None

    async def _prune_forever(self) -> None:
        interval = min(600.0, self._retention.total_seconds() / 10)
        while True:
            try:
                await self.prune()
            except Exception:  # noqa: BLE001 - a database outage: next round
                logger.opt(exception=True).warning("stream_prune_failed")
            await asyncio.sleep(interval)

    async def prune(self, now: datetime | None = None) -> int:
        """Drop the events older than the retention, in chunks; the newest of them is
        kept as a ``stream.pruned`` marker, so a client resuming from before it is told
        it missed events rather than silently skipped past them. The number dropped."""
        cutoff = (now or utcnow()) - self._retention
        async with self._db.engine.connect() as conn:
            boundary = await conn.scalar(select(func.max(_EVENTS.c.seq)).where(_EVENTS.c.ts < cutoff))
            oldest = await conn.scalar(select(func.min(_EVENTS.c.seq)))
        if boundary is None or oldest is None:
            return 0
        dropped = 0
        for start in range(int(oldest), int(boundary), _PRUNE_CHUNK):
            async with self._db.engine.begin() as conn:
                result = await conn.execute(
                    delete(_EVENTS).where(_EVENTS.c.seq < min(start + _PRUNE_CHUNK, int(boundary))))
                dropped += result.rowcount or 0
        async with self._db.engine.begin() as conn:
            await conn.execute(update(_EVENTS).where(_EVENTS.c.seq == boundary).values(type=PRUNED, data={}))
        if dropped:
            logger.info("stream_pruned", events=dropped, through_seq=int(boundary))
        return dropped

    def register(self) -> None:
        """Every replica relays every event to its own clients (fan-out), taking what
        is waiting as one batch: one transaction stores them all."""
        self._bus.subscribe(Channel.VERDICTS, VerdictIssued, self.on_verdicts, shared=False, batch=True)
        self._bus.subscribe(Channel.CONFIRMATIONS, CommandConfirmed, self.on_confirmations, shared=False,
                            batch=True)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def connect(self) -> StreamClient:
        client = StreamClient(queue=asyncio.Queue(self._replay_limit))
        self._clients.add(client)
        self._metrics.ws_clients.set(len(self._clients))
        return client

    def disconnect(self, client: StreamClient) -> None:
        self._clients.discard(client)
        self._metrics.ws_clients.set(len(self._clients))

    async def on_verdicts(self, events: list[VerdictIssued]) -> None:
        await self.append_many([
            ("verdict.created" if event.created else "verdict.updated", event.event_id, dict(event.verdict))
            for event in events
        ])

    async def on_confirmations(self, events: list[CommandConfirmed]) -> None:
        await self.append_many([
            ("command.confirmed", event.event_id,
             event.model_dump(mode="json", exclude={"event_id", "occurred_at", "schema_version"}))
            for event in events
        ])

    async def append_many(self, events: list[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Store ``(kind, source event id, data)`` events in order, in one transaction,
        each once (replicas agree on its seq), then push to clients every stored event
        not pushed yet, in seq order; the events as stored.

        What is pushed is read back from the log, not taken from ``events``: another
        replica may have stored some of them (or others) first, under lower seqs, and a
        client must get those before the later ones, never be skipped past them. A
        database outage is waited out: an event dropped here would be missing from the
        log that resumes replay."""
        async with self._lock:
            stored = await until_done(lambda: self._store(events), what="stream_append")
            fresh = await until_done(self._stored_after_pushed, what="stream_push")
            for envelope in fresh:
                for client in list(self._clients):
                    client.offer(envelope)
            if fresh:
                self._pushed = fresh[-1]["seq"]
        return stored

    async def _store(self, events: list[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
        ts = utcnow()
        stored = []
        async with self._db.engine.begin() as conn:
            if self._db.dialect == "postgresql":
                await conn.execute(_PG_LOCK)
            for kind, source_event_id, data in events:
                row = (await conn.execute(
                    self._insert, {"source_event_id": source_event_id, "type": kind, "ts": ts, "data": data},
                )).first()
                if row is None:  # another replica stored this event first: take its seq
                    row = (await conn.execute(_STORED, {"source_event_id": source_event_id})).one()
                stored.append({"type": kind, "seq": int(row.seq), "ts": row.ts.isoformat(), "data": data})
        return stored

    async def _stored_after_pushed(self) -> list[dict[str, Any]]:
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(_AFTER, {"after": self._pushed})).all()
        return [{"type": r.type, "seq": int(r.seq), "ts": r.ts.isoformat(), "data": r.data}
                for r in rows if r.type != PRUNED]

    async def resume(self, client: StreamClient, after_seq: int | None, filters: StreamFilters) -> None:
        """Apply new filters; with ``after_seq``, queue what the client missed first,
        then the live events that arrived meanwhile, in seq order, without gaps.

        The client may already have been sent live events past ``after_seq`` (it
        subscribed after connecting): the stream restarts from ``after_seq`` anyway, so
        nothing it missed is skipped as "already sent". More missed than one replay
        reads (``replay_limit`` events): the client is left behind, and the writer
        resumes again from where this replay stopped once the client has taken it."""
        async with client.resuming:
            client.filters = filters
            if after_seq is None:
                return
            client.pending = []
            missed: list[dict[str, Any]] = []
            read_to, complete = after_seq, False  # a failed replay leaves the client behind
            try:
                missed, read_to, complete = await self.replay(after_seq, filters)
            finally:
                async with self._lock:
                    live = [e for e in client.pending or [] if e["seq"] > read_to] if complete else []
                    client.pending = None
                    while not client.queue.empty():  # stored, so in ``missed`` if after after_seq
                        client.queue.get_nowait()
                    client.generation += 1
                    client.last_seq = client.queued_to = after_seq
                    client.behind = False
                    for envelope in missed + live:
                        client.enqueue(envelope)
                    if not client.behind:  # all queued (else it goes on from the last one queued)
                        client.behind, client.replay_from = not complete, read_to

    async def catch_up(self, client: StreamClient) -> None:
        """Replay to a client that fell behind what it has not been sent (call once it
        has taken everything queued)."""
        if client.behind:
            self._metrics.ws_catch_ups.inc()
            await self.resume(client, client.replay_from, client.filters)

    async def replay(self, after_seq: int, filters: StreamFilters) -> tuple[list[dict[str, Any]], int, bool]:
        """Stored events after ``after_seq`` that match, oldest first; the seq of the
        last event read, and whether that was the last stored (at most
        ``replay_limit`` are read)."""
        table = StreamEventRow.__table__
        async with self._db.reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(table.c.seq, table.c.type, table.c.ts, table.c.data)
                    .where(table.c.seq > after_seq)
                    .order_by(table.c.seq)
                    .limit(self._replay_limit)
                )
            ).all()
        out = []
        for row in rows:
            if row.type == PRUNED:  # the client's resume point is older than the log
                out.append({"type": RESET, "seq": int(row.seq), "ts": utcnow().isoformat(), "data": {
                    "since_seq": after_seq,
                    "detail": "events after since_seq up to this seq are no longer kept (retention): "
                              "reload the current state; the stream goes on from here"}})
                continue
            envelope = {"type": row.type, "seq": int(row.seq), "ts": row.ts.isoformat(), "data": row.data}
            if filters.matches(envelope):
                out.append(envelope)
        return out, int(rows[-1].seq) if rows else after_seq, len(rows) < self._replay_limit

    async def last_seq(self) -> int:
        async with self._db.reader.connect() as conn:
            value = await conn.scalar(select(func.max(StreamEventRow.__table__.c.seq)))
        return int(value or 0)
