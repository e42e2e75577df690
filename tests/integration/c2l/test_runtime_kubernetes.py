"""KubernetesRuntime through the official client against the fake API server,
checking the exact HTTP requests it makes."""

from __future__ import annotations

import hashlib
import json
import socket
from typing import Any

import pytest

from cockpit.c2l.runtimes import RuntimeRef, RuntimeUnavailable
from cockpit.c2l.runtimes.k8s_runtime import KubernetesRuntime
from tests.fakes.k8s_api import FakeKubernetesAPI

NS = "agents"
LABELS = {"app": "agent", "cockpit.io/agent-id": "a-17"}
POD_PATH = f"/api/v1/namespaces/{NS}/pods/agent-17"
POLICY_PATH = f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"


def _calls(api: FakeKubernetesAPI) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in api.requests]


async def test_graceful_delete_waits_for_the_pod_to_vanish(
    k8s_api: FakeKubernetesAPI, k8s_runtime: KubernetesRuntime
) -> None:
    k8s_api.add_pod(NS, "agent-17", LABELS, terminating_gets=2)
    ref = RuntimeRef.kubernetes(NS, "agent-17", LABELS)

    result = await k8s_runtime.stop_gracefully(ref, grace_seconds=7)

    assert result.success and result.verification == {"pod_found": False}
    delete = next(r for r in k8s_api.requests if r.method == "DELETE")
    assert delete.path == POD_PATH
    assert delete.body == {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 7}
    # A GET for its controller, the DELETE, two GETs that still see the terminating
    # pod, then the 404.
    assert _calls(k8s_api) == [("GET", POD_PATH), ("DELETE", POD_PATH)] + [("GET", POD_PATH)] * 3
    assert all(r.headers["authorization"] == "Bearer test-token" for r in k8s_api.requests)


async def test_stuck_pod_fails_graceful_then_force_delete_removes_it(
    k8s_api: FakeKubernetesAPI, k8s_runtime: KubernetesRuntime
) -> None:
    k8s_api.add_pod(NS, "agent-17", LABELS, kubelet_responsive=False)
    ref = RuntimeRef.kubernetes(NS, "agent-17", LABELS)

    graceful = await k8s_runtime.stop_gracefully(ref, grace_seconds=0.4)
    assert not graceful.success
    assert graceful.verification["pod_found"] is True
    assert graceful.verification["deletion_timestamp"] is not None

    forced = await k8s_runtime.force_kill(ref)
    assert forced.success and forced.verification == {"pod_found": False}
    deletes = [r.body for r in k8s_api.requests if r.method == "DELETE"]
    # 0.4 s rounds up to 1: a short graceful period must not become a force delete.
    assert [d["gracePeriodSeconds"] for d in deletes] == [1, 0]
    assert (await k8s_runtime.verify_gone(ref)).success


async def test_gone_pod_is_a_result(
    k8s_api: FakeKubernetesAPI, k8s_runtime: KubernetesRuntime
) -> None:
    ref = RuntimeRef.kubernetes(NS, "never-existed")
    assert (await k8s_runtime.check(ref)).exists is False
    forced = await k8s_runtime.force_kill(ref)
    assert forced.success and forced.details["already_gone"] is True
    verified = await k8s_runtime.verify_gone(ref)
    assert verified.success and verified.verification == {"pod_found": False}


async def test_quarantine_creates_deny_all_policy_and_release_deletes_it(
    k8s_api: FakeKubernetesAPI, k8s_runtime: KubernetesRuntime
) -> None:
    k8s_api.add_pod(NS, "agent-17", LABELS)
    ref = RuntimeRef.kubernetes(NS, "agent-17")  # no labels: read from the pod

    first = await k8s_runtime.quarantine_network(ref)
    again = await k8s_runtime.quarantine_network(ref)

    assert first.success and first.details["created"] is True
    assert first.verification == {
        "networkpolicy": "cockpit-quarantine-agent-17",
        "present": True,
        "pod_selector": LABELS,
    }
    assert again.success and again.details["already_present"] is True  # 409 answered
    stored = k8s_api.network_policy(NS, "cockpit-quarantine-agent-17")
    assert stored is not None
    assert stored["spec"] == {
        "podSelector": {"matchLabels": LABELS},
        "policyTypes": ["Ingress", "Egress"],
    }
    posts = [r for r in k8s_api.requests if r.method == "POST"]
    assert [p.path for p in posts] == [POLICY_PATH, POLICY_PATH]

    released = await k8s_runtime.release_network(ref)
    assert released.success
    assert released.verification == {
        "networkpolicy": "cockpit-quarantine-agent-17",
        "present": False,
    }
    assert k8s_api.network_policy(NS, "cockpit-quarantine-agent-17") is None
    assert ("DELETE", f"{POLICY_PATH}/cockpit-quarantine-agent-17") in _calls(k8s_api)


async def test_quarantine_refuses_a_pod_without_labels(
    k8s_api: FakeKubernetesAPI, k8s_runtime: KubernetesRuntime
) -> None:
    k8s_api.add_pod(NS, "bare", {})
    result = await k8s_runtime.quarantine_network(RuntimeRef.kubernetes(NS, "bare"))
    assert not result.success
    assert "every pod in the namespace" in (result.reason or "")
    assert not [r for r in k8s_api.requests if r.method == "POST"]


async def test_quarantine_of_a_deleted_pod_still_fences_its_labels(
    k8s_api: FakeKubernetesAPI, k8s_runtime: KubernetesRuntime
) -> None:
    # A controller may recreate the pod with the same labels: the policy holds.
    result = await k8s_runtime.quarantine_network(RuntimeRef.kubernetes(NS, "agent-17", LABELS))
    assert result.success and result.verification["present"] is True


async def test_snapshot_is_pod_spec_plus_every_container_log(
    k8s_api: FakeKubernetesAPI, k8s_runtime: KubernetesRuntime
) -> None:
    k8s_api.add_pod(
        NS,
        "agent-17",
        LABELS,
        containers=("agent", "sidecar"),
        logs={"agent": [f"step {i}" for i in range(300)], "sidecar": ["proxy up"]},
    )

    snap = await k8s_runtime.snapshot(RuntimeRef.kubernetes(NS, "agent-17"))

    assert snap.captured and snap.sha256 == hashlib.sha256(snap.payload).hexdigest()
    doc: dict[str, Any] = json.loads(snap.payload)
    assert doc["pod"]["metadata"]["labels"] == LABELS
    assert [c["name"] for c in doc["pod"]["spec"]["containers"]] == ["agent", "sidecar"]
    agent_lines = doc["logs"]["agent"].splitlines()
    assert len(agent_lines) == 200 and agent_lines[-1].endswith("step 299")
    assert doc["logs"]["sidecar"].endswith("proxy up\n")
    log_queries = [r.query for r in k8s_api.requests if r.path.endswith("/log")]
    assert log_queries[0] == {"container": ["agent"], "tailLines": ["200"], "timestamps": ["true"]}


async def test_freeze_is_unsupported(
    k8s_api: FakeKubernetesAPI, k8s_runtime: KubernetesRuntime
) -> None:
    result = await k8s_runtime.freeze(RuntimeRef.kubernetes(NS, "agent-17"))
    assert not result.success and "cannot be frozen" in (result.reason or "")
    assert k8s_api.requests == []


async def test_wrong_token_is_a_failed_layer_not_a_crash(k8s_api: FakeKubernetesAPI) -> None:
    k8s_api.add_pod(NS, "agent-17", LABELS)
    runtime = KubernetesRuntime(host=k8s_api.url, token="wrong")
    result = await runtime.force_kill(RuntimeRef.kubernetes(NS, "agent-17"))
    assert not result.success and "401" in (result.reason or "")
    assert k8s_api.pod(NS, "agent-17") is not None


async def test_unreachable_api() -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    runtime = KubernetesRuntime(host=f"http://127.0.0.1:{port}", request_timeout_seconds=2)
    ref = RuntimeRef.kubernetes(NS, "agent-17")
    result = await runtime.force_kill(ref)
    assert not result.success and "unreachable" in (result.reason or "")
    with pytest.raises(RuntimeUnavailable):
        await runtime.check(ref)


async def test_the_pod_cockpit_runs_in_is_never_deleted_or_quarantined(
    k8s_api: FakeKubernetesAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As deploy/k8s/deployment.yaml sets them (the Downward API).
    monkeypatch.setenv("POD_NAMESPACE", NS)
    monkeypatch.setenv("POD_NAME", "cockpit-7d9f")
    k8s_api.add_pod(NS, "cockpit-7d9f", {"app": "cockpit"})
    k8s_api.add_pod(NS, "agent-17", LABELS)
    runtime = KubernetesRuntime(host=k8s_api.url, token="test-token", settle_seconds=1.0,
                                poll_interval_seconds=0.02, request_timeout_seconds=5)
    try:
        own = RuntimeRef.kubernetes(NS, "cockpit-7d9f")
        assert await runtime.refuses(own) == "Cockpit runs in it"
        assert await runtime.refuses(RuntimeRef.kubernetes(NS, "agent-17")) is None
        assert await runtime.refuses(RuntimeRef.kubernetes("other", "cockpit-7d9f")) is None
        for result in (await runtime.stop_gracefully(own, 1), await runtime.force_kill(own),
                       await runtime.quarantine_network(own)):
            assert not result.success and "Cockpit runs in it" in (result.reason or ""), result
        assert not [r for r in k8s_api.requests if r.method in {"DELETE", "POST"}]
        assert k8s_api.pod(NS, "cockpit-7d9f") is not None
        assert (await runtime.check(own)).exists  # reading it stays allowed
        assert (await runtime.force_kill(RuntimeRef.kubernetes(NS, "agent-17"))).success
    finally:
        runtime.close()


async def test_a_controller_managed_pod_is_deleted_and_its_controller_named(
    k8s_api: FakeKubernetesAPI, k8s_runtime: KubernetesRuntime
) -> None:
    """The pod is gone by name, but its ReplicaSet would start another: the result says
    so, naming the controller, rather than reading as the workload stopped."""
    k8s_api.add_pod(NS, "agent-17-7d9f-x2", LABELS, owner=("ReplicaSet", "agent-17-7d9f"))
    result = await k8s_runtime.force_kill(RuntimeRef.kubernetes(NS, "agent-17-7d9f-x2"))
    assert result.success
    assert result.details["controllers"] == ["ReplicaSet/agent-17-7d9f"]
    assert "scale the controller down" in result.details["note"]
    k8s_api.add_pod(NS, "loner", LABELS)
    alone = await k8s_runtime.force_kill(RuntimeRef.kubernetes(NS, "loner"))
    assert alone.success and "controllers" not in alone.details
