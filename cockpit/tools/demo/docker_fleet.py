"""The demo's agents as containers on a local Docker engine, through the ``docker``
CLI (only ``cockpit.c2l.runtimes`` may import the Docker SDK).

Every container gets the label ``cockpit-demo=<run>`` and the host's network (the
agent reaches Cockpit on its loopback address); the demo registers each one
(``{"kind": "docker", "container": <name>}``, parent first) and hands it its
token; Cockpit's kill switch reaches the same engine (``COCKPIT_C2L__DOCKER_URL``).
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cockpit.tools.demo.fleet import FleetStopReport
from cockpit.tools.demo.scenario import Plan

__all__ = ["DemoDockerError", "DockerFleet", "build_hint"]


def build_hint(image: str) -> str:
    return (f"build one from this repository (`docker build -t {image} .`; without a registry: "
            f"`bash scripts/build_base_image.sh` then `docker build --build-arg "
            f"BASE_IMAGE=cockpit-base:3.11 --network host -t {image} .`) and pass --image {image}")


class DemoDockerError(RuntimeError):
    """The engine, the CLI or the image is missing; the message is one clear line."""


@dataclass
class DockerFleet:
    """Runs and removes the plan's agents as containers."""

    plan: Plan
    url: str
    docker_host: str
    image: str
    run_label: str
    network: str = "host"
    #: host directory shared as the containers' bytecode cache (PYTHONPYCACHEPREFIX):
    #: an image without .pyc files would otherwise compile cockpit in every
    #: container (seconds of CPU each), and the fleet would start late
    pycache: Path | None = None
    #: where each container's output is kept (``<agent>.log``) before it is removed
    log_dir: Path | None = None

    def _cache_args(self) -> list[str]:
        if self.pycache is None:
            return []
        return ["-v", f"{self.pycache}:/pycache", "-e", "PYTHONPYCACHEPREFIX=/pycache",
                "-e", "PYTHONDONTWRITEBYTECODE="]

    def _docker(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cli = shutil.which("docker")
        if cli is None:
            raise DemoDockerError("--runtime docker needs the `docker` command-line client on PATH")
        try:
            return subprocess.run([cli, "-H", self.docker_host, *args], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise DemoDockerError(f"the Docker engine at {self.docker_host} did not answer "
                                  f"`docker {args[0]}` within {timeout:.0f}s") from None

    def check(self) -> None:
        """Engine reachable, image present, and the image runs the demo agent (which
        also fills the bytecode cache)."""
        version = self._docker("version", "--format", "{{.Server.Version}}", timeout=20)
        if version.returncode != 0:
            reason = (version.stderr.strip().splitlines() or ["no answer"])[-1]
            raise DemoDockerError(f"no Docker engine at {self.docker_host} ({reason}); "
                                  f"start one or pass --docker-host / set DOCKER_HOST")
        if self._docker("image", "inspect", self.image, timeout=20).returncode != 0:
            raise DemoDockerError(f"image {self.image!r} not found on the engine at {self.docker_host}: "
                                  f"the agents need an image with Python and cockpit; {build_hint(self.image)}")
        if self.pycache is not None:
            self.pycache.mkdir(parents=True, exist_ok=True)
            self.pycache.chmod(0o777)  # the image's user writes the cache once, for all
        probe = self._docker("run", "--rm", "--network", "none", *self._cache_args(), "--entrypoint", "python3",
                             self.image, "-c", "import cockpit.tools.demo.agent", timeout=180)
        if probe.returncode != 0:
            reason = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]
            raise DemoDockerError(f"image {self.image!r} cannot run the demo agent "
                                  f"(python3 -c 'import cockpit.tools.demo.agent': {reason[:160]}); "
                                  f"{build_hint(self.image)}")

    def container(self, agent_id: str) -> str:
        return f"cockpit-demo-{self.run_label}-{agent_id}"

    def launch(self, tokens: dict[str, str]) -> list[str]:
        """Start every (already registered) agent's container, in parallel."""

        def start(agent: dict[str, Any]) -> str:
            name = self.container(agent["id"])
            result = self._docker(
                "run", "-d", "--name", name, "--label", f"cockpit-demo={self.run_label}",
                "--label", f"cockpit-demo-agent={agent['id']}",
                "--network", self.network, *self._cache_args(), "--entrypoint", "python3",
                "-e", f"COCKPIT_DEMO_TOKEN={tokens[agent['id']]}", "-e", f"COCKPIT_DEMO_PLAN={self.plan.to_json()}",
                "-e", "PYTHONUNBUFFERED=1", self.image,
                "-m", "cockpit.tools.demo.agent", "--url", self.url, "--agent-id", agent["id"],
                "--no-spawn",
            )
            if result.returncode != 0:
                raise DemoDockerError(f"docker run {name} failed: {result.stderr.strip()[:200]}")
            return name

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(start, self.plan.agents))

    def _ours(self) -> list[str]:
        listed = self._docker("ps", "-aq", "--filter", f"label=cockpit-demo={self.run_label}")
        return listed.stdout.split() if listed.returncode == 0 else []

    def watch(self) -> int:
        listed = self._docker("ps", "-q", "--filter", f"label=cockpit-demo={self.run_label}")
        return len(listed.stdout.split()) if listed.returncode == 0 else 0

    def _keep_log(self, container_id: str) -> None:
        name = self._docker("inspect", "--format", "{{index .Config.Labels \"cockpit-demo-agent\"}}",
                            container_id).stdout.strip() or container_id
        logs = self._docker("logs", container_id)
        if self.log_dir is not None and logs.returncode == 0:
            (self.log_dir / f"{name}.log").write_text(logs.stdout + logs.stderr)

    def stop(self, grace_seconds: float = 6.0) -> FleetStopReport:
        """``docker stop`` (SIGTERM, then SIGKILL after the grace), remove, verify."""
        report = FleetStopReport(unit="containers")
        ids = self._ours()
        running = self._docker("ps", "-q", "--filter", f"label=cockpit-demo={self.run_label}").stdout.split()
        report.stopped = len(running)
        if running:
            self._docker("stop", "-t", str(int(grace_seconds)), *running, timeout=grace_seconds + 60)
        if self.log_dir is not None and ids:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(self._keep_log, ids))
        if ids:
            self._docker("rm", "-f", *ids, timeout=60)
        report.survivors = self._ours()
        return report
