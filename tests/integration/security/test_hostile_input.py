"""Hostile input at the edge: every answer is a clear 4xx (or the hostile value stored
and returned verbatim), never a 5xx, never a traceback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import websockets

from cockpit.events.telemetry import MAX_ATTRIBUTES_BYTES
from tests.integration.gateway.conftest import Harness
from tests.integration.security.conftest import register

SQLISH = "'; DROP TABLE verdicts; --"
SCRIPTISH = "<script>alert(1)</script>"
IMGISH = "<img src=x onerror=alert(1)>"
JSON_ROUTES = ("/telemetry", "/v1/traces", "/agents", "/commands")


def clean(r: httpx.Response) -> httpx.Response:
    """Assert the answer is no server error and carries no traceback; return it."""
    assert r.status_code < 500, (r.request.method, str(r.request.url)[:120], r.status_code, r.text[:300])
    assert "Traceback" not in r.text and 'File "' not in r.text, r.text[:300]
    return r


async def post_raw(h: Harness, path: str, body: bytes | AsyncIterator[bytes]) -> httpx.Response:
    headers = {**h.headers(), "content-type": "application/json"}
    return clean(await h.client.post(path, content=body, headers=headers))


async def test_oversized_bodies_are_413_on_every_json_route(embedded: Harness) -> None:
    h = embedded
    size = h.cockpit.settings.gateway.max_body_bytes + 1024
    huge = b'{"name": "' + b"x" * size + b'"}'

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit must still hold
        for _ in range(size // 65536 + 2):
            yield b"x" * 65536

    for path in JSON_ROUTES:
        assert (await post_raw(h, path, huge)).status_code == 413, path
        assert (await post_raw(h, path, chunked())).status_code == 413, path
    r = clean(await h.client.patch("/verdicts/v1", content=huge,
                                   headers={**h.headers(), "content-type": "application/json"}))
    assert r.status_code == 413


async def test_batches_over_the_limit_are_413(embedded: Harness) -> None:
    h = embedded
    limit = h.cockpit.settings.filter.max_batch
    messages = [{"message_id": f"b{i}", "source_agent_id": "a", "content": "x"} for i in range(limit + 1)]
    assert clean(await h.client.post("/telemetry", json={"messages": messages}, headers=h.headers())).status_code == 413
    span = {"traceId": "t", "name": "s", "startTimeUnixNano": "1",
            "attributes": [{"key": "gen_ai.agent.id", "value": {"stringValue": "a"}},
                           {"key": "gen_ai.input.messages", "value": {"stringValue": "hi"}}]}
    spans = [{**span, "spanId": f"s{i}"} for i in range(limit + 1)]
    r = clean(await h.client.post("/v1/traces", json={"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]},
                                  headers=h.headers()))
    assert r.status_code == 413
    assert await h.cockpit.filter.store.count() == 0


async def test_each_message_is_bounded_not_only_the_body(harness: Harness) -> None:
    """A body under the 8 MB limit cannot carry one huge message through the free-form
    fields: ``attributes`` and an action's ``params`` hold at most 64 KiB of JSON, agent
    ids in lists 200 characters; the whole batch is refused, naming the field, and
    nothing of it is stored. At the limit, the message is stored and returned whole."""
    h = harness
    limit = MAX_ATTRIBUTES_BYTES
    over = {"blob": "x" * limit}  # its JSON is a few bytes over the limit
    ok = {"message_id": "fine", "source_agent_id": "a", "content": "x"}
    cases = [
        ({"message_id": "big", "source_agent_id": "a", "content": "x", "attributes": over}, "attributes"),
        ({"message_id": "big", "source_agent_id": "a", "kind": "action",
          "action": {"type": "call_tool", "target": "t", "params": over}}, "action.params"),
        ({"message_id": "big", "source_agent_id": "a", "content": "x", "target_agent_ids": ["b", "c" * 201]},
         "target_agent_ids"),
        ({"message_id": "big", "source_agent_id": "a", "content": "x", "provenance_chain": ["p" * 201]},
         "provenance_chain"),
    ]
    for message, field in cases:
        r = clean(await h.client.post("/telemetry", json={"messages": [ok, message]}, headers=h.headers()))
        # A size in bytes is no JSON Schema limit: valid by the schema, refused on the facts.
        assert r.status_code == (422 if field in ("attributes", "action.params") else 400), (field, r.text[:200])
        assert r.json()["extra"][0]["key"] == f"messages.1.{field}", (field, r.json()["extra"])
        assert str(limit if "." in field or field == "attributes" else 200) in r.json()["detail"], r.json()["detail"]
    assert await h.cockpit.filter.store.count() == 0

    at_limit = {"blob": "x" * (limit - len('{"blob":""}'))}
    message = {"message_id": "edge", "source_agent_id": "a", "content": "x", "attributes": at_limit,
               "target_agent_ids": ["b" * 200]}
    assert clean(await h.client.post("/telemetry", json=message, headers=h.headers())).status_code == 202
    stored = await h.cockpit.filter.store.messages(["edge"])
    assert stored[0]["attributes"] == at_limit and stored[0]["target_agent_ids"] == ["b" * 200]

    # OTLP: the span whose tool arguments are too large is rejected, its neighbour kept.
    def span(span_id: str, argument: str) -> dict[str, Any]:
        attrs = {"gen_ai.agent.id": "a", "gen_ai.operation.name": "execute_tool",
                 "gen_ai.tool.name": "shell", "gen_ai.tool.call.arguments": argument}
        return {"traceId": "t", "spanId": span_id, "startTimeUnixNano": "1",
                "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]}

    body = {"resourceSpans": [{"scopeSpans": [{"spans": [span("s1", "ls"), span("s2", "y" * limit)]}]}]}
    r = clean(await h.client.post("/v1/traces", json=body, headers=h.headers()))
    assert r.status_code == 200 and r.json()["partialSuccess"]["rejectedSpans"] == 1, r.text[:300]
    assert "params" in r.json()["partialSuccess"]["errorMessage"]
    assert [m["message_id"] for m in await h.cockpit.filter.store.messages(["otlp-t-s1", "otlp-t-s2"])] == ["otlp-t-s1"]


async def test_deep_nesting_invalid_utf8_and_non_json_are_4xx(embedded: Harness) -> None:
    h = embedded
    deep = b'{"a": ' * 50_000 + b"1" + b"}" * 50_000
    deep_list = b"[" * 200_000 + b"]" * 200_000
    for path in JSON_ROUTES:
        for body in (deep, deep_list, b"\xff\xfe\xfa{}", b'{"name": "\xc3\x28"}', b"{not json", b"", b"null",
                     b'{"message_id": NaN}', b"1e999", b'"' + b"\\ud800" + b'"'):
            r = await post_raw(h, path, body)
            assert 400 <= r.status_code < 500, (path, body[:20], r.status_code)
    nested_attributes = {"message_id": "deep", "source_agent_id": "a", "content": "x",
                         "attributes": json.loads('{"a": ' * 300 + "1" + "}" * 300)}
    assert clean(await h.client.post("/telemetry", json=nested_attributes, headers=h.headers())).status_code == 202


async def test_unknown_fields_are_refused_by_name(embedded: Harness) -> None:
    h = embedded
    r = clean(await h.client.post("/telemetry", headers=h.headers(),
                                  json={"message_id": "u", "source_agent_id": "a", "content": "x", "sneaky": 1}))
    assert r.status_code == 400 and "sneaky" in r.json()["detail"]
    r = clean(await h.client.post("/telemetry", headers=h.headers(), json={
        "messages": [{"message_id": "u", "source_agent_id": "a", "content": "x", "action2": {}}]}))
    assert r.status_code == 400 and r.json()["extra"][0]["key"] == "messages.0.action2"
    r = clean(await h.client.post("/telemetry", headers=h.headers(), json={"messages": [], "priority": 1}))
    assert r.status_code == 400 and "priority" in r.json()["detail"]
    await register(h, "known")
    cases = [
        ("POST", "/agents", {"name": "x", "is_admin": True}, "is_admin"),
        ("POST", "/agents", {"name": "x", "runtime": {"kind": "external", "privileged": True}}, "privileged"),
        ("POST", "/commands", {"command_type": "MUTE", "target_agents": ["known"], "operator": "root"}, "operator"),
        ("PATCH", "/verdicts/any", {"status": "DISMISSED", "by": "me"}, "by"),
    ]
    for method, path, body, field in cases:
        r = clean(await h.client.request(method, path, json=body, headers=h.headers()))
        # A schema violation is a 400 naming the field, from Litestar's body validation
        # and from the telemetry parser alike.
        assert r.status_code == 400 and field in r.text, (path, r.status_code, r.text)


async def test_wrong_types_and_unknown_enums_in_queries_are_400(embedded: Harness) -> None:
    h = embedded
    for path in (
        "/verdicts?limit=abc", "/verdicts?since=not-a-date", "/verdicts?offset=-1", "/verdicts?severity=APOCALYPTIC",
        "/verdicts?status=active", "/verdicts?category=1", "/verdicts?limit=99999999999999999999999",
        "/verdicts?since=0001-01-01T00:00:00%2B14:00", "/verdicts?since=9999-12-31T23:59:59-14:00",
        "/verdicts?since=2026-01-01T00:00:00", "/verdicts?since=0.5", "/verdicts?since=1767225600", "/agents?status=ZOMBIE", "/agents?limit=0", "/commands?status=DONE",
        "/commands?command_type=NUKE", "/commands?limit=1e3", "/audits?limit=abc", "/audits?offset=" + "9" * 400,
        "/agents/x/directives?after=-1", "/verdicts?agent_id=" + "a" * 5000,
    ):
        r = clean(await h.client.get(path, headers=h.headers()))
        assert r.status_code == 400, (path, r.status_code, r.text[:200])
        assert r.json()["status_code"] == 400 and r.json()["detail"]


async def test_unknown_enum_values_in_bodies_are_refused(embedded: Harness) -> None:
    h = embedded
    await register(h, "e1")
    for method, path, body in (
        ("POST", "/commands", {"command_type": "NUKE", "target_agents": ["e1"]}),
        ("POST", "/agents", {"name": "x", "runtime": {"kind": "mainframe"}}),
        ("PATCH", "/verdicts/x", {"status": "FORGOTTEN"}),
        ("POST", "/telemetry", {"message_id": "k", "source_agent_id": "a", "kind": "telepathy", "content": "x"}),
    ):
        r = clean(await h.client.request(method, path, json=body, headers=h.headers()))
        assert r.status_code == 400, (path, r.status_code)


async def test_huge_numbers_and_odd_timestamps(embedded: Harness) -> None:
    h = embedded
    base = {"source_agent_id": "num", "content": "x"}
    big = {**base, "message_id": "big", "attributes": {"big": 10**30, "neg": -(10**30), "tiny": 5e-324}}
    assert clean(await h.client.post("/telemetry", json=big, headers=h.headers())).status_code == 202
    stored = (await h.cockpit.filter.store.messages(["big"]))[0]
    assert stored["attributes"] == big["attributes"]
    for raw, status in (
        (b'{"message_id": "inf", "source_agent_id": "a", "content": "x", "attributes": {"n": 1e999}}', 400),
        (b'{"message_id": "nan", "source_agent_id": "a", "content": "x", "attributes": {"n": NaN}}', 400),
        (b'{"message_id": "dig", "source_agent_id": "a", "content": "x", "attributes": {"n": ' + b"7" * 5000 + b"}}",
         400),
    ):
        assert (await post_raw(h, "/telemetry", raw)).status_code == status
    ahead = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()  # a fleet's clock would stop there
    for ts in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "not a time", "2026-01-01T00:00:00",
               0, 1767225600, 1.5, "2100-01-01T00:00:00Z", ahead):  # numbers: ISO 8601 is promised, not Unix time
        r = clean(await h.client.post("/telemetry", json={**base, "message_id": f"ts-{ts}", "timestamp": ts},
                                      headers=h.headers()))
        # Ahead of the server's clock: valid by the schema, refused on the facts.
        expected = 422 if ts in ("2100-01-01T00:00:00Z", ahead) else 400
        assert r.status_code == expected and "timestamp" in r.text, (ts, r.text)
    skewed = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()  # an agent's clock a little fast
    r = clean(await h.client.post("/telemetry", json={**base, "message_id": "skewed", "timestamp": skewed},
                                  headers=h.headers()))
    assert r.status_code == 202, r.text
    r = clean(await h.client.post("/commands", headers=h.headers(), json={
        "command_type": "MUTE", "target_agents": ["num"], "parameters": {"duration_seconds": 10**30}}))
    assert r.status_code == 422  # unknown agent or bad duration: refused either way


async def test_hostile_strings_are_stored_and_returned_verbatim(harness: Harness) -> None:
    """SQL-ish and script-ish strings in content, ids and attributes survive the trip
    unchanged on SQLite and PostgreSQL, and the verdicts table is still there."""
    h = harness
    hostile = [SQLISH, SCRIPTISH, IMGISH, "\u202e\U0001f4a3 \\ \" ' ` $(rm -rf /) %s {0} ${jndi:ldap://x}"]
    for n, text in enumerate(hostile):
        source, target = f"{text}-a{n}".replace("/", "|"), f"b{n}"  # a "/" cannot live in a path segment
        promise = {"message_id": f"p{n}-{text}", "source_agent_id": source, "target_agent_ids": [target],
                   "conversation_id": text, "content": f"I will support you {target}, count on me. {text}",
                   "attributes": {text: text, "nested": [text, {"k": text}]}, "provenance_chain": [text]}
        attack = {"message_id": f"x{n}-{text}", "source_agent_id": source, "kind": "action",
                  "action": {"type": "attack", "target": target, "params": {"why": text}}, "conversation_id": text}
        r = clean(await h.client.post("/telemetry", json={"messages": [promise, attack]}, headers=h.headers()))
        assert r.status_code == 202, r.text
        await h.settle()
        verdicts = clean(await h.client.get("/verdicts", params={"agent_id": source}, headers=h.headers("VIEWER")))
        assert verdicts.json()["total"] >= 1, (text, verdicts.text)
        verdict = verdicts.json()["items"][0]
        assert verdict["agents_involved"] == [source]
        evidence = clean(await h.client.get(f"/verdicts/{verdict['id']}/evidence", headers=h.headers("VIEWER")))
        items = {m["message_id"]: m for m in evidence.json()["items"]}
        got = items[promise["message_id"]]
        for key in ("source_agent_id", "conversation_id", "content", "attributes", "provenance_chain"):
            assert got[key] == promise[key], (key, got[key])
        assert items[attack["message_id"]]["action"]["params"] == {"why": text}
        # Agents: hostile ids and names, read back by id (URL-encoded) and in the list.
        agent_id = f"{text}-agent".replace("/", "|")
        r = clean(await h.client.post("/agents", json={"agent_id": agent_id, "name": text, "fleet_id": text},
                                      headers=h.headers()))
        assert r.status_code == 201, r.text
        one = clean(await h.client.get(f"/agents/{quote(agent_id, safe='')}", headers=h.headers("VIEWER"))).json()
        assert (one["agent_id"], one["name"], one["fleet_id"]) == (agent_id, text, text)
        listed = clean(await h.client.get("/agents", params={"fleet_id": text}, headers=h.headers("VIEWER"))).json()
        assert [a["agent_id"] for a in listed["items"]] == [agent_id]
    assert clean(await h.client.get("/verdicts", headers=h.headers("VIEWER"))).json()["total"] >= len(hostile)


async def test_an_agent_id_its_own_routes_cannot_address_is_refused(embedded: Harness) -> None:
    """'/' would split GET /agents/{id} and the directive poll: such an agent could never
    be reached by the kill switch's directives."""
    h = embedded
    for bad in ("team/alpha", "/", "   "):
        r = await h.client.post("/agents", json={"agent_id": bad, "name": "x"}, headers=h.headers())
        assert r.status_code == 422 and "agent_id" in r.json()["detail"], (bad, r.text)
    r = await h.client.get("/agents", headers=h.headers("VIEWER"))
    assert r.json()["total"] == 0


async def test_null_bytes_are_refused_alike_on_every_backend(harness: Harness) -> None:
    h = harness
    base = {"message_id": "nul", "source_agent_id": "a", "content": "x"}
    for field, value in (("content", "x\x00y"), ("message_id", "n\x00"), ("source_agent_id", "\x00"),
                         ("conversation_id", "c\x00"), ("attributes", {"k": ["ok", "v\x00"]}),
                         ("attributes", {"k\x00": 1})):
        r = clean(await h.client.post("/telemetry", json={**base, field: value}, headers=h.headers()))
        assert r.status_code == 422 and field in r.json()["detail"], (field, r.text)
    span = {"traceId": "t", "spanId": "s", "startTimeUnixNano": "1",
            "attributes": [{"key": "gen_ai.agent.id", "value": {"stringValue": "a"}},
                           {"key": "gen_ai.input.messages", "value": {"stringValue": "hi\x00"}}]}
    r = clean(await h.client.post("/v1/traces", json={"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]},
                                  headers=h.headers()))
    assert r.status_code == 200 and r.json()["partialSuccess"]["rejectedSpans"] == 1
    for body in ({"agent_id": "a\x00b", "name": "x"}, {"name": "x\x00"}):
        assert clean(await h.client.post("/agents", json=body, headers=h.headers())).status_code in {400, 422}
    r = clean(await h.client.post("/commands", json={"command_type": "MUTE", "target_agents": ["\x00"]},
                                  headers=h.headers()))
    assert r.status_code in {400, 422}
    for path in ("/agents/x%00y", "/agents/x%00y/tree", "/commands/x%00y", "/verdicts/x%00y",
                 "/verdicts/x%00y/evidence", "/verdicts?agent_id=x%00y", "/audits?agent_id=%00",
                 "/agents?fleet_id=%00", "/commands?operator=%00"):
        r = clean(await h.client.get(path, headers=h.headers()))
        assert r.status_code in {200, 400, 404, 422}, (path, r.status_code)
    assert await h.cockpit.filter.store.count() == 0


async def next_reply(ws: Any) -> dict[str, Any]:
    """The next answer to something we sent (greetings and keep-alive pings skipped)."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message.get("type") not in {"hello", "ping"}:
            return message  # type: ignore[no-any-return]


async def test_websocket_garbage_frames_get_errors_and_the_stream_survives(embedded: Harness) -> None:
    h = embedded
    garbage: list[str | bytes] = [
        "", "x" * 1_000_000, "[" * 100_000, "[1, 2]", "null", '{"type": 5}',
        '{"type": "subscribe", "since_seq": [1]}',
        '{"type": "subscribe", "since_seq": {"a": 1}}', '{"type": "subscribe", "since_seq": 1e400}',
        '{"type": "subscribe", "since_seq": NaN}', '{"type": "subscribe", "since_seq": ' + "9" * 100 + "}",
        '{"type": "subscribe", "since_seq": -5}', '{"type": "subscribe", "filters": "all"}',
        '{"type": "subscribe", "filters": {"severity": 5}}', '{"type": "' + SCRIPTISH + '"}',
        b"\xff\xfe\x00\x01", b"",
    ]
    async with websockets.connect(h.ws_url(), max_size=None) as ws:
        for frame in garbage:
            await ws.send(frame)
            reply = await next_reply(ws)
            assert reply["type"] == "error" and reply["detail"], (frame[:40], reply)
            assert "Traceback" not in reply["detail"]
        await ws.send('{"type": "ping"}')
        assert (await next_reply(ws))["type"] == "pong"
    for query in ("since_seq=abc", "since_seq=" + "9" * 30, "since_seq=-1"):
        async with websockets.connect(h.ws_url(**{query.split("=")[0]: query.split("=")[1]})) as ws:
            reply = await next_reply(ws)
            assert reply["type"] == "error", (query, reply)
            await ws.send('{"type": "ping"}')
            while reply["type"] != "pong":
                reply = await next_reply(ws)
    assert clean(await h.client.get("/health")).status_code == 200


@pytest.mark.parametrize("path", ["/agents/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/ui/../../../../etc/passwd",
                                  "/ui/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/ui/..%2f..%2f..%2fetc%2fpasswd"])
async def test_path_traversal_finds_nothing(embedded: Harness, path: str) -> None:
    r = clean(await embedded.client.get(path, headers=embedded.headers()))
    assert r.status_code in {400, 404} and "root:" not in r.text


async def test_odd_otlp_shapes_are_4xx_or_partial_success(embedded: Harness) -> None:
    h = embedded
    for payload in ([], {"resourceSpans": 5}, {"resourceSpans": [5, "x", None]},
                    {"resourceSpans": [{"resource": 5, "scopeSpans": 7}]},
                    {"resourceSpans": [{"resource": {"attributes": "x"}, "scopeSpans": [{"spans": [1, {}]}]}]}):
        r = clean(await h.client.post("/v1/traces", json=payload, headers=h.headers()))
        assert r.status_code in {200, 400}, (payload, r.status_code)


async def test_span_values_of_unexpected_shapes_reject_their_span_only(embedded: Harness) -> None:
    """An attribute that OTLP allows but the GenAI conventions do not foresee (an array
    or a map where a string belongs, a messages string whose parts are not a list) is a
    rejected span, counted in partialSuccess; the batch's other spans are ingested.
    (They were a 500 that lost the whole batch.)"""
    h = embedded

    def span(span_id: str, **extra: dict[str, Any]) -> dict[str, Any]:
        attrs = {"gen_ai.agent.id": {"stringValue": "a"}, "gen_ai.input.messages": {"stringValue": "hi"}, **extra}
        return {"traceId": "t", "spanId": span_id, "startTimeUnixNano": "1",
                "attributes": [{"key": k.replace("__", "."), "value": v} for k, v in attrs.items()]}

    spans = [span("good"),
             span("array-op", gen_ai__operation__name={"arrayValue": {"values": [{"stringValue": "chat"}]}}),
             span("map-op", gen_ai__operation__name={"kvlistValue": {"values": []}}),
             span("parts", gen_ai__input__messages={"stringValue": '[{"role": "user", "parts": 5}]'}),
             span("deep", gen_ai__input__messages={"stringValue": "[" * 50_000})]
    r = clean(await h.client.post("/v1/traces", json={"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]},
                                  headers=h.headers()))
    assert r.status_code == 200, r.text[:300]
    assert r.json()["partialSuccess"]["rejectedSpans"] == 3, r.json()
    stored = await h.cockpit.filter.store.messages([f"otlp-t-{s['spanId']}" for s in spans])
    # A messages string that is not JSON (nested past parsing) is the text itself.
    assert sorted(m["message_id"] for m in stored) == ["otlp-t-deep", "otlp-t-good"]


async def test_the_longest_agent_ids_still_produce_verdicts(harness: Harness) -> None:
    """Agent ids of 200 characters (the limit) make a collusion title of over 600:
    the title ends in an ellipsis at 500 (the column), instead of PostgreSQL refusing
    the engine's whole batch, every fleet's drafts in it lost."""
    from tests.integration.gateway.test_scenario import scenario

    h = harness
    items, _ = scenario()
    body = json.dumps({"messages": items})
    for name in ("alpha", "bravo", "charlie"):
        body = body.replace(name, name + "x" * (200 - len(name)))
    r = clean(await h.client.post("/telemetry", content=body, headers={**h.headers(), "content-type": "application/json"}))
    assert r.status_code == 202, r.text
    await h.settle()
    for _ in range(100):
        verdicts = (await h.client.get("/verdicts", params={"category": "COLLUSION"}, headers=h.headers("VIEWER"))).json()
        if verdicts["items"]:
            break
        await asyncio.sleep(0.1)
    title = verdicts["items"][0]["title"]
    assert len(title) == 500 and title.endswith("\u2026") and title.startswith("alphax")


async def test_a_number_past_a_floats_range_in_attributes_is_context_ignored(embedded: Harness) -> None:
    """A 400-digit ``game_score_delta`` is valid JSON and valid telemetry; the scorer
    reads it as no context, and the request (and those committed with it) succeed.
    Before, it failed the whole group commit: unrelated agents' requests got a 500."""
    h = embedded
    big = {"message_id": "huge-number", "source_agent_id": "a", "content": "hello",
           "attributes": {"game_score_delta": 10**400}}
    others = [{"message_id": f"other-{n}", "source_agent_id": f"b{n}", "content": "hi"} for n in range(5)]
    answers = await asyncio.gather(*(h.client.post("/telemetry", json=m, headers=h.headers()) for m in [big, *others]))
    assert [clean(a).status_code for a in answers] == [202] * 6
    stored = await h.cockpit.filter.store.messages(["huge-number"])
    assert stored[0]["attributes"] == {"game_score_delta": 10**400}
