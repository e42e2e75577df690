"""`ProcessRuntime`: agents that are plain OS processes on this host (Linux).

Signals are real: SIGTERM then SIGKILL to the process, its process group when it
leads one, and every descendant. The descendants are taken before the first signal
and remembered for the target: once the parent dies its children are re-parented and
would escape a later search, so a graceful stop is verified, and a force kill aimed,
at the tree as it was (a child that outlived its parent keeps the stop from
succeeding). Signals go through a pidfd after re-checking the start time, so a
recycled pid is never hit. The memory is this runtime's: a replica that recovers a
command after a crash finds only the descendants still under the target.

Needs: the same uid as the agent (or CAP_KILL) and a readable /proc.
Network quarantine is not offered: a process has no network namespace of its
own that Cockpit could move it into or cut, so the layer reports failure and the
kill switch escalates (the software layer still revokes its credentials).
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from typing import Any

from cockpit.c2l.runtimes import procfs
from cockpit.c2l.runtimes.base import Outcome, Runtime, RuntimeState, RuntimeUnavailable
from cockpit.c2l.runtimes.ref import RuntimeKind, RuntimeRef

__all__ = ["ProcessRuntime", "process_ref", "protected"]

_STOPPED_STATES = ("T", "t")


def protected(pid: int) -> str | None:
    """Why Cockpit never signals process (or process group) ``pid``; None if it may.

    init, Cockpit's own process, the processes it runs under (the shell, supervisor
    or container runtime that started it: a TERMINATE would take Cockpit down with
    them), the leader of its process group (signalled as a group, Cockpit too), and
    any thread's id (the kernel takes it for its whole process)."""
    if pid <= 1:
        return "pid 1 is the system's init"
    group = procfs.thread_group(pid)
    if group is not None and group != pid:
        # A signal to a thread's id reaches its whole process (Cockpit's own, say).
        return f"it is a thread of process {group}, not a process"
    me = os.getpid()
    if pid == me:
        return "it is Cockpit's own process"
    if pid == os.getpgrp():
        return "it leads Cockpit's own process group"
    if pid in procfs.ancestors(me):
        return "Cockpit runs under it"
    return None


def process_ref(pid: int) -> RuntimeRef:
    """A process ref with the start time read now, for pid-reuse safety."""
    stat = procfs.read_stat(pid)
    return RuntimeRef.process(pid, start_time=stat.start_time if stat else None)


class ProcessRuntime(Runtime):
    """Acts on local processes with signals; verifies through /proc."""

    kind = RuntimeKind.PROCESS

    def __init__(self, kill_wait_seconds: float = 5.0) -> None:
        # How long to wait for the kernel to finish a SIGKILL (a process in
        # uninterruptible sleep dies only when its I/O returns).
        self._kill_wait = kill_wait_seconds
        #: each target's descendants seen before it was signalled, by (pid, start time)
        self._trees: dict[tuple[int, int | None], dict[tuple[int, int], procfs.ProcStat]] = {}
        self._trees_lock = threading.Lock()

    def _refuses(self, ref: RuntimeRef) -> str | None:
        return protected(_pid(ref))

    # -- state ------------------------------------------------------------------

    def _check(self, ref: RuntimeRef) -> RuntimeState:
        pid = _pid(ref)
        if procfs.is_gone(pid, ref.start_time):
            return RuntimeState(exists=False, running=False, details={"pid": pid})
        stat = procfs.read_stat(pid)
        state = stat.state if stat else "?"
        return RuntimeState(
            exists=stat is not None,
            running=stat is not None and state not in _STOPPED_STATES,
            details={"pid": pid, "state": state, "comm": stat.comm if stat else None},
        )

    def _verify_gone(self, ref: RuntimeRef) -> Outcome:
        observed = self._observe(ref, self._tree(ref))
        success = _all_gone(observed)
        if success:
            self._forget(ref)
        return Outcome(success=success, verification=observed)

    # -- termination --------------------------------------------------------------

    def _stop_gracefully(self, ref: RuntimeRef, grace_seconds: float) -> Outcome:
        pid = _pid(ref)
        tree = self._tree(ref)
        before = self._observe(ref, tree)
        if _all_gone(before):
            return Outcome(True, before, {"already_gone": True})
        group = bool(before["group_survivors"])
        if before["pid_exists"]:
            _signal(pid, ref.start_time, signal.SIGTERM)
        if group:
            _signal_group(pid, signal.SIGTERM)
        for child in tree:  # those outside the group, or they would outlive it as orphans
            _signal(child.pid, child.start_time, signal.SIGTERM)
        observed = self._wait_gone(ref, grace_seconds, tree)
        success = _all_gone(observed)
        return Outcome(
            success,
            observed,
            {"signal": "SIGTERM", "process_group": group, "grace_seconds": grace_seconds},
            None if success else f"still running after {grace_seconds}s grace",
        )

    def _force_kill(self, ref: RuntimeRef) -> Outcome:
        pid = _pid(ref)
        ours = not procfs.is_gone(pid, ref.start_time)
        # The tree before killing (and as a graceful stop saw it): once the parent
        # dies its children are re-parented and no longer findable from it.
        tree = self._tree(ref)
        killed: list[int] = []
        if ours and _signal(pid, ref.start_time, signal.SIGKILL):
            killed.append(pid)
        if self._owns_group(ref):
            killed.extend(s.pid for s in procfs.group_members(pid))
            _signal_group(pid, signal.SIGKILL)
        for child in tree:
            if _signal(child.pid, child.start_time, signal.SIGKILL):
                killed.append(child.pid)
        observed = self._wait_gone(ref, self._kill_wait, tree)
        success = _all_gone(observed)
        if success:
            self._forget(ref)
        return Outcome(
            success,
            observed,
            {"signal": "SIGKILL", "killed": sorted(set(killed))},
            None if success else "processes survived SIGKILL",
        )

    # -- network ----------------------------------------------------------------

    def _quarantine_network(self, ref: RuntimeRef) -> Outcome:
        return Outcome(
            False,
            {"network_isolated": False},
            reason="process runtime: no per-process network namespace to cut; "
            "revoke credentials (software layer) or terminate",
        )

    def _release_network(self, ref: RuntimeRef) -> Outcome:
        return Outcome(
            False, {"network_isolated": False}, reason="process runtime: never quarantined"
        )

    # -- freeze -------------------------------------------------------------------

    def _freeze(self, ref: RuntimeRef) -> Outcome:
        return self._stop_or_continue(ref, signal.SIGSTOP, want_stopped=True)

    def _unfreeze(self, ref: RuntimeRef) -> Outcome:
        return self._stop_or_continue(ref, signal.SIGCONT, want_stopped=False)

    def _stop_or_continue(
        self, ref: RuntimeRef, sig: signal.Signals, want_stopped: bool
    ) -> Outcome:
        pid = _pid(ref)
        if procfs.is_gone(pid, ref.start_time):
            return Outcome(False, {"pid_exists": False}, reason="process gone")
        leads_group = self._owns_group(ref)
        _signal(pid, ref.start_time, sig)
        if leads_group:
            _signal_group(pid, sig)
        # The state flips when the signal is delivered, shortly after kill()
        # returns; poll /proc until it is observed.
        deadline = time.monotonic() + 2.0
        while True:
            stat = procfs.read_stat(pid)
            stopped = stat is not None and stat.state in _STOPPED_STATES
            if stopped == want_stopped or stat is None or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        verification = {
            "pid_exists": stat is not None,
            "state": stat.state if stat else None,
            "stopped": stopped,
        }
        ok = stat is not None and stopped == want_stopped
        return Outcome(
            ok,
            verification,
            {"signal": sig.name, "process_group": leads_group},
            None if ok else f"state {verification['state']} after {sig.name}",
        )

    # -- snapshot -------------------------------------------------------------------

    def _snapshot(self, ref: RuntimeRef) -> tuple[dict[str, Any], dict[str, Any], str | None]:
        pid = _pid(ref)
        if not os.path.isdir(procfs.PROC):
            raise RuntimeUnavailable("/proc is not mounted")
        document = None if procfs.is_gone(pid, ref.start_time) else procfs.process_document(pid)
        if document is None:
            return {"pid": pid, "exists": False}, {"pid": pid}, "process gone"
        document["descendants"] = [
            {"pid": s.pid, "ppid": s.ppid, "comm": s.comm, "state": s.state}
            for s in procfs.descendants(pid)
        ]
        return (
            {"runtime": "process", "process": document},
            {"pid": pid, "comm": document["comm"]},
            None,
        )

    # -- helpers --------------------------------------------------------------------

    def _tree(self, ref: RuntimeRef) -> list[procfs.ProcStat]:
        """The target's descendants: those found under it now (while it lives) with
        those remembered from before, which its death may have re-parented."""
        pid = _pid(ref)
        found = procfs.descendants(pid) if not procfs.is_gone(pid, ref.start_time) else []
        with self._trees_lock:
            tree = self._trees.setdefault((pid, ref.start_time), {})
            for stat in found:
                tree.setdefault((stat.pid, stat.start_time), stat)
            return list(tree.values())

    def _forget(self, ref: RuntimeRef) -> None:
        with self._trees_lock:
            self._trees.pop((_pid(ref), ref.start_time), None)

    def _owns_group(self, ref: RuntimeRef) -> bool:
        """Whether process group `pid` is the target's group.

        It is while the target lives and leads it; once the leader is gone the
        pgid cannot be reused while members remain, so survivors are still ours.
        A new process holding the pid (start time differs) owns nothing of ours.
        """
        stat = procfs.read_stat(_pid(ref))
        if stat is None:
            return True
        if ref.start_time is not None and stat.start_time != ref.start_time:
            return False
        return stat.pgrp == stat.pid

    def _observe(
        self, ref: RuntimeRef, tree: list[procfs.ProcStat] | None = None
    ) -> dict[str, Any]:
        pid = _pid(ref)
        group = [s.pid for s in procfs.group_members(pid)] if self._owns_group(ref) else []
        return {
            "pid_exists": not procfs.is_gone(pid, ref.start_time),
            "group_survivors": group,
            "descendant_survivors": [
                s.pid for s in tree or [] if not procfs.is_gone(s.pid, s.start_time)
            ],
        }

    def _wait_gone(
        self, ref: RuntimeRef, timeout: float, tree: list[procfs.ProcStat] | None = None
    ) -> dict[str, Any]:
        deadline = time.monotonic() + max(timeout, 0.0)
        delay = 0.002
        while True:
            observed = self._observe(ref, tree)
            if _all_gone(observed) or time.monotonic() >= deadline:
                return observed
            time.sleep(min(delay, max(deadline - time.monotonic(), 0.0)))
            delay = min(delay * 2, 0.05)


def _pid(ref: RuntimeRef) -> int:
    assert ref.pid is not None  # RuntimeRef validates process refs
    return ref.pid


def _all_gone(observed: dict[str, Any]) -> bool:
    return not (
        observed["pid_exists"] or observed["group_survivors"] or observed["descendant_survivors"]
    )


def _signal(pid: int, start_time: int | None, sig: signal.Signals) -> bool:
    """Signal `pid` if it is still the process we mean; False when it is gone."""
    if reason := protected(pid):  # registration refuses these; an older row may hold one
        raise RuntimeUnavailable(f"refusing to signal pid {pid}: {reason}")
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError as exc:
        if exc.errno != errno.ENOSYS:  # not a process (a thread's id), or no more fds
            raise RuntimeUnavailable(f"cannot take hold of pid {pid}: {exc}") from exc
        pidfd = None  # kernel without pidfd: plain kill, after the same check
    try:
        # Checked after opening the pidfd: from here the pidfd pins this process.
        stat = procfs.read_stat(pid)
        if stat is None or (start_time is not None and stat.start_time != start_time):
            return False
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        raise RuntimeUnavailable(f"not permitted to signal pid {pid}: {exc}") from exc
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _signal_group(pgrp: int, sig: signal.Signals) -> None:
    if reason := protected(pgrp):
        raise RuntimeUnavailable(f"refusing to signal process group {pgrp}: {reason}")
    try:
        os.killpg(pgrp, sig)
    except ProcessLookupError:
        pass  # the group is empty: nothing left to signal
    except PermissionError as exc:
        raise RuntimeUnavailable(f"not permitted to signal group {pgrp}: {exc}") from exc
