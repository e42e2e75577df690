"""The base of every event on the bus."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Event", "utcnow"]


def utcnow() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


class Event(BaseModel):
    """A fact or a command travelling between contexts (frozen, versioned)."""

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    occurred_at: datetime = Field(default_factory=utcnow)
    schema_version: int = 1

    @classmethod
    def from_broker(cls, body: Any, context: dict[str, Any] | None = None) -> Self:
        """The event in a broker message's body (JSON text, or JSON already decoded);
        raises ``pydantic.ValidationError``."""
        if isinstance(body, bytes | str):
            return cls.model_validate_json(body, context=context)
        return cls.model_validate(body, context=context)
