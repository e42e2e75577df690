"""Tables owned by C2L: agents, commands, executions, audit, snapshots."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from cockpit.platform.db import Base, JSONType, UTCDateTime, utcnow

__all__ = [
    "AgentDirectiveRow",
    "AgentRow",
    "AuditRow",
    "CommandExecutionRow",
    "CommandRow",
    "SnapshotRow",
]


class AgentRow(Base):
    """A registered agent, its runtime and its place in the spawn tree."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    fleet_id: Mapped[str] = mapped_column(String(200), index=True)
    parent_id: Mapped[str | None] = mapped_column(String(200), index=True)
    runtime: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(20), index=True)
    token_hash: Mapped[str | None] = mapped_column(String(128), unique=True)
    muted_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    constraints: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    #: set when the token is revoked; the hash is kept so a revoked agent can still
    #: read its own directives (it must learn it has to shut down)
    token_revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: True while the runtime is frozen by a MUTE with ``freeze: true``
    frozen: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CommandRow(Base):
    """An operator's command; the row is the source of truth for dispatch."""

    __tablename__ = "c2l_commands"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Indexed by ``ix_c2l_commands_rate`` (operator first).
    operator: Mapped[str] = mapped_column(String(200))
    command_type: Mapped[str] = mapped_column(String(30), index=True)
    target_agents: Mapped[list[str]] = mapped_column(JSONType)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONType)
    reason: Mapped[str | None] = mapped_column(Text)
    verdict_id: Mapped[str | None] = mapped_column(String(64))
    body_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), index=True)
    approved_by: Mapped[str | None] = mapped_column(String(200))
    deadline: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    executed_layers: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    cascade_terminated: Mapped[list[str]] = mapped_column(JSONType, default=list)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    execution_time_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    #: refreshed by the claiming instance while it executes; a stale one means it died
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: last time the command was published on the bus (recovery re-dispatch pacing)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: when its confirmation was published; a final command without one is the outbox
    #: the recovery loop publishes from (a broker outage, or a crash right after finishing)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        # The rate limit counts one operator's commands of one type in a window: an
        # index range of the window, not a walk over the operator's whole history.
        Index("ix_c2l_commands_rate", "operator", "command_type", "created_at"),
        Index("ix_c2l_commands_unconfirmed", "finished_at",
              sqlite_where=text("confirmed_at IS NULL AND finished_at IS NOT NULL"),
              postgresql_where=text("confirmed_at IS NULL AND finished_at IS NOT NULL")),
    )


class CommandExecutionRow(Base):
    """One layer of one command on one agent: makes redelivery idempotent."""

    __tablename__ = "command_executions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    command_id: Mapped[str] = mapped_column(String(64), index=True)
    agent_id: Mapped[str] = mapped_column(String(200))
    layer: Mapped[str] = mapped_column(String(40))
    success: Mapped[bool] = mapped_column(Boolean)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("command_id", "agent_id", "layer", name="uq_exec_cmd_agent_layer"),)


class AuditRow(Base):
    """Append-only, hash-chained audit (each row carries the previous row's hash)."""

    __tablename__ = "audit_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    command_id: Mapped[str | None] = mapped_column(String(64))
    agent_id: Mapped[str | None] = mapped_column(String(200), index=True)
    operator: Mapped[str | None] = mapped_column(String(200))
    layer: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(100))
    success: Mapped[bool] = mapped_column(Boolean)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64), unique=True)

    # Named as in the runbook's tuning SQL.
    __table_args__ = (
        Index("idx_audit_command_id", "command_id"),
        Index("idx_audit_timestamp", timestamp.desc()),
        # GET /audits?layer=: the page and its total walk only that layer's rows.
        Index("ix_audit_logs_layer_id", "layer", "id"),
    )


class SnapshotRow(Base):
    """Captured state of an agent's runtime, with its sha256."""

    __tablename__ = "snapshots"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    command_id: Mapped[str] = mapped_column(String(64), index=True)
    agent_id: Mapped[str] = mapped_column(String(200), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AgentDirectiveRow(Base):
    """A directive sent to an agent, kept (the last few per agent) so an agent that
    polls over HTTP gets what the bus delivered while it was not listening."""

    __tablename__ = "agent_directives"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(String(200), index=True)
    directive: Mapped[str] = mapped_column(String(40))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONType)
    command_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
