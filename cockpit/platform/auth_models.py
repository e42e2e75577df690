"""The ``api_keys`` table (operators' and viewers' keys, stored hashed)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from cockpit.platform.db import Base, UTCDateTime, utcnow

__all__ = ["ApiKeyRow"]


class ApiKeyRow(Base):
    """An API key: only its sha256 is kept; the key itself is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(30))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    #: the TOTP time step (30 s) of the last code this key used: a code is good once
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
