"""The Dockerfile, built and run on a real Docker engine: the container becomes
healthy by its own HEALTHCHECK, answers GET /health with 200, runs as a non-root
user, and `cockpit migrate` works as a one-shot on the /data volume.

No registry is reachable here, so the base image is a debootstrapped Debian
bookworm with python3 imported by scripts/build_base_image.sh (built once per
machine, cached under the services dir); pip reaches PyPI through the host
network during the build.  Measured here: cold (debootstrap + every wheel from
PyPI) 2-5 min depending on the network; warm (only cockpit/ changed) ~20 s.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import services_dir_path
from tests.integration.deploy.conftest import REPO_ROOT, free_port

# needs COCKPIT_TEST_DOCKER_HOST (skip locally, fail in CI); a cold build (debootstrap + every
# wheel from PyPI) takes 2-5 min, counted in the first test's timeout.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1200)]

BASE = "cockpit-base:3.11"
IMAGE = "cockpit:image-test"


def _docker_cli() -> str:
    # Debian's client matches Debian's engine (as scripts/services/docker.sh does).
    return shutil.which("/usr/bin/docker") or shutil.which("docker") or "docker"


@pytest.fixture(scope="module")
def docker_env() -> dict[str, str]:
    host = os.environ.get("COCKPIT_TEST_DOCKER_HOST", "")
    return {**os.environ, "DOCKER_HOST": host, "COCKPIT_SERVICES_DIR": str(services_dir_path())}


def _docker(env: dict[str, str], *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([_docker_cli(), *args], check=False, env=env, capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])}... exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def image(docker_env: dict[str, str]) -> str:
    started = time.monotonic()
    base = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "build_base_image.sh"), BASE], check=False, env=docker_env,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert base.returncode == 0, base.stderr[-3000:]
    # A TLS-intercepting egress proxy's CA, if the host trusts one (Debian's local CA dir).
    extra_ca = "".join(Path(p).read_text() for p in sorted(glob.glob("/usr/local/share/ca-certificates/**/*.crt",
                                                                     recursive=True)))
    log = services_dir_path() / "image-test-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        build = subprocess.run(
            [_docker_cli(), "build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE}",
             "--build-arg", f"PIP_EXTRA_CA={extra_ca}", "-t", IMAGE, str(REPO_ROOT)],
            check=False, env=docker_env, stdout=fh, stderr=subprocess.STDOUT, timeout=1200, stdin=subprocess.DEVNULL)
    assert build.returncode == 0, f"docker build failed (log {log}):\n{log.read_text()[-4000:]}"
    print(f"base + image ready in {time.monotonic() - started:.0f}s")
    return IMAGE


@pytest.fixture
def container(docker_env: dict[str, str], image: str) -> Iterator[tuple[str, int]]:
    name = f"cockpit-image-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    _docker(docker_env, "run", "-d", "--name", name, "--network", "host",
            "-e", f"COCKPIT_GATEWAY__PORT={port}", "-e", "COCKPIT_GATEWAY__HOST=127.0.0.1", image)
    try:
        yield name, port
    finally:
        _docker(docker_env, "rm", "-f", name, check=False)


def test_image_is_healthy_non_root_and_serves_health(docker_env: dict[str, str], container: tuple[str, int]) -> None:
    name, port = container
    deadline = time.monotonic() + 120
    state: dict = {}
    while time.monotonic() < deadline:
        state = json.loads(_docker(docker_env, "inspect", "-f", "{{json .State}}", name).stdout)
        if not state.get("Running") or (state.get("Health") or {}).get("Status") == "healthy":
            break
        time.sleep(1)
    logs = _docker(docker_env, "logs", "--tail", "30", name, check=False)
    assert state.get("Health", {}).get("Status") == "healthy", f"{state}\n{logs.stdout}{logs.stderr}"

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
        assert resp.status == 200
        assert json.load(resp)["services"] == ["narrative-filter", "verdict-engine", "command-bus"]

    uid = _docker(docker_env, "exec", name, "id", "-u").stdout.strip()
    assert uid == "10001"
    config = json.loads(_docker(docker_env, "inspect", "-f", "{{json .Config}}", name).stdout)
    assert config["User"] == "10001:10001" and "/data" in config["Volumes"]
    assert "COCKPIT_DATA_DIR=/data" in config["Env"]
    # The embedded SQLite file lives on the volume.
    assert "cockpit.db" in _docker(docker_env, "exec", name, "ls", "/data").stdout.split()


def test_migrate_runs_as_a_one_shot(docker_env: dict[str, str], image: str) -> None:
    volume = f"cockpit-image-test-{uuid.uuid4().hex[:8]}"
    try:
        result = _docker(docker_env, "run", "--rm", "--network", "none", "-v", f"{volume}:/data", image, "migrate")
        assert "database at revision head" in result.stdout
        # The build toolchain and the build-time CA stay out of the runtime image.
        probe = _docker(docker_env, "run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-c",
                        "import importlib.util as u, os; print(u.find_spec('pip') is None, "
                        "os.path.exists('/opt/pip-ca.pem'), os.path.exists('/opt/cockpit/pip.conf'))")
        assert probe.stdout.split() == ["True", "False", "False"]
    finally:
        _docker(docker_env, "volume", "rm", "-f", volume, check=False)


def test_cockpit_in_a_container_never_stops_its_own(docker_env: dict[str, str], image: str) -> None:
    """Cockpit in a container, given the engine's socket: its own container cannot be
    registered (found from inside, by name or short id), and a stored agent whose
    container name later names Cockpit's own is not stopped: its TERMINATE fails and
    says why, and Cockpit keeps serving. A sibling container is stopped as usual."""
    socket_path = docker_env["DOCKER_HOST"].removeprefix("unix://")
    tag = uuid.uuid4().hex[:8]
    name, sibling = f"cockpit-image-test-{tag}", f"cockpit-image-sibling-{tag}"
    port = free_port()
    _docker(docker_env, "run", "-d", "--name", sibling, "--network", "none", "cockpit-test/busybox:latest",
            "sleep", "600")
    _docker(docker_env, "run", "-d", "--name", name, "--network", "host", "--user", "0:0",
            "-v", f"{socket_path}:/var/run/docker.sock", "-e", "COCKPIT_C2L__DOCKER_URL=unix:///var/run/docker.sock",
            "-e", "COCKPIT_C2L__GRACE_SECONDS=1",
            "-e", f"COCKPIT_GATEWAY__PORT={port}", "-e", "COCKPIT_GATEWAY__HOST=127.0.0.1", image)
    try:
        created = _docker(docker_env, "exec", name, "cockpit", "apikey", "create", "--role", "CHIEF_ARCHITECT",
                          "--name", "test").stdout
        key = next(line.split()[1] for line in created.splitlines() if line.startswith("key:"))
        own_id = _docker(docker_env, "inspect", "-f", "{{.Id}}", name).stdout.strip()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, _docker(docker_env, "logs", name, check=False).stderr[-3000:]
                time.sleep(0.5)

            for ref in (name, own_id[:12], own_id):
                r = client.post("/agents", json={"agent_id": f"self-{ref[:12]}", "name": "self",
                                                 "runtime": {"kind": "docker", "container": ref}})
                assert r.status_code == 422, r.text
                assert r.json()["detail"] == f"container {ref} cannot be an agent: Cockpit runs in it"

            # Registered while the name was a sibling's; then the name passes to Cockpit's.
            r = client.post("/agents", json={"agent_id": "renamed", "name": "renamed",
                                             "runtime": {"kind": "docker", "container": sibling}})
            assert r.status_code == 201, r.text
            _docker(docker_env, "rename", sibling, f"{sibling}-old")
            _docker(docker_env, "rename", name, sibling)
            failed = _terminate(client, "renamed")
            assert failed["status"] == "FAILED", failed
            assert f"refusing to act on container {sibling}: Cockpit runs in it" in json.dumps(failed)
            assert client.get("/health").status_code == 200
            assert json.loads(_docker(docker_env, "inspect", "-f", "{{json .State}}", own_id).stdout)["Running"]

            # The sibling itself, under its new name, is stopped and removed.
            r = client.post("/agents", json={"agent_id": "sibling", "name": "sibling",
                                             "runtime": {"kind": "docker", "container": f"{sibling}-old"}})
            assert r.status_code == 201, r.text
            done = _terminate(client, "sibling")
            assert done["status"] == "COMPLETED", done
            assert _docker(docker_env, "inspect", f"{sibling}-old", check=False).returncode != 0
    finally:
        for container in (name, sibling, f"{sibling}-old"):
            _docker(docker_env, "rm", "-f", container, check=False)


def _terminate(client: httpx.Client, agent_id: str) -> dict:
    r = client.post("/commands", json={"command_type": "TERMINATE", "target_agents": [agent_id],
                                       "parameters": {"grace_seconds": 1}})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 90
    while True:
        command = client.get(f"/commands/{r.json()['command_id']}").json()
        if command["status"] in {"COMPLETED", "FAILED"}:
            return command  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, command
        time.sleep(0.3)
