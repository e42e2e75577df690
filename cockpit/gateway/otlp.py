"""OpenTelemetry GenAI spans (OTLP/HTTP JSON) mapped onto Cockpit's telemetry.

Semantic conventions used: ``gen_ai.agent.id`` (or ``gen_ai.agent.name``),
``gen_ai.operation.name`` (``invoke_agent`` / ``chat`` -> a message,
``execute_tool`` -> a ``call_tool`` action), ``gen_ai.input.messages`` (JSON list of
``{role, parts: [{type: "text", content}]}``), ``gen_ai.conversation.id``,
``gen_ai.tool.name``. Cockpit extensions: ``cockpit.fleet.id``,
``cockpit.target_agent_ids`` (list or comma-separated).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from cockpit.events import Telemetry

__all__ = ["OtlpMapping", "map_traces"]

_MESSAGE_OPS = {"invoke_agent", "chat", "text_completion", "generate_content", "create_agent"}


@dataclass(slots=True)
class OtlpMapping:
    """Telemetry mapped from the spans, and the spans that could not be mapped."""

    telemetry: list[Telemetry] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)


def _value(v: Any) -> Any:
    if not isinstance(v, dict):
        return None
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    if "intValue" in v:
        try:
            return int(v["intValue"])
        except (TypeError, ValueError):
            return None
    if "arrayValue" in v and isinstance(v["arrayValue"], dict):
        return [_value(x) for x in v["arrayValue"].get("values") or []]
    if "kvlistValue" in v and isinstance(v["kvlistValue"], dict):
        return _attributes(v["kvlistValue"].get("values"))
    return None


def _attributes(raw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(raw, list):
        for item in raw:
            if isinstance(item, dict) and isinstance(item.get("key"), str):
                out[item["key"]] = _value(item.get("value"))
    return out


def _text_of(messages: Any) -> str | None:
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except (ValueError, RecursionError):  # not JSON (or nested past parsing): the text itself
            return messages
    if not isinstance(messages, list):
        return None
    texts: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        if isinstance(message.get("content"), str):
            texts.append(message["content"])
        parts = message.get("parts")
        for part in parts if isinstance(parts, list) else []:
            if isinstance(part, dict) and isinstance(part.get("content"), str):
                texts.append(part["content"])
    return "\n".join(texts) if texts else None


def _targets(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value if v]
    if isinstance(value, str) and value:
        return [v.strip() for v in value.split(",") if v.strip()]
    return []


def _span(span: dict[str, Any], resource: dict[str, Any]) -> Telemetry:
    attrs = {**resource, **_attributes(span.get("attributes"))}
    agent = attrs.get("gen_ai.agent.id") or attrs.get("gen_ai.agent.name")
    if not agent:
        raise ValueError("span has no gen_ai.agent.id")
    operation = attrs.get("gen_ai.operation.name")
    if operation is not None and not isinstance(operation, str):
        raise ValueError("gen_ai.operation.name is not a string")
    trace_id, span_id = span.get("traceId"), span.get("spanId")
    if not trace_id or not span_id:
        raise ValueError("span has no traceId/spanId")
    try:
        ts = datetime.fromtimestamp(int(span.get("startTimeUnixNano") or 0) / 1e9, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise ValueError("startTimeUnixNano is not a number") from None
    base: dict[str, Any] = {
        "message_id": f"otlp-{trace_id}-{span_id}",
        "source_agent_id": str(agent),
        "target_agent_ids": _targets(attrs.get("cockpit.target_agent_ids")),
        "conversation_id": attrs.get("gen_ai.conversation.id"),
        "timestamp": ts,
        "attributes": {"otlp.operation": operation, "otlp.span_name": span.get("name")},
    }
    if attrs.get("cockpit.fleet.id"):  # else the default fleet, or an agent token's own
        base["fleet_id"] = attrs["cockpit.fleet.id"]
    if operation == "execute_tool":
        tool = attrs.get("gen_ai.tool.name")
        params = {k: v for k, v in attrs.items() if k.startswith("gen_ai.tool.") and k != "gen_ai.tool.name"}
        base.update(kind="action", action={"type": "call_tool", "target": tool, "params": params})
    elif operation in _MESSAGE_OPS or operation is None:
        text = _text_of(attrs.get("gen_ai.input.messages")) or _text_of(attrs.get("gen_ai.output.messages"))
        if text is None:
            raise ValueError("span has no gen_ai.input.messages text")
        base.update(kind="message", content=text)
    else:
        raise ValueError(f"unsupported gen_ai.operation.name {operation!r}")
    return Telemetry.model_validate(base)


def _reason(exc: Exception) -> str:
    """Why a span was rejected, in one line: the first field the telemetry schema refused
    (its mapped name: ``content``, ``action.params``...) and why."""
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}" if where else str(first["msg"])
    if isinstance(exc, ValueError):
        return str(exc).splitlines()[0]
    return f"span has a value of an unexpected shape ({type(exc).__name__})"


def map_traces(payload: Any) -> OtlpMapping:
    """Map an ``ExportTraceServiceRequest`` (JSON) to telemetry; bad spans are counted,
    never fatal. Raises ``ValueError`` only when the payload is not the OTLP shape."""
    if not isinstance(payload, dict) or not isinstance(payload.get("resourceSpans", []), list):
        raise ValueError("expected an OTLP ExportTraceServiceRequest with resourceSpans")
    out = OtlpMapping()
    for resource_spans in payload.get("resourceSpans") or []:
        if not isinstance(resource_spans, dict):
            out.rejected += 1
            continue
        # Any JSON may arrive in these slots: only the OTLP shapes count.
        resource_obj, scopes = resource_spans.get("resource"), resource_spans.get("scopeSpans")
        resource = _attributes(resource_obj.get("attributes")) if isinstance(resource_obj, dict) else {}
        for scope in scopes if isinstance(scopes, list) else []:
            spans = scope.get("spans") if isinstance(scope, dict) else None
            for span in spans if isinstance(spans, list) else []:
                try:
                    if not isinstance(span, dict):
                        raise ValueError("span is not an object")
                    out.telemetry.append(_span(span, resource))
                except (ValueError, ValidationError, TypeError, RecursionError) as exc:
                    # a value of a shape the mapping did not foresee fails its span only
                    out.rejected += 1
                    if len(out.errors) < 5:
                        out.errors.append(_reason(exc))
    return out
