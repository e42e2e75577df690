"""Who may call what: every route of the app x every kind of caller.

The routes are enumerated from the Litestar app itself, so a route added without an
entry in ``EXPECTED`` fails the suite instead of shipping unguarded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets
from litestar.routes import HTTPRoute, WebSocketRoute

from cockpit.gateway.app import create_app
from cockpit.platform.auth import Role
from cockpit.settings import load_settings
from tests.integration.gateway.conftest import Harness, make_harness
from tests.integration.security.conftest import World, final, register

ROLES = ("none", "VIEWER", "AGENT", "SOVEREIGN_OPERATOR", "CHIEF_ARCHITECT", "revoked_key", "revoked_token")
OK, UNAUTHENTICATED, FORBIDDEN = "ok", 401, 403

#: access class -> role -> expected outcome ("ok" = the route's success status)
ACCESS: dict[str, dict[str, Any]] = {
    "public": dict.fromkeys(ROLES, OK),
    "readers": {"none": 401, "VIEWER": OK, "AGENT": 403, "SOVEREIGN_OPERATOR": OK, "CHIEF_ARCHITECT": OK,
                "revoked_key": 401, "revoked_token": 401},
    "operators": {"none": 401, "VIEWER": 403, "AGENT": 403, "SOVEREIGN_OPERATOR": OK, "CHIEF_ARCHITECT": OK,
                  "revoked_key": 401, "revoked_token": 401},
    "senders": {"none": 401, "VIEWER": 403, "AGENT": OK, "SOVEREIGN_OPERATOR": OK, "CHIEF_ARCHITECT": OK,
                "revoked_key": 401, "revoked_token": 401},
    "anyone_known": {"none": 401, "VIEWER": OK, "AGENT": OK, "SOVEREIGN_OPERATOR": OK, "CHIEF_ARCHITECT": OK,
                     "revoked_key": 401, "revoked_token": 401},
    # An agent reads its own directives, even once revoked (to learn it is shut down).
    "own_directives": {"none": 401, "VIEWER": 403, "AGENT": OK, "SOVEREIGN_OPERATOR": OK, "CHIEF_ARCHITECT": OK,
                       "revoked_key": 401, "revoked_token": OK},
}

Build = Callable[[World, str], tuple[str, Any]]


def fixed(path: str) -> Build:
    return lambda w, role: (path, None)


def _own(w: World, role: str) -> str:
    return w.own_agent.get(role, w.agent)


def _telemetry(w: World, role: str) -> tuple[str, Any]:
    return "/telemetry", {"message_id": f"matrix-{role}", "source_agent_id": _own(w, role), "content": "status nominal"}


def _traces(w: World, role: str) -> tuple[str, Any]:
    attrs = [{"key": "gen_ai.agent.id", "value": {"stringValue": _own(w, role)}},
             {"key": "gen_ai.operation.name", "value": {"stringValue": "invoke_agent"}},
             {"key": "gen_ai.input.messages", "value": {"stringValue": "status nominal"}}]
    span = {"traceId": f"trace-{role}", "spanId": "span-1", "name": "invoke_agent",
            "startTimeUnixNano": "1760000000000000000", "attributes": attrs}
    return "/v1/traces", {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}


def _patch(w: World, role: str) -> tuple[str, Any]:
    index = {"SOVEREIGN_OPERATOR": 0, "CHIEF_ARCHITECT": 1}.get(role, 2)
    return f"/verdicts/{w.verdicts[index]}", {"status": "DISMISSED"}


def _approve(w: World, role: str) -> tuple[str, Any]:
    return f"/commands/{w.pending.get(role, w.pending['SOVEREIGN_OPERATOR'])}/approve", None


#: (method, route path as Litestar declares it) -> (access class, request, success status)
EXPECTED: dict[tuple[str, str], tuple[str, Build, int]] = {
    ("GET", "/"): ("public", fixed("/"), 302),
    ("GET", "/ui"): ("public", fixed("/ui"), 200),
    ("GET", "/ui/{file_path:path}"): ("public", fixed("/ui/index.html"), 200),
    ("GET", "/health"): ("public", fixed("/health"), 200),
    ("GET", "/health/{module:str}"): ("public", fixed("/health/command-bus"), 200),
    ("GET", "/metrics"): ("public", fixed("/metrics"), 200),
    ("GET", "/schema"): ("public", fixed("/schema"), 200),
    ("GET", "/schema/openapi.json"): ("public", fixed("/schema/openapi.json"), 200),
    ("GET", "/schema/openapi.yaml"): ("public", fixed("/schema/openapi.yaml"), 200),
    ("GET", "/schema/openapi.yml"): ("public", fixed("/schema/openapi.yml"), 200),
    ("GET", "/schema/elements"): ("public", fixed("/schema/elements"), 200),
    ("GET", "/schema/rapidoc"): ("public", fixed("/schema/rapidoc"), 200),
    ("GET", "/schema/redoc"): ("public", fixed("/schema/redoc"), 200),
    ("GET", "/schema/swagger"): ("public", fixed("/schema/swagger"), 200),
    ("GET", "/schema/oauth2-redirect.html"): ("public", fixed("/schema/oauth2-redirect.html"), 200),
    ("GET", "/schema/{path:str}"): ("public", fixed("/schema/no-such-page"), 404),
    ("POST", "/telemetry"): ("senders", _telemetry, 202),
    ("POST", "/v1/traces"): ("senders", _traces, 200),
    ("GET", "/verdicts"): ("readers", fixed("/verdicts"), 200),
    ("GET", "/verdicts/stats"): ("readers", fixed("/verdicts/stats"), 200),
    ("GET", "/verdicts/{verdict_id:str}"): ("readers", lambda w, r: (f"/verdicts/{w.verdicts[0]}", None), 200),
    ("GET", "/verdicts/{verdict_id:str}/evidence"): (
        "readers", lambda w, r: (f"/verdicts/{w.verdicts[0]}/evidence", None), 200),
    ("PATCH", "/verdicts/{verdict_id:str}"): ("operators", _patch, 200),
    ("GET", "/alliances/graph"): ("readers", fixed("/alliances/graph"), 200),
    ("GET", "/stats"): ("readers", fixed("/stats"), 200),
    ("GET", "/me"): ("anyone_known", fixed("/me"), 200),
    ("GET", "/agents"): ("readers", fixed("/agents"), 200),
    ("POST", "/agents"): ("operators", lambda w, r: ("/agents", {"agent_id": f"new-{r}", "name": r}), 201),
    ("GET", "/agents/{agent_id:str}"): ("readers", lambda w, r: (f"/agents/{w.agent}", None), 200),
    ("GET", "/agents/{agent_id:str}/tree"): ("readers", lambda w, r: (f"/agents/{w.agent}/tree", None), 200),
    ("GET", "/agents/{agent_id:str}/directives"): (
        "own_directives", lambda w, r: (f"/agents/{_own(w, r)}/directives", None), 200),
    ("POST", "/commands"): (
        "operators", lambda w, r: ("/commands", {"command_type": "MUTE", "target_agents": [w.agent]}), 202),
    ("GET", "/commands"): ("readers", fixed("/commands"), 200),
    ("GET", "/commands/{command_id:str}"): ("readers", lambda w, r: (f"/commands/{w.command}", None), 200),
    ("POST", "/commands/{command_id:str}/approve"): ("operators", _approve, 200),
    ("GET", "/audits"): ("readers", fixed("/audits"), 200),
    ("GET", "/audits/verify"): ("readers", fixed("/audits/verify"), 200),
    ("WS", "/ws"): ("readers", fixed("/ws"), 101),
}


def app_routes(h: Harness) -> set[tuple[str, str]]:
    """Every (method, path) the app serves, HEAD/OPTIONS aside (Litestar adds those)."""
    found: set[tuple[str, str]] = set()
    for route in create_app(h.cockpit, manage_lifecycle=False).routes:
        if isinstance(route, WebSocketRoute):
            found.add(("WS", route.path))
        elif isinstance(route, HTTPRoute):
            found.update((m, route.path) for m in route.methods if m not in {"HEAD", "OPTIONS"})
        else:  # a raw ASGI mount would escape the guards' table
            found.add(("ASGI", route.path))
    return found


async def ws_status(w: World, role: str) -> int:
    url = w.h.base_url.replace("http://", "ws://") + "/ws"
    try:
        async with websockets.connect(url, additional_headers=w.headers(role), open_timeout=10) as ws:
            await ws.send('{"type": "ping"}')
            while (reply := await asyncio.wait_for(ws.recv(), 10)) and '"pong"' not in str(reply):
                pass
            return 101
    except websockets.InvalidStatus as exc:
        return exc.response.status_code


async def test_every_route_has_an_expectation(world: World) -> None:
    served = app_routes(world.h)
    missing = served - set(EXPECTED)
    assert not missing, f"routes without an access expectation (add them to EXPECTED): {sorted(missing)}"
    stale = set(EXPECTED) - served
    assert not stale, f"expectations for routes that no longer exist: {sorted(stale)}"


async def test_access_matrix(world: World, log_lines: list[str]) -> None:
    w, failures, bodies = world, [], []
    for (method, route), (access, build, success) in EXPECTED.items():
        for role in ROLES:
            path, body = build(w, role)
            expected = ACCESS[access][role]
            if method == "WS":
                got = await ws_status(w, role)
                # Before the handshake completes a refusal can only be an HTTP 403.
                ok = got == 101 if expected == OK else got == 403
            else:
                r = await w.h.client.request(method, path, json=body, headers=w.headers(role))
                got = r.status_code
                ok = got == (success if expected == OK else expected)
                if not (method == "POST" and route == "/agents"):  # the one answer that issues a token
                    bodies.append(r.text)
                assert "Traceback" not in r.text
            if not ok:
                failures.append(f"{role:>18} {method} {path}: got {got}, expected {success if expected == OK else expected}")
    assert not failures, "access matrix violations:\n" + "\n".join(failures)
    # Not one credential in any answer or any log line of the whole run.
    for secret in w.secrets:
        assert not any(secret in b for b in bodies), "a credential was echoed in a response body"
        assert not any(secret in line for line in log_lines), "a credential reached the logs"


async def test_agent_token_sends_telemetry_only_as_itself(world: World) -> None:
    w, h = world, world.h
    token = w.headers("AGENT")
    own = {"message_id": "own-1", "source_agent_id": "agent-live", "content": "hello"}
    assert (await h.client.post("/telemetry", json=own, headers=token)).status_code == 202
    spoof = {**own, "message_id": "spoof-1", "source_agent_id": w.agent}
    r = await h.client.post("/telemetry", json=spoof, headers=token)
    assert r.status_code == 403 and r.json()["extra"]["source_agent_id"] == [w.agent]
    mixed = {"messages": [{**own, "message_id": "mixed-own"}, {**spoof, "message_id": "mixed-spoof"}]}
    assert (await h.client.post("/telemetry", json=mixed, headers=token)).status_code == 403
    path, otlp = _traces(w, "VIEWER")  # a span claiming to come from the seed agent
    assert (await h.client.post(path, json=otlp, headers=token)).status_code == 403
    stored = {m["message_id"] for m in await h.cockpit.filter.store.messages(["spoof-1", "mixed-own", "mixed-spoof"])}
    assert stored == set(), "a refused batch must store nothing"


async def test_agent_token_sends_telemetry_only_in_its_own_fleet(world: World) -> None:
    """A message naming no fleet is filed under the agent's own; one naming another
    fleet is refused (it would take part in that fleet's analysis)."""
    h = world.h
    r = await h.client.post("/agents", json={"agent_id": "blue-1", "name": "blue-1", "fleet_id": "blue"},
                            headers=h.headers())
    assert r.status_code == 201, r.text
    token = {"X-API-Key": r.json()["token"]}
    unnamed = {"message_id": "fleet-unnamed", "source_agent_id": "blue-1", "content": "hello"}
    named = {**unnamed, "message_id": "fleet-named", "fleet_id": "blue"}
    for message in (unnamed, named):
        assert (await h.client.post("/telemetry", json=message, headers=token)).status_code == 202
    elsewhere = {**unnamed, "message_id": "fleet-elsewhere", "fleet_id": "red"}
    r = await h.client.post("/telemetry", json={"messages": [named | {"message_id": "fleet-with"}, elsewhere]},
                            headers=token)
    assert r.status_code == 403 and r.json()["extra"]["fleet_id"] == ["red"]
    assert "own fleet (blue)" in r.json()["detail"]
    attrs = [{"key": "gen_ai.agent.id", "value": {"stringValue": "blue-1"}},
             {"key": "gen_ai.input.messages", "value": {"stringValue": "status nominal"}}]
    span = {"traceId": "fleet-trace", "spanId": "span-1", "name": "invoke_agent",
            "startTimeUnixNano": "1760000000000000000", "attributes": attrs}
    r = await h.client.post("/v1/traces", json={"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]},
                            headers=token)
    assert r.status_code == 200, r.text
    stored = await h.cockpit.filter.store.messages(
        ["fleet-unnamed", "fleet-named", "fleet-with", "fleet-elsewhere", "otlp-fleet-trace-span-1"])
    assert {m["message_id"]: m["fleet_id"] for m in stored} == {
        "fleet-unnamed": "blue", "fleet-named": "blue", "otlp-fleet-trace-span-1": "blue"}


async def test_revocation_takes_effect_at_once(world: World) -> None:
    h = world.h
    key, principal = await h.cockpit.api_keys.create("short-lived", Role.SOVEREIGN_OPERATOR)
    assert (await h.client.get("/verdicts", headers={"X-API-Key": key})).status_code == 200
    assert await h.cockpit.api_keys.revoke(principal.id)
    assert (await h.client.get("/verdicts", headers={"X-API-Key": key})).status_code == 401
    token = await register(h, "soon-revoked")
    message = {"message_id": "before-revoke", "source_agent_id": "soon-revoked", "content": "hi"}
    assert (await h.client.post("/telemetry", json=message, headers={"X-API-Key": token})).status_code == 202
    r = await h.client.post("/commands", headers=h.headers(),
                            json={"command_type": "REVOKE_ACCESS", "target_agents": ["soon-revoked"]})
    assert (await final(h, r.json()["command_id"]))["status"] == "COMPLETED"
    after = {**message, "message_id": "after-revoke"}
    assert (await h.client.post("/telemetry", json=after, headers={"X-API-Key": token})).status_code == 401
    world.creds["fresh-revoked"] = token
    assert await ws_status(world, "fresh-revoked") == 403


async def test_a_revoked_key_loses_its_open_stream(world: World) -> None:
    """A WebSocket outlives its handshake's check: once its key is revoked, it is sent
    nothing more (no live event, no replay of the history) and is closed (1008)."""
    h = world.h
    key, principal = await h.cockpit.api_keys.create("watcher", Role.VIEWER)
    url = h.base_url.replace("http://", "ws://") + f"/ws?api_key={key}"
    async with websockets.connect(url) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "hello"
        await h.cockpit.stream.append_many([("verdict.created", "before", {"id": "before", "severity": "LOW"})])
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["data"]["id"] == "before"
        assert await h.cockpit.api_keys.revoke(principal.id)
        await asyncio.sleep(1.1)  # past the stream's re-check interval
        await h.cockpit.stream.append_many([("verdict.created", "after", {"id": "after", "severity": "LOW"})])
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert message["type"] == "ping", message  # never the event published after
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    with pytest.raises(websockets.InvalidStatus) as refused:  # and a new stream is refused at the handshake
        await websockets.connect(url, open_timeout=10)
    assert refused.value.response.status_code == 403


async def test_secrets_stay_out_of_error_bodies_and_logs(world: World, log_lines: list[str]) -> None:
    h = world.h
    key, principal = await h.cockpit.api_keys.create("stepper", Role.SOVEREIGN_OPERATOR, with_totp=True)
    await register(h, "protected")
    body = {"command_type": "TERMINATE", "target_agents": ["protected"]}
    answers = [
        await h.client.post("/commands", json=body, headers={"X-API-Key": key}),
        await h.client.post("/commands", json=body, headers={"X-API-Key": key, "X-Cockpit-OTP": "123456"}),
        await h.client.post("/commands", json=body, headers={"X-API-Key": key + "x"}),
        await h.client.get("/verdicts", headers={"X-API-Key": world.creds["revoked_key"] or ""}),
        await h.client.get("/verdicts", headers=world.headers("AGENT")),
        await h.client.post("/telemetry", headers={"X-API-Key": key, "content-type": "application/json"},
                            content=b'{"message_id": "' + key.encode() + b'", "oops"'),
    ]
    assert [a.status_code for a in answers] == [401, 401, 401, 401, 403, 400]
    secrets = [*world.secrets, key, str(principal.totp_secret)]
    for answer in answers:
        assert not any(s in answer.text for s in secrets), answer.text
    assert not any(s in line for s in secrets for line in log_lines)


@pytest.mark.postgres
async def test_rate_limit_is_shared_by_replicas(postgres_url: str, tmp_path: Path) -> None:
    """Two Cockpit instances on one database: an operator's 10 MUTEs/minute are
    counted across both, so the 11th is refused whichever replica receives it."""
    settings = [load_settings(database_url=postgres_url, auto_migrate=True, data_dir=tmp_path / name)
                for name in ("a", "b")]
    first_gen, second_gen = make_harness(settings[0]), make_harness(settings[1])
    a = await first_gen.__anext__()
    try:
        b = await second_gen.__anext__()
        try:
            key, _ = await a.cockpit.api_keys.create("replicated-operator", Role.SOVEREIGN_OPERATOR)
            await register(a, "noisy")
            mute = {"command_type": "MUTE", "target_agents": ["noisy"]}
            statuses = []
            for n in range(10):
                replica = (a, b)[n % 2]
                r = await replica.client.post("/commands", json=mute, headers={"X-API-Key": key})
                statuses.append(r.status_code)
            assert statuses == [202] * 10
            for replica in (b, a):
                r = await replica.client.post("/commands", json=mute, headers={"X-API-Key": key})
                assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        finally:
            await second_gen.aclose()
    finally:
        await first_gen.aclose()
