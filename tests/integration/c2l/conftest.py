"""Fixtures for the runtime adapter tests: real processes, a real Docker engine,
and the fake Kubernetes API server.

The Docker engine comes from `scripts/services/docker.sh start`, which exports
COCKPIT_TEST_DOCKER_HOST (read by the root conftest's `docker_host` fixture)
and COCKPIT_TEST_DOCKER_NETWORK. Without them the docker tests skip locally and
fail under CI=true.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from cockpit.c2l import C2L, build_c2l
from cockpit.events import CommandConfirmed
from cockpit.platform.bus import Channel, EventBus, build_bus
from cockpit.platform.db import Database
from cockpit.platform.metrics import Metrics
from cockpit.settings import C2LSettings
from tests.conftest import in_ci, schema_database, sqlite_url
from tests.fakes.k8s_api import FakeKubernetesAPI

TEST_IMAGE = "cockpit-test/busybox:latest"


# -- processes ----------------------------------------------------------------------


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `python -c <code>` children; any still alive at teardown is killed by pid."""
    children: list[subprocess.Popen[str]] = []

    def _spawn(
        code: str,
        *,
        new_session: bool = False,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=new_session,
            env={**os.environ, **(env or {})},
        )
        children.append(child)
        return child

    yield _spawn
    for child in children:
        if child.poll() is None:
            # Kill the whole group when the child leads one, so grandchildren
            # of a failed test do not outlive it.
            try:
                if os.getpgid(child.pid) == child.pid:
                    os.killpg(child.pid, signal.SIGKILL)
                else:
                    child.kill()
            except ProcessLookupError:
                pass
            child.wait(timeout=5)
        if child.stdout:
            child.stdout.close()


AGENT = """
import signal, sys, time
if sys.argv[1] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def agent_process(spawn: Callable[..., subprocess.Popen[str]]) -> Callable[..., subprocess.Popen[str]]:
    """Start a real agent process (its own session), ready when returned; every one is
    killed at the end. ``mode="ignore-term"``: it ignores SIGTERM."""

    def start(mode: str = "honour-term") -> subprocess.Popen[str]:
        proc = spawn(AGENT, new_session=True, args=(mode,))
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    return start


# -- docker -------------------------------------------------------------------------


@pytest.fixture
def docker_client(docker_host: str) -> Iterator[Any]:
    """A plain SDK client for arranging and inspecting, independent of the adapter."""
    import docker

    client = docker.DockerClient(base_url=docker_host, version="auto")
    yield client
    client.close()


@pytest.fixture
def docker_network() -> str:
    """The attachable test network created by docker.sh (needed for isolation proofs)."""
    network = os.environ.get("COCKPIT_TEST_DOCKER_NETWORK")
    if not network:
        message = "COCKPIT_TEST_DOCKER_NETWORK is not set: docker.sh created no attachable network"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return network


@pytest.fixture
def docker_runtime(docker_host: str) -> Iterator[Any]:
    from cockpit.c2l.runtimes.docker_runtime import DockerRuntime

    runtime = DockerRuntime(docker_host, timeout_seconds=30)
    yield runtime
    runtime.close()


@pytest.fixture
def run_container(docker_client: Any) -> Iterator[Callable[..., Any]]:
    """Run a detached busybox container; removes it and its snapshot images afterwards."""
    import docker.errors

    names: list[str] = []

    def _run(command: str, *, network: str | None = None, **kwargs: Any) -> Any:
        name = f"cockpit-test-{uuid.uuid4().hex[:10]}"
        names.append(name)
        return docker_client.containers.run(
            TEST_IMAGE,
            ["sh", "-c", command],
            name=name,
            detach=True,
            network=network or "none",
            labels={"cockpit-test": "1"},
            **kwargs,
        )

    yield _run
    for name in names:
        try:
            docker_client.containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
        for image in docker_client.images.list(name=f"cockpit-snapshot/{name}"):
            docker_client.images.remove(image.id, force=True)


# -- kubernetes -----------------------------------------------------------------------


@pytest.fixture
def k8s_api() -> Iterator[FakeKubernetesAPI]:
    """The fake API server, requiring bearer token `test-token`."""
    with FakeKubernetesAPI(token="test-token") as api:
        yield api


@pytest.fixture
def k8s_runtime(k8s_api: FakeKubernetesAPI) -> Iterator[Any]:
    from cockpit.c2l.runtimes.k8s_runtime import KubernetesRuntime

    runtime = KubernetesRuntime(
        host=k8s_api.url,
        token="test-token",
        settle_seconds=1.0,
        poll_interval_seconds=0.02,
        request_timeout_seconds=5,
    )
    yield runtime
    runtime.close()


# -- a C2L context on SQLite or PostgreSQL ------------------------------------------------


@dataclass
class Harness:
    c2l: C2L
    db: Database
    bus: EventBus
    metrics: Metrics
    confirmations: list[CommandConfirmed] = field(default_factory=list)

    def counter(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    async def submit(self, body: dict[str, Any], operator: str = "alice", *, totp: bool = False,
                     otp_ok: bool = False) -> tuple[dict[str, Any], bool]:
        return await self.c2l.submit_command(operator, body, operator_has_totp=totp, otp_ok=otp_ok)

    async def count(self, model: Any, *where: Any) -> int:
        async with self.db.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


Factory = Callable[..., Awaitable[Harness]]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return sqlite_url(tmp_path, "c2l.db")


@pytest.fixture
async def make(db_url: str) -> AsyncIterator[Factory]:
    """Build C2L instances (replicas) sharing one database."""
    async with schema_database(db_url) as db:
        built: list[Harness] = []

        async def factory(nats_url: str | None = None, instance_id: str = "test-instance",
                          **settings: Any) -> Harness:
            bus = build_bus(nats_url, None, instance_id=instance_id)
            metrics = Metrics()
            c2l = build_c2l(db, bus, metrics, C2LSettings(grace_seconds=0.5,
                                                          recovery_interval_seconds=0.1, **settings),
                            instance_id=instance_id)
            h = Harness(c2l, db, bus, metrics)

            async def confirmed(event: CommandConfirmed) -> None:
                h.confirmations.append(event)

            c2l.register()
            bus.subscribe(Channel.CONFIRMATIONS, CommandConfirmed, confirmed, shared=False)
            await bus.start()
            await c2l.start()
            built.append(h)
            return h

        yield factory
        for h in built:
            await h.c2l.stop()
            await h.bus.stop()
