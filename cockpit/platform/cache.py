"""A small time-bounded cache for hot, rarely changing reads (credentials, mute state).

Each owner clears it on its own writes, so a change made by this process is seen at
once; a change made by another replica is seen within ``ttl`` seconds.
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Final, Generic, Literal, TypeVar

__all__ = ["TtlCache"]

K = TypeVar("K")
V = TypeVar("V")


class _Missing(Enum):
    """The type of the one "not cached" sentinel (an enum, so ``is`` narrows it away)."""

    MISSING = "MISSING"


_MISSING: Final = _Missing.MISSING


class TtlCache(Generic[K, V]):
    """Entries expire ``ttl`` seconds after they were stored; ``ttl <= 0`` disables it."""

    def __init__(self, ttl: float, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self._max = max_entries
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | Literal[_Missing.MISSING]:
        """The cached value, or the module's ``MISSING`` sentinel (``TtlCache.MISSING``)."""
        entry = self._entries.get(key)
        if entry is None:
            return _MISSING
        stored, value = entry
        if time.monotonic() - stored > self.ttl:
            del self._entries[key]
            return _MISSING
        return value

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self._max:
            self._entries.clear()  # bounded memory; a cold cache only costs a query
        self._entries[key] = (time.monotonic(), value)

    def clear(self) -> None:
        self._entries.clear()

    MISSING: Final = _MISSING
