"""Cockpit never signals the system's init, itself, or the processes it runs under:
registering one of them as an agent is refused, and a stored agent that names one
anyway (registered before the rule) is not signalled: its TERMINATE fails and says
why. A real ``cockpit serve`` process, so that a regression hits only it, not the
test run."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable

import httpx

from cockpit.c2l.runtimes.procfs import read_stat
from tests.integration.faults.conftest import (  # noqa: F401 - the fixture is used by name
    CockpitProcess,
    cockpit_process,
    headers,
    register_agent,
    wait_final,
)


async def test_cockpit_never_signals_init_itself_or_what_it_runs_under(
        cockpit_process: Callable[..., CockpitProcess]) -> None:  # noqa: F811 - the imported fixture
    cockpit = cockpit_process()
    async with httpx.AsyncClient(base_url=cockpit.base_url, timeout=30) as client:
        # The server's parent is this test's process (and init is everyone's ancestor).
        for pid, why in ((1, "init"), (cockpit.pid, "Cockpit's own process"), (os.getpid(), "Cockpit runs under it")):
            r = await client.post("/agents", headers=headers(cockpit.key), json={
                "agent_id": f"p-{pid}", "name": "protected", "runtime": {"kind": "process", "pid": pid}})
            assert r.status_code == 422, r.text
            assert f"pid {pid} cannot be an agent" in r.json()["detail"] and why in r.json()["detail"]
        # One of Cockpit's threads: /proc answers for its id too, and a signal to it
        # would reach the whole process (a frozen or killed Cockpit).
        thread = next(int(t) for t in os.listdir(f"/proc/{cockpit.pid}/task") if int(t) != cockpit.pid)
        r = await client.post("/agents", headers=headers(cockpit.key), json={
            "agent_id": "p-thread", "name": "protected", "runtime": {"kind": "process", "pid": thread}})
        assert r.status_code == 422, r.text
        assert f"thread of process {cockpit.pid}" in r.json()["detail"]

        # An agent stored with Cockpit's own process as its runtime (before the rule).
        await register_agent(client, cockpit.key, "older")
        stat = read_stat(cockpit.pid)
        assert stat is not None
        with sqlite3.connect(cockpit.env["COCKPIT_DATA_DIR"] + "/cockpit.db") as db:
            db.execute("UPDATE agents SET runtime = ? WHERE id = 'older'",
                       (json.dumps({"kind": "process", "pid": cockpit.pid, "start_time": stat.start_time}),))
        r = await client.post("/commands", headers=headers(cockpit.key), json={
            "command_type": "TERMINATE", "target_agents": ["older"], "parameters": {"grace_seconds": 1}})
        assert r.status_code == 202, r.text
        command = await wait_final(client, cockpit.key, r.json()["command_id"])
        assert command["status"] == "FAILED"
        assert f"refusing to signal pid {cockpit.pid}: it is Cockpit's own process" in json.dumps(command)
        # ... and one stored with a thread of Cockpit's: frozen, it would freeze Cockpit.
        await register_agent(client, cockpit.key, "older-thread")
        thread_stat = read_stat(thread)
        assert thread_stat is not None
        with sqlite3.connect(cockpit.env["COCKPIT_DATA_DIR"] + "/cockpit.db") as db:
            db.execute("UPDATE agents SET runtime = ? WHERE id = 'older-thread'",
                       (json.dumps({"kind": "process", "pid": thread, "start_time": thread_stat.start_time}),))
        r = await client.post("/commands", headers=headers(cockpit.key), json={
            "command_type": "MUTE", "target_agents": ["older-thread"],
            "parameters": {"duration_seconds": 60, "freeze": True}})
        assert r.status_code == 202, r.text
        command = await wait_final(client, cockpit.key, r.json()["command_id"])
        assert f"refusing to signal pid {thread}: it is a thread of process {cockpit.pid}" in json.dumps(command)
        assert cockpit.proc is not None and cockpit.proc.poll() is None
        assert (await client.get("/health")).status_code == 200
