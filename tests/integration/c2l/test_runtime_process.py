"""ProcessRuntime against real OS processes and real signals."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from cockpit.c2l.runtimes import ProcessRuntime, RuntimeRef, process_ref
from cockpit.c2l.runtimes.procfs import read_stat

Spawn = Callable[..., subprocess.Popen[str]]

SLEEPER = "import time; print('ready', flush=True); time.sleep(60)"
TERM_IGNORER = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    "print('ready', flush=True); time.sleep(60)"
)
# Leads its own group; its child (same group) ignores TERM; prints the child pid.
GROUP_WITH_STUBBORN_CHILD = (
    "import subprocess, sys, time;"
    "c = subprocess.Popen([sys.executable, '-c', " + repr(TERM_IGNORER) + "],"
    " stdout=subprocess.PIPE, text=True); c.stdout.readline();"
    "print(c.pid, flush=True); time.sleep(60)"
)
# The grandchild escapes into a new session (not in the group) and ignores TERM.
ESCAPING_GRANDCHILD = GROUP_WITH_STUBBORN_CHILD.replace(
    "text=True)", "text=True, start_new_session=True)"
)


def _ready(child: subprocess.Popen[str]) -> str:
    assert child.stdout is not None
    return child.stdout.readline().strip()


def _dead(pid: int) -> bool:
    stat = read_stat(pid)
    return stat is None or stat.state == "Z"


@pytest.fixture
def runtime() -> ProcessRuntime:
    return ProcessRuntime(kill_wait_seconds=5)


async def test_graceful_stop_terminates_with_sigterm(runtime: ProcessRuntime, spawn: Spawn) -> None:
    child = spawn(SLEEPER)
    _ready(child)
    ref = process_ref(child.pid)

    result = await runtime.stop_gracefully(ref, grace_seconds=5)

    assert result.success, result
    assert result.verification == {
        "pid_exists": False,
        "group_survivors": [],
        "descendant_survivors": [],
    }
    assert result.duration_ms < 2000
    assert not os.path.exists(f"/proc/{child.pid}")  # reaped, not a zombie
    assert (await runtime.check(ref)).exists is False


async def test_term_ignorer_survives_grace_then_dies_by_sigkill(
    runtime: ProcessRuntime, spawn: Spawn
) -> None:
    child = spawn(TERM_IGNORER)
    _ready(child)
    ref = process_ref(child.pid)

    graceful = await runtime.stop_gracefully(ref, grace_seconds=0.5)
    assert not graceful.success
    assert graceful.verification["pid_exists"] is True
    assert graceful.duration_ms >= 500
    assert "grace" in (graceful.reason or "")

    forced = await runtime.force_kill(ref)
    assert forced.success, forced
    assert forced.verification["pid_exists"] is False
    assert child.pid in forced.details["killed"]
    assert (await runtime.verify_gone(ref)).success


async def test_process_group_leaves_no_survivor(runtime: ProcessRuntime, spawn: Spawn) -> None:
    leader = spawn(GROUP_WITH_STUBBORN_CHILD, new_session=True)
    grandchild = int(_ready(leader))
    assert read_stat(grandchild).pgrp == leader.pid  # type: ignore[union-attr]
    ref = process_ref(leader.pid)

    graceful = await runtime.stop_gracefully(ref, grace_seconds=0.3)
    # The leader dies of TERM; the member that ignores it keeps the group alive.
    assert not graceful.success
    assert graceful.verification["group_survivors"] == [grandchild]

    forced = await runtime.force_kill(ref)
    assert forced.success, forced
    assert forced.verification["group_survivors"] == []
    assert _dead(leader.pid) and _dead(grandchild)


async def test_force_kill_reaches_a_descendant_outside_the_group(
    runtime: ProcessRuntime, spawn: Spawn
) -> None:
    parent = spawn(ESCAPING_GRANDCHILD)
    escaped = int(_ready(parent))
    assert read_stat(escaped).pgrp != read_stat(parent.pid).pgrp  # type: ignore[union-attr]

    forced = await runtime.force_kill(process_ref(parent.pid))

    assert forced.success, forced
    assert escaped in forced.details["killed"]
    assert _dead(parent.pid) and _dead(escaped)


async def test_graceful_stop_is_verified_on_the_whole_tree(runtime: ProcessRuntime, spawn: Spawn) -> None:
    """An agent that does not lead a process group and exits on TERM leaving a child
    behind (one that escaped into its own session and ignores TERM): the stop is not
    a success while the child lives, and the force kill reaches it although its
    parent's death re-parented it. Before, the stop succeeded and the child ran on."""
    parent = spawn(ESCAPING_GRANDCHILD)
    escaped = int(_ready(parent))
    ref = process_ref(parent.pid)

    graceful = await runtime.stop_gracefully(ref, grace_seconds=0.5)
    assert not graceful.success, graceful
    assert _dead(parent.pid)
    assert graceful.verification["descendant_survivors"] == [escaped]
    assert read_stat(escaped).ppid != parent.pid  # type: ignore[union-attr] - re-parented
    assert not (await runtime.verify_gone(ref)).success

    forced = await runtime.force_kill(ref)
    assert forced.success, forced
    assert escaped in forced.details["killed"] and _dead(escaped)
    assert (await runtime.verify_gone(ref)).success


async def test_graceful_stop_ends_children_that_honour_sigterm(runtime: ProcessRuntime, spawn: Spawn) -> None:
    parent = spawn(ESCAPING_GRANDCHILD.replace(repr(TERM_IGNORER), repr(SLEEPER)))
    child = int(_ready(parent))
    graceful = await runtime.stop_gracefully(process_ref(parent.pid), grace_seconds=5)
    assert graceful.success, graceful
    assert _dead(parent.pid) and _dead(child)


async def test_recycled_pid_is_never_signalled(runtime: ProcessRuntime, spawn: Spawn) -> None:
    child = spawn(SLEEPER)
    _ready(child)
    real = process_ref(child.pid)
    # Same pid, another start time: the ref points at a process that is gone.
    stale = RuntimeRef.process(child.pid, start_time=(real.start_time or 0) + 1)

    assert (await runtime.check(stale)).exists is False
    assert (await runtime.stop_gracefully(stale, 1)).details["already_gone"] is True
    assert (await runtime.force_kill(stale)).success
    assert child.poll() is None  # the live process was not touched


async def test_exited_child_counts_as_gone_once_reaped(
    runtime: ProcessRuntime, spawn: Spawn
) -> None:
    child = spawn("print('bye')")
    ref = process_ref(child.pid)
    deadline = time.monotonic() + 5
    while read_stat(child.pid) is not None and read_stat(child.pid).state != "Z":  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)

    result = await runtime.verify_gone(ref)

    assert result.success
    assert not os.path.exists(f"/proc/{child.pid}")  # the adapter reaped our zombie


async def test_freeze_and_unfreeze(runtime: ProcessRuntime, spawn: Spawn) -> None:
    child = spawn(SLEEPER)
    _ready(child)
    ref = process_ref(child.pid)

    frozen = await runtime.freeze(ref)
    assert frozen.success and frozen.verification["state"] == "T"
    assert (await runtime.check(ref)).running is False

    thawed = await runtime.unfreeze(ref)
    assert thawed.success and thawed.verification["stopped"] is False
    assert (await runtime.check(ref)).running is True


async def test_snapshot_records_cmdline_and_env_names_not_values(
    runtime: ProcessRuntime, spawn: Spawn
) -> None:
    child = spawn(SLEEPER, args=("--agent-id", "agent-42"), env={"AGENT_API_KEY": "hunter2-secret"})
    _ready(child)

    snap = await runtime.snapshot(process_ref(child.pid))

    assert snap.captured
    assert snap.sha256 == hashlib.sha256(snap.payload).hexdigest()
    doc = json.loads(snap.payload)["process"]
    assert doc["cmdline"][-2:] == ["--agent-id", "agent-42"]
    assert "AGENT_API_KEY" in doc["environ_keys"]
    assert b"hunter2-secret" not in snap.payload
    assert doc["open_fds"] >= 3 and doc["cwd"] == os.getcwd()
    assert "VmRSS" in doc["memory"]


async def test_snapshot_of_a_gone_process_says_so(runtime: ProcessRuntime, spawn: Spawn) -> None:
    child = spawn("pass")
    child.wait()
    snap = await runtime.snapshot(RuntimeRef.process(child.pid))
    assert not snap.captured and snap.reason == "process gone"
    assert json.loads(snap.payload) == {"pid": child.pid, "exists": False}


async def test_network_quarantine_is_honestly_unsupported(
    runtime: ProcessRuntime, spawn: Spawn
) -> None:
    child = spawn(SLEEPER)
    _ready(child)
    result = await runtime.quarantine_network(process_ref(child.pid))
    assert not result.success
    assert result.layer == "network"
    assert "no per-process network namespace" in (result.reason or "")
    os.kill(child.pid, signal.SIGKILL)
