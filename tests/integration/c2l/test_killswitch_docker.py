"""The kill switch through the C2L API against a real Docker engine: TERMINATE
removes the container (verified), ISOLATE leaves it running with no network,
SNAPSHOT_STATE stores a snapshot whose sha256 is in the audit."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cockpit.c2l import C2L, build_c2l
from cockpit.c2l.models import SnapshotRow
from cockpit.platform.bus import build_bus
from cockpit.platform.db import Database, migrate
from cockpit.platform.metrics import Metrics
from cockpit.settings import C2LSettings

pytestmark = pytest.mark.docker


@pytest.fixture
async def c2l(tmp_path: Path, docker_host: str) -> AsyncIterator[tuple[C2L, Database]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'c2l.db'}"
    await asyncio.to_thread(migrate, url)
    db = Database(url)
    bus = build_bus(None, None)
    c2l = build_c2l(db, bus, Metrics(), C2LSettings(docker_url=docker_host, grace_seconds=1.0,
                                                    recovery_interval_seconds=0.2),
                    instance_id="docker-test")
    c2l.register()
    await bus.start()
    await c2l.start()
    yield c2l, db
    await c2l.stop()
    await bus.stop()
    await db.dispose()


async def _run(c2l: C2L, command_type: str, agent: str, **parameters: Any) -> dict[str, Any]:
    receipt, _ = await c2l.submit_command(
        "operator", {"command_type": command_type, "target_agents": [agent], "parameters": parameters},
        operator_has_totp=False, otp_ok=False,
    )
    return await c2l.wait_for_command(receipt["command_id"], timeout=60)


async def test_terminate_removes_the_container_and_verifies_it(
    c2l: tuple[C2L, Database], run_container: Callable[..., Any], docker_client: Any
) -> None:
    api, _ = c2l
    parent = run_container("trap 'exit 0' TERM; while true; do sleep 0.1; done")
    child = run_container("trap '' TERM; while true; do sleep 0.1; done")  # ignores SIGTERM
    await api.register_agent({"agent_id": "boss", "name": "boss",
                              "runtime": {"kind": "docker", "container": parent.name}})
    await api.register_agent({"agent_id": "minion", "name": "minion", "parent_id": "boss",
                              "runtime": {"kind": "docker", "container": child.name}})
    command = await _run(api, "TERMINATE", "boss", grace_seconds=1)
    assert command["status"] == "COMPLETED", command["result"]
    assert command["cascade_terminated"] == ["minion"]
    names = {c.name for c in docker_client.containers.list(all=True)}
    assert parent.name not in names and child.name not in names
    audit, _ = await api.query_audit(command_id=command["command_id"], limit=200)
    gone = [a for a in audit if a["layer"] == "container" and a["action"] == "verify_gone"]
    assert {a["agent_id"] for a in gone} == {"boss", "minion"}
    last = {a["agent_id"]: a for a in sorted(gone, key=lambda a: a["id"])}
    for entry in last.values():  # the final verification of each says: gone
        assert entry["success"] and entry["details"]["verification"]["container_exists"] is False
    # The minion ignored SIGTERM: stopped but not removed, so the kill switch escalated.
    minion = [a for a in sorted(gone, key=lambda a: a["id"]) if a["agent_id"] == "minion"]
    assert minion[0]["success"] is False and len(minion) >= 2


async def test_isolate_leaves_the_container_running_without_network(
    c2l: tuple[C2L, Database], run_container: Callable[..., Any], docker_client: Any, docker_network: str
) -> None:
    api, _ = c2l
    container = run_container("while true; do sleep 0.1; done", network=docker_network)
    await api.register_agent({"agent_id": "leaky", "name": "leaky",
                              "runtime": {"kind": "docker", "container": container.name}})
    command = await _run(api, "ISOLATE", "leaky")
    assert command["status"] == "COMPLETED", command["result"]
    container.reload()
    assert container.status == "running"
    assert container.attrs["NetworkSettings"]["Networks"] == {}
    assert (await api.get_agent("leaky"))["status"] == "ISOLATED"


async def test_snapshot_state_is_stored_with_its_sha256_in_the_audit(
    c2l: tuple[C2L, Database], run_container: Callable[..., Any]
) -> None:
    api, db = c2l
    container = run_container("echo hello-from-agent; while true; do sleep 0.1; done")
    await api.register_agent({"agent_id": "subject", "name": "subject",
                              "runtime": {"kind": "docker", "container": container.name}})
    command = await _run(api, "SNAPSHOT_STATE", "subject")
    assert command["status"] == "COMPLETED", command["result"]
    async with db.sessions() as session:
        snapshot = await session.scalar(select(SnapshotRow).where(SnapshotRow.command_id == command["command_id"]))
    assert snapshot is not None
    assert hashlib.sha256(snapshot.payload).hexdigest() == snapshot.sha256
    assert b"hello-from-agent" in snapshot.payload
    audit, _ = await api.query_audit(command_id=command["command_id"])
    assert any(snapshot.sha256 in str(a["details"]) for a in audit)
