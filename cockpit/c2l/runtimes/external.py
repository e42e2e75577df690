"""`ExternalRuntime`: agents whose runtime Cockpit does not control.

Every runtime layer reports failure with the same reason, so the kill switch
audits it honestly; the software layer (credential revocation, directives)
handled elsewhere still applies to such agents.
"""

from __future__ import annotations

from typing import Any

from cockpit.c2l.runtimes.base import Outcome, Runtime, RuntimeState
from cockpit.c2l.runtimes.ref import RuntimeKind, RuntimeRef

__all__ = ["NO_RUNTIME_CONTROL", "ExternalRuntime"]

NO_RUNTIME_CONTROL = "external runtime: no runtime control"


class ExternalRuntime(Runtime):
    """The runtime of an agent that runs somewhere Cockpit cannot reach."""

    kind = RuntimeKind.EXTERNAL

    def _check(self, ref: RuntimeRef) -> RuntimeState:
        # Unknown is not "gone": report existence as Cockpit last knew it.
        return RuntimeState(exists=True, running=True, details={"reason": NO_RUNTIME_CONTROL})

    def _stop_gracefully(self, ref: RuntimeRef, grace_seconds: float) -> Outcome:
        return _refused()

    def _force_kill(self, ref: RuntimeRef) -> Outcome:
        return _refused()

    def _quarantine_network(self, ref: RuntimeRef) -> Outcome:
        return _refused()

    def _release_network(self, ref: RuntimeRef) -> Outcome:
        return _refused()

    def _freeze(self, ref: RuntimeRef) -> Outcome:
        return _refused()

    def _unfreeze(self, ref: RuntimeRef) -> Outcome:
        return _refused()

    def _verify_gone(self, ref: RuntimeRef) -> Outcome:
        return _refused()

    def _snapshot(self, ref: RuntimeRef) -> tuple[dict[str, Any], dict[str, Any], str | None]:
        return {"runtime": "external", "captured": False}, {}, NO_RUNTIME_CONTROL


def _refused() -> Outcome:
    return Outcome(False, {"runtime_control": False}, reason=NO_RUNTIME_CONTROL)
