"""Persisting what Layer 2 concluded: the latest state of each situation, and the
alliance graph, so operators (and SQL) can see them without the in-memory state."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select

from cockpit.events import VerdictDrafted
from cockpit.filter.models import AllianceRow, StrategicPatternRow
from cockpit.platform.db import Database, upsert, utcnow

__all__ = ["PatternStore"]


class PatternStore:
    """Upserts into ``strategic_patterns`` (by situation) and ``alliances`` (by pair)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._statements: dict[str, Any] = {}

    def _upsert(self, table: Any, keys: list[str]) -> Any:
        """The table's upsert, built once and executed with a list of rows
        (executemany): a multi-VALUES insert would be compiled again every time."""
        stmt = self._statements.get(table.name)
        if stmt is None:
            stmt = self._statements[table.name] = upsert(self._db.dialect, table, keys)
        return stmt

    async def record_drafts(self, drafts: Sequence[VerdictDrafted]) -> None:
        """The newest finding of each situation a draft was made for."""
        if not drafts:
            return
        now = utcnow()
        latest = {
            d.fingerprint: {
                "situation_key": d.fingerprint, "fleet_id": d.fleet_id, "category": d.category.value,
                "agents": list(d.agents_involved), "target": d.target, "score": d.confidence,
                "evidence": list(d.evidence_chain), "updated_at": now,
            }
            for d in drafts
        }
        async with self._db.engine.begin() as conn:
            rows = list(latest.values())
            await conn.execute(self._upsert(StrategicPatternRow.__table__, ["situation_key"]), rows)

    async def record_alliances(self, fleet_id: str, edges: Sequence[dict[str, Any]]) -> None:
        """The fleet's current pair strengths (a snapshot of the alliance graph): they
        replace the fleet's rows, so pairs that decayed away leave the table."""
        now = utcnow()
        rows = [
            {"fleet_id": fleet_id, "agent_a": min(e["source"], e["target"]), "agent_b": max(e["source"], e["target"]),
             "strength": float(e["weight"]), "updated_at": now}
            for e in edges
        ]
        async with self._db.engine.begin() as conn:
            if rows:
                await conn.execute(self._upsert(_ALLIANCES, ["fleet_id", "agent_a", "agent_b"]), rows)
            await conn.execute(_FORMER, {"fleet_id": fleet_id, "now": now})

    async def alliances(self, since: datetime, fleet_id: str | None = None) -> dict[str, list[tuple[str, str, float]]]:
        """fleet -> its pairs ``(agent_a, agent_b, strength)`` as last recorded, for the
        fleets recorded since ``since`` (one fleet with ``fleet_id``)."""
        table = _ALLIANCES
        query = select(table.c.fleet_id, table.c.agent_a, table.c.agent_b, table.c.strength).where(
            table.c.updated_at >= since)
        if fleet_id is not None:
            query = query.where(table.c.fleet_id == fleet_id)
        out: dict[str, list[tuple[str, str, float]]] = {}
        async with self._db.reader.connect() as conn:
            for row in await conn.execute(query.order_by(table.c.fleet_id)):
                out.setdefault(row.fleet_id, []).append((row.agent_a, row.agent_b, row.strength))
        return out


_ALLIANCES = AllianceRow.__table__
#: the rows of a fleet an earlier snapshot wrote and the latest did not
_FORMER = delete(_ALLIANCES).where(
    _ALLIANCES.c.fleet_id == bindparam("fleet_id"), _ALLIANCES.c.updated_at < bindparam("now"))
