"""The C2L API over HTTP: agents, commands against real processes, refusals, audit."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pyotp
import pytest
import websockets

from cockpit.platform.auth import Role
from tests.integration.gateway.conftest import Harness, register
from tests.processes import alive

AGENT = "import signal, sys, time\n" \
        "if sys.argv[1:] == ['ignore-term']: signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" \
        "print('ready', flush=True)\nwhile True: time.sleep(0.05)\n"


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(5)


def spawn(processes: list[subprocess.Popen[bytes]], *args: str) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, "-c", AGENT, *args], stdout=subprocess.PIPE, start_new_session=True)
    assert p.stdout is not None and p.stdout.readline() == b"ready\n"
    processes.append(p)
    return p


async def final(h: Harness, command_id: str, timeout: float = 20) -> dict[str, Any]:
    for _ in range(int(timeout / 0.05)):
        r = await h.client.get(f"/commands/{command_id}", headers=h.headers("VIEWER"))
        if r.json()["status"] in {"COMPLETED", "FAILED", "TIMEOUT"}:
            return r.json()
        await asyncio.sleep(0.05)
    raise AssertionError(f"command {command_id} never finished: {r.json()}")


async def test_terminate_cascades_through_real_processes(harness: Harness, processes: list) -> None:
    parent = spawn(processes)
    child = spawn(processes, "ignore-term")
    grandchild = spawn(processes)
    await register(harness, "boss", {"kind": "process", "pid": parent.pid})
    await register(harness, "worker", {"kind": "process", "pid": child.pid}, parent="boss")
    await register(harness, "helper", {"kind": "process", "pid": grandchild.pid}, parent="worker")
    tree = (await harness.client.get("/agents/boss/tree", headers=harness.headers("VIEWER"))).json()
    assert {d["agent_id"] for d in tree["descendants"]} == {"worker", "helper"}

    async with websockets.connect(harness.ws_url()) as ws:
        r = await harness.client.post(
            "/commands", headers=harness.headers(),
            json={"command_type": "TERMINATE", "target_agents": ["boss"], "reason": "test",
                  "parameters": {"grace_seconds": 0.5}},
        )
        assert r.status_code == 202, r.text
        command_id = r.json()["command_id"]
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if event["type"] == "command.confirmed" and event["data"]["command_id"] == command_id:
                break
    assert event["data"]["status"] == "COMPLETED"
    assert set(event["data"]["cascade_terminated"]) == {"worker", "helper"}
    for p in (parent, child, grandchild):
        assert not alive(p.pid)
    command = await final(harness, command_id)
    assert command["status"] == "COMPLETED"
    r = await harness.client.get("/audits", params={"command_id": command_id, "limit": 200},
                                 headers=harness.headers("VIEWER"))
    audits = r.json()["items"]
    by_agent = {(a["agent_id"], a["layer"]) for a in audits}
    assert {("boss", "software"), ("worker", "container"), ("helper", "container")} <= by_agent
    assert all("verification" in a["details"] for a in audits if a["layer"] == "container")
    agent = (await harness.client.get("/agents/worker", headers=harness.headers("VIEWER"))).json()
    assert agent["status"] == "TERMINATED"
    verify = (await harness.client.get("/audits/verify", headers=harness.headers("VIEWER"))).json()
    assert verify["ok"] is True and verify["rows"] >= len(audits)


async def test_command_idempotency_and_refusals(embedded: Harness, processes: list) -> None:
    h = embedded
    await register(h, "a1", {"kind": "external"})
    body = {"command_id": "cmd-1", "command_type": "MUTE", "target_agents": ["a1"],
            "parameters": {"duration_seconds": 30}}
    first = await h.client.post("/commands", json=body, headers=h.headers())
    again = await h.client.post("/commands", json=body, headers=h.headers())
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["command_id"] == first.json()["command_id"] == "cmd-1"
    other = await h.client.post("/commands", json={**body, "parameters": {"duration_seconds": 99}},
                                headers=h.headers())
    assert other.status_code == 409
    unknown = await h.client.post("/commands", json={"command_type": "MUTE", "target_agents": ["a1", "ghost"]},
                                  headers=h.headers())
    assert unknown.status_code == 422 and unknown.json()["extra"]["unknown_agents"] == ["ghost"]
    viewer = await h.client.post("/commands", json=body, headers=h.headers("VIEWER"))
    assert viewer.status_code == 403
    nokey = await h.client.post("/commands", json=body)
    assert nokey.status_code == 401
    bad = await h.client.post("/commands", json={"command_type": "EXPLODE", "target_agents": ["a1"]},
                              headers=h.headers())
    assert bad.status_code == 400
    assert (await final(h, "cmd-1"))["status"] == "COMPLETED"


async def test_rate_limit_answers_429_with_retry_after(embedded: Harness) -> None:
    h = embedded
    await register(h, "noisy", {"kind": "external"})
    statuses = []
    for _ in range(11):
        r = await h.client.post("/commands", headers=h.headers(),
                                json={"command_type": "MUTE", "target_agents": ["noisy"]})
        statuses.append(r.status_code)
    assert statuses[:10] == [202] * 10 and statuses[10] == 429
    assert int(r.headers["retry-after"]) >= 1
    audits = (await h.client.get("/audits", params={"layer": "authorization"}, headers=h.headers("VIEWER"))).json()
    assert any(a["success"] is False for a in audits["items"])


async def test_totp_step_up_for_terminate(embedded: Harness, processes: list) -> None:
    h = embedded
    key, principal = await h.cockpit.api_keys.create("careful", Role.SOVEREIGN_OPERATOR, with_totp=True)
    victim = spawn(processes)
    await register(h, "victim", {"kind": "process", "pid": victim.pid})
    body = {"command_type": "TERMINATE", "target_agents": ["victim"], "parameters": {"grace_seconds": 0.5}}
    r = await h.client.post("/commands", json=body, headers={"X-API-Key": key})
    assert r.status_code == 401 and "TOTP" in r.headers["www-authenticate"]
    r = await h.client.post("/commands", json=body, headers={"X-API-Key": key, "X-Cockpit-OTP": "000000"})
    assert r.status_code == 401
    code = pyotp.TOTP(principal.totp_secret).now()
    r = await h.client.post("/commands", json=body, headers={"X-API-Key": key, "X-Cockpit-OTP": code})
    assert r.status_code == 202
    assert (await final(h, r.json()["command_id"]))["status"] == "COMPLETED"
    assert not alive(victim.pid)
    # The code is spent: played again (within its 30 s, for another target) it is
    # refused. Before, it stayed good for every step-up action while it was valid.
    other = spawn(processes)
    await register(h, "other-victim", {"kind": "process", "pid": other.pid})
    again = {**body, "target_agents": ["other-victim"]}
    r = await h.client.post("/commands", json=again, headers={"X-API-Key": key, "X-Cockpit-OTP": code})
    assert r.status_code == 401, r.text
    assert alive(other.pid)
    # A MUTE needs no step-up: a code sent along is neither checked nor spent.
    nxt = pyotp.TOTP(principal.totp_secret).at(time.time() + 30)
    r = await h.client.post("/commands", headers={"X-API-Key": key, "X-Cockpit-OTP": nxt}, json={
        "command_type": "MUTE", "target_agents": ["other-victim"], "parameters": {"duration_seconds": 60}})
    assert r.status_code == 202, r.text
    r = await h.client.post("/commands", json=again, headers={"X-API-Key": key, "X-Cockpit-OTP": nxt})
    assert r.status_code == 202, r.text


async def test_agent_tokens_send_only_their_own_telemetry_and_die_on_revoke(embedded: Harness) -> None:
    h = embedded
    token = (await register(h, "scout", {"kind": "external"}))["token"]
    message = {"message_id": "t1", "source_agent_id": "scout", "content": "hello"}
    assert (await h.client.post("/telemetry", json=message, headers={"X-API-Key": token})).status_code == 202
    spoof = {**message, "message_id": "t2", "source_agent_id": "someone-else"}
    assert (await h.client.post("/telemetry", json=spoof, headers={"X-API-Key": token})).status_code == 403
    assert (await h.client.get("/verdicts", headers={"X-API-Key": token})).status_code == 403
    r = await h.client.post("/commands", headers=h.headers(),
                            json={"command_type": "REVOKE_ACCESS", "target_agents": ["scout"]})
    assert (await final(h, r.json()["command_id"]))["status"] == "COMPLETED"
    again = {**message, "message_id": "t3"}
    assert (await h.client.post("/telemetry", json=again, headers={"X-API-Key": token})).status_code == 401


async def test_mute_quarantines_telemetry_and_directives_reach_the_agent(embedded: Harness) -> None:
    h = embedded
    token = (await register(h, "chatty", {"kind": "external"}))["token"]
    r = await h.client.post("/commands", headers=h.headers(),
                            json={"command_type": "MUTE", "target_agents": ["chatty"],
                                  "parameters": {"duration_seconds": 60}})
    assert (await final(h, r.json()["command_id"]))["status"] == "COMPLETED"
    r = await h.client.post("/telemetry", headers={"X-API-Key": token},
                            json={"message_id": "q1", "source_agent_id": "chatty", "content": "I will attack you"})
    assert r.status_code == 202 and r.json()["quarantined"] == 1
    stored = await h.cockpit.filter.store.messages(["q1"])
    assert stored[0]["quarantined"] is True and stored[0]["intent"] is None
    directives = (await h.client.get("/agents/chatty/directives", headers={"X-API-Key": token})).json()["items"]
    assert [d["directive"] for d in directives] == ["mute"]
    other = (await register(h, "other", {"kind": "external"}))["token"]
    r = await h.client.get("/agents/chatty/directives", headers={"X-API-Key": other})
    assert r.status_code == 403


async def test_command_with_verdict_id_mitigates_it(embedded: Harness) -> None:
    h = embedded
    from tests.integration.gateway.test_scenario import scenario

    items, _ = scenario()
    await h.client.post("/telemetry", json={"messages": items}, headers=h.headers())
    await h.settle()
    verdicts = (await h.client.get("/verdicts", params={"category": "INCONSISTENCY"},
                                   headers=h.headers("VIEWER"))).json()["items"]
    verdict = verdicts[0]
    await register(h, "delta", {"kind": "external"})
    r = await h.client.post("/commands", headers=h.headers(),
                            json={"command_type": "SNAPSHOT_STATE", "target_agents": ["delta"],
                                  "verdict_id": verdict["id"]})
    command = await final(h, r.json()["command_id"])
    await h.settle()
    after = (await h.client.get(f"/verdicts/{verdict['id']}", headers=h.headers("VIEWER"))).json()
    # An external agent's snapshot holds what Cockpit knows of it (no runtime state):
    # the command completes and mitigates the verdict it names.
    assert command["status"] == "COMPLETED", command
    assert after["status"] == "MITIGATED" and after["mitigation_command_id"] == command["command_id"]
    # The verdict lifecycle: DISMISSED once, never twice.
    other = (await h.client.get("/verdicts", params={"category": "DECEPTION"},
                                headers=h.headers("VIEWER"))).json()["items"][0]
    r = await h.client.patch(f"/verdicts/{other['id']}", json={"status": "DISMISSED"}, headers=h.headers())
    assert r.status_code == 200 and r.json()["status"] == "DISMISSED"
    r = await h.client.patch(f"/verdicts/{other['id']}", json={"status": "DISMISSED"}, headers=h.headers())
    assert r.status_code == 409
    r = await h.client.patch(f"/verdicts/{verdict['id']}", json={"status": "ACTIVE"}, headers=h.headers())
    assert r.status_code == 400


async def test_a_nul_character_in_a_command_is_refused_alike_on_every_database(harness: Harness) -> None:
    """Before, SQLite stored a NUL in ``reason``, ``verdict_id`` or a constraint, and
    PostgreSQL refused the first two with a generic 422 (and took the third)."""
    h = harness
    await register(h, "nul-target", {"kind": "external"})
    base = {"command_type": "MUTE", "target_agents": ["nul-target"]}
    for field, body in (("reason", {**base, "reason": "a\u0000b"}),
                        ("verdict_id", {**base, "verdict_id": "v\u0000"})):
        r = await h.client.post("/commands", json=body, headers=h.headers())
        assert r.status_code == 400 and r.json()["extra"][0]["key"] == field, r.text
    r = await h.client.post("/commands", headers=h.headers(), json={
        "command_type": "INJECT_CONSTRAINT", "target_agents": ["nul-target"], "parameters": {"constraint": "x\u0000"}})
    assert r.status_code == 422 and "NUL" in r.json()["detail"], r.text
    listed = (await h.client.get("/commands", headers=h.headers("VIEWER"))).json()["items"]
    assert not [c for c in listed if c["target_agents"] == ["nul-target"]]
