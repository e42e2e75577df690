"""Verdicts, their evidence, the alliance graph and the dashboard's ``/stats``."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from litestar import Request, get, patch
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from pydantic import BaseModel, ConfigDict, Field

from cockpit.gateway.openapi import (
    GUARDED,
    AllianceGraph,
    Evidence,
    Stats,
    VerdictPage,
    VerdictStats,
    VerdictWire,
    errors,
)
from cockpit.gateway.security import OPERATORS, READERS, requires
from cockpit.verdict import IllegalTransition, VerdictFilters, VerdictNotFound

__all__ = ["alliance_graph", "get_verdict", "list_verdicts", "patch_verdict", "stats", "verdict_evidence", "verdict_stats"]

StatusQ = Literal["ACTIVE", "MITIGATED", "DISMISSED"]
SeverityQ = Literal["CRITICAL", "HIGH", "MEDIUM", "LOW"]
CategoryQ = Literal["COLLUSION", "DECEPTION", "ALLIANCE", "THREAT", "INCONSISTENCY"]
#: a bare number, which Litestar would read as Unix time
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class VerdictPatch(BaseModel):
    """``{"status": "MITIGATED", "mitigation_command_id": "..."}`` or ``{"status": "DISMISSED"}``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"properties": {"status": {"const": "MITIGATED"}, "mitigation_command_id": {"type": "string"}},
         "required": ["status", "mitigation_command_id"]},
        {"properties": {"status": {"const": "DISMISSED"}}, "required": ["status"]},
    ]})

    status: Literal["MITIGATED", "DISMISSED"]
    mitigation_command_id: str | None = Field(default=None, min_length=1, max_length=64)


def _aware(request: Request[Any, Any, Any], value: datetime | None) -> datetime | None:
    if value is not None and _NUMBER.fullmatch(request.query_params.get("since", "").strip()):
        # Litestar reads a number as Unix time; the schema promises ISO 8601.
        raise ValidationException("since must be an ISO 8601 date-time with a time zone, not a number")
    if value is not None and value.tzinfo is None:
        raise ValidationException("since must carry a time zone (ISO 8601, e.g. 2026-01-01T00:00:00Z)")
    if value is not None:
        try:
            value.astimezone(UTC)  # compared in UTC: 9999-12-31T23:59-14:00 has no UTC form
        except OverflowError:
            raise ValidationException("since is out of range once converted to UTC") from None
    return value


@get("/verdicts", guards=[requires(READERS)], responses=errors(*GUARDED, 422),
     summary="List verdicts, newest first", tags=["verdicts"])
async def list_verdicts(
    request: Request[Any, Any, Any],
    status: FromQuery[StatusQ | None] = None,
    severity: FromQuery[SeverityQ | None] = None,
    category: FromQuery[CategoryQ | None] = None,
    agent_id: Annotated[str | None, QueryParameter(max_length=200)] = None,
    fleet_id: Annotated[str | None, QueryParameter(max_length=200)] = None,
    since: FromQuery[datetime | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    offset: Annotated[int, QueryParameter(ge=0, le=1_000_000)] = 0,
) -> VerdictPage:
    filters = VerdictFilters(status, severity, category, agent_id, fleet_id, _aware(request, since), limit, offset)
    items, total = await request.app.state.cockpit.verdicts.list(filters)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@get("/verdicts/stats", guards=[requires(READERS)], responses=errors(*GUARDED),
     summary="Verdict counts", tags=["verdicts"])
async def verdict_stats(request: Request[Any, Any, Any]) -> VerdictStats:
    return await request.app.state.cockpit.verdicts.stats()


@get("/verdicts/{verdict_id:str}", guards=[requires(READERS)], responses=errors(*GUARDED, 404, 422),
     summary="One verdict", tags=["verdicts"])
async def get_verdict(request: Request[Any, Any, Any], verdict_id: FromPath[str]) -> VerdictWire:
    try:
        return await request.app.state.cockpit.verdicts.get(verdict_id)
    except VerdictNotFound:
        raise NotFoundException(f"no verdict {verdict_id!r}") from None


@get(
    "/verdicts/{verdict_id:str}/evidence",
    guards=[requires(READERS)],
    responses=errors(*GUARDED, 404, 422),
    summary="The messages a verdict rests on, in time order",
    tags=["verdicts"],
)
async def verdict_evidence(request: Request[Any, Any, Any], verdict_id: FromPath[str]) -> Evidence:
    cockpit = request.app.state.cockpit
    try:
        verdict = await cockpit.verdicts.get(verdict_id)
    except VerdictNotFound:
        raise NotFoundException(f"no verdict {verdict_id!r}") from None
    items = await cockpit.filter.store.messages(verdict["evidence_chain"])
    return {"verdict_id": verdict_id, "items": items, "total": len(items)}


@patch(
    "/verdicts/{verdict_id:str}",
    guards=[requires(OPERATORS)],
    responses=errors(*GUARDED, 404, 409, 422),
    summary="Mark a verdict MITIGATED (with its command) or DISMISSED",
    tags=["verdicts"],
)
async def patch_verdict(request: Request[Any, Any, Any], verdict_id: FromPath[str], data: JSONBody[VerdictPatch]) -> VerdictWire:
    try:
        return await request.app.state.cockpit.verdicts.set_status(
            verdict_id, data.status, data.mitigation_command_id
        )
    except VerdictNotFound:
        raise NotFoundException(f"no verdict {verdict_id!r}") from None
    except IllegalTransition as exc:
        if data.status == "MITIGATED" and not data.mitigation_command_id:
            raise ValidationException(str(exc)) from None
        raise HTTPException(status_code=409, detail=str(exc)) from None


@get("/alliances/graph", guards=[requires(READERS)], responses=errors(*GUARDED, 422),
     summary="Alliance graph", tags=["verdicts"])
async def alliance_graph(
    request: Request[Any, Any, Any], fleet_id: Annotated[str | None, QueryParameter(max_length=200)] = None
) -> AllianceGraph:
    return await request.app.state.cockpit.filter.alliance_graph(fleet_id)


@get("/stats", guards=[requires(READERS)], responses=errors(*GUARDED),
     summary="One document for dashboards", tags=["operations"])
async def stats(request: Request[Any, Any, Any]) -> Stats:
    cockpit = request.app.state.cockpit
    verdicts = await cockpit.verdicts.stats()
    graph = await cockpit.filter.alliance_graph()
    latency = cockpit.metrics.telemetry_to_verdict_quantiles()
    return {
        "agents": await cockpit.c2l.agents_summary(),
        "verdicts": verdicts,
        "alliances": len(graph["edges"]),
        "deceptive_agents": verdicts["deceptive_agents"],
        "commands": await cockpit.c2l.commands_summary(),
        "telemetry_to_verdict_ms": latency,
        "ws_clients": cockpit.stream.client_count,
    }
