"""Cockpit itself SIGKILLed in the middle of a TERMINATE and restarted with the same
instance id and database: the command is recovered and ends final (never stuck in
EXECUTING), with a complete audit, and the target is verified gone in /proc."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

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


@pytest.fixture(params=["sqlite", "postgresql+nats"])
def crash_bindings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The embedded default, and the production pair (recovery through JetStream)."""
    if request.param == "sqlite":
        return {}
    return {"database_url": request.getfixturevalue("postgres_url"),
            "nats_url": request.getfixturevalue("nats_url")}


async def test_sigkill_mid_terminate_is_recovered_after_restart(
    cockpit_process: Callable[..., CockpitProcess], crash_bindings: dict[str, Any],
    target_processes: list,
) -> None:
    cockpit = cockpit_process("crash", **crash_bindings)
    key = cockpit.key
    # Never reused: JetStream drops a message id it saw in the last 120 s.
    command_id = f"term-crash-{uuid.uuid4().hex[:8]}"
    stubborn = spawn_target(target_processes, "ignore-term")  # outlives its grace period
    child = spawn_target(target_processes)  # honours SIGTERM; taken down after its parent
    async with httpx.AsyncClient(base_url=cockpit.base_url, timeout=30) as client:
        await register_agent(client, key, "stubborn", {"kind": "process", "pid": stubborn.pid})
        r = await client.post("/agents", headers=headers(key), json={
            "agent_id": "stubborn-child", "name": "stubborn-child", "parent_id": "stubborn",
            "runtime": {"kind": "process", "pid": child.pid}})
        assert r.status_code == 201, r.text
        r = await client.post("/commands", headers=headers(key), json={
            "command_id": command_id, "command_type": "TERMINATE", "target_agents": ["stubborn"],
            "reason": "fault test", "parameters": {"grace_seconds": 3}})
        assert r.status_code == 202, r.text

        # Wait until the software layer is done and the graceful stop is under way.
        async def in_grace_period() -> bool:
            state = await command_state(client, key, command_id)
            actions = {a["action"] for a in await audits_of(client, key, command_id)}
            return state["status"] == "EXECUTING" and "directive_shutdown" in actions
        await eventually(in_grace_period, 10, "TERMINATE to reach its graceful stop", interval=0.05)
        await asyncio.sleep(0.5)

    cockpit.kill()
    # The kill landed mid-command: SIGTERM was ignored and the grace period never ended.
    assert alive(stubborn.pid) and alive(child.pid)
    cockpit.start()  # same environment: same instance id, same database

    async with httpx.AsyncClient(base_url=cockpit.base_url, timeout=30) as client:
        state = await wait_final(client, key, command_id, timeout=30)
        assert state["status"] == "COMPLETED", state
        assert state["attempts"] == 2  # the interrupted run, then the recovered one
        assert set(state["cascade_terminated"]) == {"stubborn-child"}
        assert not alive(stubborn.pid) and not alive(child.pid)

        audits = await audits_of(client, key, command_id)
        by_action: dict[str, list[dict[str, Any]]] = {}
        for a in audits:
            by_action.setdefault(a["action"], []).append(a)
        reclaimed = by_action["reclaimed"]
        assert len(reclaimed) == 1 and reclaimed[0]["details"]["dead_claim"] == "fault-crash"
        # Steps that succeeded before the crash are not run again (no second audit row).
        assert len(by_action["revoke_credentials"]) == 2  # stubborn and its child, once each
        assert len(by_action["directive_shutdown"]) == 2
        assert len(by_action["command_accepted"]) == 1
        # The recovered run really stopped the target: SIGTERM ignored, SIGKILL, verified.
        stubborn_rows = [a for a in audits if a["agent_id"] == "stubborn"]
        assert any(a["action"] == "force_kill" and a["success"] for a in stubborn_rows)
        assert any(a["action"] == "verify_gone" and a["success"] for a in stubborn_rows), \
            sorted({a["action"] for a in stubborn_rows})
        assert all("verification" in a["details"] for a in audits if a["layer"] == "container")

        agents = {a: (await client.get(f"/agents/{a}", headers=headers(key))).json()["status"]
                  for a in ("stubborn", "stubborn-child")}
        assert agents == {"stubborn": "TERMINATED", "stubborn-child": "TERMINATED"}
        executing = (await client.get("/commands", params={"status": "EXECUTING"},
                                      headers=headers(key))).json()
        assert executing["total"] == 0
        verify = (await client.get("/audits/verify", headers=headers(key))).json()
        assert verify["ok"] is True and verify["rows"] >= len(audits)
        metrics = (await client.get("/metrics")).text
        assert metric_sum(metrics, "command_bus_commands_executed_total", status="COMPLETED") == 1
