"""The NATS server SIGKILLed and restarted under a real ``cockpit serve`` (PostgreSQL +
NATS JetStream): commands accepted before, during and after the outage each execute
exactly once, none is lost, and their confirmations reach operators after recovery."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any, Self

import httpx
import pytest
import websockets

from tests.integration.faults.conftest import (
    CockpitProcess,
    audits_of,
    command_state,
    eventually,
    headers,
    metric_sum,
    register_agent,
    spawn_target,
    wait_final,
)
from tests.processes import alive

pytestmark = [pytest.mark.postgres, pytest.mark.nats]

def fresh(prefix: str) -> str:
    """A command id never used before: JetStream drops a publish whose message id it
    saw within its duplicate window (120 s), even from an earlier test run."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


#: generous limits: the test is about the bus, not the per-operator rate limits
RATE_LIMITS = json.dumps({"MUTE": "1000/minute", "TERMINATE": "1000/minute", "ISOLATE": "1000/minute"})


class StreamWatcher:
    """A WebSocket client that stays connected and records every event it is sent."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._ws = await websockets.connect(self.url)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for raw in self._ws:
            message = json.loads(raw)
            if message.get("type") != "ping":
                self.events.append(message)

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await self._ws.close()

    def confirmations(self) -> Counter[str]:
        return Counter(e["data"]["command_id"] for e in self.events if e["type"] == "command.confirmed")


async def replay_all(ws_url: str, until_seq: int | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every stored stream event, through a fresh client resuming from ``since_seq=0``."""
    events: list[dict[str, Any]] = []
    async with websockets.connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "subscribe", "since_seq": 0}))
        while True:
            try:
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            except TimeoutError:
                return events
            if message.get("type") in {"verdict.created", "verdict.updated", "command.confirmed"}:
                events.append(message)
                if until_seq is not None and message["seq"] >= until_seq:
                    return events


async def _nats(service_ctl: Callable[[str, str], str], action: str) -> None:
    await asyncio.to_thread(service_ctl, "nats", action)


async def _healthy(client: httpx.AsyncClient, timeout: float = 30.0) -> None:
    async def ok() -> bool:
        return (await client.get("/health")).status_code == 200
    await eventually(ok, timeout, "/health 200 after NATS came back", interval=0.2)


def _executions(audits: list[dict[str, Any]], action: str) -> int:
    return sum(1 for a in audits if a["action"] == action and a["success"])


async def test_commands_in_flight_through_a_nats_kill_execute_exactly_once(
    cockpit_process: Callable[..., CockpitProcess], postgres_url: str, nats_url: str,
    service_ctl: Callable[[str, str], str], target_processes: list,
) -> None:
    cockpit = cockpit_process("nats-outage", database_url=postgres_url, nats_url=nats_url,
                              COCKPIT_C2L__RATE_LIMITS=RATE_LIMITS)
    key = cockpit.key
    mutes = [f"ext-{i}" for i in range(16)]
    # proc-0/1 ignore SIGTERM: their TERMINATE is mid-execution (waiting out the grace
    # period) when NATS dies, and must finish and be confirmed anyway.
    procs = {f"proc-{i}": spawn_target(target_processes, *(["ignore-term"] if i < 2 else []))
             for i in range(4)}
    async with httpx.AsyncClient(base_url=cockpit.base_url, timeout=30) as client:
        for agent in mutes:
            await register_agent(client, key, agent)
        for agent, proc in procs.items():
            await register_agent(client, key, agent, {"kind": "process", "pid": proc.pid})

        run = uuid.uuid4().hex[:8]

        def body(agent: str) -> dict[str, Any]:
            if agent.startswith("proc-"):
                grace = 1.5 if agent in ("proc-0", "proc-1") else 0.5
                return {"command_id": f"term-{agent}-{run}", "command_type": "TERMINATE",
                        "target_agents": [agent], "parameters": {"grace_seconds": grace}}
            return {"command_id": f"mute-{agent}-{run}", "command_type": "MUTE", "target_agents": [agent],
                    "parameters": {"duration_seconds": 600}}

        async def post(agent: str) -> httpx.Response:
            return await client.post("/commands", json=body(agent), headers=headers(key))

        async with StreamWatcher(f"{cockpit.ws_base}?api_key={key}") as watcher:
            # Phase 1: the bus works; then two TERMINATEs are executing and four MUTEs
            # are being accepted and dispatched when NATS is SIGKILLed.
            warm = await asyncio.gather(*(post(a) for a in mutes[:6]))
            terms = await asyncio.gather(post("proc-0"), post("proc-1"))

            async def executing() -> bool:
                states = [await command_state(client, key, f"term-proc-{i}-{run}") for i in (0, 1)]
                return all(s["status"] == "EXECUTING" for s in states)
            await eventually(executing, 10, "the TERMINATEs to be executing", interval=0.02)
            racing = [asyncio.create_task(post(a)) for a in mutes[6:10]]
            await _nats(service_ctl, "kill")
            first = [*warm, *terms, *await asyncio.gather(*racing)]
            assert (await client.get("/health")).status_code == 503
            # Without Kafka, NATS carries every module's channels: each one is down.
            for module in ("narrative-filter", "verdict-engine", "command-bus"):
                r = await client.get(f"/health/{module}")
                assert r.status_code == 503 and r.json()["nats_connected"] is False, r.text
            # Phase 2: accepted while NATS is down: the row is the truth, the bus catches up.
            second = await asyncio.gather(*(post(a) for a in [*mutes[10:], "proc-2", "proc-3"]))
            for r in (*first, *second):
                assert r.status_code == 202, f"{r.status_code} {r.text}"
            await _nats(service_ctl, "start")
            await _healthy(client)

            ids = [body(a)["command_id"] for a in [*mutes, *procs]]
            states = {cid: await wait_final(client, key, cid, timeout=40) for cid in ids}
            assert {cid: s["status"] for cid, s in states.items()} == dict.fromkeys(ids, "COMPLETED")
            # Executed exactly once: one claim, one action per command in the audit.
            assert {cid: s["attempts"] for cid, s in states.items()} == dict.fromkeys(ids, 1)
            for cid in ids:
                audits = await audits_of(client, key, cid)
                assert _executions(audits, "command_accepted") == 1, (cid, audits)
                action = "mute" if cid.startswith("mute-") else "stop_gracefully"
                assert sum(1 for a in audits if a["action"] == action) == 1, (cid, audits)
            metrics = (await client.get("/metrics")).text
            assert metric_sum(metrics, "command_bus_commands_executed_total", status="COMPLETED") == len(ids)
            assert metric_sum(metrics, "command_bus_commands_executed_total") == len(ids)
            for proc in procs.values():
                assert not alive(proc.pid)

            # Confirmations: every command confirmed once on the live stream, after recovery.
            async def all_confirmed() -> bool:
                return set(watcher.confirmations()) >= set(ids)
            await eventually(all_confirmed, 20, "a command.confirmed for every command")
            await asyncio.sleep(0.5)  # a duplicate would arrive right behind
            assert watcher.confirmations() == Counter(dict.fromkeys(ids, 1))
            last_seq = max(e["seq"] for e in watcher.events if "seq" in e)
        stored = await replay_all(f"{cockpit.ws_base}?api_key={key}", until_seq=last_seq)
        stored_confirmations = Counter(e["data"]["command_id"] for e in stored if e["type"] == "command.confirmed")
        assert stored_confirmations == Counter(dict.fromkeys(ids, 1))
        verify = (await client.get("/audits/verify", headers=headers(key))).json()
        assert verify["ok"] is True


async def _stream_copies(nats_url: str, subject: str) -> int:
    """How many messages on ``subject`` the ``sovereign-commands`` stream holds (each
    one is delivered to the ``c2l-executor`` durable consumer)."""
    import nats

    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info("sovereign-commands", subjects_filter=subject)
        return int((info.state.subjects or {}).get(subject, 0))
    finally:
        await nc.close()


async def test_a_command_accepted_while_nats_is_down_executes_once_after_restart(
    cockpit_process: Callable[..., CockpitProcess], postgres_url: str, nats_url: str,
    service_ctl: Callable[[str, str], str],
) -> None:
    """Accepted between a NATS kill and its restart, the command reaches the stream
    more than once (the client's buffered publish, then the recovery loop's
    re-dispatches); the executor claims it once."""
    cockpit = cockpit_process("nats-gap", database_url=postgres_url, nats_url=nats_url)
    key = cockpit.key
    agent, command_id = fresh("gap-agent"), fresh("gap")
    subject = f"sovereign.commands.{agent}"
    async with httpx.AsyncClient(base_url=cockpit.base_url, timeout=30) as client:
        await register_agent(client, key, agent)
        await _nats(service_ctl, "kill")
        r = await client.post("/commands", headers=headers(key), json={
            "command_id": command_id, "command_type": "MUTE", "target_agents": [agent]})
        assert r.status_code == 202, r.text
        # Down long enough for the recovery loop to re-dispatch it (>= 5 s after
        # acceptance) into the same void.
        await asyncio.sleep(3.0)
        assert (await command_state(client, key, command_id))["status"] == "PENDING"
        await _nats(service_ctl, "start")
        await _healthy(client)
        state = await wait_final(client, key, command_id, timeout=30)
        assert state["status"] == "COMPLETED" and state["attempts"] == 1
        copies = await eventually(lambda: _stream_copies(nats_url, subject), 10,
                                  "the command on the stream")
        await asyncio.sleep(2.5)  # one more recovery pass: nothing left to re-dispatch
        copies = await _stream_copies(nats_url, subject)
        state = await command_state(client, key, command_id)
        assert state["status"] == "COMPLETED" and state["attempts"] == 1
        audits = await audits_of(client, key, command_id)
        assert sum(1 for a in audits if a["action"] == "mute") == 1
        assert sum(1 for a in audits if a["action"] == "directive_mute") == 1
        metrics = (await client.get("/metrics")).text
        assert metric_sum(metrics, "command_bus_commands_executed_total") == 1
        directives = (await client.get(f"/agents/{agent}/directives", headers=headers(key))).json()["items"]
        assert [d["directive"] for d in directives] == ["mute"]
        assert copies >= 2, f"expected the outage to duplicate the dispatch, saw {copies} copies"


async def test_the_same_command_id_sent_twice_across_a_nats_restart_executes_once(
    cockpit_process: Callable[..., CockpitProcess], postgres_url: str, nats_url: str,
    service_ctl: Callable[[str, str], str],
) -> None:
    """The client retries the same command id (once while NATS is down, once after),
    and the bus redelivers it under another message id: one execution, one receipt."""
    import nats

    cockpit = cockpit_process("nats-dup", database_url=postgres_url, nats_url=nats_url)
    key = cockpit.key
    agent, command_id = fresh("dup-agent"), fresh("dup")
    body = {"command_id": command_id, "command_type": "INJECT_CONSTRAINT", "target_agents": [agent],
            "parameters": {"constraint": "no outbound calls"}}
    async with httpx.AsyncClient(base_url=cockpit.base_url, timeout=30) as client:
        await register_agent(client, key, agent)
        first = await client.post("/commands", json=body, headers=headers(key))
        assert first.status_code == 202, first.text
        await wait_final(client, key, command_id)
        await _nats(service_ctl, "kill")
        again = await client.post("/commands", json=body, headers=headers(key))
        assert again.status_code == 200 and again.json()["command_id"] == command_id
        await _nats(service_ctl, "start")
        await _healthy(client)
        third = await client.post("/commands", json=body, headers=headers(key))
        assert third.status_code == 200 and third.json()["command_id"] == command_id
        # The bus itself delivers the command again, as a redelivery would.
        nc = await nats.connect(nats_url)
        try:
            payload = json.dumps({k: body[k] for k in ("command_id", "command_type", "target_agents",
                                                        "parameters")}).encode()
            ack = await nc.jetstream().publish(f"sovereign.commands.{agent}", payload,
                                               headers={"Nats-Msg-Id": f"{command_id}:replayed-by-test"})
            assert ack.stream == "sovereign-commands" and not ack.duplicate
        finally:
            await nc.close()
        assert await _stream_copies(nats_url, f"sovereign.commands.{agent}") == 2
        await asyncio.sleep(1.5)
        state = await command_state(client, key, command_id)
        assert state["status"] == "COMPLETED" and state["attempts"] == 1
        audits = await audits_of(client, key, command_id)
        assert sum(1 for a in audits if a["action"] == "record_constraint") == 1
        assert sum(1 for a in audits if a["action"] == "command_accepted") == 1
        constraints = (await client.get(f"/agents/{agent}", headers=headers(key))).json()["constraints"]
        assert [c["command_id"] for c in constraints] == [command_id]
        metrics = (await client.get("/metrics")).text
        assert metric_sum(metrics, "command_bus_commands_executed_total") == 1


async def test_a_confirmation_survives_cockpit_dying_before_it_could_publish_it(
    cockpit_process: Callable[..., CockpitProcess], postgres_url: str, nats_url: str,
    service_ctl: Callable[[str, str], str], target_processes: list,
) -> None:
    """The TERMINATE finishes while NATS is down (its confirmation cannot go out), then
    Cockpit is SIGKILLed: nothing in memory survives. After both come back, the command
    row (the outbox) still owes its confirmation, and operators get it, once."""
    cockpit = cockpit_process("confirm-outbox", database_url=postgres_url, nats_url=nats_url,
                              COCKPIT_C2L__RATE_LIMITS=RATE_LIMITS)
    key = cockpit.key
    proc = spawn_target(target_processes, "ignore-term")
    agent, command_id = fresh("outbox-proc"), fresh("outbox-term")
    async with httpx.AsyncClient(base_url=cockpit.base_url, timeout=30) as client:
        await register_agent(client, key, agent, {"kind": "process", "pid": proc.pid})
        r = await client.post("/commands", headers=headers(key), json={
            "command_id": command_id, "command_type": "TERMINATE", "target_agents": [agent],
            "parameters": {"grace_seconds": 1.5}})
        assert r.status_code == 202, r.text

        async def executing() -> bool:
            return (await command_state(client, key, command_id))["status"] == "EXECUTING"
        await eventually(executing, 10, "the TERMINATE to be executing", interval=0.02)
        await _nats(service_ctl, "kill")
        state = await wait_final(client, key, command_id, timeout=30)
        assert state["status"] == "COMPLETED" and not alive(proc.pid)
    cockpit.kill()
    await _nats(service_ctl, "start")
    await asyncio.to_thread(cockpit.start)

    ws_url = f"{cockpit.ws_base}?api_key={key}"

    async def confirmed() -> list[dict[str, Any]] | None:
        events = await replay_all(ws_url, timeout=1.0)
        mine = [e for e in events if e["type"] == "command.confirmed" and e["data"]["command_id"] == command_id]
        return mine or None
    mine = await eventually(confirmed, 40, "the confirmation, published from the outbox after the restart")
    assert len(mine) == 1 and mine[0]["data"]["status"] == "COMPLETED"
    assert mine[0]["data"]["target_agents"] == [agent]
    await asyncio.sleep(3)  # another recovery pass publishes nothing more
    events = await replay_all(ws_url, timeout=1.0)
    assert sum(1 for e in events if e["type"] == "command.confirmed"
               and e["data"]["command_id"] == command_id) == 1


async def test_a_verdict_dismissed_while_nats_is_down_is_answered_then_announced(
    cockpit_process: Callable[..., CockpitProcess], postgres_url: str, nats_url: str,
    service_ctl: Callable[[str, str], str],
) -> None:
    """An operator dismisses a verdict while NATS is down: the change is committed, so
    the answer is 200 with it (it was a 500, and a retry a 409), and the stream's
    ``verdict.updated`` follows once NATS is back."""
    from tests.integration.platform.test_ingest_from_brokers import scenario

    cockpit = cockpit_process("verdict-outage", database_url=postgres_url, nats_url=nats_url)
    key = cockpit.key
    items, _ = scenario()
    fleet = fresh("outage-fleet")  # the NATS server outlives the test: nothing to mix with the next
    for item in items:
        item["fleet_id"] = fleet
    async with httpx.AsyncClient(base_url=cockpit.base_url, timeout=30) as client:
        assert (await client.post("/telemetry", json={"messages": items}, headers=headers(key))).status_code == 202

        async def active() -> list[dict[str, Any]]:
            r = await client.get("/verdicts", params={"status": "ACTIVE", "fleet_id": fleet, "limit": 100},
                                 headers=headers(key))
            return r.json()["items"]  # type: ignore[no-any-return]
        verdict = (await eventually(active, 30, "verdicts from the scenario"))[0]

        async with StreamWatcher(f"{cockpit.ws_base}?api_key={key}") as watcher:
            await _nats(service_ctl, "kill")
            r = await client.patch(f"/verdicts/{verdict['id']}", json={"status": "DISMISSED"}, headers=headers(key))
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "DISMISSED"
            stored = await client.get(f"/verdicts/{verdict['id']}", headers=headers(key))
            assert stored.json()["status"] == "DISMISSED"
            await _nats(service_ctl, "start")
            await _healthy(client)

            async def announced() -> bool:
                return any(e["type"] == "verdict.updated" and e["data"]["id"] == verdict["id"]
                           and e["data"]["status"] == "DISMISSED" for e in watcher.events)
            await eventually(announced, 30, "verdict.updated DISMISSED on the stream")
