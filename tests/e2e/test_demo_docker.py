"""``cockpit demo --runtime docker`` against the private Docker engine.

The error paths (no engine, no image, an image without Python and cockpit) each
end in one clear line and exit 2 before anything starts. With a real image
(built like tests/integration/deploy/test_image.py does: a debootstrapped base
with python3, then the repository's Dockerfile; cached after the first build),
the fleet runs as containers registered as ``{"kind": "docker"}``, TERMINATE of
an agent with children removes its containers and its descendants', and SIGINT
removes the rest.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service, services_dir_path
from tests.e2e.conftest import REPO_ROOT, free_port
from tests.e2e.test_demo import Api, clean_env, demo_command, wait_for

IMAGE = "cockpit:demo-e2e"
BASE = "cockpit-base:3.11"


def run_demo(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*demo_command(), "--port", str(free_port()), *args], cwd=REPO_ROOT, env=clean_env(),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def docker(host: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([shutil.which("docker") or "docker", "-H", host, *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def test_no_engine_is_one_clear_line(tmp_path: Path) -> None:
    result = run_demo("--runtime", "docker", "--docker-host", f"unix://{tmp_path}/nothing.sock", "--headless",
                      "--duration", "5", "--data-dir", str(tmp_path / "d"), timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cockpit demo: error: "), result.stderr
    assert f"no Docker engine at unix://{tmp_path}/nothing.sock" in lines[0] or "`docker` command-line client" in lines[0]
    assert not (tmp_path / "d" / "cockpit.db").exists()  # nothing started


def test_missing_image_says_how_to_build_one(docker_host: str, tmp_path: Path) -> None:
    result = run_demo("--runtime", "docker", "--docker-host", docker_host, "--image", "cockpit-demo/nope:none",
                      "--headless", "--duration", "5", "--data-dir", str(tmp_path), timeout=60)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "image 'cockpit-demo/nope:none' not found" in line
    assert "docker build" in line and "--image" in line


def test_image_without_python_is_refused(docker_host: str, tmp_path: Path) -> None:
    result = run_demo("--runtime", "docker", "--docker-host", docker_host, "--image", "cockpit-test/busybox:latest",
                      "--headless", "--duration", "5", "--data-dir", str(tmp_path), timeout=120)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "cannot run the demo agent" in line and "--image" in line, line


@pytest.fixture(scope="module")
def image() -> str:
    host = require_service("COCKPIT_TEST_DOCKER_HOST")  # fails under CI=true, skips otherwise
    env = {**os.environ, "DOCKER_HOST": host, "COCKPIT_SERVICES_DIR": str(services_dir_path())}
    base = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "build_base_image.sh"), BASE], env=env,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL, check=False)
    assert base.returncode == 0, base.stderr[-3000:]
    extra_ca = "".join(Path(p).read_text() for p in sorted(glob.glob("/usr/local/share/ca-certificates/**/*.crt",
                                                                     recursive=True)))
    log = services_dir_path() / "demo-image-build.log"
    with log.open("w") as fh:
        build = subprocess.run(
            [shutil.which("docker") or "docker", "build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE}",
             "--build-arg", f"PIP_EXTRA_CA={extra_ca}", "-t", IMAGE, str(REPO_ROOT)],
            env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=1200, stdin=subprocess.DEVNULL, check=False)
    assert build.returncode == 0, f"docker build failed (log {log}):\n{log.read_text()[-3000:]}"
    return IMAGE


@pytest.mark.timeout(1200)  # a cold image build (debootstrap + pip) takes minutes; warm, seconds
def test_fleet_as_containers_terminate_and_clean_exit(docker_host: str, image: str, tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*demo_command(), "--runtime", "docker", "--docker-host", docker_host, "--image", image,
             "--port", str(port), "--data-dir", str(data_dir)],
            cwd=REPO_ROOT, env=clean_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        key_file = data_dir / "operator.key"
        wait_for(lambda: key_file.is_file() and key_file.read_text().strip(), 240, "operator.key", log)
        api = Api(f"http://127.0.0.1:{port}", key_file.read_text().strip())

        def categories() -> Any:
            _, body = api.call("GET", "/verdicts?limit=200")
            found = {v["category"] for v in (body or {}).get("items", [])}
            return {"COLLUSION", "INCONSISTENCY", "DECEPTION"} <= found

        wait_for(categories, 60, "COLLUSION, INCONSISTENCY and DECEPTION", log)
        _, tree = api.call("GET", "/agents/golf/tree")
        subtree = [tree["agent"], *tree["descendants"]]
        assert all(a["runtime"]["kind"] == "docker" for a in subtree)
        containers = {a["agent_id"]: a["runtime"]["container"] for a in subtree}
        for name in containers.values():
            assert docker(docker_host, "inspect", "--format", "{{.State.Running}}", name).stdout.strip() == "true"

        status, receipt = api.call("POST", "/commands", {"command_type": "TERMINATE", "target_agents": ["golf"]})
        assert status == 202, receipt

        def finished() -> Any:
            _, command = api.call("GET", f"/commands/{receipt['command_id']}")
            return command if command["status"] in {"COMPLETED", "FAILED", "TIMEOUT"} else None

        command = wait_for(finished, 90, "TERMINATE to finish", log)
        assert command["status"] == "COMPLETED", command
        assert set(command["cascade_terminated"]) == set(containers) - {"golf"}
        for name in containers.values():
            assert docker(docker_host, "inspect", name).returncode != 0, f"{name} still exists"
        _, audits = api.call("GET", f"/audits?command_id={receipt['command_id']}&limit=500")
        layers: dict[str, set[str]] = {}
        for row in audits["items"]:
            layers.setdefault(row["agent_id"], set()).add(row["layer"])
        assert all({"software", "container"} <= layers.get(a, set()) for a in containers), layers

        process.send_signal(signal.SIGINT)
        assert process.wait(90) == 0, log.read_text()[-3000:]
        left = docker(docker_host, "ps", "-aq", "--filter", "label=cockpit-demo-agent").stdout.split()
        mine = [c for c in left if docker(docker_host, "inspect", "--format", "{{.Name}}", c).stdout.strip()
                .startswith(f"/cockpit-demo-{process.pid}")]
        assert not mine, f"containers left behind: {mine}"
        assert "none survive" in log.read_text()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        for c in docker(docker_host, "ps", "-aq", "--filter", "label=cockpit-demo-agent").stdout.split():
            if docker(docker_host, "inspect", "--format", "{{.Name}}", c).stdout.strip().startswith(
                    f"/cockpit-demo-{process.pid}"):
                docker(docker_host, "rm", "-f", c)
