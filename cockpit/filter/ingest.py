"""Storing telemetry: idempotent by ``message_id``, durable before it is acknowledged.

A message whose id is already held by another agent's (or another fleet's) message is
not a duplicate but a conflict: it is refused and reported, never acknowledged as
stored, so an agent cannot make another's messages vanish by using their ids first.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import Select, bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from cockpit.events import MessageAnalysis, Telemetry
from cockpit.events.telemetry import STORED
from cockpit.filter.models import TelemetryRow
from cockpit.platform.db import Database, UTCDateTime, insert_ignoring_duplicates, utcnow

__all__ = ["IngestResult", "TelemetryStore", "row_to_dict", "telemetry_from_row"]

# SQLite allows 32766 bound parameters per statement; 17 columns per row.
_CHUNK = 1500


@dataclass(slots=True)
class IngestResult:
    """How many messages were new, how many were already known; the new ones by fleet."""

    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    new_by_fleet: dict[str, list[Telemetry]] = field(default_factory=dict)
    #: ids this call stored (the first occurrence of each new message id)
    inserted: set[str] = field(default_factory=set)
    #: messages refused: their id is held by a message of another agent or fleet
    conflicts: list[Telemetry] = field(default_factory=list)


def _row(
    t: Telemetry, received_at: datetime, quarantined: bool, analysis: MessageAnalysis | None
) -> dict[str, Any]:
    return {
        "message_id": t.message_id,
        "fleet_id": t.fleet_id,
        "source_agent_id": t.source_agent_id,
        "target_agent_ids": list(t.target_agent_ids),
        "conversation_id": t.conversation_id,
        "kind": t.kind.value,
        "content": t.content,
        "action": t.action.model_dump() if t.action else None,
        "timestamp": t.timestamp,
        "provenance_chain": list(t.provenance_chain),
        "attributes": dict(t.attributes),
        "received_at": received_at,
        "quarantined": quarantined,
        "intent": analysis.intent if analysis else None,
        "intent_confidence": analysis.intent_confidence if analysis else None,
        "deception_score": analysis.deception_score if analysis else None,
    }


#: the columns of a new row, in the order of :func:`_sqlite_values`
_INSERT_COLUMNS = (
    "message_id", "fleet_id", "source_agent_id", "target_agent_ids", "conversation_id", "kind",
    "content", "action", "timestamp", "provenance_chain", "attributes", "received_at",
    "quarantined", "intent", "intent_confidence", "deception_score",
)
_json = msgspec.json.Encoder()


# Claiming, built once (a statement and its cache key cost more to build than to run).
# SQLite: the id list as one bound value (a JSON array): binding each id separately
# cost more than the update itself.
_CLAIM_SQLITE = text(
    "UPDATE telemetry SET analysed_at = :now WHERE message_id IN "
    "(SELECT value FROM json_each(:ids)) AND analysed_at IS NULL RETURNING message_id"
).bindparams(bindparam("now", type_=UTCDateTime()))
# PostgreSQL: a plain IN list, which the planner resolves through the primary key (a
# sub-select over unnest() was joined against the whole unanalysed backlog instead).
_CLAIM = (
    update(TelemetryRow.__table__)
    .where(TelemetryRow.__table__.c.message_id.in_(bindparam("ids", expanding=True)),
           TelemetryRow.__table__.c.analysed_at.is_(None))
    .values(analysed_at=bindparam("now"))
    .returning(TelemetryRow.__table__.c.message_id)
)


@functools.lru_cache(maxsize=32)
def _sqlite_insert(rows: int) -> str:
    one = "(" + ", ".join("?" * len(_INSERT_COLUMNS)) + ")"
    return (f"INSERT INTO telemetry ({', '.join(_INSERT_COLUMNS)}) VALUES {', '.join([one] * rows)} "
            "ON CONFLICT DO NOTHING RETURNING message_id")


def _owner(t: Telemetry) -> tuple[str, str]:
    return t.fleet_id, t.source_agent_id


def _sqlite_timestamp(value: datetime) -> str:
    """A timestamp as SQLAlchemy's SQLite ``DATETIME`` stores it (UTC, no zone), so
    these rows compare and read back exactly like rows written through the ORM."""
    v = value.astimezone(UTC)
    return (f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
            f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}")


def _sqlite_values(
    t: Telemetry, received_at: str, quarantined: bool, analysis: MessageAnalysis | None
) -> tuple[Any, ...]:
    """One row's values for the SQLite batch insert, already in their stored form.

    The batch insert of the embedded engine skips SQLAlchemy's per-value processing
    (three times the cost of the insert itself at 1,000 rows): JSON columns are
    encoded with the engine's serialiser (``None`` stored as JSON ``null``, as
    SQLAlchemy's JSON type does on SQLite), timestamps as :func:`_sqlite_timestamp`.
    """
    return (
        t.message_id, t.fleet_id, t.source_agent_id, _json.encode(t.target_agent_ids).decode(),
        t.conversation_id, t.kind.value, t.content,
        _json.encode(t.action.model_dump() if t.action else None).decode(),
        _sqlite_timestamp(t.timestamp), _json.encode(t.provenance_chain).decode(),
        _json.encode(t.attributes).decode(), received_at, int(quarantined),
        analysis.intent if analysis else None,
        analysis.intent_confidence if analysis else None,
        analysis.deception_score if analysis else None,
    )


class TelemetryStore:
    """The ``telemetry`` table: insert-if-new, claim for analysis, read evidence."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def db(self) -> Database:
        return self._db

    async def insert_new(
        self,
        messages: Sequence[Telemetry],
        quarantined_agents: Iterable[str] = (),
        analysis: Mapping[str, MessageAnalysis] | None = None,
    ) -> IngestResult:
        """Store messages not seen before, with their Layer 1 ``analysis`` (by message
        id); duplicates (in the batch or the table) are counted, not stored again, and
        messages whose id another agent's or fleet's message holds are returned as
        ``conflicts``. Quarantined agents' messages are stored but never analysed."""
        analysis = analysis or {}
        quarantined = set(quarantined_agents)
        result = IngestResult()
        unique: dict[str, Telemetry] = {}
        repeats: list[Telemetry] = []
        for t in messages:
            if t.message_id in unique:
                repeats.append(t)
            else:
                unique[t.message_id] = t
        now = utcnow()
        items = list(unique.values())
        inserted: set[str] = set()
        received = _sqlite_timestamp(now) if self._db.dialect == "sqlite" else ""
        async with self._db.sessions.begin() as session:
            for start in range(0, len(items), _CHUNK):
                chunk = items[start : start + _CHUNK]
                if self._db.dialect == "sqlite":
                    values = [
                        v for t in chunk
                        for v in _sqlite_values(t, received, t.source_agent_id in quarantined,
                                                analysis.get(t.message_id))
                    ]
                    conn = await session.connection()
                    returned = await conn.exec_driver_sql(_sqlite_insert(len(chunk)), tuple(values))
                    inserted.update(returned.scalars().all())
                    continue
                stmt = insert_ignoring_duplicates(self._db.dialect, TelemetryRow.__table__).returning(
                    TelemetryRow.message_id
                )
                rows = [
                    _row(t, now, t.source_agent_id in quarantined, analysis.get(t.message_id))
                    for t in chunk
                ]
                inserted.update((await session.execute(stmt, rows)).scalars().all())
            known = [t.message_id for t in items if t.message_id not in inserted]
            owners = await self._owners(session, known) if known else {}
        owners.update((i, _owner(unique[i])) for i in inserted)

        def not_stored(t: Telemetry) -> None:  # an id's owner is the message stored under it
            if owners.get(t.message_id, _owner(t)) == _owner(t):
                result.duplicates += 1
            else:
                result.conflicts.append(t)

        for t in repeats:
            not_stored(t)
        by_fleet: dict[str, list[Telemetry]] = defaultdict(list)
        for t in items:
            if t.message_id not in inserted:
                not_stored(t)
            elif t.source_agent_id in quarantined:
                result.accepted += 1
                result.quarantined += 1
            else:
                result.accepted += 1
                by_fleet[t.fleet_id].append(t)
        result.new_by_fleet = dict(by_fleet)
        result.inserted = inserted
        return result

    @staticmethod
    async def _owners(session: AsyncSession, message_ids: list[str]) -> dict[str, tuple[str, str]]:
        """The fleet and source agent of the stored messages with these ids."""
        owners: dict[str, tuple[str, str]] = {}
        for start in range(0, len(message_ids), _CHUNK):
            rows = await session.execute(
                select(TelemetryRow.message_id, TelemetryRow.fleet_id, TelemetryRow.source_agent_id)
                .where(TelemetryRow.message_id.in_(message_ids[start : start + _CHUNK])))
            owners.update((i, (f, a)) for i, f, a in rows)
        return owners

    async def claim(self, message_ids: Sequence[str]) -> set[str]:
        """Mark messages as being analysed; returns those nobody analysed before, so a
        redelivered batch (or a second replica) never analyses a message twice."""
        if not message_ids:
            return set()
        async with self._db.engine.begin() as conn:
            if self._db.dialect == "sqlite":
                ids = _json.encode(list(message_ids)).decode()
                result = await conn.execute(_CLAIM_SQLITE, {"ids": ids, "now": utcnow()})
                return set(result.scalars().all())
            claimed: set[str] = set()
            for start in range(0, len(message_ids), _CHUNK):
                chunk = list(message_ids[start : start + _CHUNK])
                claimed.update((await conn.execute(_CLAIM, {"ids": chunk, "now": utcnow()})).scalars().all())
        return claimed

    async def messages(self, message_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The stored messages with these ids, in time order (evidence)."""
        rows = await self.rows(message_ids)
        return [row_to_dict(r) for r in sorted(rows, key=lambda r: (r.timestamp, r.message_id))]

    async def rows(self, message_ids: Sequence[str]) -> list[TelemetryRow]:
        """The stored rows with these ids, in the order of ``message_ids`` (those not
        stored are left out)."""
        if not message_ids:
            return []
        async with self._db.sessions() as session:
            rows = (await session.scalars(
                select(TelemetryRow).where(TelemetryRow.message_id.in_(list(message_ids))))).all()
        by_id = {row.message_id: row for row in rows}
        return [by_id[i] for i in message_ids if i in by_id]

    async def recent(self, since: datetime, limit: int) -> list[TelemetryRow]:
        """Analysed messages newer than ``since`` (oldest first), to rebuild state."""
        async with self._db.bulk_sessions() as session:
            rows = (
                await session.scalars(
                    select(TelemetryRow)
                    .where(TelemetryRow.timestamp >= since, TelemetryRow.quarantined.is_(False))
                    .order_by(TelemetryRow.timestamp.desc())
                    .limit(limit)
                )
            ).all()
        return list(reversed(rows))

    async def unanalysed(self, received_before: datetime, limit: int) -> list[TelemetryRow]:
        """Stored, analysable rows nobody has claimed yet (the bus lost or has not
        delivered them), oldest first."""
        async with self._db.sessions() as session:
            rows = (
                await session.scalars(
                    select(TelemetryRow)
                    .where(
                        TelemetryRow.analysed_at.is_(None),
                        TelemetryRow.received_at < received_before,
                        ~TelemetryRow.quarantined,
                    )
                    .order_by(TelemetryRow.received_at, TelemetryRow.timestamp)
                    .limit(limit)
                )
            ).all()
        return list(rows)

    async def count(self) -> int:
        async with self._db.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(TelemetryRow)) or 0)

    async def backlog(self, cap: int) -> int:
        """Analysable rows nobody has analysed yet, counted up to ``cap``."""
        async with self._db.reader.connect() as conn:
            return int(await conn.scalar(backlog_query(cap)) or 0)

    async def backlog_by_agent(self, cap: int) -> dict[str, int]:
        """The first ``cap`` rows waiting for analysis, counted by sending agent."""
        waiting = (
            select(TelemetryRow.source_agent_id)
            .where(TelemetryRow.analysed_at.is_(None), ~TelemetryRow.quarantined)
            .limit(cap)
            .subquery()
        )
        query = select(waiting.c.source_agent_id, func.count()).group_by(waiting.c.source_agent_id)
        # Up to ``cap`` row look-ups (13 ms for 10,000 on SQLite here): off the loop's thread.
        async with self._db.bulk.connect() as conn:
            return {agent: int(n) for agent, n in (await conn.execute(query)).all()}


def backlog_query(cap: int) -> Select[int]:
    """How many rows wait for analysis, up to ``cap``: a walk over the partial index
    ``ix_telemetry_unanalysed`` that stops there."""
    waiting = (
        select(TelemetryRow.message_id)
        .where(TelemetryRow.analysed_at.is_(None), ~TelemetryRow.quarantined)
        .limit(cap)
        .subquery()
    )
    return select(func.count()).select_from(waiting)


def telemetry_from_row(row: TelemetryRow) -> Telemetry:
    """Rebuild the telemetry event from its stored row."""
    return Telemetry.model_validate(
        {
            "message_id": row.message_id,
            "fleet_id": row.fleet_id,
            "source_agent_id": row.source_agent_id,
            "target_agent_ids": row.target_agent_ids,
            "conversation_id": row.conversation_id,
            "kind": row.kind,
            "content": row.content,
            "action": row.action,
            "timestamp": row.timestamp,
            "provenance_chain": row.provenance_chain,
            "attributes": row.attributes,
        },
        context=STORED,
    )


def row_to_dict(row: TelemetryRow) -> dict[str, Any]:
    """The wire form of a stored message, with its analysis."""
    return {
        "message_id": row.message_id,
        "fleet_id": row.fleet_id,
        "source_agent_id": row.source_agent_id,
        "target_agent_ids": row.target_agent_ids,
        "conversation_id": row.conversation_id,
        "kind": row.kind,
        "content": row.content,
        "action": row.action,
        "timestamp": row.timestamp.isoformat(),
        "received_at": row.received_at.isoformat(),
        "provenance_chain": row.provenance_chain,
        "attributes": row.attributes,
        "quarantined": row.quarantined,
        "intent": row.intent,
        "intent_confidence": row.intent_confidence,
        "deception_score": row.deception_score,
    }
