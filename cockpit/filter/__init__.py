"""Narrative filter: telemetry -> semantic -> strategic -> synthesis.

Public API: :class:`NarrativeFilter` (ingestion, evidence and alliance-graph queries)
and :func:`build_filter`. It consumes ``TelemetryReceived`` and emits ``VerdictDrafted``.
"""

from __future__ import annotations

from cockpit.filter.ingest import IngestResult, TelemetryStore
from cockpit.filter.pipeline import NarrativeFilter
from cockpit.filter.semantic import SemanticAnalyzer
from cockpit.filter.strategic import StrategicConfig
from cockpit.filter.synthesis import SynthesisConfig
from cockpit.platform.bus import EventBus
from cockpit.platform.db import Database
from cockpit.platform.metrics import Metrics
from cockpit.settings import FilterSettings

__all__ = ["IngestResult", "NarrativeFilter", "build_filter"]


def build_filter(
    db: Database, bus: EventBus, metrics: Metrics, settings: FilterSettings
) -> NarrativeFilter:
    """The narrative filter with the configured thresholds."""
    strategic = StrategicConfig(
        alliance_threshold=settings.alliance_threshold,
        deception_threshold=settings.deception_threshold,
        inconsistency_threshold=settings.inconsistency_threshold,
        threat_threshold=settings.threat_threshold,
    )
    return NarrativeFilter(
        TelemetryStore(db),
        bus,
        metrics,
        semantic=SemanticAnalyzer(),
        strategic_config=strategic,
        synthesis_config=SynthesisConfig(),
        max_backlog=settings.max_backlog,
    )
