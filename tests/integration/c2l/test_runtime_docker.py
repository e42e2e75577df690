"""DockerRuntime against a real Docker engine (scripts/services/docker.sh)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import docker.errors
import pytest

from cockpit.c2l.runtimes import RuntimeRef
from cockpit.c2l.runtimes.docker_runtime import DockerRuntime

pytestmark = pytest.mark.docker

RunContainer = Callable[..., Any]

TRAPS_TERM = 'trap "echo got-term; exit 0" TERM; echo ready; while :; do sleep 0.1; done'
# PID 1 in a container gets no default signal actions: without a trap, TERM is ignored.
IGNORES_TERM = "echo ready; while :; do sleep 0.1; done"


async def _wait_for_log(container: Any, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text.encode() not in container.logs():
        assert time.monotonic() < deadline, f"{text!r} never appeared in the logs"
        await asyncio.sleep(0.05)


def _exec(container: Any, command: str) -> tuple[int, str]:
    code, output = container.exec_run(["sh", "-c", command])
    return code, output.decode()


async def test_graceful_stop_delivers_sigterm(
    docker_runtime: DockerRuntime, run_container: RunContainer, docker_client: Any
) -> None:
    container = run_container(TRAPS_TERM)
    await _wait_for_log(container, "ready")
    ref = RuntimeRef.docker(container.name)

    stopped = await docker_runtime.stop_gracefully(ref, grace_seconds=10)

    assert stopped.success, stopped
    assert stopped.verification == {"container_exists": True, "running": False, "exit_code": 0}
    assert stopped.details["escalated_to_sigkill"] is False
    assert b"got-term" in container.logs()

    removed = await docker_runtime.force_kill(ref)
    assert removed.success and removed.verification == {"container_exists": False}
    assert (await docker_runtime.verify_gone(ref)).success
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container.id)


async def test_term_ignorer_is_escalated_then_force_killed_and_removed(
    docker_runtime: DockerRuntime, run_container: RunContainer, docker_client: Any
) -> None:
    stubborn = run_container(IGNORES_TERM)
    await _wait_for_log(stubborn, "ready")

    stopped = await docker_runtime.stop_gracefully(RuntimeRef.docker(stubborn.id), grace_seconds=1)
    assert stopped.success and stopped.verification["exit_code"] == 137
    assert stopped.details["escalated_to_sigkill"] is True
    assert stopped.duration_ms >= 1000

    running = run_container(IGNORES_TERM)
    await _wait_for_log(running, "ready")
    ref = RuntimeRef.docker(running.name)
    killed = await docker_runtime.force_kill(ref)
    assert killed.success, killed
    assert killed.details["killed"] and killed.details["removed"]
    assert killed.verification == {"container_exists": False}
    assert (await docker_runtime.check(ref)).exists is False
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(running.id)


async def test_gone_container_is_a_result(docker_runtime: DockerRuntime) -> None:
    ref = RuntimeRef.docker("cockpit-test-never-existed")
    assert (await docker_runtime.check(ref)).exists is False
    assert (await docker_runtime.stop_gracefully(ref, 1)).success
    assert (await docker_runtime.force_kill(ref)).details["already_gone"] is True
    assert (await docker_runtime.verify_gone(ref)).verification == {"container_exists": False}
    frozen = await docker_runtime.freeze(ref)
    assert not frozen.success and frozen.reason == "container gone"


async def test_quarantine_cuts_every_network_and_release_restores_it(
    docker_runtime: DockerRuntime, run_container: RunContainer, docker_network: str
) -> None:
    peer = run_container("sleep 300", network=docker_network)
    agent = run_container("sleep 300", network=docker_network)
    peer.reload()
    peer_ip = peer.attrs["NetworkSettings"]["Networks"][docker_network]["IPAddress"]
    ping = f"ping -c 1 -W 2 {peer_ip}"
    assert _exec(agent, ping)[0] == 0  # reachable before: the proof below means something
    ref = RuntimeRef.docker(agent.name)

    quarantined = await docker_runtime.quarantine_network(ref)

    assert quarantined.success, quarantined
    assert quarantined.verification == {"container_exists": True, "running": True, "networks": []}
    assert quarantined.details["disconnected"] == [docker_network]
    agent.reload()
    assert agent.attrs["NetworkSettings"]["Networks"] == {}
    assert agent.status == "running"
    assert _exec(agent, "ls /sys/class/net")[1].split() == ["lo"]
    assert _exec(agent, ping)[0] != 0

    released = await docker_runtime.release_network(ref)
    assert released.success and released.verification["networks"] == [docker_network]
    assert _exec(agent, ping)[0] == 0


async def test_quarantine_of_a_networkless_container_verifies_no_network(
    docker_runtime: DockerRuntime, run_container: RunContainer
) -> None:
    agent = run_container("sleep 300")  # network "none"
    result = await docker_runtime.quarantine_network(RuntimeRef.docker(agent.name))
    assert result.success and result.verification["networks"] == []


async def test_freeze_and_unfreeze(
    docker_runtime: DockerRuntime, run_container: RunContainer
) -> None:
    agent = run_container("sleep 300")
    ref = RuntimeRef.docker(agent.name)

    frozen = await docker_runtime.freeze(ref)
    assert frozen.success and frozen.verification["paused"] is True
    agent.reload()
    assert agent.attrs["State"]["Paused"] is True
    assert (await docker_runtime.check(ref)).running is False

    thawed = await docker_runtime.unfreeze(ref)
    assert thawed.success and thawed.verification["paused"] is False
    assert (await docker_runtime.check(ref)).running is True


async def test_snapshot_is_inspect_logs_and_a_committed_image(
    docker_runtime: DockerRuntime, run_container: RunContainer, docker_client: Any
) -> None:
    agent = run_container("echo snapshot-marker; echo state > /tmp/agent-state; sleep 300")
    await _wait_for_log(agent, "snapshot-marker")

    snap = await docker_runtime.snapshot(RuntimeRef.docker(agent.name))

    assert snap.captured, snap.reason
    assert snap.sha256 == hashlib.sha256(snap.payload).hexdigest()
    doc = json.loads(snap.payload)
    assert doc["inspect"]["Id"] == agent.id
    assert "snapshot-marker" in doc["logs"]
    image_ref = snap.metadata["image"]
    assert image_ref.startswith(f"cockpit-snapshot/{agent.name}:")
    image = docker_client.images.get(image_ref)
    assert image.id == doc["image"]["id"] == snap.metadata["image_id"]
    # The committed image carries the container's filesystem changes.
    restored = docker_client.containers.run(
        image.id, ["cat", "/tmp/agent-state"], remove=True, network="none"
    )
    assert restored == b"state\n"
