"""The demo's agents as local OS processes, and making sure none outlives the demo.

The demo becomes a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``): an agent
whose parent agent died is re-parented to the demo rather than to init, so every
process the fleet ever started stays in the demo's process tree, is found by a
walk of ``/proc`` and is reaped here.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FleetStopReport", "ProcessFleet", "descendants", "is_alive"]

_PR_SET_CHILD_SUBREAPER = 36


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of ``pid`` from /proc, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode(errors="replace")
    except OSError:
        return None
    fields = raw.rpartition(")")[2].split()
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Live descendants of ``root``: pid -> start time (zombies excluded)."""
    by_parent: dict[int, list[tuple[int, int]]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None and stat[1] not in ("Z", "X"):
                by_parent.setdefault(stat[0], []).append((int(name), stat[2]))
    found: dict[int, int] = {}
    frontier = [root]
    while frontier:
        for pid, start in by_parent.get(frontier.pop(), []):
            found[pid] = start
            frontier.append(pid)
    return found


def is_alive(pid: int, start_time: int) -> bool:
    """The process (pid, start time) still runs code (not gone, not a zombie)."""
    stat = _stat(pid)
    return stat is not None and stat[2] == start_time and stat[1] not in ("Z", "X")


@dataclass
class FleetStopReport:
    """What stopping the fleet did, verified in /proc (or by the engine)."""

    stopped: int = 0
    killed: int = 0
    survivors: list[str] = field(default_factory=list)
    unit: str = "processes"

    def line(self) -> str:
        verdict = "none survive" if not self.survivors else f"SURVIVORS: {', '.join(self.survivors)}"
        return f"stopped {self.stopped} agent {self.unit} ({self.killed} needed SIGKILL); {verdict}"


class ProcessFleet:
    """Starts the plan's root agents (they start their own children), tracks every
    process of the tree, reaps them, and stops them all."""

    def __init__(self, plan_path: Path, url: str, registration_key: str, log_dir: Path,
                 roots: list[str]) -> None:
        self._plan_path = plan_path
        self._url = url
        self._key = registration_key
        self._log_dir = log_dir
        self._roots = roots
        self.seen: dict[int, int] = {}  # every process of the fleet ever observed
        self.processes: list[subprocess.Popen[bytes]] = []

    def launch(self) -> None:
        if sys.platform == "linux":
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        self._log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "COCKPIT_DEMO_REGISTRATION_KEY": self._key, "PYTHONUNBUFFERED": "1"}
        for agent_id in self._roots:
            with open(self._log_dir / f"{agent_id}.log", "ab") as out:
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-m", "cockpit.tools.demo.agent", "--url", self._url,
                     "--plan", str(self._plan_path), "--log-dir", str(self._log_dir),
                     "--agent-id", agent_id],
                    env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                    start_new_session=True,  # Ctrl-C in the terminal reaches the demo only
                ))
        self.watch()

    def watch(self) -> int:
        """Record the fleet's live processes and reap exited ones; returns how many live."""
        self.reap()
        live = descendants(os.getpid())
        self.seen.update(live)
        return len(live)

    @staticmethod
    def reap() -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def stop(self, grace_seconds: float = 6.0) -> FleetStopReport:
        """SIGTERM every live process of the fleet, SIGKILL what is left after the
        grace period, reap, and verify in /proc that none survives."""
        self.watch()
        report = FleetStopReport()
        alive = {p: s for p, s in self.seen.items() if is_alive(p, s)}
        report.stopped = len(alive)
        for pid in alive:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            self.watch()  # children spawned at the last moment are caught too
            alive = {p: s for p, s in self.seen.items() if is_alive(p, s)}
            if not alive:
                break
            time.sleep(0.05)
        for pid in alive:
            report.killed += _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            self.reap()
            if not any(is_alive(p, s) for p, s in self.seen.items()):
                break
            time.sleep(0.05)
        self.reap()
        report.survivors = [str(p) for p, s in self.seen.items() if is_alive(p, s)]
        return report


def _signal(pid: int, sig: signal.Signals) -> int:
    try:
        os.kill(pid, sig)
        return 1
    except ProcessLookupError:
        return 0
