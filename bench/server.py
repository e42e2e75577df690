"""Start a real ``cockpit serve`` in its own process for benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["Server", "backend_env", "free_port", "start_server", "wait_healthy"]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    key: str
    data_dir: Path
    env: dict[str, str]

    def create_key(self, role: str, name: str) -> str:
        """Another API key, made with ``cockpit apikey create`` on the same database."""
        return _create_key(self.env, role, name)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _create_key(env: dict[str, str], role: str, name: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "cockpit", "apikey", "create", "--role", role, "--name", name],
        env=env, check=True, capture_output=True, text=True,
    ).stdout
    return next(line.split()[1] for line in out.splitlines() if line.startswith("key:"))


def add_backend_args(parser: Any) -> None:
    """``--database-url``, ``--nats-url`` and ``--kafka-url`` (embedded where absent)."""
    for flag in ("--database-url", "--nats-url", "--kafka-url"):
        parser.add_argument(flag)


def backend_env(args: Any) -> dict[str, str]:
    """The server's environment for the ``--database-url``, ``--nats-url`` and
    ``--kafka-url`` a benchmark was given (embedded where one is absent)."""
    pairs = (("database_url", "COCKPIT_DATABASE_URL"), ("nats_url", "COCKPIT_NATS_URL"),
             ("kafka_url", "COCKPIT_KAFKA_URL"))
    return {var: value for attr, var in pairs if (value := getattr(args, attr, None))}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(extra_env: dict[str, str] | None = None, role: str = "CHIEF_ARCHITECT") -> Server:
    """A fresh Cockpit (embedded unless ``extra_env`` says otherwise) and an API key."""
    data_dir = Path(tempfile.mkdtemp(prefix="cockpit-bench-"))
    port = free_port()
    env = {**os.environ, "COCKPIT_DATA_DIR": str(data_dir), "COCKPIT_LOG_LEVEL": "WARNING",
           "COCKPIT_AUTO_MIGRATE": "true", **(extra_env or {})}
    subprocess.run([sys.executable, "-m", "cockpit", "migrate"], env=env, check=True, capture_output=True)
    key = _create_key(env, role, "bench")
    log = open(data_dir / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(
        [sys.executable, "-m", "cockpit", "serve", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    wait_healthy(process, base_url, data_dir / "server.log")
    return Server(process, base_url, key, data_dir, env)


def wait_healthy(process: subprocess.Popen[bytes], base_url: str, log: Path | None = None,
                 timeout: float = 60) -> None:
    """Wait until ``GET /health`` answers 200; raises if the process exits first (with
    the end of its ``log``) or ``timeout`` passes (the process is killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(base_url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:] if log else process.returncode}")
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not become healthy")
