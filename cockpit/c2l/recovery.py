"""The recovery loop: the database row is the source of truth, the bus may lose.

Every ``recovery_interval_seconds`` each replica:

- heartbeats the commands it is executing;
- times out commands never started before their deadline (PENDING /
  PENDING_APPROVAL with no attempt), with a confirmation;
- hands back to PENDING the EXECUTING commands whose claimer stopped heartbeating
  (it died), and at start-up those claimed under its own instance id (it
  restarted), so no command stays EXECUTING forever;
- re-publishes PENDING commands not dispatched for a few seconds (lost on the bus);
- ends expired mutes: ACTIVE again, directive ``unmute``, runtime unfrozen.

Each change is a conditional UPDATE, so with N replicas exactly one acts.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from loguru import logger
from sqlalchemy import select, update

from cockpit.c2l.audit import AuditEntry, AuditLog
from cockpit.c2l.commands import CommandService
from cockpit.c2l.directives import DirectiveSender
from cockpit.c2l.executor import CommandExecutor
from cockpit.c2l.killswitch import RuntimeLookup
from cockpit.c2l.models import AgentRow, CommandRow
from cockpit.c2l.registry import AgentRegistry
from cockpit.c2l.runtimes.ref import RuntimeKind, RuntimeRef
from cockpit.events import CommandStatus
from cockpit.platform.bus import PublishFailed
from cockpit.platform.db import Database, urgent, utcnow

__all__ = ["REDISPATCH_AFTER_SECONDS", "Recovery"]

#: a PENDING command not picked up for this long is published again
REDISPATCH_AFTER_SECONDS = 5.0
_SYSTEM = "system:recovery"


class Recovery:
    """Runs the recovery passes periodically (``start``/``stop``) or once."""

    def __init__(self, db: Database, commands: CommandService, executor: CommandExecutor,
                 registry: AgentRegistry, directives: DirectiveSender, audit: AuditLog,
                 runtimes: RuntimeLookup, interval_seconds: float) -> None:
        self._db = db
        self._commands = commands
        self._executor = executor
        self._registry = registry
        self._directives = directives
        self._audit = audit
        self._runtimes = runtimes
        self.interval = interval_seconds
        # A claim is stale after missing several heartbeats (one per interval).
        self.stale_after = max(5 * interval_seconds, 10.0)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: agents whose unfreeze failed and was audited once; retried every pass
        self._unfreeze_failing: set[str] = set()

    async def start(self) -> None:
        """Recover this instance's own leftovers, then loop in the background."""
        await self.reset_executing(own=True)
        self._executor.start_heartbeats(self.interval)
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name="c2l-recovery")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=10)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        with urgent():  # recovery's writes are the kill switch's too
            await self._recover_forever()

    async def _recover_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except Exception:  # noqa: BLE001 - one failed pass must not end recovery
                logger.exception("c2l_recovery_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)

    async def run_once(self) -> dict[str, int]:
        """One pass of every recovery duty; returns what it did (the executor writes
        its heartbeats in a task of its own)."""
        done = {
            "timed_out": await self.timeout_expired(),
            "reset": await self.reset_executing(own=False),
            "redispatched": await self.redispatch_pending(),
            "unmuted": await self.expire_mutes(),
            "unfrozen": await self.unfreeze_lifted(),
            "confirmed": await self._executor.retry_confirmations(),
        }
        if any(done.values()):
            logger.info("c2l_recovered", **done)
        return done

    async def timeout_expired(self) -> int:
        now = utcnow()
        async with self._db.sessions() as session:
            rows = (await session.scalars(select(CommandRow).where(
                CommandRow.status.in_([CommandStatus.PENDING.value, CommandStatus.PENDING_APPROVAL.value]),
                CommandRow.attempts == 0, CommandRow.deadline < now,
            ))).all()
        count = 0
        for row in rows:
            waited = "approval" if row.status == CommandStatus.PENDING_APPROVAL else "execution"
            count += await self._executor.finish(row, CommandStatus.TIMEOUT,
                                                 f"deadline passed while awaiting {waited}")
        return count

    async def reset_executing(self, *, own: bool) -> int:
        """EXECUTING -> PENDING for dead claims (``own``: this instance's previous life)."""
        me = self._executor.instance_id
        stale_before = utcnow() - timedelta(seconds=self.stale_after)
        stale = ((CommandRow.heartbeat_at < stale_before)
                 | (CommandRow.heartbeat_at.is_(None) & (CommandRow.started_at < stale_before)))
        async with self._db.sessions() as session:
            query = select(CommandRow).where(CommandRow.status == CommandStatus.EXECUTING.value)
            query = query.where(CommandRow.claimed_by == me) if own else query.where(stale)
            rows = (await session.scalars(query)).all()
        count = 0
        for row in rows:
            if row.id in self._executor.inflight:
                continue  # ours and alive: its heartbeat is merely late
            async with self._db.sessions.begin() as session:
                result = await session.execute(
                    update(CommandRow).where(CommandRow.id == row.id,
                                             CommandRow.status == CommandStatus.EXECUTING.value,
                                             CommandRow.claimed_by == row.claimed_by,
                                             CommandRow.attempts == row.attempts,
                                             # a heartbeat written since the read: alive after all
                                             *(() if own else (stale,)))
                    .values(status=CommandStatus.PENDING.value, claimed_by=None, heartbeat_at=None,
                            dispatched_at=utcnow())
                )
            if not result.rowcount:
                continue
            count += 1
            await self._audit.append(AuditEntry("dispatch", "reclaimed", True,
                                                {"dead_claim": row.claimed_by, "attempts": row.attempts},
                                                command_id=row.id, operator=_SYSTEM))
            # A fresh message id: JetStream would drop a re-publish of the original id.
            await self._commands.dispatch(row, message_id=f"{row.id}:attempt-{row.attempts}")
        return count

    async def redispatch_pending(self) -> int:
        now = utcnow()
        before = now - timedelta(seconds=REDISPATCH_AFTER_SECONDS)
        async with self._db.sessions() as session:
            rows = (await session.scalars(select(CommandRow).where(
                CommandRow.status == CommandStatus.PENDING.value,
                (CommandRow.dispatched_at.is_(None)) | (CommandRow.dispatched_at < before),
                (CommandRow.attempts > 0) | (CommandRow.deadline > now),
            ))).all()
        count = 0
        for row in rows:
            async with self._db.sessions.begin() as session:
                result = await session.execute(
                    update(CommandRow).where(CommandRow.id == row.id,
                                             CommandRow.status == CommandStatus.PENDING.value,
                                             CommandRow.dispatched_at == row.dispatched_at
                                             if row.dispatched_at else CommandRow.dispatched_at.is_(None))
                    .values(dispatched_at=now)
                )
            if result.rowcount:
                count += 1
                await self._commands.dispatch(row, message_id=f"{row.id}:redispatch-{now.timestamp()}")
        return count

    async def expire_mutes(self) -> int:
        now = utcnow()
        count = 0
        for row in await self._registry.expired_mutes(now):
            if not await self._registry.unmute_if_expired(row.id, now):
                continue
            count += 1
            verification: dict[str, Any] = {"status": "ACTIVE"}
            try:
                verification["directive_seq"] = (await self._directives.send(
                    row.id, "unmute", {"reason": "mute expired"}))["seq"]
            except PublishFailed as exc:  # stored, not pushed: the agent's next poll has it
                verification["directive_pushed"] = False
                logger.warning("unmute_directive_not_pushed", agent_id=row.id, error=str(exc))
            await self._audit.append(AuditEntry(
                "software", "unmute", True,
                {"verification": verification,
                 "muted_until": row.muted_until.isoformat() if row.muted_until else None},
                agent_id=row.id, operator=_SYSTEM))
        return count

    async def unfreeze_lifted(self) -> int:
        """Unfreeze agents whose mute was lifted while they stayed frozen: those whose
        mute :meth:`expire_mutes` just lifted, and an unfreeze that failed before,
        retried each pass until the runtime answers; how many were."""
        count = 0
        for row in await self._registry.frozen_but_active():
            count += await self._unfreeze(row)
        return count

    async def _unfreeze(self, row: AgentRow) -> bool:
        ref = RuntimeRef.from_dict(row.runtime)
        details: dict[str, Any]
        if ref.kind is RuntimeKind.EXTERNAL:
            success, details = True, {"applicable": False}
        else:
            try:
                result = await self._runtimes.for_ref(ref).unfreeze(ref)
                success, details = result.success, result.to_dict()
            except LookupError as exc:
                success, details = False, {"reason": str(exc)}
        if success:
            await self._registry.set_frozen(row.id, False)
            self._unfreeze_failing.discard(row.id)
        elif row.id in self._unfreeze_failing:
            return False  # audited at its first failure; retried each pass, quietly
        else:
            self._unfreeze_failing.add(row.id)
        await self._audit.append(AuditEntry("container", "unfreeze", success, details,
                                            agent_id=row.id, operator=_SYSTEM))
        return success
