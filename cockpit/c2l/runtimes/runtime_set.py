"""`RuntimeSet`: one adapter per runtime kind, built from explicit settings.

Built by bootstrap from `cockpit.settings` values; adapters connect lazily on
first use, so building a set never touches Docker or Kubernetes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cockpit.c2l.runtimes.base import Runtime
from cockpit.c2l.runtimes.external import ExternalRuntime
from cockpit.c2l.runtimes.process import ProcessRuntime
from cockpit.c2l.runtimes.ref import RuntimeKind, RuntimeRef

__all__ = ["RuntimeConfig", "RuntimeNotConfigured", "RuntimeSet"]


class RuntimeNotConfigured(LookupError):
    """No adapter is configured for the ref's kind (e.g. no Docker base URL)."""


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """The settings an adapter set needs; all optional but the grace periods."""

    docker_base_url: str | None = None
    kubernetes_host: str | None = None
    kubernetes_token: str | None = None
    kubernetes_ca_cert_path: str | None = None
    kubernetes_verify_ssl: bool = True
    kubeconfig_path: str | None = None
    kubeconfig_context: str | None = None
    grace_seconds: float = 10.0
    kill_wait_seconds: float = 5.0
    request_timeout_seconds: float = 30.0


class RuntimeSet:
    """The registry the kill switch asks: `runtime_for(kind)` / `for_ref(ref)`."""

    def __init__(
        self, runtimes: Mapping[RuntimeKind, Runtime], grace_seconds: float = 10.0
    ) -> None:
        self._runtimes = dict(runtimes)
        self.grace_seconds = grace_seconds

    @classmethod
    def from_config(cls, config: RuntimeConfig) -> RuntimeSet:
        """Build every adapter the config enables (process and external always)."""
        runtimes: dict[RuntimeKind, Runtime] = {
            RuntimeKind.PROCESS: ProcessRuntime(kill_wait_seconds=config.kill_wait_seconds),
            RuntimeKind.EXTERNAL: ExternalRuntime(),
        }
        if config.docker_base_url:
            # Imported here so a deployment without Docker never loads the SDK.
            from cockpit.c2l.runtimes.docker_runtime import DockerRuntime

            runtimes[RuntimeKind.DOCKER] = DockerRuntime(
                config.docker_base_url, timeout_seconds=config.request_timeout_seconds
            )
        if config.kubernetes_host or config.kubeconfig_path:
            from cockpit.c2l.runtimes.k8s_runtime import KubernetesRuntime

            runtimes[RuntimeKind.KUBERNETES] = KubernetesRuntime(
                host=config.kubernetes_host,
                token=config.kubernetes_token,
                ca_cert_path=config.kubernetes_ca_cert_path,
                verify_ssl=config.kubernetes_verify_ssl,
                kubeconfig_path=config.kubeconfig_path,
                context=config.kubeconfig_context,
                request_timeout_seconds=config.request_timeout_seconds,
            )
        return cls(runtimes, grace_seconds=config.grace_seconds)

    def runtime_for(self, kind: RuntimeKind | str) -> Runtime:
        """The adapter for `kind`; raises `RuntimeNotConfigured`."""
        try:
            return self._runtimes[RuntimeKind(kind)]
        except (KeyError, ValueError) as exc:
            raise RuntimeNotConfigured(f"no runtime adapter configured for {kind!r}") from exc

    def for_ref(self, ref: RuntimeRef) -> Runtime:
        """The adapter that acts on `ref`."""
        return self.runtime_for(ref.kind)

    async def refuses(self, ref: RuntimeRef) -> str | None:
        """Why Cockpit must never act on `ref` (`Runtime.refuses`); None when it may
        or when no adapter acts on its kind here."""
        runtime = self._runtimes.get(ref.kind)
        return None if runtime is None else await runtime.refuses(ref)

    @property
    def kinds(self) -> frozenset[RuntimeKind]:
        """The kinds this set can act on."""
        return frozenset(self._runtimes)

    def close(self) -> None:
        """Close engine connections opened by the adapters."""
        for runtime in self._runtimes.values():
            close = getattr(runtime, "close", None)
            if close is not None:
                close()
