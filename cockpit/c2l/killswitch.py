"""The multi-layer kill switch (DESIGN.md section 7's table), one command at a time.

Every layer is a real action followed by a verification, and writes an audit row
with what was verified. Each action step goes through the :class:`StepLedger`
(command x agent x step): a step already recorded successful is not run again
when a command is re-executed after a crash; verifications always re-run.

TERMINATE works in two phases over the *blast radius* (the targets and, with
``cascade`` (default true), every registered descendant):

1. software, for every agent at once: revoke the token, send ``shutdown``, so no
   agent of the tree can act or spawn while the tree is being taken down;
2. runtime, **parent first**, one generation at a time (the agents of one
   generation in parallel): graceful stop -> verify -> force kill -> verify ->
   network quarantine if it still exists. Parents go first so that a supervisor
   that respawns crashed children is gone before its children are killed.

An external agent has no runtime Cockpit can reach: software layers apply, runtime
layers are audited as ``not_applicable`` and a TERMINATE completes once its token
is revoked and ``shutdown`` is delivered, which is the best possible for it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Protocol

from cockpit.c2l.audit import AuditEntry, AuditLog
from cockpit.c2l.directives import DirectiveSender
from cockpit.c2l.models import AgentRow, SnapshotRow
from cockpit.c2l.registry import AgentRegistry, to_dict
from cockpit.c2l.runtimes.base import LayerResult, Runtime, encode_payload
from cockpit.c2l.runtimes.external import NO_RUNTIME_CONTROL
from cockpit.c2l.runtimes.ref import RuntimeKind, RuntimeRef
from cockpit.events import CommandType
from cockpit.platform.db import Database, utcnow
from cockpit.platform.retry import until_done

__all__ = ["EXTERNAL_TERMINATE_NOTE", "CommandSpec", "KillOutcome", "KillSwitch", "RuntimeLookup",
           "StepLedger"]

EXTERNAL_TERMINATE_NOTE = (
    "external agent: no runtime control; credentials revoked and shutdown directive "
    "delivered, which is the best Cockpit can do for it"
)


class RuntimeLookup(Protocol):
    """What C2L needs of a ``RuntimeSet``: the adapter for a ref, and whether a ref
    is one Cockpit must never act on."""

    def for_ref(self, ref: RuntimeRef) -> Runtime: ...

    async def refuses(self, ref: RuntimeRef) -> str | None: ...


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """The command to execute, as stored in its row."""

    command_id: str
    command_type: CommandType
    target_agents: list[str]
    parameters: dict[str, Any]
    operator: str | None = None
    #: which execution of the command this is (1: the first, so no step of it ran
    #: before and none is looked up in the ledger); ``None`` when not known
    attempt: int | None = None


@dataclass(slots=True)
class KillOutcome:
    """What the kill switch did: every layer, and whether the command's goal holds."""

    success: bool = True
    executed_layers: list[dict[str, Any]] = field(default_factory=list)
    cascade_terminated: list[str] = field(default_factory=list)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def fail(self, agent_id: str, reason: str) -> None:
        self.success = False
        self.errors.append(f"{agent_id}: {reason}")

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors) or None


def _software(action: str, success: bool, verification: dict[str, Any],
              details: dict[str, Any] | None = None, reason: str | None = None) -> LayerResult:
    return LayerResult(layer="software", action=action, runtime="cockpit", success=success,
                       verification=verification, details=details or {}, duration_ms=0.0,
                       reason=reason)


def _not_applicable(layer: str, action: str, note: str = NO_RUNTIME_CONTROL) -> LayerResult:
    return LayerResult(layer=layer, action="not_applicable", runtime="external", success=True,
                       verification={"runtime_control": False},
                       details={"applicable": False, "requested": action, "note": note},
                       duration_ms=0.0)


class StepLedger(Protocol):
    """Which action steps already ran (``command_executions``; see the executor)."""

    async def succeeded(self, command_id: str, agent_id: str, key: str) -> dict[str, Any] | None: ...

    async def record(self, command_id: str, agent_id: str, key: str, success: bool,
                     result: dict[str, Any]) -> None: ...


class KillSwitch:
    """Executes one command's layers against the registry and the runtimes."""

    def __init__(self, db: Database, registry: AgentRegistry, audit: AuditLog,
                 directives: DirectiveSender, runtimes: RuntimeLookup, ledger: StepLedger,
                 default_grace_seconds: float) -> None:
        self._db = db
        self._registry = registry
        self._audit = audit
        self._directives = directives
        self._runtimes = runtimes
        self._ledger = ledger
        self._grace = default_grace_seconds

    async def execute(self, spec: CommandSpec) -> KillOutcome:
        """Run every layer of ``spec`` on every target; never raises for a target's
        failure (it is recorded in the outcome)."""
        run = _Run(self, spec, KillOutcome())
        handler = {
            CommandType.MUTE: run.mute,
            CommandType.ISOLATE: run.isolate,
            CommandType.REVOKE_ACCESS: run.revoke,
            CommandType.INJECT_CONSTRAINT: run.constrain,
            CommandType.SNAPSHOT_STATE: run.snapshot,
        }.get(spec.command_type)
        if spec.command_type is CommandType.TERMINATE:
            await run.terminate()
        else:
            assert handler is not None
            for agent_id in spec.target_agents:
                await run.guarded(agent_id, handler)
        return run.outcome


class _Run:
    """One execution of one command: accumulates layers into the outcome."""

    def __init__(self, ks: KillSwitch, spec: CommandSpec, outcome: KillOutcome) -> None:
        self.ks = ks
        self.spec = spec
        self.outcome = outcome
        self.params = spec.parameters

    # -- plumbing ------------------------------------------------------------------

    async def guarded(self, agent_id: str, handler: Any) -> None:
        # One target's unexpected error must not stop the others; it fails the command.
        try:
            row = await self.ks._registry.row(agent_id)
            await handler(row)
        except Exception as exc:  # noqa: BLE001
            await self.record(agent_id, _software("error", False, {}, reason=repr(exc)))
            self.outcome.fail(agent_id, repr(exc))
            self.outcome.agents.setdefault(agent_id, {})["ok"] = False

    async def record(self, agent_id: str, result: LayerResult, *, replayed: bool = False) -> dict[str, Any]:
        entry = {"agent_id": agent_id, **result.to_dict()}
        if replayed:
            entry["replayed"] = True
        else:
            # The action has happened: a database outage now is waited out rather than
            # leave an act on a runtime with no audit row.
            audited = AuditEntry(
                layer=result.layer, action=result.action, success=result.success,
                details={k: entry[k] for k in ("runtime", "verification", "details", "reason",
                                                "duration_ms")},
                command_id=self.spec.command_id, agent_id=agent_id, operator=self.spec.operator,
            )
            await until_done(lambda: self.ks._audit.append(audited), what="audit_append")
        self.outcome.executed_layers.append(entry)
        return entry

    async def step(self, agent_id: str, key: str, act: Any) -> LayerResult:
        """Run an action step once per (command, agent, key); replay a past success."""
        done = None
        if self.spec.attempt != 1:
            done = await self.ks._ledger.succeeded(self.spec.command_id, agent_id, key)
        if done is not None:
            result = LayerResult(**done)
            await self.record(agent_id, result, replayed=True)
            return result
        result = await _timed(act)
        await self.record(agent_id, result)
        await self.ks._ledger.record(self.spec.command_id, agent_id, key, result.success,
                                     result.to_dict())
        return result

    async def check(self, agent_id: str, act: Any) -> LayerResult:
        """A verification: always re-run, always audited."""
        result = await _timed(act)
        await self.record(agent_id, result)
        return result

    def runtime_of(self, row: AgentRow) -> tuple[RuntimeRef, Runtime | None, str | None]:
        ref = RuntimeRef.from_dict(row.runtime)
        try:
            return ref, self.ks._runtimes.for_ref(ref), None
        except LookupError as exc:  # RuntimeNotConfigured: e.g. no Docker URL set
            return ref, None, str(exc)

    async def runtime_step(self, row: AgentRow, key: str, layer: str, action: str,
                           call: Any) -> LayerResult:
        """A runtime action: not applicable for external agents, a failure when the
        runtime kind is not configured."""
        ref, runtime, missing = self.runtime_of(row)
        if ref.kind is RuntimeKind.EXTERNAL:
            return await self.check(row.id, _const(_not_applicable(layer, action)))
        if runtime is None:
            failed = LayerResult(layer=layer, action=action, runtime=ref.kind.value, success=False,
                                 verification={}, details={}, duration_ms=0.0, reason=missing)
            return await self.step(row.id, key, _const(failed))
        return await self.step(row.id, key, lambda: call(runtime, ref))

    def done(self, agent_id: str, ok: bool, status: str, reason: str | None = None, **extra: Any) -> None:
        self.outcome.agents[agent_id] = {"ok": ok, "status": status, "reason": reason, **extra}
        if not ok:
            self.outcome.fail(agent_id, reason or "failed")

    # -- software layers -------------------------------------------------------------

    async def revoke_step(self, agent_id: str, status: str) -> LayerResult:
        async def act() -> LayerResult:
            await self.ks._registry.revoke_token(agent_id)
            row = await self.ks._registry.raise_status(agent_id, status)
            revoked = row.token_revoked_at is not None
            return _software("revoke_credentials", revoked,
                             {"token_revoked": revoked, "status": row.status})
        return await self.step(agent_id, "software.revoke", act)

    async def directive_step(self, agent_id: str, directive: str, parameters: dict[str, Any]) -> LayerResult:
        async def act() -> LayerResult:
            sent = await self.ks._directives.send(agent_id, directive, parameters,
                                                  command_id=self.spec.command_id)
            return _software(f"directive_{directive}", True,
                             {"stored_seq": sent["seq"], "published": True}, {"directive": directive})
        return await self.step(agent_id, f"software.directive_{directive}", act)

    # -- command types ---------------------------------------------------------------

    async def mute(self, row: AgentRow) -> None:
        duration = float(self.params.get("duration_seconds", 300))
        until = utcnow() + timedelta(seconds=duration)
        after: AgentRow | None = None

        async def act() -> LayerResult:
            nonlocal after
            after = await self.ks._registry.raise_status(row.id, "MUTED", muted_until=until)
            ok = after.status != "ACTIVE"
            return _software("mute", ok, {"status": after.status, "muted_until": until.isoformat()},
                             {"duration_seconds": duration}, None if ok else "status unchanged")

        muted = await self.step(row.id, "software.mute", act)
        await self.directive_step(row.id, "mute", {"until": until.isoformat(),
                                                   "duration_seconds": duration})
        ok, reason = muted.success, muted.reason
        if self.params.get("freeze"):
            frozen = await self.runtime_step(row, "container.freeze", "container", "freeze",
                                             lambda rt, ref: rt.freeze(ref))
            if frozen.success and frozen.action != "not_applicable":
                await self.ks._registry.set_frozen(row.id, True)
            ok, reason = ok and frozen.success, reason or frozen.reason
        if after is None:  # the mute was replayed from an earlier execution: read it now
            after = await self.ks._registry.row(row.id)
        self.done(row.id, ok, after.status, reason)

    async def isolate(self, row: AgentRow) -> None:
        revoked = await self.revoke_step(row.id, "ISOLATED")
        net = await self.runtime_step(row, "network.quarantine", "network", "quarantine_network",
                                      lambda rt, ref: rt.quarantine_network(ref))
        after = await self.ks._registry.row(row.id)
        self.done(row.id, revoked.success and net.success, after.status,
                  revoked.reason or net.reason)

    async def revoke(self, row: AgentRow) -> None:
        revoked = await self.revoke_step(row.id, "REVOKED")
        after = await self.ks._registry.row(row.id)
        self.done(row.id, revoked.success, after.status, revoked.reason)

    async def constrain(self, row: AgentRow) -> None:
        text = str(self.params["constraint"])

        async def act() -> LayerResult:
            after = await self.ks._registry.add_constraint(row.id, {
                "text": text, "command_id": self.spec.command_id,
                "operator": self.spec.operator, "at": utcnow().isoformat()})
            return _software("record_constraint", True, {"constraints": len(after.constraints)})

        recorded = await self.step(row.id, "software.constraint", act)
        sent = await self.directive_step(row.id, "constraint", {"constraint": text})
        after = await self.ks._registry.row(row.id)
        self.done(row.id, recorded.success and sent.success, after.status)

    async def snapshot(self, row: AgentRow) -> None:
        async def act() -> LayerResult:
            ref, runtime, missing = self.runtime_of(row)
            if ref.kind is RuntimeKind.EXTERNAL:
                # No runtime to capture: keep what Cockpit itself knows of the agent.
                payload, digest = encode_payload({"runtime": "external", "agent": to_dict(row)})
                meta, captured, reason = {"applicable": False, "note": NO_RUNTIME_CONTROL,
                                          "captured": "registry record"}, True, None
            elif runtime is None:
                return LayerResult("state", "snapshot", ref.kind.value, False, {}, {}, 0.0, missing)
            else:
                try:
                    snap = await runtime.snapshot(ref)
                except Exception as exc:  # noqa: BLE001 - RuntimeUnavailable and SDK surprises
                    return LayerResult("state", "snapshot", ref.kind.value, False, {}, {}, 0.0, str(exc))
                payload, digest, meta = snap.payload, snap.sha256, snap.metadata
                captured, reason = snap.captured, snap.reason
            snapshot_id = uuid.uuid4().hex
            if captured:
                async with self.ks._db.sessions.begin() as session:
                    session.add(SnapshotRow(id=snapshot_id, command_id=self.spec.command_id,
                                            agent_id=row.id, sha256=digest, payload=payload,
                                            metadata_=meta))
            return LayerResult("state", "snapshot", ref.kind.value, captured,
                               {"sha256": digest, "bytes": len(payload), "stored": captured},
                               {"snapshot_id": snapshot_id if captured else None, **meta}, 0.0, reason)

        result = await self.step(row.id, "state.snapshot", act)
        if result.success:
            self.outcome.snapshots.append({"agent_id": row.id, "sha256": result.verification["sha256"],
                                           "snapshot_id": result.details.get("snapshot_id")})
        self.done(row.id, result.success, row.status, result.reason)

    # -- TERMINATE ------------------------------------------------------------------

    async def terminate(self) -> None:
        generations = await self.blast_radius()
        everyone = [agent for generation in generations for agent in generation]
        grace = float(self.params.get("grace_seconds", self.ks._grace))

        async def software(row: AgentRow) -> None:
            await self.revoke_step(row.id, "REVOKED")
            await self.directive_step(row.id, "shutdown", {"grace_seconds": grace})

        await asyncio.gather(*(self.guarded(r.id, software) for r in everyone))
        for depth, generation in enumerate(generations):
            await asyncio.gather(*(self.guarded(r.id, lambda row, d=depth: self.take_down(row, grace, d))
                                   for r in generation))
        targets = set(self.spec.target_agents)
        self.outcome.cascade_terminated = [
            r.id for r in everyone if r.id not in targets
            and self.outcome.agents.get(r.id, {}).get("verified_gone")
        ]

    async def blast_radius(self) -> list[list[AgentRow]]:
        """The targets then each generation of descendants (each agent once), every
        agent after all of its ancestors in the set, listed or not: a parent listed
        after its child still goes down first (a supervisor could respawn the child)."""
        cascade = self.params.get("cascade", True) is not False
        listed = set(self.spec.target_agents)
        rows: dict[str, AgentRow] = {}
        depth: dict[str, int] = {}
        for agent_id in self.spec.target_agents:
            try:
                root = await self.ks._registry.row(agent_id)
            except LookupError as exc:
                self.done(agent_id, False, "UNKNOWN", str(exc))
                continue
            rows.setdefault(root.id, root)
            depth.setdefault(root.id, 0)
            for row, below in await self.ks._registry.descendants(root.id):
                if cascade or row.id in listed:
                    rows.setdefault(row.id, row)
                    depth[row.id] = max(depth.get(row.id, 0), below)
        generations: list[list[AgentRow]] = []
        for agent_id, row in rows.items():
            while len(generations) <= depth[agent_id]:
                generations.append([])
            generations[depth[agent_id]].append(row)
        return [g for g in generations if g]

    async def take_down(self, row: AgentRow, grace: float, depth: int) -> None:
        ref, runtime, missing = self.runtime_of(row)
        if ref.kind is RuntimeKind.EXTERNAL:
            await self.check(row.id, _const(_not_applicable("container", "terminate",
                                                            EXTERNAL_TERMINATE_NOTE)))
            after = await self.ks._registry.raise_status(row.id, "TERMINATED")
            self.done(row.id, True, after.status, None, depth=depth, verified_gone=False,
                      note=EXTERNAL_TERMINATE_NOTE)
            return
        if runtime is None:
            self.done(row.id, False, row.status, missing, depth=depth, verified_gone=False)
            return
        if row.frozen:  # a stopped process cannot handle SIGTERM: let it shut down cleanly
            await self.step(row.id, "container.unfreeze", lambda: runtime.unfreeze(ref))
        stop = await self.step(row.id, "software.stop_gracefully",
                               lambda: _as_layer("software", runtime.stop_gracefully(ref, grace)))
        gone = await self.check(row.id, lambda: runtime.verify_gone(ref))
        if not gone.success:
            await self.step(row.id, "container.force_kill", lambda: runtime.force_kill(ref))
            gone = await self.check(row.id, lambda: runtime.verify_gone(ref))
        if not gone.success:
            # Still there after SIGKILL / removal: at least cut it off the network.
            await self.step(row.id, "network.quarantine", lambda: runtime.quarantine_network(ref))
            gone = await self.check(row.id, lambda: runtime.verify_gone(ref))
        status = "TERMINATED" if gone.success else "REVOKED"
        after = await self.ks._registry.raise_status(row.id, status)
        self.done(row.id, gone.success, after.status,
                  None if gone.success else f"not verified gone: {gone.reason or gone.verification}",
                  depth=depth, verified_gone=gone.success, graceful=stop.success)


async def _timed(act: Any) -> LayerResult:
    """Run a step; software steps get their measured duration (runtime ones time themselves)."""
    started = time.perf_counter()
    result: LayerResult = await act()
    if result.duration_ms == 0.0:
        result = replace(result, duration_ms=round((time.perf_counter() - started) * 1000.0, 3))
    return result


def _const(result: LayerResult) -> Any:
    async def act() -> LayerResult:
        return result
    return act


async def _as_layer(layer: str, pending: Any) -> LayerResult:
    """Audit a runtime action under another DESIGN layer (graceful stop is software)."""
    result: LayerResult = await pending
    return LayerResult(layer, result.action, result.runtime, result.success, result.verification,
                       result.details, result.duration_ms, result.reason)
