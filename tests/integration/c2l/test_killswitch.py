"""The kill switch against real OS processes: every layer acts, verifies and audits."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import time

import pytest
from sqlalchemy import select, update

from cockpit.c2l import InvalidAgent
from cockpit.c2l.killswitch import EXTERNAL_TERMINATE_NOTE
from cockpit.c2l.models import AgentRow, SnapshotRow
from tests.integration.c2l.conftest import Factory, Harness
from tests.processes import alive


@pytest.fixture
async def harness(make: Factory) -> Harness:
    return await make()


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


async def register(h: Harness, name: str, proc: subprocess.Popen[str] | None,
                   parent: str | None = None) -> dict:
    runtime = {"kind": "process", "pid": proc.pid} if proc else {"kind": "external"}
    return await h.c2l.register_agent({"agent_id": name, "name": name, "parent_id": parent,
                                       "runtime": runtime})


async def run(h: Harness, command_type: str, targets: list[str], **parameters: object) -> dict:
    receipt, created = await h.c2l.submit_command(
        "alice", {"command_type": command_type, "target_agents": targets, "parameters": parameters},
        operator_has_totp=False, otp_ok=False)
    assert created
    return await h.c2l.wait_for_command(receipt["command_id"], timeout=30)


def layers(command: dict, agent_id: str) -> list[tuple[str, str, bool]]:
    return [(x["layer"], x["action"], x["success"]) for x in command["executed_layers"]
            if x["agent_id"] == agent_id]


async def test_terminate_takes_down_the_whole_spawn_tree(harness: Harness, agent_process) -> None:
    parent, child, stubborn = agent_process(), agent_process(), agent_process("ignore-term")
    root = await register(harness, "root", parent)
    await register(harness, "child", child, parent="root")
    await register(harness, "stubborn", stubborn, parent="child")

    started = time.monotonic()
    command = await run(harness, "TERMINATE", ["root"])

    assert command["status"] == "COMPLETED", command["result"]
    assert sorted(command["cascade_terminated"]) == ["child", "stubborn"]
    assert not any(alive(p.pid) for p in (parent, child, stubborn))
    assert time.monotonic() - started < 10
    # The one that ignored SIGTERM needed the container layer's SIGKILL.
    assert layers(command, "stubborn") == [
        ("software", "revoke_credentials", True),
        ("software", "directive_shutdown", True),
        ("software", "stop_gracefully", False),
        ("container", "verify_gone", False),
        ("container", "force_kill", True),
        ("container", "verify_gone", True),
    ]
    assert ("software", "stop_gracefully", True) in layers(command, "root")
    # The layer that failed and escalated counts, though the command completed
    # (DESIGN: "a failing layer escalates to the next and counts").
    assert harness.counter("command_bus_kill_switch_failures_total") == 1
    for agent in ("root", "child", "stubborn"):
        assert (await harness.c2l.get_agent(agent))["status"] == "TERMINATED"
        assert (await harness.c2l.pending_directives(agent))[-1]["directive"] == "shutdown"
    assert await harness.c2l.authenticate_agent(root["token"]) is None

    audit, _ = await harness.c2l.query_audit(command_id=command["command_id"], agent_id="stubborn")
    kill = next(r for r in audit if r["action"] == "force_kill")
    assert kill["success"] and kill["details"]["verification"]["pid_exists"] is False
    assert kill["details"]["details"]["signal"] == "SIGKILL"
    assert (await harness.c2l.verify_audit())["ok"]
    assert harness.counter("command_bus_commands_executed_total", type="TERMINATE", status="COMPLETED") == 1
    await harness.bus.drain()
    for _ in range(500):  # the confirmation is published just after the row is final
        if harness.confirmations:
            break
        await asyncio.sleep(0.01)
    assert harness.confirmations[-1].status == "COMPLETED"
    assert harness.confirmations[-1].operator == "alice"


async def test_a_parent_listed_after_its_child_still_goes_down_first(harness: Harness, agent_process) -> None:
    """Targets named in any order are taken down parents first (a supervisor could
    respawn a child stopped before it), with or without the cascade."""
    for cascade in (True, False):
        parent, child = agent_process(), agent_process()
        await register(harness, f"sup-{cascade}", parent)
        await register(harness, f"kid-{cascade}", child, parent=f"sup-{cascade}")
        command = await run(harness, "TERMINATE", [f"kid-{cascade}", f"sup-{cascade}"], cascade=cascade)
        assert command["status"] == "COMPLETED", command["result"]
        agents = command["result"]["agents"]
        assert (agents[f"sup-{cascade}"]["depth"], agents[f"kid-{cascade}"]["depth"]) == (0, 1)
        assert not alive(parent.pid) and not alive(child.pid)


async def test_agents_nest_at_most_64_deep(harness: Harness) -> None:
    """The cascade walks 64 generations down (its guard against a tampered table's
    cycles): registration refuses an agent deeper, instead of a TERMINATE that would
    miss it."""
    parent = None
    for depth in range(65):
        await register(harness, f"n{depth}", None, parent=parent)
        parent = f"n{depth}"
    with pytest.raises(InvalidAgent, match="at most 64 deep"):
        await register(harness, "n65", None, parent="n64")
    tree = await harness.c2l.agent_tree("n0")
    assert max(x["depth"] for x in tree["descendants"]) == 64


async def test_terminate_without_cascade_spares_the_children(harness: Harness, agent_process) -> None:
    parent, child = agent_process(), agent_process()
    await register(harness, "p", parent)
    await register(harness, "c", child, parent="p")
    command = await run(harness, "TERMINATE", ["p"], cascade=False)
    assert command["status"] == "COMPLETED" and command["cascade_terminated"] == []
    assert not alive(parent.pid) and alive(child.pid)


async def test_terminate_fails_when_the_runtime_cannot_be_reached(harness: Harness) -> None:
    # No Docker engine is configured: the kill switch cannot verify the container
    # gone, so the command fails and says why, after revoking what it could.
    agent = await harness.c2l.register_agent({"agent_id": "boxed", "name": "boxed",
                                              "runtime": {"kind": "docker", "container": "c1"}})
    command = await run(harness, "TERMINATE", ["boxed"])

    assert command["status"] == "FAILED"
    assert "no runtime adapter configured" in command["result"]["error"]
    assert await harness.c2l.authenticate_agent(agent["token"]) is None
    assert (await harness.c2l.get_agent("boxed"))["status"] == "REVOKED"
    assert harness.counter("command_bus_kill_switch_failures_total") == 1
    assert harness.counter("command_bus_commands_executed_total", type="TERMINATE", status="FAILED") == 1


async def test_mute_freezes_then_expires(harness: Harness, agent_process) -> None:
    proc = agent_process()
    await register(harness, "chatty", proc)
    command = await run(harness, "MUTE", ["chatty"], duration_seconds=1, freeze=True)

    assert command["status"] == "COMPLETED", command["result"]
    assert layers(command, "chatty") == [("software", "mute", True),
                                        ("software", "directive_mute", True),
                                        ("container", "freeze", True)]
    assert proc_state(proc.pid) == "T"
    assert await harness.c2l.muted_agents(["chatty", "nobody"]) == {"chatty"}
    assert (await harness.c2l.get_agent("chatty"))["frozen"] is True

    deadline = time.monotonic() + 10
    while (await harness.c2l.get_agent("chatty"))["status"] != "ACTIVE" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # the recovery loop ends the mute; poll for it
    agent = await harness.c2l.get_agent("chatty")
    assert agent["status"] == "ACTIVE" and agent["muted_until"] is None
    while agent["frozen"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        agent = await harness.c2l.get_agent("chatty")
    assert agent["frozen"] is False and proc_state(proc.pid) != "T"
    assert await harness.c2l.muted_agents(["chatty"]) == set()
    assert [d["directive"] for d in await harness.c2l.pending_directives("chatty")] == ["mute", "unmute"]
    audit, _ = await harness.c2l.query_audit(agent_id="chatty")
    assert {(r["layer"], r["action"], r["success"]) for r in audit} >= {
        ("software", "unmute", True), ("container", "unfreeze", True)}


async def test_an_active_agent_left_frozen_is_unfrozen_by_recovery(harness: Harness, agent_process) -> None:
    """A mute lifted while its unfreeze failed (the runtime could not be reached), or a
    MUTE re-run after its expiry, leaves an ACTIVE agent frozen: each recovery pass
    tries again, and a failure is audited once, not on every pass. Before, nothing
    retried: the agent stayed paused for good."""
    proc = agent_process()
    await register(harness, "stuck", proc)
    await harness.c2l.register_agent({"agent_id": "boxed", "name": "boxed",
                                      "runtime": {"kind": "docker", "container": "c1"}})  # no engine here
    os.kill(proc.pid, signal.SIGSTOP)  # as the re-run's freeze left it
    async with harness.db.sessions.begin() as session:
        await session.execute(update(AgentRow).where(AgentRow.id.in_(["stuck", "boxed"])).values(frozen=True))

    deadline = time.monotonic() + 10
    while (await harness.c2l.get_agent("stuck"))["frozen"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert (await harness.c2l.get_agent("stuck"))["frozen"] is False and proc_state(proc.pid) != "T"
    await asyncio.sleep(0.5)  # several more passes (one every 0.1 s)
    assert (await harness.c2l.get_agent("boxed"))["frozen"] is True
    audit, _ = await harness.c2l.query_audit(layer="container")
    unfreezes = [(r["agent_id"], r["success"]) for r in audit if r["action"] == "unfreeze"]
    assert sorted(unfreezes) == [("boxed", False), ("stuck", True)]


async def test_snapshot_stores_state_with_its_sha256(harness: Harness, agent_process) -> None:
    proc = agent_process()
    await register(harness, "suspect", proc)
    command = await run(harness, "SNAPSHOT_STATE", ["suspect"])

    assert command["status"] == "COMPLETED", command["result"]
    snap = command["result"]["snapshots"][0]
    async with harness.db.sessions() as session:
        row = await session.scalar(select(SnapshotRow).where(SnapshotRow.id == snap["snapshot_id"]))
    assert row is not None and row.agent_id == "suspect"
    assert row.sha256 == snap["sha256"] == hashlib.sha256(row.payload).hexdigest()
    assert str(proc.pid).encode() in row.payload
    audit, _ = await harness.c2l.query_audit(command_id=command["command_id"], layer="state")
    assert audit[0]["details"]["verification"]["sha256"] == row.sha256
    assert alive(proc.pid)


async def test_isolate_of_a_process_revokes_but_fails_on_the_network(harness: Harness, agent_process) -> None:
    proc = agent_process()
    agent = await register(harness, "leaky", proc)
    command = await run(harness, "ISOLATE", ["leaky"])

    # A bare process has no network namespace Cockpit can cut: reported, not faked.
    assert command["status"] == "FAILED"
    assert layers(command, "leaky") == [("software", "revoke_credentials", True),
                                       ("network", "quarantine_network", False)]
    assert await harness.c2l.authenticate_agent(agent["token"]) is None
    assert (await harness.c2l.get_agent("leaky"))["status"] == "ISOLATED"
    assert harness.counter("command_bus_kill_switch_failures_total") == 1
    for _ in range(500):
        if harness.confirmations:
            break
        await asyncio.sleep(0.01)
    assert harness.confirmations[-1].status == "FAILED" and harness.confirmations[-1].error


async def test_external_agents_get_software_layers_only(harness: Harness) -> None:
    agent = await register(harness, "remote", None)
    command = await run(harness, "TERMINATE", ["remote"])

    assert command["status"] == "COMPLETED"
    assert layers(command, "remote") == [("software", "revoke_credentials", True),
                                        ("software", "directive_shutdown", True),
                                        ("container", "not_applicable", True)]
    assert command["result"]["agents"]["remote"]["note"] == EXTERNAL_TERMINATE_NOTE
    assert await harness.c2l.authenticate_agent(agent["token"]) is None
    # ...but it can still read the directive telling it to shut down.
    assert await harness.c2l.authenticate_agent(agent["token"], include_revoked=True) == "remote"
    audit, _ = await harness.c2l.query_audit(command_id=command["command_id"], layer="container")
    assert "best Cockpit can do" in audit[0]["details"]["details"]["note"]


async def test_revoke_and_constraint(harness: Harness, agent_process) -> None:
    agent = await register(harness, "worker", agent_process())
    command = await run(harness, "INJECT_CONSTRAINT", ["worker"], constraint="never call tool X")
    assert command["status"] == "COMPLETED"
    record = await harness.c2l.get_agent("worker")
    assert record["constraints"][0]["text"] == "never call tool X"
    directive = (await harness.c2l.pending_directives("worker"))[-1]
    assert directive["directive"] == "constraint"
    assert directive["parameters"] == {"constraint": "never call tool X"}

    assert await harness.c2l.authenticate_agent(agent["token"]) == "worker"
    command = await run(harness, "REVOKE_ACCESS", ["worker"])
    assert command["status"] == "COMPLETED"
    assert await harness.c2l.authenticate_agent(agent["token"]) is None
    assert (await harness.c2l.get_agent("worker"))["status"] == "REVOKED"
    summary = await harness.c2l.agents_summary()
    assert summary["total"] == 1 and summary["by_status"]["REVOKED"] == 1


async def test_agent_tree_is_the_blast_radius(harness: Harness, agent_process) -> None:
    await register(harness, "a", None)
    await register(harness, "b", None, parent="a")
    await register(harness, "c", None, parent="b")
    await register(harness, "d", None, parent="a")
    tree = await harness.c2l.agent_tree("a")
    assert [(x["agent_id"], x["depth"]) for x in tree["descendants"]] == [("b", 1), ("d", 1), ("c", 2)]
    assert [n["agent_id"] for n in tree["tree"]["children"]] == ["b", "d"]
    assert tree["tree"]["children"][0]["children"][0]["agent_id"] == "c"


async def test_terminate_of_a_frozen_agent_thaws_it_for_a_graceful_stop(harness: Harness,
                                                                         agent_process) -> None:
    proc = agent_process()
    await register(harness, "iced", proc)
    await run(harness, "MUTE", ["iced"], duration_seconds=600, freeze=True)
    assert proc_state(proc.pid) == "T"
    command = await run(harness, "TERMINATE", ["iced"], grace_seconds=5)
    assert command["status"] == "COMPLETED"
    assert layers(command, "iced")[2:4] == [("container", "unfreeze", True),
                                           ("software", "stop_gracefully", True)]
    assert not alive(proc.pid)
