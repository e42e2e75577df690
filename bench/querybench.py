"""What the benchmarks that fill a database and time its queries share.

    url = fresh_database(args.database_url, "audit.db")
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cockpit.platform.db import migrate

__all__ = ["fresh_database", "row", "timed"]


def fresh_database(url: str | None, filename: str) -> str:
    """``url`` (an empty PostgreSQL database), or a new SQLite file in a temporary
    directory; migrated to the head revision either way."""
    url = url or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp(prefix='cockpit-bench-')) / filename}"
    migrate(url)  # runs its own event loop: call it before asyncio.run
    return url


async def timed(fn: Callable[[], Awaitable[object]], repeat: int) -> list[float]:
    """Milliseconds each of ``repeat`` calls of ``fn`` took, one after the other."""
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def row(label: str, first: list[float], rest: list[float], total: int) -> str:
    """A Markdown table row: the first query, the median and max of the rest, the total."""
    return (f"| {label} | {first[0]:.2f} ms | {statistics.median(rest):.2f} ms | {max(rest):.2f} ms"
            f" | {total:,} |")
