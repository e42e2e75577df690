"""Telemetry ingestion: ``POST /telemetry`` and OTLP ``POST /v1/traces``."""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from typing import Any

from litestar import Request, Response, post
from litestar.exceptions import (
    HTTPException,
    PermissionDeniedException,
    ServiceUnavailableException,
    ValidationException,
)
from pydantic import TypeAdapter, ValidationError

from cockpit.events import Telemetry
from cockpit.events.telemetry import REFUSED
from cockpit.filter.ingest import IngestResult
from cockpit.gateway.openapi import GUARDED, TelemetryAccepted, TraceExport, errors
from cockpit.gateway.otlp import map_traces
from cockpit.gateway.security import AGENT_OR_OPERATOR, principal_of, requires
from cockpit.platform.auth import Principal, Role

__all__ = ["PayloadTooLarge", "nul_field", "parse_body", "parse_telemetry", "post_telemetry", "post_traces"]

_BATCH = TypeAdapter(list[Telemetry])


class PayloadTooLarge(HTTPException):
    status_code = 413


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(body: bytes) -> Any:
    # NaN/Infinity (and 1e999, which Python reads as inf) are not JSON and PostgreSQL's
    # jsonb refuses them: a 400 here, not a database error later.
    try:
        return json.loads(body, parse_float=_finite, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise ValidationException("request body is not valid UTF-8") from None
    except ValueError as exc:
        raise ValidationException(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValidationException("request body is nested too deeply") from None


def _field_errors(exc: ValidationError, prefix: str) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors(include_url=False, include_input=False)[:20]:
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        out.append({"key": loc, "message": err["msg"]})
    return out


def parse_telemetry(body: bytes, max_batch: int) -> list[Telemetry]:
    """The telemetry in a ``POST /telemetry`` body (:func:`parse_body`, without the
    prefix)."""
    return parse_body(body, max_batch)[0]


def parse_body(body: bytes, max_batch: int) -> tuple[list[Telemetry], str]:
    """The telemetry in a ``POST /telemetry`` body, and the prefix of its fields' keys
    (``"messages"`` for a batch, ``""`` for one object): one object or ``{"messages": [...]}``.

    Pure (no I/O). Raises :class:`ValidationException` (400: not JSON, not UTF-8, not
    an object or batch, or a field against the schema, the first one named),
    :class:`PayloadTooLarge` (413: more than ``max_batch``) or :class:`HTTPException`
    422 for a NUL character (valid JSON and schema, but no database stores it).
    """
    payload = _loads(body)
    if isinstance(payload, dict) and "messages" in payload:
        extra = set(payload) - {"messages"}
        if extra:
            raise ValidationException(f"unknown field(s) in batch: {', '.join(sorted(extra))}")
        items, prefix = payload["messages"], "messages"
        if not isinstance(items, list):
            raise ValidationException("messages must be a list")
    elif isinstance(payload, dict):
        items, prefix = [payload], ""
    else:
        raise ValidationException("body must be a telemetry object or {\"messages\": [...]}")
    if len(items) > max_batch:
        raise PayloadTooLarge(f"batch of {len(items)} messages exceeds the limit of {max_batch}")
    try:
        messages = _BATCH.validate_python(items)
    except ValidationError as exc:
        errors = _field_errors(exc, prefix)
        if not prefix:
            for e in errors:
                e["key"] = e["key"].split(".", 1)[1] if "." in e["key"] else ""
        first = f"{errors[0]['key']}: " if errors[0]["key"] else ""
        detail = f"invalid telemetry: {first}{errors[0]['message']}"
        if all(e["type"] == REFUSED for e in exc.errors(include_url=False, include_input=False)):
            # Valid by the published schema, refused on the facts (a size in bytes, a
            # time ahead of the server's clock: limits JSON Schema cannot state).
            raise HTTPException(status_code=422, detail=detail, extra=errors) from None
        raise ValidationException(detail, extra=errors) from None
    # JSON can only carry U+0000 escaped, so a body without the escape needs no scan.
    for index, message in enumerate(messages if b"\\u0000" in body else ()):
        where = nul_field(message)
        if where:
            # PostgreSQL cannot store U+0000 in text: refused on every backend alike.
            key = f"{prefix}.{index}.{where}" if prefix else where
            raise HTTPException(status_code=422, detail=f"invalid telemetry: {key}: contains a NUL character",
                                extra=[{"key": key, "message": "contains a NUL character (U+0000)"}])
    return messages, prefix


def nul_field(message: Telemetry) -> str | None:
    """The dotted path of the first field of ``message`` holding U+0000, else ``None``."""
    flat = (message.message_id, message.fleet_id, message.source_agent_id, message.conversation_id or "",
            message.content or "", *message.target_agent_ids, *message.provenance_chain)
    if "\x00" not in "".join(flat) and not _nul_in(message.attributes) and not (
        message.action is not None and _nul_in(message.action.model_dump())
    ):
        return None
    return _nul_in(message.model_dump(include=set(_TEXT_FIELDS))) or "a field"


_TEXT_FIELDS = ("message_id", "fleet_id", "source_agent_id", "target_agent_ids", "conversation_id",
                "content", "action", "provenance_chain", "attributes")


def _nul_in(value: Any, path: str = "") -> str | None:
    if isinstance(value, str):
        return (path or "value") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return sub.replace("\x00", "\\u0000")
            found = _nul_in(item, sub)
            if found:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _nul_in(item, f"{path}.{index}")
            if found:
                return found
    return None


def _admit(request: Request[Any, Any, Any], sources: Collection[str]) -> None:
    """Refuse telemetry sent as ``sources`` while analysis is too far behind for them
    (``NarrativeFilter.admits``): a 503 the sender retries after a second, rather than
    accepted messages whose verdicts come minutes late. (The in-process bus holds
    ingestion back by itself; a broker would not.)"""
    narrative = request.app.state.cockpit.filter
    if narrative.admits(sources):
        return
    request.app.state.cockpit.metrics.filter_backlog_refusals.inc()
    extra: dict[str, Any] = {"backlog": narrative.backlog, "max_backlog": narrative.max_backlog}
    if over := narrative.over_share(sources):
        extra["share"] = narrative.backlog_share
        extra["over_share"] = dict(list(over.items())[:10])
    raise ServiceUnavailableException("analysis is behind, retry later", headers={"Retry-After": "1"}, extra=extra)


def _admit_early(request: Request[Any, Any, Any]) -> None:
    """:func:`_admit` before the body is read, for what is known without it: the
    backlog's hard limit, and an agent token's own agent."""
    principal = principal_of(request)
    _admit(request, (principal.agent_id,) if principal.role is Role.AGENT and principal.agent_id else ())


def _as_agent(principal: Principal, messages: list[Telemetry]) -> list[Telemetry]:
    """An agent token's telemetry: sent as its own agent, in its own fleet (a message
    that names no fleet is filed under the agent's); else 403, naming what is foreign."""
    foreign = sorted({m.source_agent_id for m in messages} - {principal.agent_id})
    if foreign:
        raise PermissionDeniedException(
            "an agent token may only send telemetry as its own agent",
            extra={"source_agent_id": foreign[:10]},
        )
    fleet = principal.fleet_id
    elsewhere = sorted({m.fleet_id for m in messages if "fleet_id" in m.model_fields_set} - {fleet})
    if elsewhere:
        raise PermissionDeniedException(
            f"an agent token may only send telemetry in its own fleet ({fleet})",
            extra={"fleet_id": elsewhere[:10]},
        )
    return [m if m.fleet_id == fleet else m.model_copy(update={"fleet_id": fleet}) for m in messages]


async def _ingest(
    request: Request[Any, Any, Any], messages: list[Telemetry]
) -> tuple[IngestResult, list[Telemetry]]:
    """Store ``messages`` (as the principal may send them); the result, and the
    messages as ingested (in the same order)."""
    cockpit = request.app.state.cockpit
    principal = principal_of(request)
    if principal.role is Role.AGENT:
        messages = _as_agent(principal, messages)
    sources = {m.source_agent_id for m in messages}
    _admit(request, sources)
    muted = await cockpit.c2l.muted_agents(sources) if sources else set()
    if muted and cockpit.settings.filter.muted_policy == "refuse":
        raise PermissionDeniedException("agent is MUTED; its telemetry is refused", extra={"muted": sorted(muted)})
    result = await cockpit.filter.ingest(messages, frozenset(muted))
    metrics = cockpit.metrics.telemetry_ingested
    metrics.labels(path="http", outcome="accepted").inc(result.accepted)
    metrics.labels(path="http", outcome="duplicate").inc(result.duplicates)
    metrics.labels(path="http", outcome="conflict").inc(len(result.conflicts))
    return result, messages


def _accepted(result: IngestResult) -> TelemetryAccepted:
    body: TelemetryAccepted = {"accepted": result.accepted, "duplicates": result.duplicates}
    if result.quarantined:
        body["quarantined"] = result.quarantined
    return body


def _refuse_conflicts(result: IngestResult, messages: list[Telemetry], prefix: str) -> None:
    """409 naming the messages whose id another agent's (or fleet's) message holds:
    they were not stored. The rest of the request was (re-sending it is safe)."""
    refused = {id(m) for m in result.conflicts}
    keys = [f"{prefix}.{i}.message_id" if prefix else "message_id"
            for i, m in enumerate(messages) if id(m) in refused]
    raise HTTPException(
        status_code=409,
        detail=f"{len(keys)} message(s) refused: message_id already used by another agent's message "
               f"(stored: {result.accepted}, duplicates: {result.duplicates}); send them with new ids",
        extra=[{"key": k, "message": "message_id already used by another agent's message"} for k in keys[:20]],
    )


@post(
    "/telemetry",
    guards=[requires(AGENT_OR_OPERATOR)],
    responses=errors(400, *GUARDED, 409, 413, 422),
    status_code=202,
    summary="Ingest one telemetry message or a batch {\"messages\": [...]}",
    tags=["telemetry"],
)
async def post_telemetry(request: Request[Any, Any, Any]) -> Response[TelemetryAccepted]:
    _admit_early(request)
    messages, prefix = parse_body(await request.body(), request.app.state.cockpit.settings.filter.max_batch)
    if not messages:
        return Response({"accepted": 0, "duplicates": 0}, status_code=202)
    result, ingested = await _ingest(request, messages)
    if result.conflicts:
        _refuse_conflicts(result, ingested, prefix)
    return Response(_accepted(result), status_code=202)


@post(
    "/v1/traces",
    guards=[requires(AGENT_OR_OPERATOR)],
    responses=errors(400, *GUARDED, 413, 422),
    status_code=200,
    summary="Ingest OpenTelemetry GenAI spans (OTLP/HTTP JSON)",
    tags=["telemetry"],
)
async def post_traces(request: Request[Any, Any, Any]) -> TraceExport:
    _admit_early(request)
    payload = _loads(await request.body())
    try:
        mapping = map_traces(payload)
    except ValueError as exc:
        raise ValidationException(str(exc)) from None
    storable = []
    for message in mapping.telemetry:
        where = nul_field(message)
        if where is None:
            storable.append(message)
            continue
        mapping.rejected += 1  # PostgreSQL cannot store U+0000: a rejected span, as elsewhere
        if len(mapping.errors) < 5:
            mapping.errors.append(f"span has a NUL character in {where}")
    mapping.telemetry = storable
    limit = request.app.state.cockpit.settings.filter.max_batch
    if len(mapping.telemetry) > limit:
        raise PayloadTooLarge(f"{len(mapping.telemetry)} spans exceed the limit of {limit}")
    if mapping.telemetry:
        result, _ = await _ingest(request, mapping.telemetry)
        if result.conflicts:
            mapping.rejected += len(result.conflicts)
            ids = ", ".join(m.message_id for m in result.conflicts[:5])
            mapping.errors.append(f"span id already used by another agent's message: {ids}")
    partial: dict[str, Any] = {}
    if mapping.rejected:
        partial = {"rejectedSpans": mapping.rejected, "errorMessage": "; ".join(mapping.errors)}
    return {"partialSuccess": partial}
