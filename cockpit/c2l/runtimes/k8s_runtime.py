"""`KubernetesRuntime`: agents in Kubernetes pods, through the official client.

Configured explicitly (API host + bearer token + CA file, or a kubeconfig path);
no credentials are read from the environment or the in-cluster service account
unless the caller passes that path. What is read is which pod Cockpit itself runs
in (`own_pod`), so that no command deletes or quarantines it.

RBAC the kill switch needs in each agent namespace (a Role bound to Cockpit's
service account)::

    rules:
    - apiGroups: [""]
      resources: ["pods"]
      verbs: ["get", "list", "delete"]
    - apiGroups: [""]
      resources: ["pods/log"]
      verbs: ["get"]
    - apiGroups: ["networking.k8s.io"]
      resources: ["networkpolicies"]
      verbs: ["create", "get", "delete"]

Caveats, stated so the audit trail is not over-read:
* Quarantine is a NetworkPolicy; it is enforced only by a CNI plugin that
  implements NetworkPolicy (Calico, Cilium, ...). It selects by label, so every
  pod sharing the labels is quarantined with the target.
* Force kill deletes with gracePeriodSeconds=0, which removes the pod object at
  once; the kubelet then kills the containers when it observes the deletion.
* Pods cannot be frozen: the Kubernetes API has no pause.
* A pod that a controller manages (a ReplicaSet of a Deployment, a StatefulSet, a
  Job) is deleted and verified gone by name, and its controller starts a replacement
  under another name: the layer's details name the controller (``controllers``) so
  the operator knows to scale it down; Cockpit does not change controllers.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from cockpit.c2l.runtimes.base import Outcome, Runtime, RuntimeState, RuntimeUnavailable
from cockpit.c2l.runtimes.k8s_client import KubernetesAccess, build_api_client, translated
from cockpit.c2l.runtimes.k8s_objects import (
    delete_options,
    quarantine_network_policy,
    quarantine_policy_name,
)
from cockpit.c2l.runtimes.ref import InvalidRuntimeRef, RuntimeKind, RuntimeRef

__all__ = ["KubernetesRuntime", "own_pod"]

_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def own_pod(environ: Mapping[str, str] = os.environ,
            namespace_file: Path = _SERVICE_ACCOUNT_NAMESPACE) -> tuple[str, str] | None:
    """(namespace, name) of the pod this process runs in; None outside a pod.

    ``POD_NAMESPACE`` / ``POD_NAME`` (the Downward API, as deploy/k8s sets them), else
    the service account's namespace file and, in a cluster, the hostname (a pod's
    hostname is its name unless its spec sets another)."""
    namespace = environ.get("POD_NAMESPACE")
    if not namespace:
        try:
            namespace = namespace_file.read_text().strip()
        except OSError:
            namespace = None
    name = environ.get("POD_NAME")
    if not name and environ.get("KUBERNETES_SERVICE_HOST"):
        name = socket.gethostname()
    return (namespace, name) if namespace and name else None


class KubernetesRuntime(Runtime):
    """Acts on pods of one cluster."""

    kind = RuntimeKind.KUBERNETES

    def __init__(
        self,
        *,
        host: str | None = None,
        token: str | None = None,
        ca_cert_path: str | None = None,
        verify_ssl: bool = True,
        kubeconfig_path: str | None = None,
        context: str | None = None,
        request_timeout_seconds: float = 10.0,
        settle_seconds: float = 10.0,
        poll_interval_seconds: float = 0.2,
        logs_tail: int = 200,
        own: tuple[str, str] | None = None,
    ) -> None:
        #: (namespace, pod) Cockpit runs in, never deleted or quarantined (default: detected)
        self._own = own or own_pod()
        self._access = KubernetesAccess(
            host=host,
            token=token,
            ca_cert_path=ca_cert_path,
            verify_ssl=verify_ssl,
            kubeconfig_path=kubeconfig_path,
            context=context,
        )
        self._timeout = request_timeout_seconds
        # How long past the grace period to wait for the pod object to vanish.
        self._settle = settle_seconds
        self._poll = poll_interval_seconds
        self._logs_tail = logs_tail
        self._api: k8s.ApiClient | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the API connection pool, if one was opened."""
        with self._lock:
            if self._api is not None:
                self._api.close()
                self._api = None

    # -- plumbing -------------------------------------------------------------

    def _client(self) -> k8s.ApiClient:
        # Built on first use: constructing the runtime never connects.
        with self._lock:
            if self._api is None:
                self._api = build_api_client(self._access)
            return self._api

    def _core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self._client())

    def _networking(self) -> k8s.NetworkingV1Api:
        return k8s.NetworkingV1Api(self._client())

    def _get_pod(self, ref: RuntimeRef) -> k8s.V1Pod | None:
        namespace, name = _target(ref)
        with translated():
            try:
                return self._core().read_namespaced_pod(
                    name, namespace, _request_timeout=self._timeout
                )
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

    def _serialise(self, obj: Any) -> Any:
        return self._client().sanitize_for_serialization(obj)

    def _refuses(self, ref: RuntimeRef) -> str | None:
        return "Cockpit runs in it" if _target(ref) == self._own else None

    def _guard(self, ref: RuntimeRef) -> None:
        """Raise `RuntimeUnavailable` for Cockpit's own pod (registration refuses it;
        a row may name it from before)."""
        if reason := self._refuses(ref):
            raise RuntimeUnavailable(f"refusing to act on pod {ref.namespace}/{ref.pod}: {reason}")

    # -- state ------------------------------------------------------------------

    def _check(self, ref: RuntimeRef) -> RuntimeState:
        pod = self._get_pod(ref)
        if pod is None:
            return RuntimeState(False, False, {"pod_found": False})
        phase = pod.status.phase if pod.status else None
        deleting = _meta(pod).deletion_timestamp
        return RuntimeState(
            True,
            phase == "Running" and deleting is None,
            {"pod_found": True, "phase": phase, "deletion_timestamp": _iso(deleting)},
        )

    def _verify_gone(self, ref: RuntimeRef) -> Outcome:
        observed = _pod_observation(self._get_pod(ref))
        ok = not observed["pod_found"]
        return Outcome(ok, observed, reason=None if ok else "pod still exists")

    # -- termination --------------------------------------------------------------

    def _stop_gracefully(self, ref: RuntimeRef, grace_seconds: float) -> Outcome:
        return self._delete(ref, grace_seconds)

    def _force_kill(self, ref: RuntimeRef) -> Outcome:
        return self._delete(ref, 0)

    def _delete(self, ref: RuntimeRef, grace_seconds: float) -> Outcome:
        self._guard(ref)
        namespace, name = _target(ref)
        options = delete_options(grace_seconds)
        grace = options.grace_period_seconds or 0
        details: dict[str, Any] = {"grace_period_seconds": options.grace_period_seconds}
        pod = self._get_pod(ref)
        controllers = [f"{o.kind}/{o.name}" for o in (_meta(pod).owner_references or []) if o.controller] if pod else []
        if controllers:
            details["controllers"] = controllers
            details["note"] = (f"managed by {', '.join(controllers)}: a replacement pod may start under "
                               "another name; scale the controller down to stop the workload")
        with translated():
            try:
                self._core().delete_namespaced_pod(
                    name, namespace, body=options, _request_timeout=self._timeout
                )
                details["deleted"] = True
            except ApiException as exc:
                if exc.status != 404:
                    raise
                details["already_gone"] = True
        # The pod object lingers with a deletionTimestamp until the kubelet has
        # stopped its containers (or at once with grace 0); wait for the 404.
        deadline = time.monotonic() + grace + self._settle
        while True:
            observed = _pod_observation(self._get_pod(ref))
            if not observed["pod_found"] or time.monotonic() >= deadline:
                break
            time.sleep(self._poll)
        ok = not observed["pod_found"]
        return Outcome(ok, observed, details, None if ok else "pod still present after deletion")

    # -- network ----------------------------------------------------------------

    def _quarantine_network(self, ref: RuntimeRef) -> Outcome:
        self._guard(ref)
        namespace, pod_name = _target(ref)
        name = quarantine_policy_name(pod_name)
        labels = dict(ref.labels)
        if not labels:
            pod = self._get_pod(ref)
            if pod is None:
                return Outcome(
                    False,
                    {"pod_found": False, "networkpolicy": name, "present": False},
                    reason="pod not found and the ref carries no labels to select it",
                )
            labels = dict(_meta(pod).labels or {})
        try:
            policy = quarantine_network_policy(namespace, pod_name, labels)
        except ValueError as exc:
            return Outcome(False, {"networkpolicy": name, "present": False}, reason=str(exc))
        details: dict[str, Any] = {"pod_selector": labels}
        with translated():
            try:
                self._networking().create_namespaced_network_policy(
                    namespace, policy, _request_timeout=self._timeout
                )
                details["created"] = True
            except ApiException as exc:
                if exc.status != 409:
                    raise
                details["already_present"] = True  # quarantined before: idempotent
        present, selector = self._policy_state(namespace, name)
        ok = present and selector == labels
        return Outcome(
            ok,
            {"networkpolicy": name, "present": present, "pod_selector": selector},
            details,
            None if ok else "quarantine NetworkPolicy missing or not selecting the pod",
        )

    def _release_network(self, ref: RuntimeRef) -> Outcome:
        namespace, pod_name = _target(ref)
        name = quarantine_policy_name(pod_name)
        details: dict[str, Any] = {}
        with translated():
            try:
                self._networking().delete_namespaced_network_policy(
                    name, namespace, _request_timeout=self._timeout
                )
                details["deleted"] = True
            except ApiException as exc:
                if exc.status != 404:
                    raise
                details["already_absent"] = True
        present, _ = self._policy_state(namespace, name)
        return Outcome(
            not present,
            {"networkpolicy": name, "present": present},
            details,
            "quarantine NetworkPolicy still present" if present else None,
        )

    def _policy_state(self, namespace: str, name: str) -> tuple[bool, dict[str, str] | None]:
        with translated():
            try:
                policy = self._networking().read_namespaced_network_policy(
                    name, namespace, _request_timeout=self._timeout
                )
            except ApiException as exc:
                if exc.status == 404:
                    return False, None
                raise
        selector = (
            policy.spec.pod_selector.match_labels
            if policy.spec and policy.spec.pod_selector
            else None
        )
        return True, dict(selector or {})

    # -- freeze -------------------------------------------------------------------

    def _freeze(self, ref: RuntimeRef) -> Outcome:
        return Outcome(
            False,
            {},
            reason="kubernetes runtime: pods cannot be frozen "
            "(the Kubernetes API has no pause); quarantine or terminate instead",
        )

    def _unfreeze(self, ref: RuntimeRef) -> Outcome:
        return Outcome(False, {}, reason="kubernetes runtime: pods cannot be frozen")

    # -- snapshot -------------------------------------------------------------------

    def _snapshot(self, ref: RuntimeRef) -> tuple[dict[str, Any], dict[str, Any], str | None]:
        namespace, name = _target(ref)
        pod = self._get_pod(ref)
        if pod is None:
            return (
                {"namespace": ref.namespace, "pod": ref.pod, "exists": False},
                {},
                "pod not found",
            )
        logs: dict[str, str] = {}
        errors: dict[str, str] = {}
        for container in pod.spec.containers if pod.spec else []:
            with translated():
                try:
                    logs[container.name] = self._core().read_namespaced_pod_log(
                        name,
                        namespace,
                        container=container.name,
                        tail_lines=self._logs_tail,
                        timestamps=True,
                        _request_timeout=self._timeout,
                    )
                except ApiException as exc:  # e.g. 400: container not started yet
                    errors[container.name] = f"{exc.status} {exc.reason}"
        document = {
            "runtime": "kubernetes",
            "pod": self._serialise(pod),
            "logs": logs,
            "log_errors": errors,
        }
        metadata = {
            "namespace": ref.namespace,
            "pod": ref.pod,
            "uid": _meta(pod).uid,
            "containers": sorted(logs),
        }
        return document, metadata, None


def _target(ref: RuntimeRef) -> tuple[str, str]:
    """(namespace, pod) of a kubernetes ref, which `RuntimeRef` guarantees are set."""
    if not (ref.namespace and ref.pod):
        raise InvalidRuntimeRef("a kubernetes ref needs a namespace and a pod")
    return ref.namespace, ref.pod


def _meta(obj: Any) -> k8s.V1ObjectMeta:
    return obj.metadata or k8s.V1ObjectMeta()


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _pod_observation(pod: k8s.V1Pod | None) -> dict[str, Any]:
    if pod is None:
        return {"pod_found": False}
    return {
        "pod_found": True,
        "deletion_timestamp": _iso(_meta(pod).deletion_timestamp),
        "phase": pod.status.phase if pod.status else None,
    }
