"""The kill switch's runtime adapters: one port (`Runtime`), one adapter per kind.

Only this package imports `docker` and `kubernetes`, and only in the modules of
those adapters, loaded on demand by `RuntimeSet.from_config`.
"""

from __future__ import annotations

from cockpit.c2l.runtimes.base import (
    LAYER_CONTAINER,
    LAYER_NETWORK,
    LAYER_STATE,
    LayerResult,
    Runtime,
    RuntimeAction,
    RuntimeActionFailed,
    RuntimeControlError,
    RuntimeState,
    RuntimeUnavailable,
    Snapshot,
)
from cockpit.c2l.runtimes.external import NO_RUNTIME_CONTROL, ExternalRuntime
from cockpit.c2l.runtimes.process import ProcessRuntime, process_ref
from cockpit.c2l.runtimes.ref import InvalidRuntimeRef, RuntimeKind, RuntimeRef
from cockpit.c2l.runtimes.runtime_set import RuntimeConfig, RuntimeNotConfigured, RuntimeSet

__all__ = [
    "LAYER_CONTAINER",
    "LAYER_NETWORK",
    "LAYER_STATE",
    "NO_RUNTIME_CONTROL",
    "ExternalRuntime",
    "InvalidRuntimeRef",
    "LayerResult",
    "ProcessRuntime",
    "Runtime",
    "RuntimeAction",
    "RuntimeActionFailed",
    "RuntimeConfig",
    "RuntimeControlError",
    "RuntimeKind",
    "RuntimeNotConfigured",
    "RuntimeRef",
    "RuntimeSet",
    "RuntimeState",
    "RuntimeUnavailable",
    "Snapshot",
    "process_ref",
]
