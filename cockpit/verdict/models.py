"""Tables owned by the verdict engine."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from cockpit.platform.db import Base, JSONType, UTCDateTime, utcnow

__all__ = ["VerdictAgentRow", "VerdictRow"]


class VerdictRow(Base):
    """A verdict. ``agent_id`` (the primary agent) and ``final_verdict`` (the category
    as concluded) are the columns the runbook's tuning SQL indexes."""

    __tablename__ = "verdicts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(128))
    fleet_id: Mapped[str] = mapped_column(String(200), index=True)
    agent_id: Mapped[str] = mapped_column(String(200))
    final_verdict: Mapped[str] = mapped_column(String(20))
    category: Mapped[str] = mapped_column(String(20))
    severity: Mapped[str] = mapped_column(String(10), index=True)
    title: Mapped[str] = mapped_column(String(500))
    agents_involved: Mapped[list[str]] = mapped_column(JSONType)
    target: Mapped[str | None] = mapped_column(String(200))
    evidence_chain: Mapped[list[str]] = mapped_column(JSONType)
    confidence: Mapped[float] = mapped_column(Float)
    recommended_action: Mapped[str] = mapped_column(String(30))
    status: Mapped[str] = mapped_column(String(20), index=True)
    mitigation_command_id: Mapped[str | None] = mapped_column(String(64))
    observed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    # Named as in the runbook's tuning SQL, so its CREATE INDEX statements are no-ops.
    __table_args__ = (
        # At most one ACTIVE verdict per situation, even with several replicas writing.
        Index(
            "uq_verdicts_active_fingerprint",
            "fingerprint",
            unique=True,
            sqlite_where=text("status = 'ACTIVE'"),
            postgresql_where=text("status = 'ACTIVE'"),
        ),
        Index("idx_verdicts_agent_id", "agent_id"),
        Index("idx_verdicts_created_at", created_at.desc()),
        Index("idx_verdicts_final_verdict", "final_verdict"),
        # GET /verdicts lists newest-updated first.
        Index("ix_verdicts_updated_at", updated_at.desc()),
    )


class VerdictAgentRow(Base):
    """Which agents a verdict names (its ``agents_involved`` and ``target``), for
    ``GET /verdicts?agent_id=`` through an index instead of a scan of every verdict's
    JSON. Written with the verdict; a verdict's agents never change (they are part of
    its fingerprint)."""

    __tablename__ = "verdict_agents"

    agent_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    verdict_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("verdicts.id", ondelete="CASCADE"), primary_key=True
    )
