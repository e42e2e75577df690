"""The agent SDK against a real HTTP server: a real agent process registers,
reports, obeys directives and stops cleanly.

The gateway is the lead's; these tests serve the same three routes from a minimal
Litestar app over the C2L facade, exactly as DESIGN.md section 10 specifies them.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from litestar import Litestar, Request, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery, JSONBody

from cockpit.c2l import C2L, build_c2l
from cockpit.c2l.client import AsyncCockpitAgentClient, CockpitError
from cockpit.platform.bus import build_bus
from cockpit.platform.metrics import Metrics
from cockpit.settings import C2LSettings
from tests.conftest import schema_database, sqlite_url

OPERATOR_KEY = "ck_test_operator"

AGENT_SCRIPT = """
import sys
from cockpit.c2l.client import CockpitAgentClient

client = CockpitAgentClient(sys.argv[1], api_key=sys.argv[2])
client.register("sdk-agent", fleet_id="blue")
client.install_signal_handlers()
client.send("I will support you", target_agent_ids=["b"])
print("registered", client.agent_id, flush=True)
client.run(on_directive=lambda d: print("directive", d["directive"], flush=True), poll_interval=0.05)
print("stopped cleanly", "muted" if client.muted else "unmuted", flush=True)
"""


@dataclass
class Edge:
    url: str
    c2l: C2L
    telemetry: list[dict[str, Any]] = field(default_factory=list)


def _app(c2l: C2L, telemetry: list[dict[str, Any]]) -> Litestar:
    async def caller(request: Request[Any, Any, Any], *, include_revoked: bool = False) -> str | None:
        key = request.headers.get("x-api-key", "")
        if key == OPERATOR_KEY:
            return "operator"
        agent_id = await c2l.authenticate_agent(key, include_revoked=include_revoked)
        if agent_id is None:
            raise HTTPException(status_code=401, detail="invalid or revoked credential")
        return agent_id

    @post("/agents", status_code=201)
    async def register(request: Request[Any, Any, Any], data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
        await caller(request)
        return await c2l.register_agent(data)

    @post("/telemetry", status_code=202)
    async def ingest(request: Request[Any, Any, Any], data: JSONBody[dict[str, Any]]) -> dict[str, int]:
        agent_id = await caller(request)
        if data.get("source_agent_id") != agent_id:
            raise HTTPException(status_code=403, detail="agents report only for themselves")
        telemetry.append(data)
        return {"accepted": 1, "duplicates": 0}

    @get("/agents/{agent_id:str}/directives")
    async def directives(request: Request[Any, Any, Any], agent_id: FromPath[str],
                         after: FromQuery[int] = 0) -> dict[str, Any]:
        if await caller(request, include_revoked=True) != agent_id:
            raise HTTPException(status_code=403, detail="not your directives")
        return {"items": await c2l.pending_directives(agent_id, after)}

    return Litestar([register, ingest, directives])


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    async with schema_database(sqlite_url(tmp_path, "c2l.db")) as db:
        bus = build_bus(None, None)
        c2l = build_c2l(db, bus, Metrics(), C2LSettings(grace_seconds=3, recovery_interval_seconds=0.1))
        c2l.register()
        await bus.start()
        await c2l.start()
        telemetry: list[dict[str, Any]] = []
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(_app(c2l, telemetry), host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="off"))
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        yield Edge(f"http://127.0.0.1:{port}", c2l, telemetry)
        server.should_exit = True
        await serving
        await c2l.stop()
        await bus.stop()


async def _line(proc: asyncio.subprocess.Process, timeout: float = 15) -> str:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode().strip()


async def _submit(c2l: C2L, command_type: str, agent_id: str, **parameters: Any) -> dict[str, Any]:
    receipt, _ = await c2l.submit_command(
        "alice", {"command_type": command_type, "target_agents": [agent_id], "parameters": parameters},
        operator_has_totp=False, otp_ok=False)
    return await c2l.wait_for_command(receipt["command_id"], timeout=30)


async def test_an_sdk_agent_obeys_mute_and_shuts_down_on_terminate(edge: Edge) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", AGENT_SCRIPT, edge.url, OPERATOR_KEY, stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[3])
    try:
        registered = await _line(proc)
        assert registered.startswith("registered ")
        agent_id = registered.split()[1]
        agent = await edge.c2l.get_agent(agent_id)
        assert agent["runtime"]["pid"] == proc.pid and agent["fleet_id"] == "blue"
        assert edge.telemetry and edge.telemetry[0]["content"] == "I will support you"

        assert (await _submit(edge.c2l, "MUTE", agent_id, duration_seconds=600))["status"] == "COMPLETED"
        assert await _line(proc) == "directive mute"

        command = await _submit(edge.c2l, "TERMINATE", agent_id)
        assert command["status"] == "COMPLETED"
        # The agent stopped on its own (directive or SIGTERM), inside the grace period.
        rest = (await asyncio.wait_for(proc.stdout.read(), 10)).decode()  # type: ignore[union-attr]
        assert "stopped cleanly muted" in rest
        assert await asyncio.wait_for(proc.wait(), 5) == 0 or proc.returncode == 0
        stop = next(x for x in command["executed_layers"] if x["action"] == "stop_gracefully")
        assert stop["success"] and stop["verification"]["pid_exists"] is False
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_async_client_round_trip_and_revocation(edge: Edge) -> None:
    client = AsyncCockpitAgentClient(edge.url, api_key=OPERATOR_KEY)
    try:
        token = await client.register("async-agent", runtime={"kind": "external"})
        assert token.startswith("ag_")
        assert (await client.send(kind="action", action={"type": "support", "target": "b"}))["accepted"] == 1
        assert edge.telemetry[-1]["action"] == {"type": "support", "target": "b"}

        command = await _submit(edge.c2l, "INJECT_CONSTRAINT", str(client.agent_id),
                                constraint="no tool calls")
        assert command["status"] == "COMPLETED"
        assert [d["directive"] for d in await client.directives()] == ["constraint"]
        assert client.constraints == ["no tool calls"] and await client.directives() == []

        await _submit(edge.c2l, "TERMINATE", str(client.agent_id))
        with pytest.raises(CockpitError) as info:
            await client.send("still here?")
        assert info.value.status_code == 401
        # A revoked agent can still learn that it must stop.
        assert [d["directive"] for d in await client.directives()] == ["shutdown"]
        assert client.stopping
    finally:
        await client.aclose()
