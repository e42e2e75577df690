"""Tables owned by the gateway: the WebSocket event log that makes resume work."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from cockpit.platform.db import Base, JSONType, UTCDateTime, utcnow

__all__ = ["StreamEventRow"]


class StreamEventRow(Base):
    """One event of the ``WS /ws`` stream; ``seq`` orders the whole stream.

    ``source_event_id`` is unique so replicas that all relay the same bus event
    store it once and agree on its ``seq``.
    """

    __tablename__ = "stream_events"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    source_event_id: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(40))
    ts: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
