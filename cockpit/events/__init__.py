"""Event and command schemas shared between contexts. No logic lives here.

Facts are past tense (``TelemetryReceived``, ``VerdictIssued``, ``CommandConfirmed``),
commands are imperative (``ExecuteCommand``). Every event is a frozen pydantic model
with ``event_id``, ``occurred_at`` and ``schema_version``; fields are only ever added.
"""

from __future__ import annotations

from cockpit.events.base import Event
from cockpit.events.c2l import (
    COMMAND_TYPES,
    AgentDirective,
    CommandConfirmed,
    CommandStatus,
    CommandType,
    ExecuteCommand,
)
from cockpit.events.telemetry import (
    ActionSpec,
    MessageAnalysis,
    Telemetry,
    TelemetryKind,
    TelemetryReceived,
)
from cockpit.events.verdict import (
    RECOMMENDED_ACTIONS,
    SEVERITY_COLORS,
    Category,
    Severity,
    VerdictDrafted,
    VerdictIssued,
)

__all__ = [
    "COMMAND_TYPES",
    "RECOMMENDED_ACTIONS",
    "SEVERITY_COLORS",
    "ActionSpec",
    "AgentDirective",
    "Category",
    "CommandConfirmed",
    "CommandStatus",
    "CommandType",
    "Event",
    "ExecuteCommand",
    "MessageAnalysis",
    "Severity",
    "Telemetry",
    "TelemetryKind",
    "TelemetryReceived",
    "VerdictDrafted",
    "VerdictIssued",
]
