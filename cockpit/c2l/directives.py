"""Directives to cooperative agents: mute, unmute, constraint, shutdown.

Each directive is stored (the last :data:`KEEP_PER_AGENT` per agent, with a
sequence number) and then published as ``AgentDirective`` on
``sovereign.agents.<agent_id>.directives``. An agent listening on the bus gets it
at once; an agent polling ``GET /agents/{id}/directives?after=<seq>`` gets it at
its next poll, so a directive sent while the agent was not listening is not lost.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, delete, insert, select

from cockpit.c2l.models import AgentDirectiveRow
from cockpit.events import AgentDirective
from cockpit.platform.bus import Channel, EventBus
from cockpit.platform.db import Database, utcnow

__all__ = ["DIRECTIVES", "KEEP_PER_AGENT", "DirectiveSender"]

DIRECTIVES = ("mute", "unmute", "constraint", "shutdown")
KEEP_PER_AGENT = 200
# Core statements built once: the kill switch sends a directive with most commands.
_DIRECTIVES = AgentDirectiveRow.__table__
_INSERT = insert(_DIRECTIVES).returning(_DIRECTIVES.c.seq)
_OLDEST_KEPT = (select(_DIRECTIVES.c.seq).where(_DIRECTIVES.c.agent_id == bindparam("agent_id"))
                .order_by(_DIRECTIVES.c.seq.desc()).offset(KEEP_PER_AGENT - 1).limit(1))
_TRIM = delete(_DIRECTIVES).where(_DIRECTIVES.c.agent_id == bindparam("agent_id"),
                                  _DIRECTIVES.c.seq < bindparam("oldest_kept"))


def to_dict(row: Any) -> dict[str, Any]:
    """The wire form of a stored directive (an :class:`AgentDirectiveRow` or its values
    as attributes)."""
    return {
        "seq": row.seq,
        "agent_id": row.agent_id,
        "directive": row.directive,
        "parameters": dict(row.parameters or {}),
        "command_id": row.command_id,
        "created_at": row.created_at.isoformat(),
    }


class DirectiveSender:
    """Stores and publishes directives; serves them to polling agents."""

    def __init__(self, db: Database, bus: EventBus) -> None:
        self._db = db
        self._bus = bus

    async def send(
        self,
        agent_id: str,
        directive: str,
        parameters: dict[str, Any] | None = None,
        *,
        command_id: str | None = None,
    ) -> dict[str, Any]:
        """Store then publish one directive; returns the stored directive (with seq)."""
        if directive not in DIRECTIVES:
            raise ValueError(f"unknown directive {directive!r}")
        row = {"agent_id": agent_id, "directive": directive, "parameters": dict(parameters or {}),
               "command_id": command_id, "created_at": utcnow()}
        async with self._db.engine.begin() as conn:
            row["seq"] = await conn.scalar(_INSERT, row)
            # Keep the table small: an agent that never polls cannot grow it.
            oldest_kept = await conn.scalar(_OLDEST_KEPT, {"agent_id": agent_id})
            if oldest_kept is not None:
                await conn.execute(_TRIM, {"agent_id": agent_id, "oldest_kept": oldest_kept})
        # Published after the commit, so a poller never misses a published one.
        await self._bus.publish(
            Channel.DIRECTIVES,
            AgentDirective(agent_id=agent_id, directive=directive,
                           parameters=dict(parameters or {}), command_id=command_id),
            key=agent_id,
        )
        return to_dict(SimpleNamespace(**row))

    async def pending(self, agent_id: str, after_seq: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """The agent's directives with ``seq > after_seq``, oldest first."""
        async with self._db.sessions() as session:
            rows = (await session.scalars(
                select(AgentDirectiveRow)
                .where(AgentDirectiveRow.agent_id == agent_id, AgentDirectiveRow.seq > after_seq)
                .order_by(AgentDirectiveRow.seq)
                .limit(max(1, min(limit, 500)))
            )).all()
        return [to_dict(r) for r in rows]
