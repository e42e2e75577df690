"""The runtime port itself: refs, the runtime set, the external runtime, and
engines that cannot be reached (no service needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cockpit.c2l.runtimes import (
    NO_RUNTIME_CONTROL,
    ExternalRuntime,
    InvalidRuntimeRef,
    ProcessRuntime,
    RuntimeConfig,
    RuntimeKind,
    RuntimeNotConfigured,
    RuntimeRef,
    RuntimeSet,
    RuntimeUnavailable,
)


@pytest.mark.parametrize(
    "ref",
    [
        RuntimeRef.process(4242, start_time=987654),
        RuntimeRef.docker("agent-7"),
        RuntimeRef.kubernetes("agents", "agent-7", {"app": "agent"}),
        RuntimeRef.external(),
    ],
)
def test_ref_round_trips_through_json(ref: RuntimeRef) -> None:
    assert RuntimeRef.from_dict(json.loads(json.dumps(ref.to_dict()))) == ref


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "process"},
        {"kind": "docker"},
        {"kind": "kubernetes", "pod": "p"},
        {"kind": "vm"},
        {},
    ],
)
def test_incomplete_refs_are_rejected(data: dict[str, object]) -> None:
    with pytest.raises(InvalidRuntimeRef):
        RuntimeRef.from_dict(data)


async def test_an_adapter_refuses_another_kinds_ref() -> None:
    with pytest.raises(InvalidRuntimeRef):
        await ProcessRuntime().force_kill(RuntimeRef.docker("agent-7"))


def test_runtime_set_builds_only_what_is_configured_and_connects_to_nothing() -> None:
    # Unreachable addresses on purpose: building the set must not connect.
    runtimes = RuntimeSet.from_config(
        RuntimeConfig(
            docker_base_url="unix:///nonexistent/docker.sock",
            kubernetes_host="http://127.0.0.1:9",
            grace_seconds=3,
        )
    )
    assert runtimes.kinds == set(RuntimeKind)
    assert runtimes.runtime_for("docker").kind is RuntimeKind.DOCKER
    assert runtimes.for_ref(RuntimeRef.kubernetes("ns", "p")).kind is RuntimeKind.KUBERNETES
    assert runtimes.grace_seconds == 3

    minimal = RuntimeSet.from_config(RuntimeConfig())
    assert minimal.kinds == {RuntimeKind.PROCESS, RuntimeKind.EXTERNAL}
    with pytest.raises(RuntimeNotConfigured):
        minimal.runtime_for(RuntimeKind.DOCKER)


async def test_external_runtime_controls_nothing_and_says_so() -> None:
    runtime, ref = ExternalRuntime(), RuntimeRef.external()
    results = [
        await runtime.stop_gracefully(ref, 5),
        await runtime.force_kill(ref),
        await runtime.quarantine_network(ref),
        await runtime.release_network(ref),
        await runtime.freeze(ref),
        await runtime.unfreeze(ref),
        await runtime.verify_gone(ref),
    ]
    assert all(not r.success and r.reason == NO_RUNTIME_CONTROL for r in results)
    assert [r.layer for r in results[:3]] == ["container", "container", "network"]
    snap = await runtime.snapshot(ref)
    assert not snap.captured and snap.reason == NO_RUNTIME_CONTROL


async def test_unreachable_docker_engine_is_a_failed_layer(tmp_path: Path) -> None:
    from cockpit.c2l.runtimes.docker_runtime import DockerRuntime

    runtime = DockerRuntime(f"unix://{tmp_path}/no-engine.sock", timeout_seconds=2)
    ref = RuntimeRef.docker("agent-7")
    result = await runtime.force_kill(ref)
    assert not result.success and "unreachable" in (result.reason or "")
    with pytest.raises(RuntimeUnavailable):
        await runtime.check(ref)
