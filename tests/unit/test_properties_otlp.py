"""Property tests of the OTLP/HTTP JSON mapping (:func:`cockpit.gateway.otlp.map_traces`):
any payload maps or raises the documented ``ValueError``; good spans become telemetry
carrying their ids, agent and text; bad spans are counted, never fatal."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cockpit.gateway.otlp import map_traces

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
names = st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters=","), min_size=1, max_size=20)
hexes = st.text("0123456789abcdef", min_size=8, max_size=32)


def attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        wrapped = {"boolValue": value}
    elif isinstance(value, int):
        wrapped = {"intValue": str(value)}
    else:
        wrapped = {"stringValue": value}
    return {"key": key, "value": wrapped}


@st.composite
def good_spans(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A mappable GenAI span and what it must map to."""
    agent, trace, span = draw(names), draw(hexes), draw(hexes)
    attrs = [attr("gen_ai.agent.id", agent)]
    expected: dict[str, Any] = {"message_id": f"otlp-{trace}-{span}", "source_agent_id": agent}
    if draw(st.booleans()):
        tool = draw(names)
        attrs += [attr("gen_ai.operation.name", "execute_tool"), attr("gen_ai.tool.name", tool)]
        expected.update(kind="action", tool=tool)
    else:
        text = draw(st.text(min_size=1, max_size=80))
        op = draw(st.sampled_from([None, "invoke_agent", "chat"]))
        if op:
            attrs.append(attr("gen_ai.operation.name", op))
        messages = [{"role": "user", "parts": [{"type": "text", "content": text}]}]
        attrs.append(attr("gen_ai.input.messages", json.dumps(messages)))
        expected.update(kind="message", content=text)
    targets = draw(st.lists(names, max_size=3))
    if targets:
        attrs.append({"key": "cockpit.target_agent_ids",
                      "value": {"arrayValue": {"values": [{"stringValue": t} for t in targets]}}})
    expected["target_agent_ids"] = targets
    nanos = draw(st.integers(0, 1_767_225_600 * 10**9))  # up to 2026: later is ahead of the clock
    return {"traceId": trace, "spanId": span, "name": "s", "startTimeUnixNano": str(nanos),
            "attributes": attrs}, expected


bad_spans = st.one_of(
    json_scalars,
    st.just({"traceId": "t", "spanId": "s", "attributes": []}),  # no agent
    st.builds(lambda a: {"spanId": "s", "attributes": [attr("gen_ai.agent.id", a)]}, names),  # no traceId
    st.builds(lambda a, o: {"traceId": "t", "spanId": "s", "attributes": [
        attr("gen_ai.agent.id", a), attr("gen_ai.operation.name", o),
        attr("gen_ai.input.messages", "hi")]}, names, names.filter(lambda o: o not in {
            "invoke_agent", "chat", "text_completion", "generate_content", "create_agent", "execute_tool"})),
    st.builds(lambda a: {"traceId": "t", "spanId": "s", "startTimeUnixNano": "soon",
                         "attributes": [attr("gen_ai.agent.id", a), attr("gen_ai.input.messages", "hi")]}, names),
    st.builds(lambda a: {"traceId": "t", "spanId": "s", "attributes": [attr("gen_ai.agent.id", a)]}, names),
)


@PROPS
@given(json_values)
def test_any_payload_maps_or_raises_value_error(payload: Any) -> None:
    for candidate in (payload, {"resourceSpans": payload}, {"resourceSpans": [payload]},
                      {"resourceSpans": [{"resource": payload, "scopeSpans": payload}]},
                      {"resourceSpans": [{"scopeSpans": [payload, {"spans": payload}, {"spans": [payload]}]}]}):
        try:
            mapping = map_traces(candidate)
        except ValueError as exc:
            assert str(exc)
            continue
        assert mapping.rejected >= 0 and len(mapping.errors) <= 5
        assert all(m.source_agent_id for m in mapping.telemetry)


@PROPS
@given(st.lists(st.tuples(st.booleans(), st.data()), max_size=12), st.randoms())
def test_good_spans_map_and_bad_spans_are_counted(plan: list[tuple[bool, st.DataObject]], rnd: Any) -> None:
    spans, expected, bad = [], [], 0
    for good, data in plan:
        if good:
            span, want = data.draw(good_spans())
            # Unique ids per span so the expected list lines up one to one.
            span["spanId"] = f"{span['spanId']}{len(spans)}"
            want["message_id"] = f"otlp-{span['traceId']}-{span['spanId']}"
            spans.append(span)
            expected.append(want)
        else:
            spans.append(data.draw(bad_spans))
            bad += 1
    cut = rnd.randint(0, len(spans))  # spread over two resources / scopes
    payload = {"resourceSpans": [
        {"resource": {"attributes": [attr("cockpit.fleet.id", "fleet-x")]}, "scopeSpans": [{"spans": spans[:cut]}]},
        {"scopeSpans": [{"spans": spans[cut:]}, {}]},
    ]}
    mapping = map_traces(payload)
    assert mapping.rejected == bad
    assert len(mapping.errors) == min(bad, 5)
    assert len(mapping.telemetry) == len(expected)
    for message, want in zip(mapping.telemetry, expected, strict=True):
        assert message.message_id == want["message_id"]
        assert message.source_agent_id == want["source_agent_id"]
        assert message.target_agent_ids == want["target_agent_ids"]
        assert message.kind.value == want["kind"]
        if want["kind"] == "message":
            assert message.content == want["content"]
        else:
            assert message.action is not None and message.action.target == want["tool"]
        assert message.timestamp.tzinfo is not None
    first = {f"otlp-{s['traceId']}-{s['spanId']}" for s in spans[:cut] if isinstance(s, dict) and "traceId" in s}
    for message in mapping.telemetry:  # the resource's attributes apply to its own spans only
        assert message.fleet_id == ("fleet-x" if message.message_id in first else "default")
