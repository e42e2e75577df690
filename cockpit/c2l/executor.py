"""The command executor: the ``c2l-executor`` durable consumer of ``ExecuteCommand``.

A delivery only *claims* the command row (PENDING -> EXECUTING, a conditional
UPDATE, so exactly one replica wins and a redelivery of a claimed or finished
command is acknowledged and ignored); the kill switch then runs in a task of this
instance, which heartbeats the row while it works. If the instance dies, the
heartbeat goes stale and the recovery loop hands the command back to PENDING; the
per-step ledger makes the re-execution skip what already succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, cast

from loguru import logger
from sqlalchemy import bindparam, select, update

from cockpit.c2l.audit import AuditEntry, AuditLog
from cockpit.c2l.killswitch import CommandSpec, KillOutcome, KillSwitch
from cockpit.c2l.models import CommandExecutionRow, CommandRow
from cockpit.events import CommandConfirmed, CommandStatus, CommandType, ExecuteCommand
from cockpit.platform.batching import GroupCommit
from cockpit.platform.bus import Channel, EventBus, EventTooLarge
from cockpit.platform.db import Database, upsert, urgent, utcnow
from cockpit.platform.metrics import Metrics

__all__ = ["MAX_ATTEMPTS", "CommandExecutor", "ExecutionLedger", "is_final"]

#: executions of one command (crash + recovery) before it is given up as FAILED
MAX_ATTEMPTS = 5
_FINAL = (CommandStatus.COMPLETED, CommandStatus.FAILED, CommandStatus.TIMEOUT)
#: a final command still unconfirmed this long after finishing is confirmed by recovery
CONFIRM_AFTER_SECONDS = 5.0
_CONFIRMATION_IDS = uuid.UUID("4f1c2a7e-9b3d-4c6e-8a5f-0d2b7c9e1a3f")


def confirmation_of(row: CommandRow) -> CommandConfirmed:
    """The confirmation of a final command, rebuilt from its row. Its ``event_id`` is
    derived from the command id, so every publication of it (the first, or recovery's
    after an outage or a crash) is one event: stored once on the stream, de-duplicated
    by JetStream."""
    result = row.result or {}
    return CommandConfirmed(
        event_id=uuid.uuid5(_CONFIRMATION_IDS, row.id).hex,
        command_id=row.id, command_type=CommandType(row.command_type), status=CommandStatus(row.status),
        executed_layers=list(row.executed_layers or []), cascade_terminated=list(row.cascade_terminated or []),
        execution_time_ms=row.execution_time_ms or 0.0, timestamp=row.finished_at or utcnow(),
        error=result.get("error"), verdict_id=row.verdict_id, operator=row.operator,
        target_agents=list(row.target_agents))


# Core statements built once for what every command does (claim, read, confirm).
# The rows they return have every column of ``commands`` as an attribute, as a
# CommandRow has: the code reads them as CommandRow (``cast``).
_COMMANDS = CommandRow.__table__
_COMMAND = select(_COMMANDS).where(_COMMANDS.c.id == bindparam("command_id"))
_CLAIM = (
    update(_COMMANDS)
    .where(_COMMANDS.c.id == bindparam("command_id"), _COMMANDS.c.status == CommandStatus.PENDING.value,
           # a command that already started once must be finished, even late
           (_COMMANDS.c.attempts > 0) | (_COMMANDS.c.deadline > bindparam("now")))
    .values(status=CommandStatus.EXECUTING.value, claimed_by=bindparam("instance"), started_at=bindparam("now"),
            heartbeat_at=bindparam("now"), attempts=_COMMANDS.c.attempts + 1)
    .returning(*_COMMANDS.c)
)
_CONFIRMED = update(_COMMANDS).where(_COMMANDS.c.id.in_(bindparam("command_ids", expanding=True))).values(
    confirmed_at=bindparam("now"))
# A command's final row: only from the status it had (and, from EXECUTING, only by
# the instance that claimed it), so a late or second finisher changes nothing.
_FINISH = (
    update(_COMMANDS)
    .where(_COMMANDS.c.id == bindparam("command_id"), _COMMANDS.c.status == bindparam("expected"))
    .values(status=bindparam("final"), executed_layers=bindparam("layers"),
            cascade_terminated=bindparam("cascade"), result=bindparam("outcome"),
            execution_time_ms=bindparam("elapsed_ms"), finished_at=bindparam("now"), heartbeat_at=None)
    .returning(*_COMMANDS.c)
)
_FINISH_CLAIMED = _FINISH.where(_COMMANDS.c.claimed_by == bindparam("instance"))
_EXECUTIONS = CommandExecutionRow.__table__
_SUCCEEDED = select(_EXECUTIONS.c.result).where(
    _EXECUTIONS.c.command_id == bindparam("command_id"), _EXECUTIONS.c.agent_id == bindparam("agent_id"),
    _EXECUTIONS.c.layer == bindparam("layer"), _EXECUTIONS.c.success.is_(True))


class ExecutionLedger:
    """``command_executions``: which action step of which command already ran on
    which agent, so a redelivered or recovered command never double-acts. Core
    statements built once: every step of every command reads and writes here.

    Steps recorded while a write is in progress are written together in the next
    transaction (group commit), as the audit's rows are: concurrent commands' steps
    share transactions, and each caller still returns only once its step is stored."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # A failed step may be recorded again on retry; a success stays as it is.
        self._record = upsert(db.dialect, _EXECUTIONS, ["command_id", "agent_id", "layer"],
                              where=_EXECUTIONS.c.success.is_(False))
        self._group: GroupCommit[dict[str, Any], None] = GroupCommit(self._write_group)

    async def succeeded(self, command_id: str, agent_id: str, key: str) -> dict[str, Any] | None:
        """The recorded result of a successful step, or ``None``."""
        async with self._db.reader.connect() as conn:
            return await conn.scalar(_SUCCEEDED, {"command_id": command_id, "agent_id": agent_id, "layer": key})

    async def record(self, command_id: str, agent_id: str, key: str, success: bool,
                     result: dict[str, Any]) -> None:
        """Record a step's outcome (a failed step may be recorded again on retry)."""
        await self._group.submit({"command_id": command_id, "agent_id": agent_id, "layer": key,
                                  "success": success, "result": result, "created_at": utcnow()})

    async def _write_group(self, records: list[dict[str, Any]]) -> list[None]:
        # Part of the kill switch: its writes go first at the embedded writer.
        with urgent():
            async with self._db.engine.begin() as conn:
                await conn.execute(self._record, records)
        return [None] * len(records)


class CommandExecutor:
    """Claims, executes, finalises and confirms commands."""

    def __init__(self, db: Database, bus: EventBus, metrics: Metrics, killswitch: KillSwitch,
                 audit: AuditLog, instance_id: str, max_concurrency: int = 32) -> None:
        self._db = db
        self._bus = bus
        self._metrics = metrics
        self._killswitch = killswitch
        self._audit = audit
        self.instance_id = instance_id
        self._slots = asyncio.Semaphore(max_concurrency)
        self._inflight: dict[str, asyncio.Task[None]] = {}
        #: claims under way (each becomes an in-flight task); none start once stopping
        self._claims: set[asyncio.Future[CommandRow | None]] = set()
        self._stopping = False
        #: confirmations published while a ``confirmed_at`` write runs are marked together
        self._confirmed: GroupCommit[str, None] = GroupCommit(self._mark_confirmed)
        self._beating: asyncio.Task[None] | None = None

    def register(self) -> None:
        """Subscribe to commands, shared between replicas (durable ``c2l-executor``)."""
        self._bus.subscribe(Channel.COMMANDS, ExecuteCommand, self.on_execute, shared=True)

    @property
    def inflight(self) -> set[str]:
        """Ids of the commands this instance is executing now."""
        return set(self._inflight)

    async def on_execute(self, event: ExecuteCommand) -> None:
        """Claim the command; run it in the background (the delivery is acked at once,
        the row is the source of truth from here on). Its writes go first at the
        embedded database's writer (the task inherits the context).

        Once :meth:`stop` has begun, a delivery is left unclaimed: the row stays
        PENDING and a running replica's recovery (or this one's after a restart)
        dispatches it again, instead of a command starting that the shutdown would
        cut off halfway."""
        if self._stopping:
            logger.info("command_left_pending_at_stop", command_id=event.command_id)
            return
        with urgent():
            claim = asyncio.ensure_future(self.claim(event.command_id))
            self._claims.add(claim)
            try:
                row = await claim
            finally:
                self._claims.discard(claim)
            if row is None:
                return
            task = asyncio.create_task(self._run(row), name=f"c2l-command-{row.id}")
        self._inflight[row.id] = task
        task.add_done_callback(functools.partial(self._forget, row.id))

    def _forget(self, command_id: str, task: asyncio.Task[None]) -> None:
        if self._inflight.get(command_id) is task:
            del self._inflight[command_id]

    async def claim(self, command_id: str) -> CommandRow | None:
        """PENDING -> EXECUTING for this instance, or ``None`` when it is not claimable."""
        now = utcnow()
        async with self._db.engine.begin() as conn:
            row = cast("CommandRow | None", (await conn.execute(
                _CLAIM, {"command_id": command_id, "now": now, "instance": self.instance_id})).first())
            claimed = row is not None
            if not claimed:
                row = cast("CommandRow | None", (await conn.execute(
                    _COMMAND, {"command_id": command_id})).first())
        if not claimed:
            if row is not None and row.status == CommandStatus.PENDING and row.attempts == 0:
                await self.finish(row, CommandStatus.TIMEOUT, "deadline passed before execution")
            return None
        assert row is not None
        if row.attempts > MAX_ATTEMPTS:
            await self.finish(row, CommandStatus.FAILED,
                              f"given up after {MAX_ATTEMPTS} interrupted executions",
                              from_status=CommandStatus.EXECUTING)
            return None
        return row

    async def _run(self, row: CommandRow) -> None:
        async with self._slots:
            started = time.perf_counter()
            spec = CommandSpec(row.id, CommandType(row.command_type), list(row.target_agents),
                               dict(row.parameters or {}), row.operator, attempt=row.attempts)
            logger.info("command_executing", command_id=row.id, type=row.command_type,
                        attempt=row.attempts)
            try:
                outcome = await self._killswitch.execute(spec)
            except Exception as exc:  # noqa: BLE001 - recorded as FAILED, never lost
                logger.exception("command_crashed", command_id=row.id)
                outcome = KillOutcome()
                outcome.fail("command", repr(exc))
            elapsed_ms = round((time.perf_counter() - started) * 1000.0, 3)
            status = CommandStatus.COMPLETED if outcome.success else CommandStatus.FAILED
            await self.finish(row, status, outcome.error, outcome=outcome, elapsed_ms=elapsed_ms,
                              from_status=CommandStatus.EXECUTING)

    async def finish(self, row: CommandRow, status: CommandStatus, error: str | None, *,
                     outcome: KillOutcome | None = None, elapsed_ms: float | None = None,
                     from_status: CommandStatus | None = None) -> bool:
        """Move ``row`` to a final status (conditionally: only from ``from_status``, or
        from the status it had when read), count it and publish its confirmation.
        True when this call made the change."""
        now = utcnow()
        layers = outcome.executed_layers if outcome else list(row.executed_layers or [])
        cascade = outcome.cascade_terminated if outcome else []
        result: dict[str, Any] = {"success": status is CommandStatus.COMPLETED, "error": error}
        if outcome is not None:
            result |= {"agents": outcome.agents, "snapshots": outcome.snapshots}
        expected = (from_status or CommandStatus(row.status)).value
        stmt = _FINISH_CLAIMED if expected == CommandStatus.EXECUTING else _FINISH
        async with self._db.engine.begin() as conn:
            final = (await conn.execute(stmt, {
                "command_id": row.id, "expected": expected, "instance": self.instance_id,
                "final": status.value, "layers": layers, "cascade": cascade, "outcome": result,
                "elapsed_ms": elapsed_ms, "now": now})).first()
        if final is None:
            return False
        self._count(row, status, now, outcome)
        if outcome is None:  # a TIMEOUT / give-up never reached the kill switch: audit why
            await self._audit.append(AuditEntry("dispatch", status.value.lower(), False,
                                                {"reason": error}, command_id=row.id,
                                                operator="system"))
        logger.info("command_executed", command_id=row.id, type=row.command_type,
                    status=status.value, execution_time_ms=elapsed_ms, error=error)
        await self._confirm(cast(CommandRow, final))
        return True

    async def _confirm(self, row: CommandRow) -> bool:
        """Publish the command's confirmation, then record that it went out. The row is
        the outbox: until ``confirmed_at`` is set, recovery publishes it again."""
        confirmation = confirmation_of(row)
        publish = functools.partial(self._bus.publish, Channel.CONFIRMATIONS, key=row.id,
                                    message_id=confirmation.event_id)
        try:
            for attempt in _shrinking(confirmation):
                try:
                    await publish(attempt)
                    break
                except EventTooLarge as exc:
                    too_large = exc
            else:
                raise too_large
        except Exception as exc:  # noqa: BLE001 - the row is final; a broker outage must not
            # crash the command's task (nor abort a recovery pass) after the fact.
            logger.warning("command_confirmation_publish_failed", command_id=row.id,
                           error=f"{type(exc).__name__}: {exc}")
            return False
        await self._confirmed.submit(row.id)
        return True

    async def _mark_confirmed(self, command_ids: list[str]) -> list[None]:
        async with self._db.engine.begin() as conn:
            await conn.execute(_CONFIRMED, {"command_ids": command_ids, "now": utcnow()})
        return [None] * len(command_ids)

    async def retry_confirmations(self, limit: int = 200) -> int:
        """Publish the confirmations of final commands that never went out (a broker
        outage, or a replica that died between finishing and publishing)."""
        before = utcnow() - timedelta(seconds=CONFIRM_AFTER_SECONDS)
        async with self._db.sessions() as session:
            rows = (await session.scalars(
                select(CommandRow)
                .where(CommandRow.confirmed_at.is_(None), CommandRow.finished_at.is_not(None),
                       CommandRow.finished_at < before)
                .order_by(CommandRow.finished_at).limit(limit)
            )).all()
        sent = 0
        for row in rows:
            if not await self._confirm(row):
                break  # still down: try again next pass
            sent += 1
        return sent

    def _count(self, row: CommandRow, status: CommandStatus, now: datetime, outcome: KillOutcome | None) -> None:
        self._metrics.commands_executed.labels(type=row.command_type, status=status.value).inc()
        # Each layer that failed, whether the next one made up for it (a target that
        # outlived its graceful stop, then was killed) or not; a command that failed
        # with no layer failing (no runtime for it, an error) counts once. A TIMEOUT
        # never reached the kill switch.
        failed = sum(1 for layer in outcome.executed_layers  # actions; a verification's failure is theirs
                     if not layer.get("success") and not str(layer.get("action")).startswith("verify")
                     ) if outcome else 0
        if status is CommandStatus.FAILED:
            failed = max(failed, 1)
        if failed:
            self._metrics.kill_switch_failures.inc(failed)
        self._metrics.command_latency.labels(type=row.command_type).observe(
            max((now - row.created_at).total_seconds(), 0.0))

    def start_heartbeats(self, interval: float) -> None:
        """Write :meth:`heartbeat` every ``interval`` seconds in a task of its own, until
        :meth:`stop` has let the running commands finish: a recovery pass slowed by a
        runtime, or a shutdown draining a long TERMINATE, must not let another replica
        take the command for dead and run it a second time."""
        if self._beating is None:
            self._beating = asyncio.create_task(self._beat(interval), name="c2l-heartbeat")

    async def _beat(self, interval: float) -> None:
        with urgent():  # the kill switch's own writes go first at the embedded writer
            while True:
                try:
                    await self.heartbeat()
                except Exception:  # noqa: BLE001 - a failed beat must not end the beating
                    logger.exception("c2l_heartbeat_failed")
                await asyncio.sleep(interval)

    async def heartbeat(self) -> None:
        """Tell other replicas this instance still works on its claimed commands."""
        ids = list(self._inflight)
        if not ids:
            return
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(CommandRow).where(CommandRow.id.in_(ids), CommandRow.claimed_by == self.instance_id,
                                         CommandRow.status == CommandStatus.EXECUTING)
                .values(heartbeat_at=utcnow())
            )

    async def stop(self, timeout: float = 30.0) -> None:
        """Let running commands finish (up to ``timeout``), then cancel the rest; a
        cancelled command stays EXECUTING and is recovered after a restart. No new
        command starts meanwhile (see :meth:`on_execute`)."""
        self._stopping = True
        deadline = asyncio.get_running_loop().time() + timeout
        if self._claims:  # a claim under way becomes a task to wait for
            await asyncio.wait(set(self._claims), timeout=timeout)
        timeout = max(0.0, deadline - asyncio.get_running_loop().time())
        tasks = list(self._inflight.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._beating is not None:  # nothing runs any more: a stale claim is a dead one
            self._beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beating
            self._beating = None


def _shrinking(confirmation: CommandConfirmed) -> Iterator[CommandConfirmed]:
    """The confirmation, then (each built only if the one before was too large for one
    message of the broker) without the layer records of hundreds of agents, then also
    without the ids of thousands of sub-agents: the outcome still goes out (a verdict
    is mitigated by it, the stream shows it) with the lists counted; the row keeps them
    for GET /commands/{id}."""
    yield confirmation
    without_layers = confirmation.model_copy(update={
        "executed_layers": [], "layers_omitted": len(confirmation.executed_layers)})
    yield without_layers
    yield without_layers.model_copy(update={
        "cascade_terminated": [], "cascade_omitted": len(confirmation.cascade_terminated)})


def is_final(status: str) -> bool:
    """Whether a command status is final."""
    return status in {s.value for s in _FINAL}
