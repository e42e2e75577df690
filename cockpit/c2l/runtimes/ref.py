"""`RuntimeRef`: which runtime an agent lives in, and how to find it there.

The agent registry stores a ref as JSON (`to_dict` / `from_dict`); adapters only
read the fields of their own kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["InvalidRuntimeRef", "RuntimeKind", "RuntimeRef"]


class InvalidRuntimeRef(ValueError):
    """A ref that lacks the fields its kind needs, or was given to another kind."""


class RuntimeKind(StrEnum):
    """Where an agent runs."""

    PROCESS = "process"
    DOCKER = "docker"
    KUBERNETES = "kubernetes"
    EXTERNAL = "external"


@dataclass(frozen=True, slots=True, eq=True)
class RuntimeRef:
    """A pointer to one running agent.

    * process: `pid`, and `start_time` (clock ticks after boot, field 22 of
      /proc/<pid>/stat) so a recycled pid is never signalled by mistake.
    * docker: `container`, an id or a name.
    * kubernetes: `namespace`, `pod`, and the pod's `labels` (used to select it
      in a quarantine NetworkPolicy; read from the API when absent).
    * external: nothing; Cockpit has no runtime control over it.
    """

    kind: RuntimeKind
    pid: int | None = None
    start_time: int | None = None
    container: str | None = None
    namespace: str | None = None
    pod: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", RuntimeKind(self.kind))
        object.__setattr__(self, "labels", dict(self.labels))
        if self.kind is RuntimeKind.PROCESS and (self.pid is None or self.pid <= 0):
            raise InvalidRuntimeRef("a process ref needs a positive pid")
        if self.kind is RuntimeKind.DOCKER and not self.container:
            raise InvalidRuntimeRef("a docker ref needs a container id or name")
        if self.kind is RuntimeKind.KUBERNETES and not (self.namespace and self.pod):
            raise InvalidRuntimeRef("a kubernetes ref needs a namespace and a pod")

    @classmethod
    def process(cls, pid: int, start_time: int | None = None) -> RuntimeRef:
        """A process ref; prefer `process_ref(pid)`, which records the start time."""
        return cls(RuntimeKind.PROCESS, pid=pid, start_time=start_time)

    @classmethod
    def docker(cls, container: str) -> RuntimeRef:
        """A Docker container, by id or name."""
        return cls(RuntimeKind.DOCKER, container=container)

    @classmethod
    def kubernetes(
        cls, namespace: str, pod: str, labels: Mapping[str, str] | None = None
    ) -> RuntimeRef:
        """A Kubernetes pod."""
        return cls(RuntimeKind.KUBERNETES, namespace=namespace, pod=pod, labels=labels or {})

    @classmethod
    def external(cls) -> RuntimeRef:
        """An agent whose runtime Cockpit does not control."""
        return cls(RuntimeKind.EXTERNAL)

    def describe(self) -> str:
        """A short human-readable target name for logs and audit details."""
        match self.kind:
            case RuntimeKind.PROCESS:
                return f"process:{self.pid}"
            case RuntimeKind.DOCKER:
                return f"docker:{self.container}"
            case RuntimeKind.KUBERNETES:
                return f"kubernetes:{self.namespace}/{self.pod}"
            case _:
                return "external"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, only the fields that are set."""
        data: dict[str, Any] = {"kind": self.kind.value}
        for name in ("pid", "start_time", "container", "namespace", "pod"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.labels:
            data["labels"] = dict(self.labels)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuntimeRef:
        """Inverse of `to_dict`; raises `InvalidRuntimeRef` on bad input."""
        try:
            kind = RuntimeKind(data["kind"])
        except (KeyError, ValueError) as exc:
            raise InvalidRuntimeRef(f"unknown runtime kind in {dict(data)!r}") from exc
        return cls(
            kind,
            pid=data.get("pid"),
            start_time=data.get("start_time"),
            container=data.get("container"),
            namespace=data.get("namespace"),
            pod=data.get("pod"),
            labels=data.get("labels") or {},
        )
