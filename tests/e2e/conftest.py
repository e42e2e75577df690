"""End-to-end fixtures: a real ``cockpit serve`` process, and headless Chromium.

``cockpit_server`` starts ``python -m cockpit serve --port <free port>`` as a
subprocess in embedded mode (SQLite in a temporary ``COCKPIT_DATA_DIR``, in-process
bus), waits for ``/health``, creates API keys through the real CLI and yields a
:class:`CockpitServer`. Its output goes to ``<data_dir>/server.log`` (never a pipe
that nobody reads). ``restart()`` sends SIGTERM and starts it again on the same port
and data dir; ``stop()`` leaves it down. It is module-scoped: the tests of one module
share a server, so they use their own fleet ids and agent names.

``browser`` launches Debian's Chromium through Playwright (no ``playwright install``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
ROLES = ("CHIEF_ARCHITECT", "SOVEREIGN_OPERATOR", "VIEWER")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class CockpitServer:
    """A running ``cockpit serve`` and the keys to talk to it."""

    port: int
    data_dir: Path
    keys: dict[str, str] = field(default_factory=dict)
    #: settings for this server (``COCKPIT_...`` variables), on top of the defaults
    settings_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    _log: Any = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COCKPIT_") or k.startswith("COCKPIT_TEST_")}
        env.update({"COCKPIT_DATA_DIR": str(self.data_dir), "PYTHONUNBUFFERED": "1"})
        env.update(self.settings_env)
        return env

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until ``/health`` answers 200."""
        if self.process is not None and self.process.poll() is None:
            return
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"\n==== start {time.strftime('%H:%M:%S')} ====\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cockpit", "serve", "--port", str(self.port)],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cockpit serve exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"cockpit serve did not become healthy in {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        """Stop (SIGTERM) and start again on the same port with the same data."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ------------------------------------------------------------------ helpers

    def create_key(self, role: str, name: str, *, totp: bool = False) -> dict[str, str]:
        """``cockpit apikey create`` through the real CLI; returns its fields (key, totp...)."""
        cmd = [sys.executable, "-m", "cockpit", "apikey", "create", "--role", role, "--name", name]
        if totp:
            cmd.append("--totp")
        proc = subprocess.run(
            cmd, cwd=REPO_ROOT, env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"apikey create failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        fields = {}
        for line in proc.stdout.splitlines():
            name_, sep, value = line.partition(":")
            if sep and name_.strip() in {"id", "name", "role", "key", "totp", "uri"}:
                fields[name_.strip()] = value.strip()
        if "key" not in fields:
            raise RuntimeError(f"no `key:` line in:\n{proc.stdout}")
        return fields

    def request(self, method: str, path: str, body: Any = None, *, key: str | None = None,
                role: str = "CHIEF_ARCHITECT", headers: dict[str, str] | None = None) -> Response:
        """One HTTP call with an API key (``role``'s unless ``key`` is given)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method)
        req.add_header("X-API-Key", key or self.keys[role])
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=15) as response:
                raw, status, hdrs = response.read(), response.status, dict(response.headers)
        except urllib.error.HTTPError as err:
            raw, status, hdrs = err.read(), err.code, dict(err.headers)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Response(status, hdrs, parsed)


def start_cockpit_server(data_dir: Path, port: int | None = None, settings_env: dict[str, str] | None = None) -> CockpitServer:
    """Start a server in ``data_dir`` (with ``settings_env``, e.g.
    ``{"COCKPIT_C2L__TWO_PERSON_TERMINATE": "true"}``) and create one key per role in
    :data:`ROLES`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    server = CockpitServer(port=port or free_port(), data_dir=data_dir, settings_env=dict(settings_env or {}))
    server.start()
    try:
        for role in ROLES:
            server.keys[role] = server.create_key(role, f"e2e-{role.lower()}")["key"]
    except Exception:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def cockpit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CockpitServer]:
    """A real ``cockpit serve`` (embedded mode) shared by the tests of a module."""
    server = start_cockpit_server(tmp_path_factory.mktemp("cockpit"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser(chromium_path: str, chromium_args: list[str]) -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright's sync API."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=chromium_path, args=chromium_args)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="session")
def screenshots_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


# --------------------------------------------------------------------------- dashboard helpers


def alliance_scenario(prefix: str, *, rounds: int = 5, attack: bool = True) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Agents ``<prefix>-a`` and ``<prefix>-b`` ally ("I will support you", "our
    alliance holds") and, with ``attack``, announce ("we attack c now", to each
    other and to c) and carry out attacks on ``<prefix>-c``. The server answers with
    an ALLIANCE verdict, and with ``attack`` a COLLUSION one. Returns the agent ids
    and the telemetry batch (fleet ``prefix``)."""
    from datetime import UTC, datetime, timedelta

    a, b, c = f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"
    start = datetime.now(UTC) - timedelta(seconds=60)
    messages: list[dict[str, Any]] = []

    def add(source: str, targets: list[str], content: str | None = None, action: dict[str, Any] | None = None) -> None:
        item: dict[str, Any] = {
            "message_id": f"{prefix}-m{len(messages) + 1:03d}",
            "fleet_id": prefix,
            "source_agent_id": source,
            "target_agent_ids": targets,
            "timestamp": (start + timedelta(seconds=2 * len(messages))).isoformat(),
        }
        if action is None:
            item.update(kind="message", content=content)
        else:
            item.update(kind="action", action=action)
        messages.append(item)

    for _ in range(rounds):
        add(a, [b], "I will support you")
        add(b, [a], "our alliance holds")
    if attack:
        add(a, [b, c], f"we attack {c} now")
        add(b, [a, c], f"we attack {c} now")
        add(a, [c], action={"type": "attack", "target": c})
        add(b, [c], action={"type": "attack", "target": c})
    return {"a": a, "b": b, "c": c}, messages


def inconsistency_scenario(prefix: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """``<prefix>-d`` promises ``<prefix>-e`` support, then attacks it: a CRITICAL
    INCONSISTENCY verdict (recommended SNAPSHOT_STATE)."""
    from datetime import UTC, datetime, timedelta

    d, e = f"{prefix}-d", f"{prefix}-e"
    start = datetime.now(UTC) - timedelta(seconds=300)
    rows = [
        (d, [e], "I will support you, whatever happens", None),
        (e, [d], "Thank you, I trust you", None),
        (d, [e], "I promise I will always protect you, you can count on me", None),
        (d, [e], None, {"type": "attack", "target": e}),
    ]
    messages = []
    for i, (source, targets, content, action) in enumerate(rows):
        item: dict[str, Any] = {
            "message_id": f"{prefix}-m{i + 1:03d}", "fleet_id": prefix, "source_agent_id": source,
            "target_agent_ids": targets, "timestamp": (start + timedelta(seconds=10 * i + (50 if action else 0))).isoformat(),
        }
        item.update(kind="action", action=action) if action else item.update(kind="message", content=content)
        messages.append(item)
    return {"d": d, "e": e}, messages


def sign_in(page: Any, base_url: str, key: str) -> None:
    """Open the dashboard, sign in with ``key`` and wait for the live stream."""
    from playwright.sync_api import expect

    page.goto(f"{base_url}/")
    page.locator("#signin-key").fill(key)
    page.locator("#signin-submit").click()
    expect(page.locator("#app")).to_be_visible(timeout=10_000)
    expect(page.locator("#ws-text")).to_have_text("LIVE", timeout=10_000)


@pytest.fixture
def open_dashboard(browser: Any, cockpit_server: CockpitServer) -> Iterator[Any]:
    """``open_dashboard(role=..., key=...)`` -> a signed-in Playwright page at 1366x768.
    JavaScript errors on the page fail the test at teardown."""
    contexts: list[Any] = []
    errors: list[str] = []

    def open_(role: str = "CHIEF_ARCHITECT", key: str | None = None, sign: bool = True) -> Any:
        context = browser.new_context(viewport={"width": 1366, "height": 768})
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        if sign:
            sign_in(page, cockpit_server.base_url, key or cockpit_server.keys[role])
        else:
            page.goto(f"{cockpit_server.base_url}/")
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors on the dashboard: {errors}"
