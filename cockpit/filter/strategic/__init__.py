"""Layer 2 of the narrative filter: strategic patterns over a fleet's telemetry.

Public API: ``FleetAnalyzer`` (one fleet), ``StrategicLayer`` (all fleets of this
replica), ``StrategicConfig``, ``Finding`` and ``AllianceSnapshot``.
"""

from __future__ import annotations

from cockpit.filter.strategic.alliance import (
    AllianceEdge,
    AllianceGraph,
    AllianceGraphView,
    AllianceSnapshot,
    snapshot_of,
)
from cockpit.filter.strategic.analyzer import FleetAnalyzer
from cockpit.filter.strategic.collusion import CollusionDetector
from cockpit.filter.strategic.config import StrategicConfig
from cockpit.filter.strategic.deception import DeceptionDetector
from cockpit.filter.strategic.finding import Finding, situation_key
from cockpit.filter.strategic.inconsistency import InconsistencyDetector
from cockpit.filter.strategic.layer import StrategicLayer
from cockpit.filter.strategic.threat import ThreatDetector

__all__ = [
    "AllianceEdge",
    "AllianceGraph",
    "AllianceGraphView",
    "AllianceSnapshot",
    "CollusionDetector",
    "DeceptionDetector",
    "Finding",
    "FleetAnalyzer",
    "InconsistencyDetector",
    "StrategicConfig",
    "StrategicLayer",
    "ThreatDetector",
    "snapshot_of",
    "situation_key",
]
