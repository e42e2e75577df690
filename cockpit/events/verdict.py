"""Verdict vocabulary and the events between the filter and the verdict engine."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from cockpit.events.base import Event

__all__ = [
    "RECOMMENDED_ACTIONS",
    "SEVERITY_COLORS",
    "Category",
    "Severity",
    "VerdictDrafted",
    "VerdictIssued",
]


class Category(StrEnum):
    COLLUSION = "COLLUSION"
    DECEPTION = "DECEPTION"
    ALLIANCE = "ALLIANCE"
    THREAT = "THREAT"
    INCONSISTENCY = "INCONSISTENCY"


class Severity(StrEnum):
    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"


SEVERITY_COLORS: dict[Severity, str] = {
    Severity.CRITICAL: "#DC2626",
    Severity.HIGH: "#EA580C",
    Severity.MEDIUM: "#F59E0B",
    Severity.LOW: "#10B981",
}

#: A recommended action is a real C2L command type, or MONITOR.
RECOMMENDED_ACTIONS = (
    "MONITOR",
    "MUTE",
    "ISOLATE",
    "TERMINATE",
    "SNAPSHOT_STATE",
    "REVOKE_ACCESS",
    "INJECT_CONSTRAINT",
)


class VerdictDrafted(Event):
    """A synthesized verdict draft.

    Emitted by the filter's synthesis layer on ``narrative-analysis`` /
    ``cockpit.analysis.<fleet>``; consumed by the verdict engine, which creates or
    updates the ACTIVE verdict with the same ``fingerprint``.
    """

    fingerprint: str
    fleet_id: str
    category: Category
    severity: Severity
    title: str
    agents_involved: list[str]
    target: str | None = None
    evidence_chain: list[str] = Field(default_factory=list)
    confidence: float = Field(ge=0.0, le=1.0)
    recommended_action: str = "MONITOR"
    #: when the newest evidence message was received (for telemetry -> verdict latency)
    observed_at: datetime | None = None


class VerdictIssued(Event):
    """A verdict was created or updated. Emitted by the verdict engine; the gateway
    relays it on ``WS /ws`` as ``verdict.created`` / ``verdict.updated``."""

    created: bool
    verdict: dict[str, object]
