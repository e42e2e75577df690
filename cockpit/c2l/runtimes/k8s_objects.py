"""Pure builders of the Kubernetes objects the kill switch sends.

No I/O: unit tests serialise them with `ApiClient().sanitize_for_serialization`
and compare with the JSON the API server expects.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

from kubernetes.client import (
    V1DeleteOptions,
    V1LabelSelector,
    V1NetworkPolicy,
    V1NetworkPolicySpec,
    V1ObjectMeta,
)

__all__ = [
    "MANAGED_BY",
    "QUARANTINE_PREFIX",
    "delete_options",
    "quarantine_network_policy",
    "quarantine_policy_name",
]

QUARANTINE_PREFIX = "cockpit-quarantine-"
MANAGED_BY = "cockpit"
_MAX_NAME = 253  # DNS subdomain, the limit for NetworkPolicy names


def quarantine_policy_name(pod: str) -> str:
    """`cockpit-quarantine-<pod>`, shortened with a hash past the 253-char limit."""
    name = f"{QUARANTINE_PREFIX}{pod}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(pod.encode()).hexdigest()[:10]
    return f"{name[: _MAX_NAME - 11].rstrip('-.')}-{digest}"


def quarantine_network_policy(
    namespace: str, pod: str, labels: Mapping[str, str]
) -> V1NetworkPolicy:
    """A deny-all NetworkPolicy selecting the pod by its labels.

    Both policy types with no rules: no ingress and no egress is allowed for
    the selected pods. Every pod carrying the same labels is selected too (a
    Deployment's replicas share them): quarantine is per label set.

    Raises ValueError on empty labels: an empty selector selects every pod in
    the namespace, which would quarantine the whole namespace.
    """
    if not labels:
        raise ValueError("refusing an empty pod selector: it selects every pod in the namespace")
    return V1NetworkPolicy(
        api_version="networking.k8s.io/v1",
        kind="NetworkPolicy",
        metadata=V1ObjectMeta(
            name=quarantine_policy_name(pod),
            namespace=namespace,
            labels={"app.kubernetes.io/managed-by": MANAGED_BY, "cockpit.io/quarantine": "true"},
            # An annotation, not a label: pod names may exceed label value limits.
            annotations={"cockpit.io/quarantined-pod": pod},
        ),
        spec=V1NetworkPolicySpec(
            pod_selector=V1LabelSelector(match_labels=dict(sorted(labels.items()))),
            policy_types=["Ingress", "Egress"],
        ),
    )


def delete_options(grace_seconds: float) -> V1DeleteOptions:
    """DeleteOptions for a pod; grace 0 removes the pod object at once (force).

    The API takes whole seconds; a fraction rounds *up*, since rounding a short
    graceful period down to 0 would turn it into a force deletion.
    """
    return V1DeleteOptions(
        api_version="v1",
        kind="DeleteOptions",
        grace_period_seconds=max(0, math.ceil(grace_seconds)),
    )
