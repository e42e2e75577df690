"""Telemetry ingestion: ``POST /telemetry`` and OTLP ``POST /v1/traces``."""

from __future__ import annotations

import json
from typing import Any

from litestar import Request, Response, post
from litestar.exceptions import HTTPException, PermissionDeniedException, ValidationException
from pydantic import TypeAdapter, ValidationError

from cockpit.events import Telemetry
from cockpit.gateway.otlp import map_traces
from cockpit.gateway.security import AGENT_OR_OPERATOR, principal_of, requires
from cockpit.platform.auth import Role

__all__ = ["post_telemetry", "post_traces"]

_BATCH = TypeAdapter(list[Telemetry])


class PayloadTooLarge(HTTPException):
    status_code = 413


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
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


async def _ingest(request: Request[Any, Any, Any], messages: list[Telemetry]) -> dict[str, int]:
    cockpit = request.app.state.cockpit
    principal = principal_of(request)
    if principal.role is Role.AGENT:
        foreign = sorted({m.source_agent_id for m in messages} - {principal.agent_id})
        if foreign:
            raise PermissionDeniedException(
                "an agent token may only send telemetry as its own agent",
                extra={"source_agent_id": foreign[:10]},
            )
    sources = {m.source_agent_id for m in messages}
    muted = await cockpit.c2l.muted_agents(sources) if sources else set()
    if muted and cockpit.settings.filter.muted_policy == "refuse":
        raise PermissionDeniedException("agent is MUTED; its telemetry is refused", extra={"muted": sorted(muted)})
    result = await cockpit.filter.ingest(messages, frozenset(muted))
    metrics = cockpit.metrics.telemetry_ingested
    metrics.labels(path="http", outcome="accepted").inc(result.accepted)
    metrics.labels(path="http", outcome="duplicate").inc(result.duplicates)
    body = {"accepted": result.accepted, "duplicates": result.duplicates}
    if result.quarantined:
        body["quarantined"] = result.quarantined
    return body


@post(
    "/telemetry",
    guards=[requires(AGENT_OR_OPERATOR)],
    status_code=202,
    summary="Ingest one telemetry message or a batch {\"messages\": [...]}",
    tags=["telemetry"],
)
async def post_telemetry(request: Request[Any, Any, Any]) -> Response[dict[str, int]]:
    payload = _loads(await request.body())
    limit = request.app.state.cockpit.settings.filter.max_batch
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
    if len(items) > limit:
        raise PayloadTooLarge(f"batch of {len(items)} messages exceeds the limit of {limit}")
    if not items:
        return Response({"accepted": 0, "duplicates": 0}, status_code=202)
    try:
        messages = _BATCH.validate_python(items)
    except ValidationError as exc:
        errors = _field_errors(exc, prefix)
        if not prefix:
            for e in errors:
                e["key"] = e["key"].split(".", 1)[1] if "." in e["key"] else e["key"]
        raise HTTPException(
            status_code=422, detail=f"invalid telemetry: {errors[0]['key']}: {errors[0]['message']}", extra=errors
        ) from None
    return Response(await _ingest(request, messages), status_code=202)


@post(
    "/v1/traces",
    guards=[requires(AGENT_OR_OPERATOR)],
    status_code=200,
    summary="Ingest OpenTelemetry GenAI spans (OTLP/HTTP JSON)",
    tags=["telemetry"],
)
async def post_traces(request: Request[Any, Any, Any]) -> dict[str, Any]:
    payload = _loads(await request.body())
    try:
        mapping = map_traces(payload)
    except ValueError as exc:
        raise ValidationException(str(exc)) from None
    limit = request.app.state.cockpit.settings.filter.max_batch
    if len(mapping.telemetry) > limit:
        raise PayloadTooLarge(f"{len(mapping.telemetry)} spans exceed the limit of {limit}")
    if mapping.telemetry:
        await _ingest(request, mapping.telemetry)
    partial: dict[str, Any] = {}
    if mapping.rejected:
        partial = {"rejectedSpans": mapping.rejected, "errorMessage": "; ".join(mapping.errors)}
    return {"partialSuccess": partial}
