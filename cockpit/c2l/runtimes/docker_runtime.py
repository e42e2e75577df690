"""`DockerRuntime`: agents in Docker containers, through the Docker SDK.

Every action re-inspects the engine afterwards and reports what it saw;
`docker.errors.NotFound` means the container is gone, which is a result.

Needs: access to the engine's API socket (`base_url`); the engine must allow
stop, kill, remove, pause/unpause, network disconnect/connect and commit.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container

from cockpit.c2l.runtimes.base import (
    Outcome,
    Runtime,
    RuntimeActionFailed,
    RuntimeState,
    RuntimeUnavailable,
)
from cockpit.c2l.runtimes.ref import RuntimeKind, RuntimeRef

__all__ = ["DockerRuntime", "own_container_id", "snapshot_image_name"]

_GONE = {"container_exists": False}

# The engine bind-mounts each container's /etc/hostname, /etc/hosts and
# /etc/resolv.conf from <data-root>/containers/<id>/ (cgroup v2 hides the id from
# /proc/self/cgroup inside the container; cgroup v1 and the systemd driver show it).
_MOUNTED_FROM = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)\s")
_CGROUP = re.compile(r"(?:/docker/|docker-)([0-9a-f]{64})")


def own_container_id(proc: Path = Path("/proc/self")) -> str | None:
    """The id of the Docker container this process runs in; None outside one."""
    for name, pattern in (("mountinfo", _MOUNTED_FROM), ("cgroup", _CGROUP)):
        try:
            text = (proc / name).read_text()
        except OSError:
            continue
        if match := pattern.search(text):
            return match.group(1)
    return None


def snapshot_image_name(
    container_name: str, at: datetime, repository: str = "cockpit-snapshot"
) -> str:
    """`cockpit-snapshot/<name>:<timestamp>`, made valid for Docker references."""
    name = re.sub(r"[^a-z0-9._-]+", "-", container_name.lstrip("/").lower()).strip("-._") or "agent"
    return f"{repository}/{name}:{at.strftime('%Y%m%dT%H%M%S%fZ')}"


class DockerRuntime(Runtime):
    """Acts on containers of one Docker engine."""

    kind = RuntimeKind.DOCKER

    def __init__(
        self,
        base_url: str,
        *,
        timeout_seconds: float = 30.0,
        logs_tail: int = 200,
        snapshot_repository: str = "cockpit-snapshot",
        own_container: str | None = None,
    ) -> None:
        self._base_url = base_url
        #: the container Cockpit runs in, never acted on (default: detected)
        self._own = own_container or own_container_id()
        self._timeout = timeout_seconds
        self._logs_tail = logs_tail
        self._repository = snapshot_repository
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        # Networks each quarantined container was on (by container id), so
        # release_network can reconnect it; lives as long as this runtime.
        self._quarantined: dict[str, dict[str, dict[str, Any]]] = {}

    def close(self) -> None:
        """Close the engine connection, if one was opened."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- plumbing -------------------------------------------------------------

    def _docker(self) -> docker.DockerClient:
        # Created on first use: the constructor already asks the engine its
        # API version, and nothing may connect at import or build time.
        with self._lock:
            if self._client is None:
                with _translated():
                    self._client = docker.DockerClient(
                        base_url=self._base_url, timeout=int(self._timeout), version="auto"
                    )
            return self._client

    def _get(self, ref: RuntimeRef) -> Container | None:
        with _translated():
            try:
                return self._docker().containers.get(ref.container)
            except docker.errors.NotFound:
                return None

    def _is_own(self, container: Container | None) -> bool:
        return container is not None and self._own is not None and container.id == self._own

    def _refuses(self, ref: RuntimeRef) -> str | None:
        return "Cockpit runs in it" if self._is_own(self._get(ref)) else None

    def _target(self, ref: RuntimeRef) -> Container | None:
        """The container to act on; raises `RuntimeUnavailable` for Cockpit's own
        (registration refuses it; a row may name it by a name given to it since)."""
        container = self._get(ref)
        if self._is_own(container):
            raise RuntimeUnavailable(f"refusing to act on container {ref.container}: Cockpit runs in it")
        return container

    # -- state ------------------------------------------------------------------

    def _check(self, ref: RuntimeRef) -> RuntimeState:
        container = self._get(ref)
        if container is None:
            return RuntimeState(exists=False, running=False, details=dict(_GONE))
        state = container.attrs["State"]
        return RuntimeState(
            exists=True,
            running=bool(state.get("Running")) and not state.get("Paused"),
            details={
                "id": container.id,
                "name": container.name,
                "status": state.get("Status"),
                "paused": state.get("Paused"),
                "exit_code": state.get("ExitCode"),
            },
        )

    def _verify_gone(self, ref: RuntimeRef) -> Outcome:
        container = self._get(ref)
        if container is None:
            return Outcome(True, dict(_GONE))
        return Outcome(
            False,
            {"container_exists": True, "status": container.status},
            reason="container still exists",
        )

    # -- termination --------------------------------------------------------------

    def _stop_gracefully(self, ref: RuntimeRef, grace_seconds: float) -> Outcome:
        container = self._target(ref)
        if container is None:
            return Outcome(True, dict(_GONE), {"already_gone": True})
        # The engine sends the image's StopSignal (SIGTERM), waits, then SIGKILLs.
        timeout = max(0, math.ceil(grace_seconds))
        with _translated():
            try:
                container.stop(timeout=timeout)
                container.reload()
            except docker.errors.NotFound:  # auto-removed on exit
                return Outcome(True, dict(_GONE), {"removed_on_exit": True})
        state = container.attrs["State"]
        exit_code = state.get("ExitCode")
        running = bool(state.get("Running"))
        return Outcome(
            not running,
            {"container_exists": True, "running": running, "exit_code": exit_code},
            # 137 = 128 + SIGKILL: the engine escalated because the grace ran out.
            {
                "grace_seconds": timeout,
                "escalated_to_sigkill": exit_code == 137 and not state.get("OOMKilled"),
            },
            "container still running after stop" if running else None,
        )

    def _force_kill(self, ref: RuntimeRef) -> Outcome:
        container = self._target(ref)
        if container is None:
            return Outcome(True, dict(_GONE), {"already_gone": True})
        details: dict[str, Any] = {"id": container.id, "name": container.name}
        with _translated():
            try:
                if container.status in ("running", "paused", "restarting"):
                    container.kill()
                    details["killed"] = True
            except docker.errors.NotFound:
                return Outcome(True, dict(_GONE), details)
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: it stopped on its own meanwhile
                    raise
            try:
                container.remove(force=True)
                details["removed"] = True
            except docker.errors.NotFound:
                pass
        gone = self._get(ref) is None
        return Outcome(
            gone,
            {"container_exists": not gone},
            details,
            None if gone else "container still exists after remove",
        )

    # -- network ----------------------------------------------------------------

    def _quarantine_network(self, ref: RuntimeRef) -> Outcome:
        container = self._target(ref)
        if container is None:
            return Outcome(True, {**_GONE, "networks": []}, {"already_gone": True})
        mode = container.attrs["HostConfig"].get("NetworkMode", "")
        if mode == "host" or mode.startswith("container:"):
            # No own network namespace: disconnecting cannot isolate it.
            return Outcome(
                False,
                {"container_exists": True, "network_mode": mode},
                reason=f"network mode {mode!r} shares another network namespace",
            )
        attached = _attached(container)
        remembered = self._quarantined.setdefault(container.id, {})
        with _translated():
            for name, endpoint in attached.items():
                remembered[name] = {"aliases": endpoint.get("Aliases") or []}
                try:
                    self._docker().api.disconnect_container_from_network(
                        container.id, name, force=True
                    )
                except docker.errors.NotFound:
                    pass  # the network or the endpoint went away on its own
            container.reload()
        remaining = sorted(_attached(container))
        running = bool(container.attrs["State"].get("Running"))
        return Outcome(
            not remaining,
            {"container_exists": True, "running": running, "networks": remaining},
            {"disconnected": sorted(attached), "network_mode": mode},
            None if not remaining else f"still attached to {remaining}",
        )

    def _release_network(self, ref: RuntimeRef) -> Outcome:
        container = self._get(ref)
        if container is None:
            return Outcome(False, dict(_GONE), reason="container gone")
        record = self._quarantined.pop(container.id, None)
        if record is None:
            return Outcome(
                False,
                {"networks": sorted(_attached(container))},
                reason="no quarantine record for this container in this runtime",
            )
        short_id = container.id[:12]
        with _translated():
            for name, saved in record.items():
                aliases = [a for a in saved["aliases"] if a != short_id] or None
                self._docker().api.connect_container_to_network(container.id, name, aliases=aliases)
            container.reload()
        networks = sorted(_attached(container))
        missing = sorted(set(record) - set(networks))
        return Outcome(
            not missing,
            {"container_exists": True, "networks": networks},
            {"reconnected": sorted(record)},
            f"not reconnected: {missing}" if missing else None,
        )

    # -- freeze -------------------------------------------------------------------

    def _freeze(self, ref: RuntimeRef) -> Outcome:
        return self._pause(ref, pause=True)

    def _unfreeze(self, ref: RuntimeRef) -> Outcome:
        return self._pause(ref, pause=False)

    def _pause(self, ref: RuntimeRef, pause: bool) -> Outcome:
        container = self._target(ref)
        if container is None:
            return Outcome(False, dict(_GONE), reason="container gone")
        with _translated():
            if bool(container.attrs["State"].get("Paused")) != pause:
                if pause:
                    container.pause()
                else:
                    container.unpause()
            container.reload()
        paused = bool(container.attrs["State"].get("Paused"))
        ok = paused == pause
        return Outcome(
            ok,
            {"container_exists": True, "paused": paused},
            reason=None if ok else f"paused={paused} after the request",
        )

    # -- snapshot -------------------------------------------------------------------

    def _snapshot(self, ref: RuntimeRef) -> tuple[dict[str, Any], dict[str, Any], str | None]:
        container = self._target(ref)
        if container is None:
            return {"container": ref.container, "exists": False}, {}, "container gone"
        image_name = snapshot_image_name(container.name, datetime.now(UTC), self._repository)
        repository, _, tag = image_name.rpartition(":")
        metadata: dict[str, Any] = {"container_id": container.id, "name": container.name}
        with _translated():
            logs = container.logs(tail=self._logs_tail, timestamps=True).decode(errors="replace")
            reason = None
            image: dict[str, Any] | None = None
            try:
                committed = container.commit(
                    repository=repository, tag=tag, message="cockpit snapshot"
                )
                # Verify the engine now has the image under that name.
                image = {"ref": image_name, "id": self._docker().images.get(image_name).id}
                metadata["image"], metadata["image_id"] = image_name, committed.id
            except docker.errors.APIError as exc:
                reason = f"image commit failed: {exc.explanation or exc}"
        document = {"runtime": "docker", "inspect": container.attrs, "logs": logs, "image": image}
        return document, metadata, reason


def _attached(container: Container) -> dict[str, dict[str, Any]]:
    """Networks the container is attached to; `none` is no network at all."""
    networks = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
    return {name: endpoint or {} for name, endpoint in networks.items() if name != "none"}


@contextmanager
def _translated() -> Iterator[None]:
    """SDK and transport errors -> the port's errors (NotFound is handled by callers)."""
    try:
        yield
    except docker.errors.NotFound as exc:
        # Callers handle NotFound where "gone" is the answer; anywhere else the
        # container vanished mid-action.
        raise RuntimeActionFailed(f"docker: container vanished during the action: {exc}") from exc
    except docker.errors.APIError as exc:
        raise RuntimeActionFailed(f"docker: {exc.explanation or exc}") from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise RuntimeUnavailable(f"docker engine unreachable: {exc}") from exc
