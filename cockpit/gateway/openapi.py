"""What the OpenAPI document at ``/schema/openapi.json`` promises: the wire form of
every answer, the errors each operation can give, and which operations need a key.

The handlers build plain dicts (cheap: no model to construct per answer); the
TypedDicts here are their return annotations, so the published schema describes the
real answers, and the schemathesis suite checks every answer against it.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from litestar import Litestar
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, RequestBody
from pydantic import BaseModel

from cockpit.events import Category, CommandStatus, CommandType, Severity, Telemetry, TelemetryKind
from cockpit.platform.auth import Role

__all__ = ["GUARDED", "complete_schema", "errors"]

#: the security requirement of every operation that needs a key
_API_KEY: list[dict[str, list[str]]] = [{"ApiKey": []}]


class ErrorBody(TypedDict, total=False):
    """Every 4xx/5xx answer: ``{"status_code", "detail", "extra"?}``."""

    status_code: int
    detail: str
    extra: Any


_WHY = {
    400: "Malformed request, or a parameter or field against this schema (``extra`` names it)",
    401: "Missing or invalid API key (``X-API-Key``), or a TOTP code is required (``X-Cockpit-OTP``)",
    403: "The key's role may not do this",
    404: "No such resource",
    409: "Conflicts with the resource's current state",
    413: "Body or batch larger than the configured limit",
    422: "Schema-valid, but refused on the facts: unknown target agents, no such process, "
         "a value no database stores (NUL)",
    429: "Rate limit reached; ``Retry-After`` says when to retry",
    503: "Overloaded, analysis behind, or the database unavailable; ``Retry-After`` says when to retry",
}


def errors(*codes: int) -> dict[int, ResponseSpec]:
    """The documented error answers of an operation."""
    return {
        code: ResponseSpec(data_container=ErrorBody, description=_WHY[code], generate_examples=False)
        for code in codes
    }


#: the error answers of every operation that needs a key and may reach the database
GUARDED = (401, 403, 503)


# -- wire forms -------------------------------------------------------------------


class Page(TypedDict):
    total: int


class VerdictWire(TypedDict):
    id: str
    timestamp: str
    fleet_id: str
    category: Category
    severity: Severity
    color: str
    title: str
    agents_involved: list[str]
    agent_id: str
    target: str | None
    evidence_chain: list[str]
    confidence: float
    recommended_action: str
    status: Literal["ACTIVE", "MITIGATED", "DISMISSED"]
    final_verdict: str
    mitigation_command_id: str | None
    created_at: str
    updated_at: str


class VerdictPage(Page):
    items: list[VerdictWire]
    limit: int
    offset: int


class VerdictStats(TypedDict):
    total: int
    by_status: dict[str, int]
    active_by_severity: dict[str, int]
    active_by_category: dict[str, int]
    deceptive_agents: list[str]


class MessageWire(TypedDict):
    message_id: str
    fleet_id: str
    source_agent_id: str
    target_agent_ids: list[str]
    conversation_id: str | None
    kind: TelemetryKind
    content: str | None
    action: dict[str, Any] | None
    timestamp: str
    received_at: str
    provenance_chain: list[str]
    attributes: dict[str, Any]
    quarantined: bool
    intent: str | None
    intent_confidence: float | None
    deception_score: float | None


class Evidence(Page):
    verdict_id: str
    items: list[MessageWire]


class AllianceGraph(TypedDict):
    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    communities: list[list[str]]


class AgentWire(TypedDict):
    agent_id: str
    name: str
    fleet_id: str
    parent_id: str | None
    runtime: dict[str, Any]
    status: Literal["ACTIVE", "MUTED", "ISOLATED", "TERMINATED", "REVOKED"]
    muted_until: str | None
    frozen: bool
    credentials_revoked: bool
    constraints: list[Any]
    created_at: str
    updated_at: str


class AgentCreated(AgentWire):
    token: str


class AgentPage(Page):
    items: list[AgentWire]


class AgentTree(TypedDict):
    agent: AgentWire
    descendants: list[dict[str, Any]]
    tree: dict[str, Any]


class DirectiveWire(TypedDict):
    seq: int
    agent_id: str
    directive: str
    parameters: dict[str, Any]
    command_id: str | None
    created_at: str


class Directives(TypedDict):
    items: list[DirectiveWire]


class CommandReceipt(TypedDict):
    command_id: str
    status: CommandStatus
    command_type: CommandType
    target_agents: list[str]
    operator: str
    verdict_id: str | None
    deadline: str
    created_at: str


class CommandWire(TypedDict):
    command_id: str
    status: CommandStatus
    command_type: CommandType
    target_agents: list[str]
    parameters: dict[str, Any]
    reason: str | None
    operator: str
    approved_by: str | None
    executed_layers: list[Any]
    cascade_terminated: list[str]
    result: Any
    execution_time_ms: float | None
    verdict_id: str | None
    attempts: int
    deadline: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None


class CommandPage(Page):
    items: list[CommandWire]


class AuditWire(TypedDict):
    id: int
    command_id: str | None
    agent_id: str | None
    operator: str | None
    layer: str
    action: str
    success: bool
    details: dict[str, Any]
    timestamp: str
    prev_hash: str
    row_hash: str


class AuditPage(Page):
    items: list[AuditWire]


class AuditVerification(TypedDict):
    ok: bool
    rows: int
    first_broken_id: int | None
    reason: str
    head: str | None
    head_id: int | None
    anchors: int | None


class Identity(TypedDict):
    id: str
    name: str
    role: Role
    agent_id: str | None
    totp: bool
    can_command: bool


class _Accepted(TypedDict):
    accepted: int
    duplicates: int


class TelemetryAccepted(_Accepted, total=False):
    #: messages stored but not analysed: their sender is MUTED (policy ``quarantine``)
    quarantined: int


class TraceExport(TypedDict):
    """OTLP's ``ExportTraceServiceResponse``: ``partialSuccess`` is empty when every
    span was taken."""

    partialSuccess: dict[str, Any]


class Health(TypedDict, total=False):
    status: Literal["ok", "degraded"]
    services: list[str]
    version: str
    checks: dict[str, Any]
    failing: list[str]


class ModuleHealth(TypedDict, total=False):
    module: str
    version: str
    status: Literal["healthy", "unhealthy"]
    database: bool
    kafka_connected: bool
    nats_connected: bool


class Stats(TypedDict):
    agents: dict[str, Any]
    verdicts: VerdictStats
    alliances: int
    deceptive_agents: list[str]
    commands: dict[str, int]
    telemetry_to_verdict_ms: dict[str, Any]
    ws_clients: int


# -- request bodies ------------------------------------------------------------------

_OTLP_BODY: dict[str, Any] = {
    "type": "object",
    "description": "OTLP/HTTP JSON ExportTraceServiceRequest; spans carrying gen_ai.* attributes "
                   "become telemetry (DESIGN.md section 4). Spans that cannot be mapped are counted "
                   "in the answer's partialSuccess, as OTLP prescribes, not refused.",
    "properties": {"resourceSpans": {"type": "array"}},
}


def _publish(schemas: dict[str, Any], model: type[BaseModel]) -> dict[str, str]:
    """Put pydantic's own JSON schema of ``model`` (and of the models it uses) into
    the components; a reference to it."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def complete_schema(app: Litestar) -> None:
    """Say in the published schema what Litestar cannot derive itself.

    Which operations need the key: those with a guard (the guards authenticate), so
    the requirement is read off the handlers, never written beside each guard.

    Request bodies, as they are validated. Bodies declared as pydantic models are
    described by pydantic's own JSON schema: Litestar's conversion drops the
    constraints of nested fields (a ``list`` of bounded strings loses the bounds) and
    cannot say which fields each variant of a union requires. The bodies of ``POST /telemetry`` and ``POST /v1/traces`` are
    read raw by their handlers (one parse, errors that name the field), so Litestar
    has nothing to describe; they are documented here."""
    openapi = app.openapi_schema
    schemas: dict[str, Any] = openapi.components.schemas
    for route in app.routes:
        path_item = openapi.paths.get(route.path_format) if openapi.paths else None
        for handler in getattr(route, "route_handlers", ()):
            if handler.guards and path_item is not None:
                for method in handler.http_methods:
                    operation = getattr(path_item, method.lower(), None)
                    if operation is not None:
                        operation.security = _API_KEY
            data = handler.parsed_fn_signature.parameters.get("data")
            if data is not None and isinstance(data.annotation, type) and issubclass(data.annotation, BaseModel):
                _publish(schemas, data.annotation)
    telemetry = _publish(schemas, Telemetry)
    bodies = {
        "/telemetry": ({"oneOf": [telemetry, {
            "type": "object", "required": ["messages"], "additionalProperties": False,
            "properties": {"messages": {"type": "array", "items": telemetry}},
        }]}, "One telemetry message, or a batch {\"messages\": [...]}"),
        "/v1/traces": (_OTLP_BODY, "OpenTelemetry spans"),
    }
    for path, (body, description) in bodies.items():
        operation = openapi.paths[path].post  # type: ignore[index]
        operation.request_body = RequestBody(  # type: ignore[union-attr]
            content={"application/json": OpenAPIMediaType(schema=body)},  # type: ignore[arg-type]
            description=description, required=True,
        )
