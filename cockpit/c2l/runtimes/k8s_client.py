"""Connecting to a Kubernetes API explicitly, and translating client errors.

Nothing here reads the environment or `~/.kube`: the caller names the API host
and credentials, or a kubeconfig file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import urllib3.exceptions
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from cockpit.c2l.runtimes.base import RuntimeActionFailed, RuntimeUnavailable

__all__ = ["KubernetesAccess", "build_api_client", "translated"]


@dataclass(frozen=True, slots=True)
class KubernetesAccess:
    """How to reach one cluster: host + bearer token (+ CA file), or a kubeconfig."""

    host: str | None = None
    token: str | None = None
    ca_cert_path: str | None = None
    verify_ssl: bool = True
    kubeconfig_path: str | None = None
    context: str | None = None

    def __post_init__(self) -> None:
        if not self.host and not self.kubeconfig_path:
            raise ValueError("Kubernetes access needs an API host or a kubeconfig path")


def build_api_client(access: KubernetesAccess) -> k8s.ApiClient:
    """An `ApiClient` for `access`; loading a kubeconfig may raise `RuntimeUnavailable`."""
    configuration = k8s.Configuration()
    if access.kubeconfig_path:
        with translated():
            k8s_config.load_kube_config(
                config_file=access.kubeconfig_path,
                context=access.context,
                client_configuration=configuration,
            )
    else:
        configuration.host = access.host or ""  # __post_init__ guarantees one of the two
        configuration.verify_ssl = access.verify_ssl
        configuration.ssl_ca_cert = access.ca_cert_path
        if access.token:
            configuration.api_key = {"authorization": access.token}
            configuration.api_key_prefix = {"authorization": "Bearer"}
    configuration.retries = 1  # fail fast: the kill switch escalates instead
    return k8s.ApiClient(configuration)


@contextmanager
def translated() -> Iterator[None]:
    """Client errors -> the port's errors.

    Callers catch the statuses that are answers (404 gone, 409 exists) inside
    the block; whatever escapes is a failure.
    """
    try:
        yield
    except ApiException as exc:
        body = exc.body[:300] if isinstance(exc.body, str) else ""
        raise RuntimeActionFailed(f"kubernetes API: {exc.status} {exc.reason}: {body}") from exc
    except (urllib3.exceptions.HTTPError, OSError, k8s_config.ConfigException) as exc:
        raise RuntimeUnavailable(f"kubernetes API unreachable: {exc}") from exc
