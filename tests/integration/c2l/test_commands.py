"""The command bus: acceptance rules, idempotency, approval, recovery; on SQLite and
PostgreSQL, on the in-process bus and on real NATS JetStream."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update

from cockpit.c2l import (
    ApprovalRefused,
    CommandConflict,
    InvalidCommand,
    RateLimited,
    StepUpRequired,
    UnknownAgents,
)
from cockpit.c2l.models import AuditRow, CommandExecutionRow, CommandRow
from cockpit.events import CommandType, ExecuteCommand
from cockpit.platform.bus import Channel
from cockpit.platform.db import utcnow
from tests.integration.c2l.conftest import Factory, Harness
from tests.processes import alive


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``check``: confirmations are published just after the row is final."""
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    assert check()


async def agent(h: Harness, agent_id: str, proc: subprocess.Popen[str] | None = None) -> dict:
    runtime = {"kind": "process", "pid": proc.pid} if proc else {"kind": "external"}
    return await h.c2l.register_agent({"agent_id": agent_id, "name": agent_id, "runtime": runtime})


def mute(target: str, command_id: str | None = None, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"command_type": "MUTE", "target_agents": [target], "parameters": params}
    if command_id:
        body["command_id"] = command_id
    return body


async def refusals(h: Harness, action: str) -> list[AuditRow]:
    async with h.db.sessions() as session:
        return list((await session.scalars(select(AuditRow).where(
            AuditRow.layer == "authorization", AuditRow.action == action))).all())


async def test_same_id_same_body_is_one_execution(make: Factory) -> None:
    h = await make()
    await agent(h, "a1")
    first, created = await h.submit(mute("a1", "cmd-1", duration_seconds=60))
    again, created_again = await h.submit(mute("a1", "cmd-1", duration_seconds=60))
    assert created and not created_again
    assert again["command_id"] == first["command_id"] == "cmd-1"
    assert again["created_at"] == first["created_at"]
    done = await h.c2l.wait_for_command("cmd-1")
    assert done["status"] == "COMPLETED"
    # A redelivery of the finished command (the bus may redeliver) changes nothing.
    await h.bus.publish(Channel.COMMANDS, ExecuteCommand(command_id="cmd-1", command_type=CommandType.MUTE,
                                                         target_agents=["a1"]), key="a1")
    await h.bus.drain()
    await eventually(lambda: bool(h.confirmations))
    assert await h.count(CommandExecutionRow, CommandExecutionRow.command_id == "cmd-1",
                         CommandExecutionRow.layer == "software.mute") == 1
    assert await h.count(AuditRow, AuditRow.command_id == "cmd-1", AuditRow.action == "mute") == 1
    assert h.counter("command_bus_commands_executed_total", type="MUTE", status="COMPLETED") == 1
    assert [c.command_id for c in h.confirmations] == ["cmd-1"]


async def test_same_id_other_body_is_a_conflict(make: Factory) -> None:
    h = await make()
    await agent(h, "a1")
    await h.submit(mute("a1", "cmd-2", duration_seconds=60))
    with pytest.raises(CommandConflict):
        await h.submit(mute("a1", "cmd-2", duration_seconds=61))
    with pytest.raises(CommandConflict):  # nor may another operator reuse the id
        await h.submit(mute("a1", "cmd-2", duration_seconds=60), operator="mallory")
    rows = await refusals(h, "command_conflict")
    assert len(rows) == 2 and not rows[0].success and rows[0].command_id == "cmd-2"


async def test_unknown_targets_are_refused(make: Factory) -> None:
    h = await make()
    await agent(h, "known")
    with pytest.raises(UnknownAgents) as info:
        await h.submit({"command_type": "ISOLATE", "target_agents": ["known", "ghost", "spook"]})
    assert info.value.agent_ids == ["ghost", "spook"]
    assert (await refusals(h, "unknown_agents"))[0].details["unknown_agents"] == ["ghost", "spook"]
    assert await h.count(CommandRow) == 0


@pytest.mark.parametrize("body", [
    {"command_type": "DESTROY", "target_agents": ["a"]},
    {"command_type": "MUTE", "target_agents": []},
    {"command_type": "MUTE", "target_agents": ["a"], "parameters": {"duration_seconds": -5}},
    {"command_type": "INJECT_CONSTRAINT", "target_agents": ["a"], "parameters": {}},
    {"command_type": "TERMINATE", "target_agents": ["a"], "parameters": {"cascade": "yes"}},
    # a misspelt parameter, and one no command type takes
    {"command_type": "MUTE", "target_agents": ["a"], "parameters": {"duration": 60}},
    {"command_type": "ISOLATE", "target_agents": ["a"], "parameters": {"notes": "x" * 2_000_000}},
])
async def test_malformed_commands_are_invalid(make: Factory, body: dict[str, Any]) -> None:
    h = await make()
    with pytest.raises(InvalidCommand):
        await h.submit(body)


async def test_rate_limit_per_operator_and_type(make: Factory) -> None:
    h = await make(rate_limits={"MUTE": "2/minute", "ISOLATE": "5/minute", "TERMINATE": "3/hour"})
    await agent(h, "a1")
    await h.submit(mute("a1", duration_seconds=60))
    await h.submit(mute("a1", duration_seconds=60))
    with pytest.raises(RateLimited) as info:
        await h.submit(mute("a1", duration_seconds=60))
    assert 55 <= info.value.retry_after_seconds <= 60
    await h.submit(mute("a1", duration_seconds=60), operator="bob")  # bob has his own budget
    await h.submit({"command_type": "SNAPSHOT_STATE", "target_agents": ["a1"]})  # unlimited type
    # The window is counted from the table, so it holds across replicas: age the rows.
    async with h.db.sessions.begin() as session:
        await session.execute(update(CommandRow).where(CommandRow.operator == "alice")
                              .values(created_at=utcnow() - timedelta(seconds=61)))
    await h.submit(mute("a1", duration_seconds=60))
    assert len(await refusals(h, "rate_limited")) == 1


async def test_the_rate_limit_holds_for_concurrent_submissions(make: Factory) -> None:
    """Thirty MUTEs from one operator at once against 10/minute: exactly ten accepted
    (counting and inserting are one atomic step)."""
    h = await make(rate_limits={"MUTE": "10/minute"})
    await agent(h, "a1")

    async def attempt() -> bool:
        try:
            await h.submit(mute("a1", duration_seconds=60))
        except RateLimited:
            return False
        return True

    outcomes = await asyncio.gather(*(attempt() for _ in range(30)))
    assert outcomes.count(True) == 10
    assert len(await refusals(h, "rate_limited")) == 20


async def test_terminate_needs_totp_step_up_when_the_operator_has_one(make: Factory, agent_process) -> None:
    h = await make()
    proc = agent_process()
    await agent(h, "a1", proc)
    body = {"command_type": "TERMINATE", "target_agents": ["a1"]}
    with pytest.raises(StepUpRequired):
        await h.submit(body, totp=True, otp_ok=False)
    with pytest.raises(StepUpRequired):
        await h.submit({"command_type": "REVOKE_ACCESS", "target_agents": ["a1"]}, totp=True)
    assert await h.count(CommandRow) == 0 and alive(proc.pid)
    assert len(await refusals(h, "step_up_required")) == 2
    receipt, _ = await h.submit(body, totp=True, otp_ok=True)
    assert (await h.c2l.wait_for_command(receipt["command_id"]))["status"] == "COMPLETED"
    assert not alive(proc.pid)
    # MUTE never needs the step-up.
    await h.submit(mute("a1", duration_seconds=5), totp=True, otp_ok=False)


async def test_two_person_rule_for_terminate(make: Factory, agent_process) -> None:
    h = await make(two_person_terminate=True)
    proc = agent_process()
    await agent(h, "a1", proc)
    receipt, _ = await h.submit({"command_type": "TERMINATE", "target_agents": ["a1"]})
    assert receipt["status"] == "PENDING_APPROVAL"
    await h.c2l.recover_once()  # waiting for approval is not lost work to re-dispatch
    assert (await h.c2l.get_command(receipt["command_id"]))["status"] == "PENDING_APPROVAL"
    assert alive(proc.pid)
    with pytest.raises(ApprovalRefused):
        await h.c2l.approve_command(receipt["command_id"], "alice")
    approved = await h.c2l.approve_command(receipt["command_id"], "bob")
    assert approved["status"] == "PENDING"
    done = await h.c2l.wait_for_command(receipt["command_id"])
    assert done["status"] == "COMPLETED" and not alive(proc.pid)
    with pytest.raises(ApprovalRefused) as info:
        await h.c2l.approve_command(receipt["command_id"], "carol")
    assert info.value.not_pending
    # Other types do not wait for a second operator.
    other, _ = await h.submit(mute("a1", duration_seconds=5))
    assert other["status"] == "PENDING"


async def test_an_approval_after_the_window_closed_is_refused(make: Factory, agent_process) -> None:
    """A TERMINATE awaiting a second operator past its deadline is refused, not run:
    the approval races the recovery's timeout and loses whichever comes first."""
    h = await make(two_person_terminate=True)
    proc = agent_process()
    await agent(h, "a1", proc)
    receipt, _ = await h.submit({"command_type": "TERMINATE", "target_agents": ["a1"]})
    async with h.db.sessions.begin() as session:
        await session.execute(update(CommandRow).where(CommandRow.id == receipt["command_id"])
                              .values(deadline=utcnow() - timedelta(seconds=1)))
    with pytest.raises(ApprovalRefused) as info:
        await h.c2l.approve_command(receipt["command_id"], "bob")
    assert info.value.not_pending
    done = await h.c2l.wait_for_command(receipt["command_id"], timeout=10)
    assert done["status"] == "TIMEOUT" and done["approved_by"] is None
    assert alive(proc.pid)


async def test_a_command_never_started_times_out(make: Factory) -> None:
    h = await make()
    await agent(h, "a1")
    # Written as the API would, but its ExecuteCommand was lost and the deadline passed.
    async with h.db.sessions.begin() as session:
        session.add(CommandRow(id="lost", operator="alice", command_type="MUTE", target_agents=["a1"],
                               parameters={}, body_hash="x", status="PENDING", attempts=0,
                               deadline=utcnow() - timedelta(seconds=1), executed_layers=[],
                               cascade_terminated=[], created_at=utcnow() - timedelta(seconds=61),
                               dispatched_at=utcnow() - timedelta(seconds=61)))
    done = await h.c2l.wait_for_command("lost", timeout=10)
    assert done["status"] == "TIMEOUT" and "deadline" in done["result"]["error"]
    # Counted right after the commit that the poll above saw (a loop turn later at most).
    await eventually(lambda: h.counter("command_bus_commands_executed_total",
                                       type="MUTE", status="TIMEOUT") == 1)
    await eventually(lambda: bool(h.confirmations))
    assert [(c.command_id, c.status) for c in h.confirmations] == [("lost", "TIMEOUT")]
    assert (await h.c2l.get_agent("a1"))["status"] == "ACTIVE"


async def test_a_lost_pending_command_is_redispatched(make: Factory) -> None:
    h = await make()
    await agent(h, "a1")
    async with h.db.sessions.begin() as session:
        session.add(CommandRow(id="dropped", operator="alice", command_type="MUTE", target_agents=["a1"],
                               parameters={"duration_seconds": 60}, body_hash="x", status="PENDING",
                               attempts=0, deadline=utcnow() + timedelta(seconds=60), executed_layers=[],
                               cascade_terminated=[], created_at=utcnow(),
                               dispatched_at=utcnow() - timedelta(seconds=10)))
    done = await h.c2l.wait_for_command("dropped", timeout=10)
    assert done["status"] == "COMPLETED"
    assert (await h.c2l.get_agent("a1"))["status"] == "MUTED"


async def test_a_command_delivered_while_stopping_is_left_for_a_running_replica(make: Factory) -> None:
    """A replica shutting down starts no command it would cut off halfway: the row
    stays PENDING and a running replica's recovery dispatches it again."""
    leaving = await make(instance_id="leaving")
    await agent(leaving, "a1")
    await leaving.c2l.stop()  # its bus still delivers, as between the executor's stop and the bus's
    receipt, _ = await leaving.submit(mute("a1", duration_seconds=60))
    await leaving.bus.drain()
    left = await leaving.c2l.get_command(receipt["command_id"])
    assert (left["status"], left["attempts"]) == ("PENDING", 0)

    staying = await make(instance_id="staying")
    done = await staying.c2l.wait_for_command(receipt["command_id"], timeout=15)
    assert done["status"] == "COMPLETED" and done["attempts"] == 1
    async with staying.db.sessions() as session:
        assert (await session.get(CommandRow, receipt["command_id"])).claimed_by == "staying"


async def test_a_replica_draining_a_long_command_keeps_its_claim(make: Factory, agent_process) -> None:
    """A replica shutting down lets a TERMINATE in its grace period finish; it keeps
    writing its heartbeat meanwhile, so a running replica's recovery does not take the
    command for dead (10 s without a heartbeat) and run it a second time. Before, the
    heartbeat was the recovery loop's, which stops first."""
    leaving = await make(instance_id="leaving")
    proc = agent_process("ignore-term")
    await agent(leaving, "slow", proc)
    receipt, _ = await leaving.submit({"command_type": "TERMINATE", "target_agents": ["slow"],
                                       "parameters": {"grace_seconds": 12}})
    command_id = receipt["command_id"]
    for _ in range(100):
        if (await leaving.c2l.get_command(command_id))["status"] == "EXECUTING":
            break
        await asyncio.sleep(0.05)
    stopping = asyncio.create_task(leaving.c2l.stop())  # drains: the grace period runs on
    staying = await make(instance_id="staying")  # its recovery looks every 0.1 s
    await asyncio.sleep(11)
    during = await staying.c2l.get_command(command_id)
    assert (during["status"], during["attempts"]) == ("EXECUTING", 1), during
    await stopping
    done = await staying.c2l.wait_for_command(command_id, timeout=15)
    assert (done["status"], done["attempts"]) == ("COMPLETED", 1), done
    assert not alive(proc.pid)
    async with staying.db.sessions() as session:
        assert (await session.get(CommandRow, command_id)).claimed_by == "leaving"
    assert await staying.count(AuditRow, AuditRow.command_id == command_id, AuditRow.action == "reclaimed") == 0


async def _left_executing(h: Harness, command_id: str, target: str, claimed_by: str,
                          heartbeat_age: float) -> None:
    """A TERMINATE that an instance claimed, revoked the token for, then died."""
    now = utcnow()
    async with h.db.sessions.begin() as session:
        session.add(CommandRow(id=command_id, operator="alice", command_type="TERMINATE",
                               target_agents=[target], parameters={}, body_hash="x",
                               status="EXECUTING", attempts=1, claimed_by=claimed_by,
                               deadline=now - timedelta(seconds=1), executed_layers=[],
                               cascade_terminated=[], created_at=now - timedelta(seconds=120),
                               started_at=now - timedelta(seconds=100), dispatched_at=now,
                               heartbeat_at=now - timedelta(seconds=heartbeat_age)))
        session.add(CommandExecutionRow(command_id=command_id, agent_id=target, layer="software.revoke",
                                        success=True, created_at=now, result={
                                            "layer": "software", "action": "revoke_credentials",
                                            "runtime": "cockpit", "success": True,
                                            "verification": {"token_revoked": True}, "details": {},
                                            "duration_ms": 0.0, "reason": None}))
        await session.execute(text("UPDATE agents SET token_revoked_at = :t WHERE id = :a"),
                              {"t": now, "a": target})


async def test_a_command_left_executing_by_a_dead_instance_completes(make: Factory, agent_process) -> None:
    h = await make()
    proc = agent_process()
    await agent(h, "victim", proc)
    await _left_executing(h, "orphan", "victim", "dead-instance", heartbeat_age=3600)

    done = await h.c2l.wait_for_command("orphan", timeout=15)
    assert done["status"] == "COMPLETED", done["result"]
    assert not alive(proc.pid)
    assert done["attempts"] == 2
    revoke = [x for x in done["executed_layers"] if x["action"] == "revoke_credentials"]
    assert revoke and revoke[0]["replayed"] is True  # done before the crash: not run again
    assert await h.count(AuditRow, AuditRow.command_id == "orphan",
                         AuditRow.action == "revoke_credentials") == 0
    assert await h.count(AuditRow, AuditRow.command_id == "orphan", AuditRow.action == "reclaimed") == 1


async def test_a_live_claim_of_another_instance_is_left_alone(make: Factory, agent_process) -> None:
    h = await make()
    await agent(h, "busy", agent_process())
    await _left_executing(h, "running-elsewhere", "busy", "other-live-instance", heartbeat_age=0)
    await h.c2l.recover_once()
    assert (await h.c2l.get_command("running-elsewhere"))["status"] == "EXECUTING"


async def test_a_restarted_instance_recovers_its_own_claims(make: Factory, agent_process) -> None:
    first = await make()
    proc = agent_process()
    await agent(first, "victim", proc)
    # Fresh heartbeat: only the instance itself knows, at start-up, that it died.
    await _left_executing(first, "mine", "victim", "replica-7", heartbeat_age=0)
    await first.c2l.recover_once()
    assert (await first.c2l.get_command("mine"))["status"] == "EXECUTING"

    restarted = await make(instance_id="replica-7")
    done = await restarted.c2l.wait_for_command("mine", timeout=15)
    assert done["status"] == "COMPLETED" and not alive(proc.pid)


async def test_list_commands_filters(make: Factory) -> None:
    h = await make()
    await agent(h, "a_1")
    await agent(h, "a%1")
    await h.submit(mute("a_1", "m1", duration_seconds=5))
    await h.submit({"command_id": "s1", "command_type": "SNAPSHOT_STATE", "target_agents": ["a%1"]},
                   operator="bob")
    items, total = await h.c2l.list_commands(agent_id="a_1")
    assert total == 1 and items[0]["command_id"] == "m1"
    items, total = await h.c2l.list_commands(operator="bob", command_type="SNAPSHOT_STATE")
    assert total == 1 and items[0]["command_id"] == "s1"
    for cid in ("m1", "s1"):
        await h.c2l.wait_for_command(cid)
    items, total = await h.c2l.list_commands(status="COMPLETED", limit=1)
    assert total == 2 and len(items) == 1
    command = await h.c2l.get_command("s1")
    assert set(command) >= {"command_id", "status", "command_type", "target_agents", "parameters",
                            "operator", "executed_layers", "cascade_terminated", "result",
                            "execution_time_ms", "verdict_id", "created_at", "finished_at"}


async def test_commands_over_nats_jetstream_with_two_replicas(make: Factory, nats_url: str, agent_process) -> None:
    one = await make(nats_url=nats_url, instance_id="replica-1")
    two = await make(nats_url=nats_url, instance_id="replica-2")
    procs = [agent_process() for _ in range(3)]
    for i, proc in enumerate(procs):
        await agent(one, f"n{i}", proc)
    ids = []
    for i in range(3):
        receipt, _ = await one.submit(mute(f"n{i}", duration_seconds=60))
        ids.append(receipt["command_id"])
    terminate, _ = await two.submit({"command_type": "TERMINATE", "target_agents": ["n0"]}, operator="bob")
    ids.append(terminate["command_id"])
    for cid in ids:
        assert (await one.c2l.wait_for_command(cid, timeout=30))["status"] == "COMPLETED"
    assert not alive(procs[0].pid) and alive(procs[1].pid)
    # Each command executed once, whichever replica claimed it.
    for cid in ids[:3]:
        assert await one.count(AuditRow, AuditRow.command_id == cid, AuditRow.action == "mute") == 1
    def executed() -> float:
        return sum(h.counter("command_bus_commands_executed_total", type="MUTE", status="COMPLETED")
                   for h in (one, two))

    await eventually(lambda: executed() >= 3)
    assert executed() == 3
    # Confirmations travel over NATS to every subscriber.
    await eventually(lambda: {c.command_id for c in one.confirmations} >= set(ids))
    assert (await one.c2l.verify_audit())["ok"]


@pytest.mark.nats
async def test_a_confirmation_too_large_for_the_broker_goes_out_without_its_layers(
        make: Factory, nats_url: str) -> None:
    """A command on hundreds of agents leaves more layer records than NATS takes in one
    message (1 MiB): its confirmation still goes out (it mitigates a verdict, the
    stream shows it) with the records left out and counted (and, if still too large,
    the ids of its sub-agents too), and it no longer holds back the confirmations the
    recovery publishes after it."""
    h = await make(nats_url=nats_url)
    await agent(h, "a1")
    receipts = [(await h.submit({"command_type": "ISOLATE", "target_agents": ["a1"]}))[0] for _ in range(3)]
    final = [await h.c2l.wait_for_command(r["command_id"], timeout=30) for r in receipts]
    big, small, bigger = (r["command_id"] for r in receipts)

    async def confirmed() -> set[str]:
        async with h.db.sessions() as session:
            return set((await session.scalars(select(CommandRow.id).where(
                CommandRow.id.in_([big, small, bigger]), CommandRow.confirmed_at.is_not(None)))).all())

    for _ in range(200):  # their first confirmations are out and marked (not to race the reset below)
        if await confirmed() == {big, small, bigger}:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"first confirmations never marked: {await confirmed()}")
    layers = [{"agent_id": f"agent-{i:04d}", "layer": "software", "action": "revoke_credentials",
               "success": True, "details": {"note": "x" * 400}} for i in range(3000)]
    # ... and, for the third, the ids of thousands of sub-agents, 1.2 MB on their own
    cascade = [f"sub-{i:05d}-" + "y" * 190 for i in range(6000)]
    # As a replica that died before publishing them leaves them: unconfirmed, the
    # bigger one first in the recovery's order.
    async with h.db.sessions.begin() as session:
        await session.execute(update(CommandRow).where(CommandRow.id == big).values(
            executed_layers=layers, confirmed_at=None, finished_at=utcnow() - timedelta(seconds=60)))
        await session.execute(update(CommandRow).where(CommandRow.id == bigger).values(
            executed_layers=layers, cascade_terminated=cascade, confirmed_at=None,
            finished_at=utcnow() - timedelta(seconds=61)))
        await session.execute(update(CommandRow).where(CommandRow.id == small).values(
            confirmed_at=None, finished_at=utcnow() - timedelta(seconds=59)))
    h.confirmations.clear()
    for _ in range(200):
        if {c.command_id for c in h.confirmations} >= {big, small, bigger}:
            break
        await asyncio.sleep(0.05)
    sent = {c.command_id: c for c in h.confirmations}
    assert sent[big].status.value == final[0]["status"]
    assert sent[big].executed_layers == [] and sent[big].layers_omitted == len(layers)
    assert sent[big].cascade_omitted == 0
    assert sent[small].layers_omitted == 0 and sent[small].executed_layers
    assert sent[bigger].layers_omitted == len(layers) and sent[bigger].cascade_omitted == len(cascade)
    assert sent[bigger].cascade_terminated == [] and sent[bigger].status.value == final[2]["status"]
    async with h.db.sessions() as session:
        stored = (await session.scalars(select(CommandRow).where(CommandRow.id.in_([big, small, bigger])))).all()
    assert all(row.confirmed_at is not None for row in stored)
    assert next(row for row in stored if row.id == big).executed_layers == layers


# The audit table refusing every row: a real fault in the database, on each dialect.
_AUDIT_DOWN = {
    "sqlite": ["CREATE TRIGGER audit_down BEFORE INSERT ON audit_logs "
               "BEGIN SELECT RAISE(ABORT, 'audit unavailable'); END"],
    "postgresql": ["CREATE FUNCTION audit_down() RETURNS trigger AS $$ "
                   "BEGIN RAISE EXCEPTION 'audit unavailable'; END $$ LANGUAGE plpgsql",
                   "CREATE TRIGGER audit_down BEFORE INSERT ON audit_logs "
                   "FOR EACH ROW EXECUTE FUNCTION audit_down()"],
}
_AUDIT_UP = {
    "sqlite": ["DROP TRIGGER audit_down"],
    "postgresql": ["DROP TRIGGER audit_down ON audit_logs", "DROP FUNCTION audit_down()"],
}


async def test_a_command_is_accepted_or_approved_with_its_audit_row_or_not_at_all(make: Factory) -> None:
    """Before, the command was committed first and audited after: an append that failed
    left a command that ran with no ``command_accepted`` row, while its client got an
    error for it (and an approval that took effect unaudited)."""
    h = await make(two_person_terminate=True)
    await agent(h, "a1")
    waiting, _ = await h.submit({"command_type": "TERMINATE", "target_agents": ["a1"]})

    async def run(statements: list[str]) -> None:
        async with h.db.engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))

    await run(_AUDIT_DOWN[h.db.dialect])
    try:
        with pytest.raises(Exception, match="audit unavailable"):
            await h.submit(mute("a1", command_id="unaudited"))
        with pytest.raises(Exception, match="audit unavailable"):
            await h.c2l.approve_command(waiting["command_id"], "bob")
    finally:
        await run(_AUDIT_UP[h.db.dialect])
    assert await h.count(CommandRow, CommandRow.id == "unaudited") == 0
    assert (await h.c2l.get_command(waiting["command_id"]))["status"] == "PENDING_APPROVAL"
    # With the audit back, the same requests go through, each with its row.
    accepted, created = await h.submit(mute("a1", command_id="unaudited"))
    assert created and accepted["status"] == "PENDING"
    assert (await h.c2l.approve_command(waiting["command_id"], "bob"))["status"] == "PENDING"
    assert [r.command_id for r in await refusals(h, "command_accepted")] == [waiting["command_id"], "unaudited"]
    assert [r.command_id for r in await refusals(h, "command_approved")] == [waiting["command_id"]]
