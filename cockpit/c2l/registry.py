"""The agent registry: who the agents are, where they run, their spawn tree,
their status and their (hashed) tokens.

Status changes never loosen a stricter status: a MUTE does not turn an ISOLATED
agent back into a merely MUTED one, and nothing leaves TERMINATED. The rank is
ACTIVE < MUTED < REVOKED < ISOLATED < TERMINATED.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.exc import IntegrityError

from cockpit.c2l.models import AgentRow
from cockpit.c2l.runtimes.process import process_ref
from cockpit.c2l.runtimes.ref import InvalidRuntimeRef, RuntimeKind, RuntimeRef
from cockpit.platform.auth import AGENT_TOKEN_PREFIX, hash_secret, new_secret
from cockpit.platform.cache import TtlCache
from cockpit.platform.db import Database, utcnow

__all__ = [
    "AGENT_STATUSES",
    "AgentExists",
    "AgentNotFound",
    "AgentRegistry",
    "InvalidAgent",
]

AGENT_STATUSES = ("ACTIVE", "MUTED", "REVOKED", "ISOLATED", "TERMINATED")
_RANK = {status: rank for rank, status in enumerate(AGENT_STATUSES)}
#: how deep agents nest under a root: registration refuses deeper, so a cascade's
#: walk down (bounded by it against a tampered table's cycles) reaches every one
_MAX_TREE_DEPTH = 64
# Core statements built once: every agent request and every command read agents.
_AGENTS = AgentRow.__table__
_ONE = select(_AGENTS).where(_AGENTS.c.id == bindparam("agent_id"))
_KNOWN = select(_AGENTS.c.id).where(_AGENTS.c.id.in_(bindparam("agent_ids", expanding=True)))
_BY_TOKEN = select(_AGENTS.c.id, _AGENTS.c.fleet_id, _AGENTS.c.token_revoked_at, _AGENTS.c.status).where(
    _AGENTS.c.token_hash == bindparam("digest"))


@functools.cache
def _raise_status_statement(status: str, columns: tuple[str, ...]) -> Any:
    """One statement per status and set of other columns, built once, the row as it
    is afterwards returned: the status unless a stricter one is there; ``updated_at``
    when the status or a value changes. Parameters: ``agent_id``, ``now`` and
    ``new_<column>`` for each of ``columns``."""
    kept = _AGENTS.c.status.in_([s for s in AGENT_STATUSES if _RANK[s] > _RANK[status]])
    now = bindparam("now", type_=_AGENTS.c.updated_at.type)
    return update(_AGENTS).where(_AGENTS.c.id == bindparam("agent_id")).values(
        status=case((kept, _AGENTS.c.status), else_=status),
        updated_at=now if columns else case((kept, _AGENTS.c.updated_at), else_=now),
        **{column: bindparam(f"new_{column}") for column in columns},
    ).returning(*_AGENTS.c)


class AgentNotFound(LookupError):
    """No agent with that id (HTTP 404)."""


class AgentExists(ValueError):
    """An agent with that id is already registered (HTTP 409)."""


class InvalidAgent(ValueError):
    """A registration the registry cannot accept: bad runtime, unknown parent,
    a cycle (HTTP 422)."""


def to_dict(row: AgentRow) -> dict[str, Any]:
    """The wire form of an agent (never its token hash)."""
    return {
        "agent_id": row.id,
        "name": row.name,
        "fleet_id": row.fleet_id,
        "parent_id": row.parent_id,
        "runtime": dict(row.runtime),
        "status": row.status,
        "muted_until": row.muted_until.isoformat() if row.muted_until else None,
        "frozen": bool(row.frozen),
        "credentials_revoked": row.token_revoked_at is not None,
        "constraints": list(row.constraints or []),
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def _runtime_ref(runtime: Any) -> RuntimeRef:
    """Validate a registration's runtime; pin a local process's start time."""
    if not isinstance(runtime, dict):
        raise InvalidAgent("runtime must be an object with a 'kind'")
    try:
        ref = RuntimeRef.from_dict(runtime)
    except (InvalidRuntimeRef, TypeError) as exc:
        raise InvalidAgent(f"invalid runtime: {exc}") from exc
    if ref.kind is not RuntimeKind.PROCESS:
        return ref
    assert ref.pid is not None
    if ref.start_time is None:
        # The start time makes a later signal safe against pid reuse.
        pinned = process_ref(ref.pid)
        if pinned.start_time is None:
            raise InvalidAgent(f"no process with pid {ref.pid} on this host")
        ref = pinned
    return ref


async def _depth(session: Any, agent_id: str) -> int:
    """How many ancestors ``agent_id`` has (its depth below its root), counted up to
    one past the limit."""
    depth, current = 0, agent_id
    while depth <= _MAX_TREE_DEPTH:
        current = await session.scalar(select(AgentRow.parent_id).where(AgentRow.id == current))
        if current is None:
            return depth
        depth += 1
    return depth


def _target_name(ref: RuntimeRef) -> str:
    match ref.kind:
        case RuntimeKind.PROCESS:
            return f"pid {ref.pid}"
        case RuntimeKind.DOCKER:
            return f"container {ref.container}"
        case RuntimeKind.KUBERNETES:
            return f"pod {ref.namespace}/{ref.pod}"
        case _:
            return ref.describe()


#: a MUTE without an end (``muted_until`` unset) lasts until it is lifted
_FOREVER = datetime.max.replace(tzinfo=UTC)


class AgentRegistry:
    """Agents, their tokens and their statuses (table ``agents``)."""

    def __init__(self, db: Database, cache_seconds: float = 0.0,
                 refuses: Callable[[RuntimeRef], Awaitable[str | None]] | None = None) -> None:
        self._db = db
        #: why a runtime target can never be an agent (Cockpit itself, or what it runs
        #: in: ``RuntimeSet.refuses``), asked at registration
        self._refuses = refuses
        # Hot reads on every telemetry request: token -> (agent, usable), and the
        # whole set of MUTED agents (few, so one query refreshes it for every agent).
        # Tokens are forgotten by the writes that can change their use; the MUTED set
        # follows this replica's status changes (``_status_changed``).
        self._tokens: TtlCache[str, tuple[str, str, bool]] = TtlCache(cache_seconds)
        #: token changes this replica wrote (a read of a token that one raced is not cached)
        self._token_writes = 0
        self._mutes: TtlCache[str, dict[str, datetime]] = TtlCache(cache_seconds)
        #: status changes this replica wrote (a read of the MUTED set that one raced
        #: is not cached)
        self._status_writes = 0

    def _forget_tokens(self) -> None:
        """A token's use changed here: drop what is cached, and what a read under way
        would cache (it may have read the row before the change)."""
        self._token_writes += 1
        self._tokens.clear()

    def _status_changed(self, agent_id: str, status: str, muted_until: datetime | None) -> None:
        """Apply a status change this replica wrote to the cached MUTED set, instead
        of dropping it: under a burst of MUTEs, every agent's next telemetry request
        would otherwise read every MUTED agent again. Other replicas' changes show
        when the cached set expires."""
        self._status_writes += 1
        mutes = self._mutes.get("all")
        if mutes is TtlCache.MISSING:
            return
        if status == "MUTED":
            mutes[agent_id] = muted_until or _FOREVER
        else:
            mutes.pop(agent_id, None)

    # -- registration and reads -------------------------------------------------

    async def register(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Register an agent; the answer carries its clear ``token``, shown once."""
        name = spec.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise InvalidAgent("name is required (1..200 characters)")
        agent_id = spec.get("agent_id") or uuid.uuid4().hex
        fleet_id = spec.get("fleet_id") or "default"
        parent_id = spec.get("parent_id")
        for label, value in (("agent_id", agent_id), ("fleet_id", fleet_id)):
            if not isinstance(value, str) or len(value) > 200:
                raise InvalidAgent(f"{label} must be a string of at most 200 characters")
        if "/" in agent_id or not agent_id.strip():
            # Its own routes (GET /agents/{id}, directive polling) could never match it,
            # so the kill switch's directives could not reach it.
            raise InvalidAgent("agent_id must not be blank or contain '/'")
        if parent_id is not None and parent_id == agent_id:
            raise InvalidAgent("an agent cannot be its own parent")
        ref = _runtime_ref(spec.get("runtime") or {"kind": "external"})
        if self._refuses is not None and (reason := await self._refuses(ref)):
            raise InvalidAgent(f"{_target_name(ref)} cannot be an agent: {reason}")
        token = new_secret(AGENT_TOKEN_PREFIX)
        now = utcnow()
        row = AgentRow(
            id=agent_id, name=name.strip(), fleet_id=fleet_id, parent_id=parent_id,
            runtime=ref.to_dict(), status="ACTIVE", token_hash=hash_secret(token),
            constraints=[], frozen=False, created_at=now, updated_at=now,
        )
        try:
            async with self._db.sessions.begin() as session:
                if await session.get(AgentRow, agent_id) is not None:
                    raise AgentExists(f"agent {agent_id!r} is already registered")
                # parent_id never changes after registration and must already
                # exist, so the spawn tree cannot acquire a cycle.
                if parent_id is not None and await session.get(AgentRow, parent_id) is None:
                    raise InvalidAgent(f"unknown parent_id {parent_id!r}")
                if parent_id is not None and await _depth(session, parent_id) >= _MAX_TREE_DEPTH:
                    raise InvalidAgent(f"agents nest at most {_MAX_TREE_DEPTH} deep under a root; "
                                       f"{parent_id!r} is that deep already")
                session.add(row)
        except IntegrityError as exc:  # a concurrent registration of the same id
            raise AgentExists(f"agent {agent_id!r} is already registered") from exc
        self._forget_tokens()
        return {**to_dict(row), "token": token}

    async def get(self, agent_id: str) -> dict[str, Any]:
        """One agent; raises :class:`AgentNotFound`."""
        return to_dict(await self.row(agent_id))

    async def row(self, agent_id: str) -> AgentRow:
        """The agent as stored (its columns as attributes; read it, do not change it).
        A Core read: the kill switch reads each target several times per command."""
        async with self._db.reader.connect() as conn:
            row = (await conn.execute(_ONE, {"agent_id": agent_id})).first()
        if row is None:
            raise AgentNotFound(f"agent {agent_id!r} not found")
        return row  # type: ignore[return-value]

    async def page(
        self, *, fleet_id: str | None = None, status: str | None = None,
        limit: int = 50, offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """Agents (oldest first) and the total matching count."""
        conditions = []
        if fleet_id is not None:
            conditions.append(AgentRow.fleet_id == fleet_id)
        if status is not None:
            conditions.append(AgentRow.status == status)
        async with self._db.sessions() as session:
            total = await session.scalar(select(func.count()).select_from(AgentRow).where(*conditions))
            rows = (await session.scalars(
                select(AgentRow).where(*conditions).order_by(AgentRow.created_at, AgentRow.id)
                .limit(max(1, min(limit, 1000))).offset(max(0, offset))
            )).all()
        return [to_dict(r) for r in rows], int(total or 0)

    async def unknown(self, agent_ids: list[str]) -> list[str]:
        """Those of ``agent_ids`` that are not registered."""
        async with self._db.reader.connect() as conn:
            known = set((await conn.execute(_KNOWN, {"agent_ids": list(agent_ids)})).scalars().all())
        return [a for a in agent_ids if a not in known]

    async def descendants(self, agent_id: str) -> list[tuple[AgentRow, int]]:
        """Every descendant with its depth (1 = child), breadth first (parents before
        their children). Guarded against cycles a tampered table could contain."""
        out: list[tuple[AgentRow, int]] = []
        seen = {agent_id}
        frontier = [agent_id]
        depth = 0
        async with self._db.sessions() as session:
            while frontier and depth < _MAX_TREE_DEPTH:
                depth += 1
                children = (await session.scalars(
                    select(AgentRow).where(AgentRow.parent_id.in_(frontier)).order_by(AgentRow.id)
                )).all()
                frontier = []
                for child in children:
                    if child.id not in seen:
                        seen.add(child.id)
                        out.append((child, depth))
                        frontier.append(child.id)
        return out

    async def tree(self, agent_id: str) -> dict[str, Any]:
        """The agent and its descendants: ``{"agent", "descendants": [{..., "depth"}],
        "tree": nested {"agent_id", ..., "children": [...]}}``."""
        root = to_dict(await self.row(agent_id))
        flat = [{**to_dict(row), "depth": depth} for row, depth in await self.descendants(agent_id)]
        nodes = {root["agent_id"]: {**root, "depth": 0, "children": []}}
        for item in flat:
            nodes[item["agent_id"]] = {**item, "children": []}
        for item in flat:
            nodes[item["parent_id"]]["children"].append(nodes[item["agent_id"]])
        return {"agent": root, "descendants": flat, "tree": nodes[root["agent_id"]]}

    async def authenticate(self, token: str, *, include_revoked: bool = False) -> str | None:
        """The agent id behind ``token``; ``None`` once revoked or terminated unless
        ``include_revoked`` (for reading directives only)."""
        identity = await self.identify(token, include_revoked=include_revoked)
        return identity[0] if identity else None

    async def identify(self, token: str, *, include_revoked: bool = False) -> tuple[str, str] | None:
        """The agent behind ``token`` and its fleet, as :meth:`authenticate` finds it."""
        digest = hash_secret(token)
        cached = self._tokens.get(digest)
        if cached is TtlCache.MISSING:
            writes = self._token_writes
            async with self._db.reader.connect() as conn:  # Core: on every agent request
                row = (await conn.execute(_BY_TOKEN, {"digest": digest})).first()
            cached = ((row.id, row.fleet_id, row.token_revoked_at is None and row.status != "TERMINATED")
                      if row else ("", "", False))
            if writes == self._token_writes:  # else the read may predate a revocation
                self._tokens.put(digest, cached)
        agent_id, fleet_id, usable = cached
        if not agent_id or not (usable or include_revoked):
            return None
        return agent_id, fleet_id

    async def muted(self, agent_ids: list[str] | set[str]) -> set[str]:
        """Those of ``agent_ids`` whose messaging is suspended right now."""
        if not agent_ids:
            return set()
        mutes = self._mutes.get("all")
        if mutes is TtlCache.MISSING:
            writes = self._status_writes
            async with self._db.reader.connect() as conn:
                rows = (await conn.execute(
                    select(AgentRow.id, AgentRow.muted_until).where(AgentRow.status == "MUTED")
                )).all()
            mutes = {agent_id: until or _FOREVER for agent_id, until in rows}
            if writes == self._status_writes:  # else the read may predate a change
                self._mutes.put("all", mutes)
        now = utcnow()
        return {i for i in agent_ids if (until := mutes.get(i)) is not None and until > now}

    async def summary(self) -> dict[str, Any]:
        """``{"active", "total", "by_status"}`` for dashboards."""
        async with self._db.sessions() as session:
            rows = (await session.execute(
                select(AgentRow.status, func.count()).group_by(AgentRow.status)
            )).all()
        by_status = {s: 0 for s in AGENT_STATUSES} | {s: int(n) for s, n in rows}
        return {"active": by_status["ACTIVE"], "total": sum(by_status.values()), "by_status": by_status}

    # -- changes made by the kill switch ----------------------------------------

    async def raise_status(self, agent_id: str, status: str, **values: Any) -> AgentRow:
        """Set ``status`` unless the agent already has a stricter one; other column
        ``values`` are always written. Returns the row as stored afterwards."""
        stmt = _raise_status_statement(status, tuple(sorted(values)))
        params = {"agent_id": agent_id, "now": utcnow()} | {f"new_{k}": v for k, v in values.items()}
        async with self._db.engine.begin() as conn:
            row = (await conn.execute(stmt, params)).first()
        if row is None:
            raise AgentNotFound(f"agent {agent_id!r} not found")
        # A token stops working when its agent is TERMINATED or it is revoked.
        if status == "TERMINATED" or "token_revoked_at" in values:
            self._forget_tokens()
        self._status_changed(row.id, row.status, row.muted_until)
        return row  # type: ignore[return-value]

    async def revoke_token(self, agent_id: str) -> AgentRow:
        """Revoke the agent's token (idempotent: the first revocation time is kept)."""
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(AgentRow).where(AgentRow.id == agent_id, AgentRow.token_revoked_at.is_(None))
                .values(token_revoked_at=utcnow(), updated_at=utcnow())
            )
        self._forget_tokens()
        return await self.row(agent_id)

    async def set_frozen(self, agent_id: str, frozen: bool) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(AgentRow).where(AgentRow.id == agent_id).values(frozen=frozen, updated_at=utcnow())
            )

    async def add_constraint(self, agent_id: str, constraint: dict[str, Any]) -> AgentRow:
        """Append a constraint to the agent's record."""
        async with self._db.sessions.begin() as session:
            row = await session.get(AgentRow, agent_id, with_for_update=True)
            if row is None:
                raise AgentNotFound(f"agent {agent_id!r} not found")
            row.constraints = [*(row.constraints or []), constraint]
            row.updated_at = utcnow()
        return row

    async def expired_mutes(self, now: datetime) -> list[AgentRow]:
        """MUTED agents whose ``muted_until`` has passed."""
        async with self._db.sessions() as session:
            return list((await session.scalars(select(AgentRow).where(
                AgentRow.status == "MUTED", AgentRow.muted_until <= now,
            ))).all())

    async def frozen_but_active(self) -> list[AgentRow]:
        """ACTIVE agents still frozen: their mute was lifted but the unfreeze failed (the
        runtime could not be reached), or a MUTE re-run after its expiry froze them."""
        async with self._db.sessions() as session:
            return list((await session.scalars(select(AgentRow).where(
                AgentRow.status == "ACTIVE", AgentRow.frozen.is_(True),
            ))).all())

    async def unmute_if_expired(self, agent_id: str, now: datetime) -> bool:
        """MUTED -> ACTIVE when the mute has expired; True for the one caller (of all
        replicas) that made the change."""
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                update(AgentRow).where(
                    AgentRow.id == agent_id, AgentRow.status == "MUTED", AgentRow.muted_until <= now,
                ).values(status="ACTIVE", muted_until=None, updated_at=utcnow())
            )
        if result.rowcount:
            self._status_changed(agent_id, "ACTIVE", None)
            return True
        return False

