"""The runtime port: what the kill switch may ask of whatever runs an agent.

One small interface that every runtime implements (the JupyterHub spawner /
Falco Talon actionner shape): a `RuntimeRef` names the thing to act on, and a
`Runtime` checks it, stops it, kills it, cuts its network, freezes it, takes a
snapshot of it and verifies that it is gone.

Contract every adapter keeps:

* Public methods are coroutines; the blocking SDK / syscall work runs in a
  worker thread (`asyncio.to_thread`) so the event loop never waits on Docker,
  Kubernetes or a grace period.
* A layer action never raises for what happens on the runtime side: a target
  that is already gone is a *result* (`LayerResult`, with what was observed in
  `verification`), and an unreachable engine is a failed `LayerResult` with a
  `reason`. Only a malformed ref (`InvalidRuntimeRef`) raises.
* `check` and `snapshot` raise `RuntimeUnavailable` when the engine cannot be
  asked at all, since there is no honest state to return.
* Every `LayerResult` says what was verified after acting, not what was asked.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cockpit.c2l.runtimes.ref import InvalidRuntimeRef, RuntimeKind, RuntimeRef

__all__ = [
    "LAYER_CONTAINER",
    "LAYER_NETWORK",
    "LAYER_STATE",
    "InvalidRuntimeRef",
    "LayerResult",
    "Outcome",
    "Runtime",
    "RuntimeAction",
    "RuntimeActionFailed",
    "RuntimeControlError",
    "RuntimeKind",
    "RuntimeRef",
    "RuntimeState",
    "RuntimeUnavailable",
    "Snapshot",
    "encode_payload",
]

# Layer names as the kill switch audits them (DESIGN section 7): "container" is
# the runtime layer whatever the runtime (process, container or pod).
LAYER_CONTAINER = "container"
LAYER_NETWORK = "network"
LAYER_STATE = "state"


class RuntimeAction(StrEnum):
    """The actions a `LayerResult` can report."""

    STOP_GRACEFULLY = "stop_gracefully"
    FORCE_KILL = "force_kill"
    QUARANTINE_NETWORK = "quarantine_network"
    RELEASE_NETWORK = "release_network"
    FREEZE = "freeze"
    UNFREEZE = "unfreeze"
    VERIFY_GONE = "verify_gone"
    SNAPSHOT = "snapshot"


_LAYER_OF: dict[RuntimeAction, str] = {
    RuntimeAction.QUARANTINE_NETWORK: LAYER_NETWORK,
    RuntimeAction.RELEASE_NETWORK: LAYER_NETWORK,
    RuntimeAction.SNAPSHOT: LAYER_STATE,
}


class RuntimeControlError(Exception):
    """Base of the port's own errors; adapters translate SDK errors into these."""


class RuntimeUnavailable(RuntimeControlError):
    """The engine (Docker daemon, Kubernetes API, /proc) could not be asked."""


class RuntimeActionFailed(RuntimeControlError):
    """The engine answered, but refused or failed the action."""


@dataclass(frozen=True, slots=True)
class RuntimeState:
    """What `Runtime.check` observed: does the target exist, is it running."""

    exists: bool
    running: bool
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a blocking action observed; the port adds timing and names."""

    success: bool
    verification: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class LayerResult:
    """One layer action on one target, with the verification that backs it.

    `verification` holds what was checked afterwards and what was observed
    (`{"pid_exists": False}`, `{"container_exists": False}`, `{"networks": []}`,
    `{"pod_found": False}`, `{"networkpolicy": "cockpit-quarantine-x",
    "present": True}`); the kill switch writes it to the audit row as is.
    """

    layer: str
    action: str
    runtime: str
    success: bool
    verification: dict[str, Any]
    details: dict[str, Any]
    duration_ms: float
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for audit rows and command results."""
        return {
            "layer": self.layer,
            "action": self.action,
            "runtime": self.runtime,
            "success": self.success,
            "verification": self.verification,
            "details": self.details,
            "duration_ms": self.duration_ms,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Captured state of a target: a JSON payload and its sha256 (hex).

    `captured` is False when nothing could be captured (the target is gone, or
    the runtime is external); `reason` then says why and the payload records
    what was observed instead.
    """

    runtime: str
    payload: bytes
    sha256: str
    metadata: dict[str, Any]
    captured: bool
    duration_ms: float
    reason: str | None = None

    def to_layer_result(self) -> LayerResult:
        """The audit view of the snapshot (hash and metadata, not the payload)."""
        return LayerResult(
            layer=LAYER_STATE,
            action=RuntimeAction.SNAPSHOT.value,
            runtime=self.runtime,
            success=self.captured,
            verification={"sha256": self.sha256, "bytes": len(self.payload)},
            details=self.metadata,
            duration_ms=self.duration_ms,
            reason=self.reason,
        )


def encode_payload(document: Mapping[str, Any]) -> tuple[bytes, str]:
    """Canonical JSON bytes of a snapshot document and their sha256 hex digest."""
    payload = json.dumps(document, sort_keys=True, default=str, separators=(",", ":")).encode()
    return payload, hashlib.sha256(payload).hexdigest()


class Runtime(abc.ABC):
    """The port. Subclasses implement the blocking `_` hooks; this class runs
    them off the event loop, times them and turns port errors into results.
    """

    kind: RuntimeKind

    # -- public, async API ---------------------------------------------------

    async def check(self, ref: RuntimeRef) -> RuntimeState:
        """Whether the target exists and runs. Raises `RuntimeUnavailable`."""
        self._require_kind(ref)
        return await asyncio.to_thread(self._check, ref)

    async def stop_gracefully(self, ref: RuntimeRef, grace_seconds: float) -> LayerResult:
        """Ask the target to stop, wait up to `grace_seconds`, verify it stopped."""
        return await self._layer(
            RuntimeAction.STOP_GRACEFULLY, ref, self._stop_gracefully, grace_seconds
        )

    async def force_kill(self, ref: RuntimeRef) -> LayerResult:
        """Kill the target without asking (and remove it), verify it is gone."""
        return await self._layer(RuntimeAction.FORCE_KILL, ref, self._force_kill)

    async def quarantine_network(self, ref: RuntimeRef) -> LayerResult:
        """Cut the target off every network, leaving it running; verify."""
        return await self._layer(RuntimeAction.QUARANTINE_NETWORK, ref, self._quarantine_network)

    async def release_network(self, ref: RuntimeRef) -> LayerResult:
        """Undo `quarantine_network`; verify."""
        return await self._layer(RuntimeAction.RELEASE_NETWORK, ref, self._release_network)

    async def freeze(self, ref: RuntimeRef) -> LayerResult:
        """Suspend the target in place (pause / SIGSTOP); verify."""
        return await self._layer(RuntimeAction.FREEZE, ref, self._freeze)

    async def unfreeze(self, ref: RuntimeRef) -> LayerResult:
        """Resume a frozen target; verify."""
        return await self._layer(RuntimeAction.UNFREEZE, ref, self._unfreeze)

    async def verify_gone(self, ref: RuntimeRef) -> LayerResult:
        """Succeeds only when the runtime confirms the target no longer exists."""
        return await self._layer(RuntimeAction.VERIFY_GONE, ref, self._verify_gone)

    async def refuses(self, ref: RuntimeRef) -> str | None:
        """Why Cockpit must never act on ``ref`` (it is Cockpit itself, or what Cockpit
        runs in: stopping it would take the kill switch down); None when it may.
        Registration asks; each adapter checks again before it acts, whatever a stored
        row says. An engine that cannot be asked now refuses nothing here."""
        self._require_kind(ref)
        try:
            return await asyncio.to_thread(self._refuses, ref)
        except RuntimeControlError:
            return None

    async def snapshot(self, ref: RuntimeRef) -> Snapshot:
        """Capture the target's state. Raises `RuntimeUnavailable`."""
        self._require_kind(ref)
        started = time.perf_counter()
        document, metadata, reason = await asyncio.to_thread(self._snapshot, ref)
        payload, digest = encode_payload(document)
        return Snapshot(
            runtime=self.kind.value,
            payload=payload,
            sha256=digest,
            metadata={**metadata, "taken_at": datetime.now(UTC).isoformat()},
            captured=reason is None,
            duration_ms=_elapsed_ms(started),
            reason=reason,
        )

    # -- blocking hooks (run in a worker thread) -----------------------------

    def _refuses(self, ref: RuntimeRef) -> str | None:
        """See `refuses`; runtimes that can hold Cockpit itself override it."""
        return None

    @abc.abstractmethod
    def _check(self, ref: RuntimeRef) -> RuntimeState: ...

    @abc.abstractmethod
    def _stop_gracefully(self, ref: RuntimeRef, grace_seconds: float) -> Outcome: ...

    @abc.abstractmethod
    def _force_kill(self, ref: RuntimeRef) -> Outcome: ...

    @abc.abstractmethod
    def _quarantine_network(self, ref: RuntimeRef) -> Outcome: ...

    @abc.abstractmethod
    def _release_network(self, ref: RuntimeRef) -> Outcome: ...

    @abc.abstractmethod
    def _freeze(self, ref: RuntimeRef) -> Outcome: ...

    @abc.abstractmethod
    def _unfreeze(self, ref: RuntimeRef) -> Outcome: ...

    @abc.abstractmethod
    def _verify_gone(self, ref: RuntimeRef) -> Outcome: ...

    @abc.abstractmethod
    def _snapshot(self, ref: RuntimeRef) -> tuple[dict[str, Any], dict[str, Any], str | None]:
        """Return (document, metadata, reason-if-not-captured)."""

    # -- plumbing -------------------------------------------------------------

    def _require_kind(self, ref: RuntimeRef) -> None:
        if ref.kind is not self.kind:
            raise InvalidRuntimeRef(f"{type(self).__name__} cannot act on a {ref.kind} ref")

    async def _layer(
        self, action: RuntimeAction, ref: RuntimeRef, hook: Callable[..., Outcome], *args: Any
    ) -> LayerResult:
        self._require_kind(ref)
        started = time.perf_counter()
        try:
            outcome = await asyncio.to_thread(hook, ref, *args)
        except RuntimeControlError as exc:
            outcome = Outcome(success=False, verification={}, reason=str(exc))
        return LayerResult(
            layer=_LAYER_OF.get(action, LAYER_CONTAINER),
            action=action.value,
            runtime=self.kind.value,
            success=outcome.success,
            verification=outcome.verification,
            details={"target": ref.describe(), **outcome.details},
            duration_ms=_elapsed_ms(started),
            reason=outcome.reason,
        )


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
