"""Accepting commands: validation, idempotency, step-up, rate limits, two-person
approval; then the row (source of truth) and the ``ExecuteCommand`` on the bus.

Every refusal is audited (layer ``authorization``, success false).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import uuid
from collections import defaultdict
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from typing import cast as type_cast

from loguru import logger
from sqlalchemy import String, bindparam, cast, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from cockpit.c2l.audit import AuditEntry, AuditLog, canonical_json
from cockpit.c2l.models import CommandRow
from cockpit.c2l.registry import AgentRegistry
from cockpit.events import CommandStatus, CommandType, ExecuteCommand
from cockpit.platform.bus import Channel, EventBus
from cockpit.platform.db import Database, utcnow
from cockpit.settings import C2LSettings

__all__ = [
    "APPROVAL_WINDOW_SECONDS",
    "STEP_UP_TYPES",
    "ApprovalRefused",
    "CommandConflict",
    "CommandNotFound",
    "CommandService",
    "InvalidCommand",
    "RateLimited",
    "StepUpRequired",
    "UnknownAgents",
    "parse_rate",
]

STEP_UP_TYPES = frozenset({CommandType.TERMINATE, CommandType.REVOKE_ACCESS})
#: how long a TERMINATE may wait for its second operator before it times out
APPROVAL_WINDOW_SECONDS = 900.0
MAX_TARGETS = 1000
_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$")
# Core statements built once for what every submission does.
_COMMANDS = CommandRow.__table__
_INSERT = insert(_COMMANDS)
_RATE_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:k))")
_RECENT = (_COMMANDS.c.operator == bindparam("operator"), _COMMANDS.c.command_type == bindparam("command_type"),
           _COMMANDS.c.created_at > bindparam("since"))
_RECENT_COUNT = select(func.count()).select_from(_COMMANDS).where(*_RECENT)
_RECENT_NTH = select(_COMMANDS.c.created_at).where(*_RECENT).order_by(_COMMANDS.c.created_at).offset(
    bindparam("nth")).limit(1)


class InvalidCommand(ValueError):
    """A malformed command body (HTTP 422)."""


class UnknownAgents(LookupError):
    """Targets that are not registered (HTTP 422, ``extra.unknown_agents``)."""

    def __init__(self, agent_ids: list[str]) -> None:
        super().__init__(f"unknown agents: {', '.join(agent_ids)}")
        self.agent_ids = agent_ids


class CommandConflict(ValueError):
    """The command id exists with another body (HTTP 409)."""


class CommandNotFound(LookupError):
    """No command with that id (HTTP 404)."""


class RateLimited(Exception):
    """The operator's rate limit for this command type is spent (HTTP 429 with
    ``Retry-After: retry_after_seconds``)."""

    def __init__(self, command_type: str, limit: str, retry_after_seconds: int) -> None:
        super().__init__(f"rate limit {limit} for {command_type} reached; retry in "
                         f"{retry_after_seconds}s")
        self.retry_after_seconds = retry_after_seconds


class StepUpRequired(PermissionError):
    """A TOTP code is required (header ``X-Cockpit-OTP``) and was missing or wrong
    (HTTP 401, the step-up answer of RFC 9470)."""


class ApprovalRefused(PermissionError):
    """The approval is not allowed: same operator as the requester (HTTP 403), or the
    command is not waiting for approval (``not_pending``: HTTP 409)."""

    def __init__(self, message: str, *, not_pending: bool = False) -> None:
        super().__init__(message)
        self.not_pending = not_pending


def parse_rate(rate: str) -> tuple[int, int]:
    """``"10/minute"`` -> ``(10, 60)``; raises ``ValueError`` on anything else."""
    match = _RATE.match(rate)
    if not match:
        raise ValueError(f"invalid rate limit {rate!r}; expected 'N/second|minute|hour|day'")
    return int(match.group(1)), _UNITS[match.group(2)]


def to_dict(row: CommandRow) -> dict[str, Any]:
    """The wire form of a command (``GET /commands/{id}``)."""
    iso = lambda value: value.isoformat() if value else None
    return {
        "command_id": row.id, "status": row.status, "command_type": row.command_type,
        "target_agents": list(row.target_agents), "parameters": dict(row.parameters or {}),
        "reason": row.reason, "operator": row.operator, "approved_by": row.approved_by,
        "executed_layers": list(row.executed_layers or []),
        "cascade_terminated": list(row.cascade_terminated or []), "result": row.result,
        "execution_time_ms": row.execution_time_ms, "verdict_id": row.verdict_id,
        "attempts": row.attempts, "deadline": iso(row.deadline), "created_at": iso(row.created_at),
        "started_at": iso(row.started_at), "finished_at": iso(row.finished_at),
    }


def receipt(row: CommandRow) -> dict[str, Any]:
    """What ``POST /commands`` answers (202)."""
    return {
        "command_id": row.id, "status": row.status, "command_type": row.command_type,
        "target_agents": list(row.target_agents), "operator": row.operator,
        "verdict_id": row.verdict_id, "deadline": row.deadline.isoformat(),
        "created_at": row.created_at.isoformat(),
    }


def _validate(request: dict[str, Any]) -> dict[str, Any]:
    """The normalised body; raises :class:`InvalidCommand`."""
    if not isinstance(request, dict):
        raise InvalidCommand("the body must be a JSON object")
    try:
        ctype = CommandType(str(request.get("command_type")))
    except ValueError as exc:
        raise InvalidCommand(f"command_type must be one of {[t.value for t in CommandType]}") from exc
    targets = request.get("target_agents")
    if (not isinstance(targets, list) or not 1 <= len(targets) <= MAX_TARGETS
            or not all(isinstance(t, str) and 0 < len(t) <= 200 for t in targets)):
        raise InvalidCommand(f"target_agents must list 1..{MAX_TARGETS} agent ids")
    params = request.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidCommand("parameters must be an object")
    _validate_parameters(ctype, params)
    for name, limit in (("reason", 2000), ("verdict_id", 64), ("command_id", 64)):
        value = request.get(name)
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= limit):
            raise InvalidCommand(f"{name} must be a string of 1..{limit} characters")
    return {"command_type": ctype.value, "target_agents": list(dict.fromkeys(targets)),
            "parameters": params, "reason": request.get("reason"),
            "verdict_id": request.get("verdict_id")}


def _number(params: dict[str, Any], name: str, low: float, high: float) -> None:
    value = params.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                              or not low <= value <= high):
        raise InvalidCommand(f"parameters.{name} must be a number in [{low}, {high}]")


#: the parameters each command type takes (the others take none)
PARAMETERS: dict[CommandType, tuple[str, ...]] = {
    CommandType.MUTE: ("duration_seconds", "freeze"),
    CommandType.TERMINATE: ("grace_seconds", "cascade"),
    CommandType.INJECT_CONSTRAINT: ("constraint",),
}


def _validate_parameters(ctype: CommandType, params: dict[str, Any]) -> None:
    # A misspelt name would otherwise be stored and ignored (a MUTE of the default
    # length instead of the one asked for), and an unbounded value could make the
    # command larger than the broker takes: it would never be dispatched.
    known = PARAMETERS.get(ctype, ())
    unknown = sorted(set(params) - set(known))
    if unknown:
        takes = f"it takes {', '.join(known)}" if known else "it takes none"
        raise InvalidCommand(f"parameters {', '.join(unknown)} not known for {ctype.value} ({takes})")
    if ctype is CommandType.MUTE:
        _number(params, "duration_seconds", 1, 30 * 86400)
        if not isinstance(params.get("freeze", False), bool):
            raise InvalidCommand("parameters.freeze must be a boolean")
    elif ctype is CommandType.TERMINATE:
        _number(params, "grace_seconds", 0, 600)
        if not isinstance(params.get("cascade", True), bool):
            raise InvalidCommand("parameters.cascade must be a boolean")
    elif ctype is CommandType.INJECT_CONSTRAINT:
        constraint = params.get("constraint")
        if isinstance(constraint, str) and "\x00" in constraint:  # stored alike on every database
            raise InvalidCommand("parameters.constraint contains a NUL character (U+0000)")
        if not isinstance(constraint, str) or not constraint.strip() or len(constraint) > 10_000:
            raise InvalidCommand("parameters.constraint (1..10000 characters) is required")


class CommandService:
    """Accepts, approves, reads and (re-)dispatches commands."""

    def __init__(self, db: Database, bus: EventBus, registry: AgentRegistry, audit: AuditLog,
                 settings: C2LSettings) -> None:
        self._db = db
        self._bus = bus
        self._registry = registry
        self._audit = audit
        self._settings = settings
        self._limits = {ctype: parse_rate(rate) for ctype, rate in settings.rate_limits.items()}
        # Count-then-insert is atomic per (operator, command type): the submissions
        # that count against each other wait here, in this process, without holding
        # a database connection; PostgreSQL adds an advisory lock on the same key so
        # replicas do too. Other operators' commands do not queue behind them.
        self._submit_locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    async def submit(self, operator: str, request: dict[str, Any], *, operator_has_totp: bool,
                     otp_ok: bool) -> tuple[dict[str, Any], bool]:
        """Accept a command; ``(receipt, created)``. Raises InvalidCommand,
        CommandConflict, UnknownAgents, StepUpRequired, RateLimited."""
        body = _validate(request)
        chosen_id = request.get("command_id")
        command_id = chosen_id or uuid.uuid4().hex
        body_hash = hashlib.sha256(canonical_json(body).encode()).hexdigest()
        ctype = CommandType(body["command_type"])
        # Only a client-chosen id can have been submitted before.
        existing = await self._existing(command_id, body_hash, operator, body) if chosen_id else None
        if existing is not None:
            return existing, False
        unknown = await self._registry.unknown(body["target_agents"])
        if unknown:
            await self._refuse(operator, command_id, body, "unknown_agents", {"unknown_agents": unknown})
            raise UnknownAgents(unknown)
        if ctype in STEP_UP_TYPES and operator_has_totp and not otp_ok:
            await self._refuse(operator, command_id, body, "step_up_required", {})
            raise StepUpRequired(f"{ctype.value} needs a valid TOTP code in X-Cockpit-OTP")
        two_person = ctype is CommandType.TERMINATE and self._settings.two_person_terminate
        now = utcnow()
        window = APPROVAL_WINDOW_SECONDS if two_person else self._settings.command_deadline_seconds
        values = {
            "id": command_id, "operator": operator, "command_type": ctype.value,
            "target_agents": body["target_agents"], "parameters": body["parameters"],
            "reason": body["reason"], "verdict_id": body["verdict_id"], "body_hash": body_hash,
            "status": (CommandStatus.PENDING_APPROVAL if two_person else CommandStatus.PENDING).value,
            "deadline": now + timedelta(seconds=window), "attempts": 0, "executed_layers": [],
            "cascade_terminated": [], "created_at": now, "dispatched_at": None if two_person else now,
        }
        # The row as stored; written with Core (this runs for every command). It has
        # every column as an attribute, as a CommandRow has, and is read as one.
        row = type_cast(CommandRow, SimpleNamespace(
            **({column.name: None for column in _COMMANDS.c} | values)))
        accepted: list[dict[str, Any]] = []
        try:
            async with self._submit_locks[operator, ctype.value], self._db.engine.begin() as conn:
                if self._db.dialect == "postgresql":
                    await conn.execute(_RATE_LOCK, {"k": f"c2l-rate:{operator}:{ctype.value}"})
                retry_after = await self._retry_after(conn, operator, ctype, now)
                if retry_after is None:
                    await conn.execute(_INSERT, values)
                    # In the same transaction: an accepted command always has its audit
                    # row (before, a failed append left a command that ran unaudited,
                    # and its client an error for a command that was going to run).
                    accepted = await self._audit.append_in(conn, AuditEntry(
                        "authorization", "command_accepted", True,
                        {"command_type": ctype.value, "target_agents": body["target_agents"],
                         "status": row.status, "reason": body["reason"], "verdict_id": body["verdict_id"]},
                        command_id=command_id, operator=operator))
        except IntegrityError:  # the same id submitted concurrently
            existing = await self._existing(command_id, body_hash, operator, body)
            if existing is None:
                raise
            return existing, False
        if retry_after is not None:
            limit = self._settings.rate_limits[ctype.value]
            await self._refuse(operator, command_id, body, "rate_limited",
                               {"limit": limit, "retry_after_seconds": retry_after})
            raise RateLimited(ctype.value, limit, retry_after)
        self._audit.anchor(accepted)
        if not two_person:
            await self._dispatch_accepted(row)
        return receipt(row), True

    async def approve(self, command_id: str, operator: str, *, operator_has_totp: bool = False,
                      otp_ok: bool = False) -> dict[str, Any]:
        """The second operator's approval: PENDING_APPROVAL -> PENDING, then dispatch."""
        row = await self.row(command_id)
        if row.status != CommandStatus.PENDING_APPROVAL:
            raise ApprovalRefused(f"command {command_id} is {row.status}, not awaiting approval",
                                  not_pending=True)
        if row.operator == operator:
            await self._audit.append(AuditEntry("authorization", "approval_refused", False,
                                                {"reason": "requester cannot approve"},
                                                command_id=command_id, operator=operator))
            raise ApprovalRefused("the operator who requested the command cannot approve it")
        if operator_has_totp and not otp_ok:
            await self._audit.append(AuditEntry("authorization", "step_up_required", False,
                                                {"for": "approval"}, command_id=command_id,
                                                operator=operator))
            raise StepUpRequired("approval needs a valid TOTP code in X-Cockpit-OTP")
        now = utcnow()
        approved: list[dict[str, Any]] = []
        async with self._db.engine.begin() as conn:
            result = await conn.execute(
                update(CommandRow).where(CommandRow.id == command_id,
                                         CommandRow.status == CommandStatus.PENDING_APPROVAL,
                                         # its approval window: past it, recovery times it out
                                         CommandRow.deadline > now)
                .values(status=CommandStatus.PENDING.value, approved_by=operator, dispatched_at=now,
                        deadline=now + timedelta(seconds=self._settings.command_deadline_seconds))
            )
            if result.rowcount:  # the approval and its audit row commit together
                approved = await self._audit.append_in(conn, AuditEntry(
                    "authorization", "command_approved", True, {"requested_by": row.operator},
                    command_id=command_id, operator=operator))
        if not result.rowcount:
            late = row.deadline is not None and row.deadline <= now
            raise ApprovalRefused(f"command {command_id} is no longer awaiting approval"
                                  + (" (its approval window closed)" if late else ""), not_pending=True)
        self._audit.anchor(approved)
        row = await self.row(command_id)
        await self._dispatch_accepted(row)
        return receipt(row)

    async def dispatch(self, row: CommandRow, *, message_id: str | None = None) -> None:
        """Publish ``ExecuteCommand`` (after the row is committed)."""
        await self._bus.publish(
            Channel.COMMANDS,
            ExecuteCommand(command_id=row.id, command_type=CommandType(row.command_type),
                           target_agents=list(row.target_agents), parameters=dict(row.parameters)),
            key=row.target_agents[0], message_id=message_id or row.id,
        )

    async def _dispatch_accepted(self, row: CommandRow) -> None:
        # The row is committed: the command is accepted and will run. A broker outage
        # must not turn that into an error (a client would retry and act twice); the
        # recovery loop re-dispatches rows not picked up within a few seconds.
        try:
            await self.dispatch(row)
        except Exception as exc:  # noqa: BLE001 - any bus failure: the row is the truth
            logger.warning("command_dispatch_deferred", command_id=row.id,
                           error=f"{type(exc).__name__}: {exc}")

    async def row(self, command_id: str) -> CommandRow:
        async with self._db.sessions() as session:
            row = await session.get(CommandRow, command_id)
        if row is None:
            raise CommandNotFound(f"command {command_id!r} not found")
        return row

    async def page(self, *, status: str | None = None, command_type: str | None = None,
                   agent_id: str | None = None, operator: str | None = None, limit: int = 50,
                   offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Commands, newest first, with the total matching count."""
        conditions = []
        if status is not None:
            conditions.append(CommandRow.status == status)
        if command_type is not None:
            conditions.append(CommandRow.command_type == command_type)
        if operator is not None:
            conditions.append(CommandRow.operator == operator)
        if agent_id is not None:
            # target_agents is a JSON list; its text contains the quoted id.
            needle = canonical_json(agent_id).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(cast(CommandRow.target_agents, String).like(f"%{needle}%", escape="\\"))
        async with self._db.sessions() as session:
            total = await session.scalar(select(func.count()).select_from(CommandRow).where(*conditions))
            rows = (await session.scalars(
                select(CommandRow).where(*conditions).order_by(CommandRow.created_at.desc())
                .limit(max(1, min(limit, 1000))).offset(max(0, offset))
            )).all()
        return [to_dict(r) for r in rows], int(total or 0)

    async def summary(self) -> dict[str, int]:
        """How many commands are in each status (every status present, zero or not)."""
        async with self._db.sessions() as session:
            counts = dict((await session.execute(
                select(CommandRow.status, func.count()).group_by(CommandRow.status)
            )).all())
        return {status.value: int(counts.get(status.value, 0)) for status in CommandStatus}

    # -- helpers -------------------------------------------------------------------

    async def _existing(self, command_id: str, body_hash: str, operator: str,
                        body: dict[str, Any]) -> dict[str, Any] | None:
        async with self._db.sessions() as session:
            row = await session.get(CommandRow, command_id)
        if row is None:
            return None
        if row.body_hash != body_hash or row.operator != operator:
            await self._refuse(operator, command_id, body, "command_conflict",
                               {"existing_body_hash": row.body_hash, "body_hash": body_hash})
            raise CommandConflict(f"command {command_id} exists with a different body or operator")
        return receipt(row)

    async def _retry_after(self, conn: Any, operator: str, ctype: CommandType,
                           now: Any) -> int | None:
        """Seconds until the operator may send ``ctype`` again, or None when allowed."""
        if ctype.value not in self._limits:
            return None
        limit, window = self._limits[ctype.value]
        recent = {"operator": operator, "command_type": ctype.value, "since": now - timedelta(seconds=window)}
        count = int(await conn.scalar(_RECENT_COUNT, recent) or 0)
        if count < limit:
            return None
        # The slot frees when the (count - limit + 1)-th most recent row leaves the window.
        freeing = await conn.scalar(_RECENT_NTH, {**recent, "nth": count - limit})
        return max(1, math.ceil((freeing + timedelta(seconds=window) - now).total_seconds()))

    async def _refuse(self, operator: str, command_id: str, body: dict[str, Any], action: str,
                      details: dict[str, Any]) -> None:
        await self._audit.append(AuditEntry(
            "authorization", action, False,
            {"command_type": body["command_type"], "target_agents": body["target_agents"], **details},
            command_id=command_id, operator=operator))
