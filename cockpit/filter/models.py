"""Tables owned by the narrative filter."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from cockpit.platform.db import Base, JSONType, UTCDateTime, utcnow

__all__ = ["AllianceRow", "StrategicPatternRow", "TelemetryRow"]


class TelemetryRow(Base):
    """One accepted telemetry message with its Layer 1 analysis."""

    __tablename__ = "telemetry"

    message_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    # No index of its own: ``ix_telemetry_fleet_ts`` starts with it. Every index is
    # paid on every insert (the two dropped in 0002, fleet_id and source_agent_id,
    # were a third of the embedded batch insert), so only queries that run get one.
    fleet_id: Mapped[str] = mapped_column(String(200))
    source_agent_id: Mapped[str] = mapped_column(String(200))
    target_agent_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    conversation_id: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    content: Mapped[str | None] = mapped_column(Text)
    action: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    provenance_chain: Mapped[list[str]] = mapped_column(JSONType, default=list)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    quarantined: Mapped[bool] = mapped_column(Boolean, default=False)
    intent: Mapped[str | None] = mapped_column(String(20))
    intent_confidence: Mapped[float | None] = mapped_column(Float)
    deception_score: Mapped[float | None] = mapped_column(Float)
    analysed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_telemetry_fleet_ts", "fleet_id", "timestamp"),
        # Small by construction: only rows the bus has not delivered yet. Quarantined
        # rows (a MUTED agent's) are never analysed, so they stay out of it. Each
        # predicate is written as SQLAlchemy renders ``~quarantined`` on that
        # dialect, so the planner matches it.
        Index(
            "ix_telemetry_unanalysed",
            "received_at",
            sqlite_where=text("analysed_at IS NULL AND quarantined = 0"),
            postgresql_where=text("analysed_at IS NULL AND NOT quarantined"),
        ),
    )


class StrategicPatternRow(Base):
    """The latest state of one detected situation (Layer 2 finding)."""

    __tablename__ = "strategic_patterns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fleet_id: Mapped[str] = mapped_column(String(200), index=True)
    situation_key: Mapped[str] = mapped_column(String(300), unique=True)
    category: Mapped[str] = mapped_column(String(20), index=True)
    agents: Mapped[list[str]] = mapped_column(JSONType)
    target: Mapped[str | None] = mapped_column(String(200))
    score: Mapped[float] = mapped_column(Float)
    evidence: Mapped[list[str]] = mapped_column(JSONType)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AllianceRow(Base):
    """Pair strength between two agents of a fleet, as last computed."""

    __tablename__ = "alliances"

    fleet_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    agent_a: Mapped[str] = mapped_column(String(200), primary_key=True)
    agent_b: Mapped[str] = mapped_column(String(200), primary_key=True)
    strength: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
