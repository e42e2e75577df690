"""Cockpit as a real ``python -m cockpit serve`` subprocess, for fault injection.

:class:`CockpitProcess` starts the server with a given environment (database, brokers,
data dir, instance id, port), logs to a file (never a pipe: a full pipe would block
the server), waits for ``/health``, creates API keys through the real CLI, and can be
SIGKILLed and restarted with the very same settings. The ``cockpit_process`` fixture
builds them and kills whatever is left at the end of the test.

Also here: target processes for the kill switch, ``/proc`` checks, a Prometheus text
parser and small polling helpers shared by the fault tests.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cockpit.platform.db import migrate
from cockpit.settings import Settings
from tests.conftest import REPO_ROOT
from tests.integration.gateway.conftest import free_port

FINAL = {"COMPLETED", "FAILED", "TIMEOUT"}

#: A target agent: prints ``ready``, then idles; ``ignore-term`` makes it ignore SIGTERM.
AGENT = (
    "import signal, sys, time\n"
    "if sys.argv[1:] == ['ignore-term']: signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\nwhile True: time.sleep(0.05)\n"
)


@dataclass
class CockpitProcess:
    """One ``cockpit serve`` replica running as a real OS process."""

    env: dict[str, str]
    port: int
    log_path: Path
    name: str = "cockpit"
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    #: a CHIEF_ARCHITECT key made through the CLI when the fixture started it
    key: str = ""
    _log_handle: Any = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cli(self, *args: str, timeout: float = 60) -> str:
        """Run ``python -m cockpit <args>`` with this replica's environment."""
        done = subprocess.run(
            [sys.executable, "-m", "cockpit", *args], env=self.env, cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"cockpit {' '.join(args)} exited {done.returncode}:\n"
                               f"{done.stdout}\n{done.stderr}")
        return done.stdout

    def create_key(self, role: str = "CHIEF_ARCHITECT", name: str = "fault-operator") -> str:
        """A new API key through ``cockpit apikey create`` (the ``key:`` line)."""
        out = self.cli("apikey", "create", "--role", role, "--name", name)
        match = re.search(r"^key:\s+(\S+)\s*$", out, re.MULTILINE)
        assert match, f"no key line in: {out!r}"
        return match.group(1)

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until ``/health`` answers 200."""
        self.launch()
        self.wait_healthy(timeout)

    def launch(self) -> None:
        """Start the server process (without waiting for it)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self._log_handle = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        self._log_handle.write(f"\n===== start #{self.starts} =====\n".encode())
        self._log_handle.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cockpit", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
            stdout=self._log_handle, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Wait until ``/health`` answers 200 (fails early if the process exits)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode} during start:\n{self.log_tail()}")
            try:
                r = httpx.get(f"{self.base_url}/health", timeout=2)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:300]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not healthy after {timeout}s ({last}):\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, in-flight work is cut where it stands."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._reap()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (graceful), SIGKILL after ``timeout``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._reap()

    def restart(self, timeout: float = 60.0) -> None:
        self.kill()
        self.start(timeout)

    def _reap(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def cockpit_env(data_dir: Path, *, instance_id: str, database_url: str | None = None,
                nats_url: str | None = None, kafka_url: str | None = None,
                **extra: str) -> dict[str, str]:
    """The environment of one replica: only the given bindings, nothing inherited that
    could change them (a developer's own ``COCKPIT_*`` variables are dropped)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCKPIT_")}
    env.update({
        "COCKPIT_DATA_DIR": str(data_dir),
        "COCKPIT_INSTANCE_ID": instance_id,
        "COCKPIT_LOG_LEVEL": "INFO",
        "COCKPIT_LOG_JSON": "true",
        "PYTHONUNBUFFERED": "1",
    })
    if database_url:
        env["COCKPIT_DATABASE_URL"] = database_url
    if nats_url:
        env["COCKPIT_NATS_URL"] = nats_url
    if kafka_url:
        env["COCKPIT_KAFKA_URL"] = kafka_url
    env.update(extra)
    return env


def cockpit_env_settings(env: dict[str, str]) -> Settings:
    """The settings a replica with ``env`` reads (for its effective database URL)."""
    return Settings(database_url=env.get("COCKPIT_DATABASE_URL"), data_dir=Path(env["COCKPIT_DATA_DIR"]))


@pytest.fixture
def cockpit_process(tmp_path: Path) -> Iterator[Callable[..., CockpitProcess]]:
    """``cockpit_process(name, **env)`` -> a started :class:`CockpitProcess`.

    Keyword arguments go to :func:`cockpit_env` (``database_url``, ``nats_url``,
    ``kafka_url``, any ``COCKPIT_*`` extra). With PostgreSQL the schema is migrated
    once (what ``cockpit migrate`` does) before the first replica starts. A started
    replica carries a CHIEF_ARCHITECT key made with ``cockpit apikey create`` (``.key``). Every replica
    still running at the end is killed; its log stays in ``tmp_path``.
    """
    started: list[CockpitProcess] = []
    migrated: set[str] = set()

    def make(name: str = "cockpit", *, start: bool = True, data_dir: Path | None = None,
             **kwargs: Any) -> CockpitProcess:
        data = data_dir or tmp_path / f"data-{name}"
        data.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("instance_id", f"fault-{name}")
        env = cockpit_env(data, **kwargs)
        replica = CockpitProcess(env=env, port=free_port(), log_path=tmp_path / f"{name}.log", name=name)
        url = kwargs.get("database_url")
        if url and url not in migrated:
            # What `cockpit migrate` does, in this process (it has the code loaded); in
            # a thread, as alembic runs its own event loop and tests call this from theirs.
            with ThreadPoolExecutor(1) as pool:
                pool.submit(migrate, cockpit_env_settings(env).effective_database_url).result()
            migrated.add(url)
        started.append(replica)
        if start:
            replica.launch()
            if url:  # migrated already: the key can be made while the server boots
                replica.key = replica.create_key()
            replica.wait_healthy()
            if not url:  # SQLite: after the server's own migration, never racing it
                replica.key = replica.create_key()
        return replica

    yield make
    for replica in started:
        replica.kill()


# --------------------------------------------------------------------------- targets


@pytest.fixture
def target_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Target agents started by the test; killed (if still alive) at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(5)


def spawn_target(procs: list[subprocess.Popen[bytes]], *args: str) -> subprocess.Popen[bytes]:
    """A real process to act on (``"ignore-term"`` makes it ignore SIGTERM)."""
    p = subprocess.Popen([sys.executable, "-c", AGENT, *args], stdout=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    assert p.stdout is not None and p.stdout.readline() == b"ready\n"
    procs.append(p)
    return p


# --------------------------------------------------------------------------- HTTP helpers


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of metric ``name`` in Prometheus text: ``[(labels, value), ...]``."""
    out = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) != name:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        out.append((labels, float(match.group(3))))
    return out


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for lab, v in metric_samples(text, name) if all(lab.get(k) == w for k, w in labels.items()))


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float, what: str,
                     interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy (returned) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def headers(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def register_agent(client: httpx.AsyncClient, key: str, agent_id: str,
                         runtime: dict[str, Any] | None = None, fleet_id: str = "default") -> None:
    r = await client.post("/agents", headers=headers(key), json={
        "agent_id": agent_id, "name": agent_id, "fleet_id": fleet_id,
        "runtime": runtime or {"kind": "external"}})
    assert r.status_code == 201, r.text


async def command_state(client: httpx.AsyncClient, key: str, command_id: str) -> dict[str, Any]:
    r = await client.get(f"/commands/{command_id}", headers=headers(key))
    assert r.status_code == 200, r.text
    return r.json()


async def wait_final(client: httpx.AsyncClient, key: str, command_id: str,
                     timeout: float = 30.0) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        state = await command_state(client, key, command_id)
        return state if state["status"] in FINAL else None
    return await eventually(final, timeout, f"command {command_id} to finish")


async def audits_of(client: httpx.AsyncClient, key: str, command_id: str) -> list[dict[str, Any]]:
    r = await client.get("/audits", params={"command_id": command_id, "limit": 1000}, headers=headers(key))
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def pg_rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of ``query`` run directly against the PostgreSQL database ``url`` (what
    the product stores, independently of its API)."""
    import psycopg

    from tests.conftest import _pg_connect_kwargs

    with psycopg.connect(**_pg_connect_kwargs(url)) as conn:  # type: ignore[arg-type]
        return list(conn.execute(query, params).fetchall())
