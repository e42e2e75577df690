"""What the benchmarks that fill a database and time its queries share.

    url = fresh_database(args.database_url, "audit.db")
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cockpit.platform.db import migrate

__all__ = ["HEADER", "fresh_database", "page_row", "timed"]

#: the header of the table :func:`page_row` writes rows of
HEADER = "| query | first | next 20, median | next 20, max | total |\n|---|---|---|---|---|"


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


async def page_row(label: str, query: Callable[[], Awaitable[tuple[Any, int]]]) -> str:
    """Time ``query`` (a page and its total, as the API serves them) once, then 20
    more times: a Markdown table row of the first, the median and max of the rest,
    and the total."""
    first = await timed(query, 1)
    rest = await timed(query, 20)
    _, total = await query()
    return (f"| {label} | {first[0]:.2f} ms | {statistics.median(rest):.2f} ms | {max(rest):.2f} ms"
            f" | {total:,} |")
