"""Agents, commands and audits: the C2L context's HTTP surface."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from pydantic import BaseModel, ConfigDict, Field

from cockpit import c2l as c2l_context
from cockpit.gateway.openapi import (
    GUARDED,
    AgentCreated,
    AgentPage,
    AgentTree,
    AgentWire,
    AuditPage,
    AuditVerification,
    CommandPage,
    CommandReceipt,
    CommandWire,
    Directives,
    errors,
)
from cockpit.gateway.security import OPERATORS, READERS, authenticate, principal_of, requires
from cockpit.platform.auth import totp_step

__all__ = ["HANDLERS"]

#: bound on offsets and sequence numbers, far inside a 64-bit INTEGER column
MAX_OFFSET = 10**12
# No U+0000: PostgreSQL cannot store it, so it is refused on every backend alike.
Id = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]


class _Runtime(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: dict[str, str] = Field(default_factory=dict)


class ProcessRuntime(_Runtime):
    """A local process; it must exist when the agent is registered (its start time
    is pinned so a recycled pid is never signalled)."""

    kind: Literal["process"]
    pid: int = Field(ge=1, le=2**22)


class DockerRuntime(_Runtime):
    kind: Literal["docker"]
    container: str = Field(min_length=1, max_length=200, description="container id or name")


class KubernetesRuntime(_Runtime):
    kind: Literal["kubernetes"]
    namespace: str = Field(min_length=1, max_length=63)
    pod: str = Field(min_length=1, max_length=253)


class ExternalRuntime(_Runtime):
    """An agent whose runtime Cockpit does not control (directives only)."""

    kind: Literal["external"]


RuntimeSpec = Annotated[ProcessRuntime | DockerRuntime | KubernetesRuntime | ExternalRuntime, Field(discriminator="kind")]


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: Id | None = None
    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]
    fleet_id: Id = "default"
    parent_id: Id | None = None
    runtime: RuntimeSpec = Field(default_factory=lambda: ExternalRuntime(kind="external"))


class CommandCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")] | None = None
    command_type: Literal["MUTE", "ISOLATE", "TERMINATE", "SNAPSHOT_STATE", "REVOKE_ACCESS", "INJECT_CONSTRAINT"]
    target_agents: Annotated[list[Id], Field(min_length=1, max_length=500)]
    parameters: dict[str, Any] = Field(default_factory=dict, description=(
        "MUTE: duration_seconds (1 to 2,592,000; default 300), freeze (boolean). TERMINATE: grace_seconds "
        "(0 to 600), cascade (boolean, default true). INJECT_CONSTRAINT: constraint (1 to 10,000 characters, "
        "required). The other types take none; an unknown name is refused (422)."))
    reason: Annotated[str, Field(max_length=2000, pattern=r"^[^\x00]*$")] | None = None
    verdict_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00]+$")] | None = None


def _error(exc: Exception) -> HTTPException:
    """Map C2L's domain errors onto HTTP (never a 500 for a refusal)."""
    name = type(exc).__name__
    status = {
        "AgentNotFound": 404,
        "CommandNotFound": 404,
        "AgentExists": 409,
        "CommandConflict": 409,
        "ApprovalRefused": 409 if getattr(exc, "not_pending", False) else 403,
        "InvalidAgent": 422,
        "InvalidCommand": 422,
        "UnknownAgents": 422,
        "StepUpRequired": 401,
        "RateLimited": 429,
    }[name]
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(exc, c2l_context.UnknownAgents):
        extra["unknown_agents"] = list(exc.agent_ids)
    if isinstance(exc, c2l_context.RateLimited):
        retry = str(max(1, math.ceil(exc.retry_after_seconds)))
        headers["Retry-After"] = retry
        extra["retry_after_seconds"] = int(retry)
    if isinstance(exc, c2l_context.StepUpRequired):
        headers["WWW-Authenticate"] = 'TOTP header="X-Cockpit-OTP"'
    return HTTPException(status_code=status, detail=str(exc) or name, extra=extra or None, headers=headers or None)


_DOMAIN = (
    c2l_context.AgentNotFound, c2l_context.CommandNotFound, c2l_context.AgentExists,
    c2l_context.CommandConflict, c2l_context.ApprovalRefused, c2l_context.InvalidAgent,
    c2l_context.InvalidCommand, c2l_context.UnknownAgents, c2l_context.StepUpRequired,
    c2l_context.RateLimited,
)


async def _step_up(request: Request[Any, Any, Any], needed: bool) -> tuple[bool, bool]:
    """Whether the caller's key has TOTP, and whether ``X-Cockpit-OTP`` holds a valid
    code not used before (checked, and spent, only where the action ``needed`` one)."""
    principal = principal_of(request)
    if principal.totp_secret is None:
        return False, False
    if not needed:
        return True, False
    step = totp_step(principal.totp_secret, request.headers.get("x-cockpit-otp"))
    return True, step is not None and await request.app.state.cockpit.api_keys.use_totp_step(principal.id, step)


@post("/agents", guards=[requires(OPERATORS)], responses=errors(*GUARDED, 409, 422),
      status_code=201, summary="Register an agent (the answer holds its token, shown once)", tags=["agents"])
async def create_agent(request: Request[Any, Any, Any], data: JSONBody[AgentCreate]) -> AgentCreated:
    try:
        return await request.app.state.cockpit.c2l.register_agent(data.model_dump(exclude_none=True))
    except _DOMAIN as exc:
        raise _error(exc) from None


@get("/agents", guards=[requires(READERS)], responses=errors(*GUARDED, 422), summary="List agents",
     tags=["agents"])
async def list_agents(
    request: Request[Any, Any, Any],
    fleet_id: Annotated[str | None, QueryParameter(max_length=200)] = None,
    status: FromQuery[Literal["ACTIVE", "MUTED", "ISOLATED", "TERMINATED", "REVOKED"] | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
) -> AgentPage:
    items, total = await request.app.state.cockpit.c2l.list_agents(
        fleet_id=fleet_id, status=status, limit=limit, offset=offset
    )
    return {"items": items, "total": total}


@get("/agents/{agent_id:str}", guards=[requires(READERS)], responses=errors(*GUARDED, 404, 422),
     summary="One agent", tags=["agents"])
async def get_agent(request: Request[Any, Any, Any], agent_id: FromPath[str]) -> AgentWire:
    try:
        return await request.app.state.cockpit.c2l.get_agent(agent_id)
    except _DOMAIN as exc:
        raise _error(exc) from None


@get(
    "/agents/{agent_id:str}/tree",
    guards=[requires(READERS)],
    responses=errors(*GUARDED, 404, 422),
    summary="The agent and its descendants (a cascade's blast radius)",
    tags=["agents"],
)
async def agent_tree(request: Request[Any, Any, Any], agent_id: FromPath[str]) -> AgentTree:
    try:
        return await request.app.state.cockpit.c2l.agent_tree(agent_id)
    except _DOMAIN as exc:
        raise _error(exc) from None


async def _directive_reader(connection: Any, _: Any) -> None:
    """Operators, or the agent itself, even after its token was revoked: a terminated
    agent must still be able to read its ``shutdown`` directive."""
    from litestar.exceptions import NotAuthorizedException, PermissionDeniedException

    principal = await authenticate(connection)
    agent_id = connection.path_params.get("agent_id")
    if principal is None:
        key = (connection.headers.get("x-api-key") or "").strip()
        own = await connection.app.state.cockpit.c2l.authenticate_agent(key, include_revoked=True) if key else None
        if own is None:
            raise NotAuthorizedException("missing or invalid API key (X-API-Key)")
        if own != agent_id:
            raise PermissionDeniedException("an agent may only read its own directives")
        return
    if principal.agent_id is not None and principal.agent_id != agent_id:
        raise PermissionDeniedException("an agent may only read its own directives")
    if principal.agent_id is None and principal.role not in OPERATORS:
        raise PermissionDeniedException("needs an operator key or the agent's own token")


@get(
    "/agents/{agent_id:str}/directives",
    guards=[_directive_reader],
    responses=errors(*GUARDED, 404, 422),
    summary="Directives for a cooperative agent, after a sequence number",
    tags=["agents"],
)
async def agent_directives(
    request: Request[Any, Any, Any], agent_id: FromPath[str], after: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0
) -> Directives:
    try:
        items = await request.app.state.cockpit.c2l.pending_directives(agent_id, after)
    except _DOMAIN as exc:
        raise _error(exc) from None
    return {"items": items}


@post(
    "/commands",
    guards=[requires(OPERATORS)],
    responses={
        200: ResponseSpec(CommandReceipt, description="A command with this command_id was accepted before: its receipt",
                          generate_examples=False),
        **errors(*GUARDED, 409, 422, 429),
    },
    status_code=202,
    summary="Issue a C2L command",
    tags=["commands"],
)
async def create_command(request: Request[Any, Any, Any], data: JSONBody[CommandCreate]) -> Response[CommandReceipt]:
    principal = principal_of(request)
    has_totp, otp_ok = await _step_up(request, data.command_type in c2l_context.STEP_UP_TYPES)
    try:
        receipt, created = await request.app.state.cockpit.c2l.submit_command(
            principal.name, data.model_dump(exclude_none=True), operator_has_totp=has_totp, otp_ok=otp_ok
        )
    except _DOMAIN as exc:
        raise _error(exc) from None
    return Response(receipt, status_code=202 if created else 200)


@post(
    "/commands/{command_id:str}/approve",
    guards=[requires(OPERATORS)],
    responses=errors(*GUARDED, 404, 409, 422),
    status_code=200,
    summary="Approve a command waiting for a second operator",
    tags=["commands"],
)
async def approve_command(request: Request[Any, Any, Any], command_id: FromPath[str]) -> CommandReceipt:
    principal = principal_of(request)
    has_totp, otp_ok = await _step_up(request, True)
    try:
        return await request.app.state.cockpit.c2l.approve_command(
            command_id, principal.name, operator_has_totp=has_totp, otp_ok=otp_ok
        )
    except _DOMAIN as exc:
        raise _error(exc) from None


@get("/commands/{command_id:str}", guards=[requires(READERS)], responses=errors(*GUARDED, 404, 422),
     summary="One command", tags=["commands"])
async def get_command(request: Request[Any, Any, Any], command_id: FromPath[str]) -> CommandWire:
    try:
        return await request.app.state.cockpit.c2l.get_command(command_id)
    except _DOMAIN as exc:
        raise _error(exc) from None


@get("/commands", guards=[requires(READERS)], responses=errors(*GUARDED, 422), summary="List commands",
     tags=["commands"])
async def list_commands(
    request: Request[Any, Any, Any],
    status: FromQuery[Literal["PENDING_APPROVAL", "PENDING", "EXECUTING", "COMPLETED", "FAILED", "TIMEOUT"] | None] = None,
    command_type: FromQuery[Literal["MUTE", "ISOLATE", "TERMINATE", "SNAPSHOT_STATE", "REVOKE_ACCESS", "INJECT_CONSTRAINT"] | None] = None,
    agent_id: Annotated[str | None, QueryParameter(max_length=200)] = None,
    operator: Annotated[str | None, QueryParameter(max_length=200)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
) -> CommandPage:
    items, total = await request.app.state.cockpit.c2l.list_commands(
        status=status, command_type=command_type, agent_id=agent_id, operator=operator, limit=limit, offset=offset
    )
    return {"items": items, "total": total}


@get("/audits", guards=[requires(READERS)], responses=errors(*GUARDED, 422),
     summary="Audit trail (hash-chained)", tags=["commands"])
async def list_audits(
    request: Request[Any, Any, Any],
    command_id: Annotated[str | None, QueryParameter(max_length=64)] = None,
    agent_id: Annotated[str | None, QueryParameter(max_length=200)] = None,
    layer: Annotated[str | None, QueryParameter(max_length=40)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
) -> AuditPage:
    items, total = await request.app.state.cockpit.c2l.query_audit(
        command_id=command_id, agent_id=agent_id, layer=layer, limit=limit, offset=offset
    )
    return {"items": items, "total": total}


@get("/audits/verify", guards=[requires(READERS)], responses=errors(*GUARDED),
     summary="Verify the audit hash chain", tags=["commands"])
async def verify_audits(request: Request[Any, Any, Any]) -> AuditVerification:
    return await request.app.state.cockpit.c2l.verify_audit()


HANDLERS = [
    create_agent, list_agents, get_agent, agent_tree, agent_directives,
    create_command, approve_command, get_command, list_commands, list_audits, verify_audits,
]
