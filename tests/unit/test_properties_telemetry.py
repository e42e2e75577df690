"""Property tests of the telemetry parser behind ``POST /telemetry``
(:func:`cockpit.gateway.routes.telemetry.parse_telemetry`, pure) and of the
:class:`cockpit.events.Telemetry` model: whatever arrives, the only failures are the
documented 400 / 413 / 422, and valid telemetry survives a round trip unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from litestar.exceptions import HTTPException, ValidationException
from pydantic import ValidationError

from cockpit.events import Telemetry
from cockpit.gateway.routes.telemetry import PayloadTooLarge, parse_telemetry

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON values as a client could send them (finite floats: NaN/Infinity are not JSON).
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
ids = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), min_size=1, max_size=40)
texts = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=200)
attribute_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ids, inner, max_size=3),
    max_leaves=8,
)
zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])
# Up to the present: a timestamp ahead of the server's clock is refused (MAX_CLOCK_AHEAD).
timestamps = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2026, 1, 1), timezones=zones)


@st.composite
def telemetry_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A valid telemetry object as JSON (a message or an action)."""
    out: dict[str, Any] = {"message_id": draw(ids), "source_agent_id": draw(ids)}
    if draw(st.booleans()):
        out["fleet_id"] = draw(ids)
    if draw(st.booleans()):
        out["target_agent_ids"] = draw(st.lists(ids, max_size=4))
    if draw(st.booleans()):
        out["conversation_id"] = draw(ids)
    if draw(st.booleans()):
        out["kind"] = "action"
        action: dict[str, Any] = {"type": draw(ids.filter(lambda s: len(s) <= 100))}
        if draw(st.booleans()):
            action["target"] = draw(ids)
        if draw(st.booleans()):
            action["params"] = draw(st.dictionaries(ids, attribute_values, max_size=3))
        out["action"] = action
    else:
        if draw(st.booleans()):
            out["kind"] = "message"
        out["content"] = draw(texts)
    if draw(st.booleans()):
        out["timestamp"] = draw(timestamps).isoformat()
    if draw(st.booleans()):
        out["provenance_chain"] = draw(st.lists(ids, max_size=3))
    if draw(st.booleans()):
        out["attributes"] = draw(st.dictionaries(ids, attribute_values, max_size=4))
    return out


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def documented(exc: HTTPException) -> None:
    """The parser's failures are exactly the documented ones, each with a message."""
    assert (type(exc), exc.status_code) in {
        (ValidationException, 400), (PayloadTooLarge, 413), (HTTPException, 422)
    }, (type(exc), exc.status_code)
    assert exc.detail and "Traceback" not in exc.detail


@PROPS
@given(st.binary(max_size=300))
def test_any_bytes_give_telemetry_or_a_documented_error(body: bytes) -> None:
    try:
        parse_telemetry(body, max_batch=10)
    except HTTPException as exc:
        documented(exc)


@PROPS
@given(json_values)
def test_any_json_gives_telemetry_or_a_documented_error(payload: Any) -> None:
    for body in (payload, {"messages": payload}, {"messages": [payload]}):
        try:
            parse_telemetry(encode(body), max_batch=10)
        except HTTPException as exc:
            documented(exc)


@PROPS
@given(telemetry_dicts(), st.text(max_size=12), json_values)
def test_one_wrong_field_is_a_400_that_names_it(message: dict[str, Any], field: str, value: Any) -> None:
    assume(field and field not in Telemetry.model_fields and "." not in field)
    try:
        parse_telemetry(encode({**message, field: value}), max_batch=10)
    except HTTPException as exc:
        documented(exc)
        assert exc.status_code == 400 and field in exc.detail
    else:
        raise AssertionError(f"unknown field {field!r} was accepted")


@PROPS
@given(telemetry_dicts())
def test_valid_telemetry_round_trips(message: dict[str, Any]) -> None:
    (parsed,) = parse_telemetry(encode(message), max_batch=1)
    for key, value in message.items():
        got = parsed.model_dump(mode="json")[key]
        if key == "timestamp":
            assert datetime.fromisoformat(got) == datetime.fromisoformat(value)
        elif key == "action":
            assert {k: got[k] for k in value} == value
        else:
            assert got == value, key
    # What the server stores and re-serialises parses back to the same telemetry.
    (again,) = parse_telemetry(parsed.model_dump_json().encode(), max_batch=1)
    assert again == parsed


@PROPS
@given(st.lists(telemetry_dicts(), max_size=12), st.integers(1, 10))
def test_batches_keep_order_and_respect_the_limit(messages: list[dict[str, Any]], limit: int) -> None:
    body = encode({"messages": messages})
    if len(messages) > limit:
        try:
            parse_telemetry(body, max_batch=limit)
        except PayloadTooLarge as exc:
            assert exc.status_code == 413 and str(limit) in exc.detail
            return
        raise AssertionError("an oversized batch was accepted")
    parsed = parse_telemetry(body, max_batch=limit)
    assert [m.message_id for m in parsed] == [m["message_id"] for m in messages]


@PROPS
@given(st.lists(telemetry_dicts(), min_size=1, max_size=5), st.data())
def test_a_nul_anywhere_is_a_422_naming_where(messages: list[dict[str, Any]], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(messages) - 1))
    poisoned = dict(messages[index])
    field = data.draw(st.sampled_from(["message_id", "source_agent_id", "conversation_id", "attributes"]))
    poisoned[field] = {"k": ["x\x00"]} if field == "attributes" else "a\x00b"
    messages[index] = poisoned
    try:
        parse_telemetry(encode({"messages": messages}), max_batch=10)
    except HTTPException as exc:
        documented(exc)
        assert exc.status_code == 422 and f"messages.{index}.{field}" in exc.detail
    else:
        raise AssertionError("a NUL character was accepted")


@PROPS
@given(st.dictionaries(st.sampled_from(list(Telemetry.model_fields) + ["x"]), json_values, max_size=8))
def test_the_model_raises_only_validation_errors(raw: dict[str, Any]) -> None:
    try:
        message = Telemetry.model_validate(raw)
    except ValidationError:
        return
    assert message.timestamp.tzinfo is not None
    assert (message.content is not None) or (message.action is not None)


@PROPS
@given(st.datetimes(timezones=st.timezones()))
def test_any_zoned_timestamp_is_storable_or_refused(when: datetime) -> None:
    body = encode({"message_id": "m", "source_agent_id": "a", "content": "x", "timestamp": when.isoformat()})
    try:
        (parsed,) = parse_telemetry(body, max_batch=1)
    except HTTPException as exc:
        documented(exc)
        # 400: not storable; 422: ahead of the server's clock (valid by the schema)
        assert exc.status_code in (400, 422) and "timestamp" in exc.detail
    else:
        assert parsed.timestamp.astimezone(UTC) == when
