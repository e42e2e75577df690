"""Reading processes out of /proc (Linux): identity, liveness, tree, snapshot.

Identity is (pid, start time): the start time (field 22 of /proc/<pid>/stat,
clock ticks after boot) tells a recycled pid apart from the process we meant.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ProcStat",
    "ancestors",
    "descendants",
    "group_members",
    "is_gone",
    "process_document",
    "read_stat",
    "reap_if_child",
]

PROC = "/proc"


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/<pid>/stat the kill switch needs."""

    pid: int
    comm: str
    state: str
    ppid: int
    pgrp: int
    session: int
    start_time: int


def read_stat(pid: int) -> ProcStat | None:
    """Parse /proc/<pid>/stat; None when there is no such process."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as fh:
            raw = fh.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm is in parentheses and may itself contain spaces and ')'.
    head, _, tail = raw.rpartition(")")
    comm = head.partition("(")[2]
    fields = tail.split()
    # tail starts at field 3 (state); field N is fields[N - 3].
    return ProcStat(
        pid=pid,
        comm=comm,
        state=fields[0],
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        session=int(fields[3]),
        start_time=int(fields[19]),
    )


def reap_if_child(pid: int) -> bool:
    """Reap `pid` if it is our exited child; True when it was reaped.

    A zombie child of ours keeps its /proc entry until reaped, so the kill switch
    reaps it before deciding whether it is gone.
    """
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return reaped == pid


def is_gone(pid: int, start_time: int | None) -> bool:
    """True when the process we meant no longer runs.

    Gone: no /proc entry, a different process now holds the pid (start time
    differs), or a zombie / dead entry (it runs no code; its parent reaps it).
    """
    reap_if_child(pid)
    stat = read_stat(pid)
    if stat is None:
        return True
    if start_time is not None and stat.start_time != start_time:
        return True
    return stat.state in ("Z", "X", "x")


def _all_stats() -> list[ProcStat]:
    stats = []
    for name in os.listdir(PROC):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None:
                stats.append(stat)
    return stats


def group_members(pgrp: int) -> list[ProcStat]:
    """Live (non-zombie) processes of process group `pgrp`."""
    return [s for s in _all_stats() if s.pgrp == pgrp and s.state not in ("Z", "X", "x")]


def thread_group(pid: int) -> int | None:
    """The process (thread group) that task ``pid`` belongs to: ``pid`` itself for a
    process, another id for one of its threads (whose id /proc also answers for);
    None when it is gone."""
    status = _read_text(f"/proc/{pid}/status")
    for line in (status or "").splitlines():
        if line.startswith("Tgid:"):
            return int(line.split()[1])
    return None


def ancestors(pid: int) -> list[int]:
    """The parent of `pid`, its parent, and so on up to pid 1 (included)."""
    found: list[int] = []
    stat = read_stat(pid)
    while stat is not None and stat.ppid > 0 and stat.ppid not in found:
        found.append(stat.ppid)
        stat = read_stat(stat.ppid)
    return found


def descendants(pid: int) -> list[ProcStat]:
    """Every live descendant of `pid` (children first), found via ppid links."""
    by_parent: dict[int, list[ProcStat]] = {}
    for stat in _all_stats():
        by_parent.setdefault(stat.ppid, []).append(stat)
    found: list[ProcStat] = []
    frontier = [pid]
    while frontier:
        for child in by_parent.get(frontier.pop(0), []):
            if child.state not in ("Z", "X", "x"):
                found.append(child)
                frontier.append(child.pid)
    return found


def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode(errors="replace")
    except OSError:
        return None


def process_document(pid: int) -> dict[str, Any] | None:
    """A snapshot of one process; None when it vanished mid-read.

    Environment *values* are never read into the document: agents carry
    secrets in their environment, only the variable names are kept.
    """
    stat = read_stat(pid)
    if stat is None:
        return None
    cmdline = _read_text(f"{PROC}/{pid}/cmdline") or ""
    environ = _read_text(f"{PROC}/{pid}/environ") or ""
    status_text = _read_text(f"{PROC}/{pid}/status") or ""
    status = {}
    for line in status_text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            status[key.strip()] = " ".join(value.split())
    try:
        cwd: str | None = os.readlink(f"{PROC}/{pid}/cwd")
    except OSError:
        cwd = None
    try:
        fd_count: int | None = len(os.listdir(f"{PROC}/{pid}/fd"))
    except OSError:
        fd_count = None
    memory = {
        k: status[k] for k in ("VmPeak", "VmSize", "VmRSS", "VmData", "VmSwap") if k in status
    }
    return {
        "pid": pid,
        "comm": stat.comm,
        "state": stat.state,
        "ppid": stat.ppid,
        "pgrp": stat.pgrp,
        "session": stat.session,
        "start_time": stat.start_time,
        "cmdline": [part for part in cmdline.split("\0") if part],
        "environ_keys": sorted({entry.partition("=")[0] for entry in environ.split("\0") if entry}),
        "status": status,
        "cwd": cwd,
        "open_fds": fd_count,
        "children": [child.pid for child in descendants(pid) if child.ppid == pid],
        "memory": memory,
    }
