"""Fixtures for the deployment tests: a real `cockpit serve` subprocess, the
Prometheus of scripts/services/prometheus.sh, and tools that must exist in CI.

A missing tool or service skips locally and fails under ``CI=true`` (the root
conftest's rule).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, in_ci

__all__ = ["REPO_ROOT", "CockpitServer", "free_port", "http_status", "need"]


def need(what: str, hint: str) -> None:
    """Skip locally, fail under CI: ``what`` is missing."""
    message = f"{what} is missing: {hint}"
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def need_env(var: str, service: str) -> str:
    value = os.environ.get(var, "").strip()
    if not value:
        need(var, f"run `bash scripts/services/{service}.sh install && bash scripts/services/{service}.sh start` "
                  f"(or add `{service}` to the services of scripts/test.sh)")
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(url: str, timeout: float = 5.0) -> int:
    """The HTTP status of GET ``url``, or 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


@dataclass
class CockpitServer:
    """A running ``python -m cockpit serve`` (logs in ``log``)."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@pytest.fixture
def cockpit_server(tmp_path: Path) -> Iterator[Callable[..., CockpitServer]]:
    """``cockpit_server(**env)`` starts Cockpit on a spare port with ``env`` on top of
    an embedded default (data in tmp_path) and waits until /health answers.
    Every server started is stopped (SIGTERM, then SIGKILL) at teardown."""
    started: list[CockpitServer] = []

    def start(timeout: float = 60.0, **extra_env: str) -> CockpitServer:
        port = free_port()
        data = tmp_path / f"data-{port}"
        data.mkdir()
        log = tmp_path / f"cockpit-{port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("COCKPIT_") or k.startswith("COCKPIT_TEST_")}
        env.update({"COCKPIT_DATA_DIR": str(data), "COCKPIT_LOG_JSON": "true"}, **extra_env)
        with log.open("wb") as fh:
            process = subprocess.Popen(
                [sys.executable, "-m", "cockpit", "serve", "--host", "127.0.0.1", "--port", str(port)],
                cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
            )
        server = CockpitServer(process, port, log)
        started.append(server)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"cockpit serve exited {process.returncode}:\n{server.log_tail()}")
            if http_status(f"{server.url}/health", timeout=2) in (200, 503):
                return server
            time.sleep(0.2)
        raise AssertionError(f"cockpit serve did not answer /health in {timeout}s:\n{server.log_tail()}")

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.terminate()
            try:
                server.process.wait(15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(10)


@pytest.fixture(scope="session")
def promtool() -> str:
    path = os.environ.get("COCKPIT_TEST_PROMTOOL") or shutil.which("promtool") or ""
    if not path or not os.access(path, os.X_OK):
        need("promtool", "bash scripts/services/prometheus.sh install (Debian's `prometheus` package)")
    return path


@pytest.fixture
def prometheus_url() -> str:
    return need_env("COCKPIT_TEST_PROMETHEUS_URL", "prometheus")


@pytest.fixture
def prometheus_targets_dir() -> Path:
    return Path(need_env("COCKPIT_TEST_PROMETHEUS_TARGETS_DIR", "prometheus"))
