"""Telemetry: one thing an agent said or did (DESIGN.md section 4)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, PydanticSerializationError, to_json

from cockpit.events.base import Event, utcnow

__all__ = [
    "MAX_AGENT_ID",
    "MAX_ATTRIBUTES_BYTES",
    "MAX_CLOCK_AHEAD",
    "REFUSED",
    "STORED",
    "ActionSpec",
    "MessageAnalysis",
    "Telemetry",
    "TelemetryKind",
    "TelemetryReceived",
]

#: the longest agent (or fleet, message) id
MAX_AGENT_ID = 200
_ID = Field(min_length=1, max_length=MAX_AGENT_ID)

#: the largest ``attributes`` of a message, or ``params`` of an action, as compact
#: JSON: free-form context is stored with each message and returned as evidence, so
#: one agent's message cannot be made megabytes large through it. Rows stored before
#: the limit are read back as they are (validation context ``{"stored": True}``).
MAX_ATTRIBUTES_BYTES = 65_536


#: the error type of a limit JSON Schema cannot state (a size in bytes, a time relative
#: to the server's clock): the message is valid by the published schema and refused on
#: the facts, so the API answers 422, not 400
REFUSED = "telemetry_refused"


def _stored(info: ValidationInfo) -> bool:
    """Validating what was accepted once (``STORED``): limits that came later do not apply."""
    return bool(info.context and info.context.get("stored"))


def _bounded(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    if not value or _stored(info):
        return value
    try:
        size = len(to_json(value))
    except PydanticSerializationError:  # e.g. nested deeper than pydantic-core serialises
        try:
            size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
        except (TypeError, ValueError, RecursionError):
            raise ValueError("must hold JSON values only") from None
    if size > MAX_ATTRIBUTES_BYTES:
        raise PydanticCustomError(REFUSED, "is {size} bytes as JSON, more than the limit of {limit}",
                                  {"size": size, "limit": MAX_ATTRIBUTES_BYTES})
    return value


#: how far ahead of the server's clock a message's timestamp may be (agents' clocks skew)
MAX_CLOCK_AHEAD = timedelta(minutes=5)

#: validation context of telemetry accepted once: read back as it was stored
STORED = {"stored": True}

#: free-form JSON context, at most MAX_ATTRIBUTES_BYTES
_Context = Annotated[dict[str, Any], AfterValidator(_bounded),
                     Field(description=f"free-form JSON object, at most {MAX_ATTRIBUTES_BYTES} bytes as compact JSON")]


def _short_ids(value: list[str], info: ValidationInfo) -> list[str]:
    if _stored(info):
        return value
    for index, item in enumerate(value):
        if len(item) > 200:
            raise ValueError(f"item {index} has {len(item)} characters, more than 200")
    return value


#: agent ids, each at most 200 characters like ``source_agent_id``
_AgentIds = Annotated[list[str], AfterValidator(_short_ids),
                      Field(json_schema_extra={"items": {"type": "string", "maxLength": 200}})]


class TelemetryKind(StrEnum):
    MESSAGE = "message"
    ACTION = "action"


class ActionSpec(BaseModel):
    """What an agent did: ``attack``, ``support``, ``transfer``, ``call_tool``..."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str = Field(min_length=1, max_length=100)
    target: str | None = Field(default=None, max_length=200)
    params: _Context = Field(default_factory=dict)


class Telemetry(BaseModel):
    """One message an agent sent or one action it took.

    ``message_id`` is chosen by the client and makes ingestion idempotent.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={
        # The published schema states what _kind_matches_payload checks.
        "anyOf": [
            {"not": {"required": ["kind"], "properties": {"kind": {"const": "action"}}},
             "required": ["content"], "properties": {"content": {"type": "string"}}},
            {"required": ["kind", "action"],
             "properties": {"kind": {"const": "action"}, "action": {"type": "object"}}},
        ],
    })

    message_id: str = _ID
    fleet_id: str = Field(default="default", min_length=1, max_length=200)
    source_agent_id: str = _ID
    target_agent_ids: _AgentIds = Field(default_factory=list, max_length=1000)
    conversation_id: str | None = Field(default=None, max_length=200)
    kind: TelemetryKind = TelemetryKind.MESSAGE
    content: str | None = Field(default=None, max_length=100_000)
    action: ActionSpec | None = None
    timestamp: datetime = Field(default_factory=utcnow)
    provenance_chain: _AgentIds = Field(default_factory=list, max_length=100)
    attributes: _Context = Field(default_factory=dict)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp_is_text(cls, value: Any) -> Any:
        # pydantic would read a number as Unix time; the schema promises ISO 8601.
        if isinstance(value, int | float):
            raise ValueError("timestamp must be an ISO 8601 date-time with a time zone, not a number")  # noqa: TRY004 - pydantic reports ValueError as a field error
        return value

    @field_validator("timestamp")
    @classmethod
    def _not_ahead(cls, value: datetime, info: ValidationInfo) -> datetime:
        # A fleet's analysis runs on its messages' clock (decay, windows, expiry): one
        # message stamped years ahead would stop that clock for good.
        if value.tzinfo is None or _stored(info):
            return value
        try:
            ahead = value.astimezone(UTC) - utcnow()
        except OverflowError:  # not storable at all: reported by _kind_matches_payload
            return value
        if ahead > MAX_CLOCK_AHEAD:
            raise PydanticCustomError(
                REFUSED, "timestamp is {ahead} s ahead of the server's clock (at most {skew} s of skew is accepted)",
                {"ahead": round(ahead.total_seconds()), "skew": round(MAX_CLOCK_AHEAD.total_seconds())})
        return value

    @model_validator(mode="after")
    def _kind_matches_payload(self) -> Telemetry:
        if self.kind is TelemetryKind.MESSAGE and self.content is None:
            raise ValueError("content is required when kind is 'message'")
        if self.kind is TelemetryKind.ACTION and self.action is None:
            raise ValueError("action is required when kind is 'action'")
        if self.timestamp.tzinfo is None:
            raise ValueError("timestamp must carry a time zone")
        try:
            self.timestamp.astimezone(UTC)  # stored as UTC: 0001-01-01T00:00+14:00 is not storable
        except OverflowError:
            raise ValueError("timestamp is out of range once converted to UTC") from None
        return self


class MessageAnalysis(BaseModel):
    """Layer 1's verdict on one message, carried with the batch so consumers need
    not recompute it."""

    model_config = ConfigDict(frozen=True)

    intent: str
    intent_confidence: float
    deception_score: float


class TelemetryReceived(Event):
    """A batch of accepted telemetry of one fleet.

    Emitted by ingestion (HTTP, OTLP, the telemetry topic) after the rows are stored;
    consumed by the narrative filter. Batches keep the bus cheap at high rates.
    """

    fleet_id: str
    messages: list[Telemetry]
    #: True when ingestion already stored (and de-duplicated) the rows; False for
    #: telemetry that agents published straight onto the topic.
    stored: bool = True
    #: Layer 1 results aligned with ``messages`` (None for actions), when known
    analysis: list[MessageAnalysis | None] | None = None
    #: stored messages sent by id, after ``messages``: each too large for one message
    #: of the broker on its own; the consumer reads them from the database
    stored_ids: list[str] = Field(default_factory=list)
    received_at: datetime = Field(default_factory=utcnow)

    @classmethod
    def from_broker(cls, body: Any, context: dict[str, Any] | None = None) -> TelemetryReceived:
        """Ingestion's own events carry rows it accepted, perhaps before a field's
        limit came (a redispatch of old rows): read as stored, or they would fail on
        every pass. Agents' raw telemetry is held to every limit."""
        event = super().from_broker(body, {**(context or {}), **STORED})
        return event if event.stored else super().from_broker(body, context)

    @model_validator(mode="before")
    @classmethod
    def _raw_agent_telemetry(cls, data: Any) -> Any:
        """Agents may publish plain telemetry (one object or a list) straight onto the
        telemetry topic; it arrives unstored and is wrapped into a batch here."""
        if isinstance(data, dict) and "messages" not in data and "message_id" in data:
            data = [data]
        if isinstance(data, list):
            fleet = data[0].get("fleet_id", "default") if data and isinstance(data[0], dict) else "default"
            return {"fleet_id": fleet, "messages": data, "stored": False}
        return data
