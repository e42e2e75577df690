"""The Kubernetes objects the kill switch sends, checked as the JSON on the wire."""

from __future__ import annotations

import re

import pytest
from kubernetes.client import ApiClient

from cockpit.c2l.runtimes.k8s_objects import (
    delete_options,
    quarantine_network_policy,
    quarantine_policy_name,
)

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _wire(obj: object) -> object:
    return ApiClient().sanitize_for_serialization(obj)


def test_quarantine_policy_denies_all_traffic_of_the_selected_pod() -> None:
    policy = quarantine_network_policy("agents", "agent-17", {"app": "agent", "id": "a-17"})

    assert _wire(policy) == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "cockpit-quarantine-agent-17",
            "namespace": "agents",
            "labels": {"app.kubernetes.io/managed-by": "cockpit", "cockpit.io/quarantine": "true"},
            "annotations": {"cockpit.io/quarantined-pod": "agent-17"},
        },
        # Both types and no rules: nothing in, nothing out.
        "spec": {
            "podSelector": {"matchLabels": {"app": "agent", "id": "a-17"}},
            "policyTypes": ["Ingress", "Egress"],
        },
    }


def test_empty_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="every pod in the namespace"):
        quarantine_network_policy("agents", "agent-17", {})


def test_policy_name_stays_a_valid_dns_subdomain_for_long_pod_names() -> None:
    long_pod = "a" * 250
    name = quarantine_policy_name(long_pod)
    assert len(name) <= 253 and _DNS_SUBDOMAIN.match(name)
    assert name == quarantine_policy_name(long_pod)  # deterministic: release finds it
    assert name != quarantine_policy_name("a" * 249 + "b")


@pytest.mark.parametrize(("grace", "expected"), [(0, 0), (0.4, 1), (2.6, 3), (30, 30), (-5, 0)])
def test_delete_options_round_grace_up_so_graceful_never_becomes_force(
    grace: float, expected: int
) -> None:
    assert _wire(delete_options(grace)) == {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": expected,
    }
