"""C2L: the agent registry, the command bus, the multi-layer kill switch and its
hash-chained audit. Build it with :func:`build_c2l`; use only :class:`C2L`.

Errors and the HTTP status each maps to:

============================  ======  ==========================================
``AgentNotFound``             404
``CommandNotFound``           404
``AgentExists``               409
``CommandConflict``           409     same command id, other body or operator
``ApprovalRefused``           403     (409 when ``not_pending``)
``InvalidAgent``              422     bad runtime, unknown parent, self-parent
``InvalidCommand``            422
``UnknownAgents``             422     ``extra={"unknown_agents": e.agent_ids}``
``StepUpRequired``            401     TOTP needed in ``X-Cockpit-OTP``
``RateLimited``               429     ``Retry-After: e.retry_after_seconds``
============================  ======  ==========================================
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cockpit.c2l.audit import AuditLog
from cockpit.c2l.commands import (
    STEP_UP_TYPES,
    ApprovalRefused,
    CommandConflict,
    CommandNotFound,
    CommandService,
    InvalidCommand,
    RateLimited,
    StepUpRequired,
    UnknownAgents,
)
from cockpit.c2l.commands import to_dict as command_to_dict
from cockpit.c2l.directives import DirectiveSender
from cockpit.c2l.executor import CommandExecutor, ExecutionLedger, is_final
from cockpit.c2l.killswitch import KillSwitch, RuntimeLookup
from cockpit.c2l.recovery import Recovery
from cockpit.c2l.registry import AgentExists, AgentNotFound, AgentRegistry, InvalidAgent
from cockpit.platform.bus import EventBus
from cockpit.platform.db import Database, urgent
from cockpit.platform.metrics import Metrics
from cockpit.settings import C2LSettings

__all__ = [
    "C2L",
    "STEP_UP_TYPES",
    "AgentExists",
    "AgentNotFound",
    "ApprovalRefused",
    "CommandConflict",
    "CommandNotFound",
    "InvalidAgent",
    "InvalidCommand",
    "RateLimited",
    "StepUpRequired",
    "UnknownAgents",
    "build_c2l",
]


class C2L:
    """The C2L context's public API (registry, commands, audit, directives)."""

    def __init__(self, *, registry: AgentRegistry, commands: CommandService,
                 executor: CommandExecutor, recovery: Recovery, audit: AuditLog,
                 directives: DirectiveSender, runtimes: RuntimeLookup) -> None:
        self._registry = registry
        self._commands = commands
        self._executor = executor
        self._recovery = recovery
        self._audit = audit
        self._directives = directives
        self.runtimes = runtimes

    # -- life cycle ------------------------------------------------------------------

    def register(self) -> None:
        """Subscribe the executor (before the bus starts)."""
        self._executor.register()

    async def start(self) -> None:
        """Start the recovery loop (after the bus started)."""
        await self._recovery.start()

    async def stop(self) -> None:
        """Stop recovery, let running commands finish (bounded), close runtimes."""
        await self._recovery.stop()
        await self._executor.stop()
        close = getattr(self.runtimes, "close", None)
        if close is not None:
            close()

    @property
    def instance_id(self) -> str:
        """This replica's id (``claimed_by`` of the commands it executes)."""
        return self._executor.instance_id

    # -- registry --------------------------------------------------------------------

    async def register_agent(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Register an agent; the answer carries its clear ``token`` (shown once)."""
        return await self._registry.register(spec)

    async def get_agent(self, agent_id: str) -> dict[str, Any]:
        """One agent (never its token); raises ``AgentNotFound``."""
        return await self._registry.get(agent_id)

    async def list_agents(self, fleet_id: str | None = None, status: str | None = None,
                          limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Agents, oldest first, and the total matching count."""
        return await self._registry.page(fleet_id=fleet_id, status=status, limit=limit, offset=offset)

    async def agent_tree(self, agent_id: str) -> dict[str, Any]:
        """The agent and its descendants (the blast radius of a cascade)."""
        return await self._registry.tree(agent_id)

    async def authenticate_agent(self, token: str, *, include_revoked: bool = False) -> str | None:
        """The agent behind a token; ``None`` once revoked or terminated. Pass
        ``include_revoked=True`` only on the directives route, so a revoked agent
        can still learn that it must shut down."""
        return await self._registry.authenticate(token, include_revoked=include_revoked)

    async def identify_agent(self, token: str) -> tuple[str, str] | None:
        """The agent behind a usable token and the fleet it was registered in."""
        return await self._registry.identify(token)

    async def muted_agents(self, agent_ids: list[str] | set[str]) -> set[str]:
        """Those agents that are MUTED right now (expired mutes excluded)."""
        return await self._registry.muted(agent_ids)

    async def agents_summary(self) -> dict[str, Any]:
        """``{"active", "total", "by_status"}`` for dashboards."""
        return await self._registry.summary()

    # -- commands --------------------------------------------------------------------

    async def submit_command(self, operator: str, request: dict[str, Any], *,
                             operator_has_totp: bool, otp_ok: bool) -> tuple[dict[str, Any], bool]:
        """Accept a command: ``(receipt, created)``."""
        with urgent():
            return await self._commands.submit(operator, request, operator_has_totp=operator_has_totp,
                                               otp_ok=otp_ok)

    async def approve_command(self, command_id: str, operator: str, *,
                              operator_has_totp: bool = False, otp_ok: bool = False) -> dict[str, Any]:
        """A second operator approves a PENDING_APPROVAL TERMINATE; it is dispatched."""
        with urgent():
            return await self._commands.approve(command_id, operator,
                                                operator_has_totp=operator_has_totp, otp_ok=otp_ok)

    async def get_command(self, command_id: str) -> dict[str, Any]:
        """A command and its outcome; raises ``CommandNotFound``."""
        return command_to_dict(await self._commands.row(command_id))

    async def list_commands(self, status: str | None = None, command_type: str | None = None,
                            agent_id: str | None = None, operator: str | None = None,
                            limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Commands, newest first, and the total matching count."""
        return await self._commands.page(status=status, command_type=command_type,
                                         agent_id=agent_id, operator=operator, limit=limit,
                                         offset=offset)

    async def commands_summary(self) -> dict[str, int]:
        """Commands by status, for dashboards."""
        return await self._commands.summary()

    async def wait_for_command(self, command_id: str, timeout: float = 30.0,
                               poll_seconds: float = 0.02) -> dict[str, Any]:
        """Poll until the command is final (or ``timeout``); returns its last state."""
        deadline = time.monotonic() + timeout
        while True:
            command = await self.get_command(command_id)
            if is_final(command["status"]) or time.monotonic() >= deadline:
                return command
            await asyncio.sleep(poll_seconds)  # polling the row, not pretending work

    # -- audit and directives ----------------------------------------------------------

    async def query_audit(self, command_id: str | None = None, agent_id: str | None = None,
                          layer: str | None = None, limit: int = 100,
                          offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Audit rows, newest first, and the total matching count (``GET /audits``)."""
        return await self._audit.query(command_id=command_id, agent_id=agent_id, layer=layer,
                                       limit=limit, offset=offset)

    async def verify_audit(self, anchors: Mapping[int, str] | None = None) -> dict[str, Any]:
        """Walk the hash chain and check it against ``anchors`` (default: the anchor
        file's) (``cockpit audit verify``)."""
        return await self._audit.verify(anchors)

    @property
    def audit_anchor_file(self) -> Path | None:
        return self._audit.anchor_file

    async def pending_directives(self, agent_id: str, after_seq: int = 0,
                                 limit: int = 100) -> list[dict[str, Any]]:
        """The agent's directives after ``after_seq`` (``GET /agents/{id}/directives``)."""
        await self._registry.row(agent_id)  # AgentNotFound for an unknown agent
        return await self._directives.pending(agent_id, after_seq, limit)

    async def recover_once(self) -> dict[str, int]:
        """Run one recovery pass now (tests, ``cockpit`` maintenance commands)."""
        return await self._recovery.run_once()


def build_c2l(db: Database, bus: EventBus, metrics: Metrics, settings: C2LSettings,
              runtimes: RuntimeLookup | None = None, *, instance_id: str | None = None) -> C2L:
    """Wire the context. ``runtimes`` defaults to a ``RuntimeSet`` built from
    ``settings``; ``instance_id`` should be stable across restarts of one replica
    (``Settings.instance_id``) so its unfinished commands are recovered at start."""
    if runtimes is None:
        # Imported here: building the adapters is the only reason to load them.
        from cockpit.c2l.runtimes import RuntimeConfig, RuntimeSet

        runtimes = RuntimeSet.from_config(RuntimeConfig(
            docker_base_url=settings.docker_url, kubernetes_host=settings.kubernetes_host,
            kubernetes_token=settings.kubernetes_token,
            kubernetes_verify_ssl=settings.kubernetes_verify_ssl,
            kubeconfig_path=settings.kubeconfig, grace_seconds=settings.grace_seconds,
        ))
    instance = instance_id or uuid.uuid4().hex[:12]
    audit = AuditLog(db, settings.audit_anchor_file)
    registry = AgentRegistry(db, settings.registry_cache_seconds, refuses=runtimes.refuses)
    directives = DirectiveSender(db, bus)
    commands = CommandService(db, bus, registry, audit, settings)
    killswitch = KillSwitch(db, registry, audit, directives, runtimes, ExecutionLedger(db),
                            settings.grace_seconds)
    executor = CommandExecutor(db, bus, metrics, killswitch, audit, instance)
    recovery = Recovery(db, commands, executor, registry, directives, audit, runtimes,
                        settings.recovery_interval_seconds)
    return C2L(registry=registry, commands=commands, executor=executor, recovery=recovery,
               audit=audit, directives=directives, runtimes=runtimes)
