"""Looking at real OS processes from tests."""

from __future__ import annotations

__all__ = ["alive"]


def alive(pid: int) -> bool:
    """The process exists and is neither a zombie nor dead (read from /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
