"""Group commit: concurrent callers' items written together, one write per group.

Telemetry ingestion (many single-message requests), the audit chain (every step of
every command) and the brokers' ``batch=True`` subscribers (per-message deliveries)
each turn many small writes into a few large ones the same way: a caller's item
joins the group the next write takes, and the caller gets its own result (or the
write's error) once that write is over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Items submitted while a write runs make up the next one.

    One write runs at a time, so the groups grow with the load and an idle caller
    waits for nothing but its own write. ``write`` takes the group's items in the
    order they were submitted and returns one result per item, in that order; if it
    raises, every caller of the group gets the error. ``limit`` caps a group (the
    rest wait for the next write). ``settle``: let the loop run once before each
    write, so items that tasks already scheduled are about to submit (the rest of a
    fetched batch) join it, at the price of a loop round on every write.
    """

    def __init__(self, write: Callable[[list[T]], Awaitable[Sequence[R]]], *, limit: int | None = None,
                 settle: bool = False) -> None:
        self._write = write
        self._limit = limit
        self._settle = settle
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Write ``item`` with the group it joins; its result once that write is over."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._pending:
            if self._settle:
                await asyncio.sleep(0)
            cut = len(self._pending) if self._limit is None else self._limit
            group, self._pending = self._pending[:cut], self._pending[cut:]
            try:
                results = await self._write([item for item, _ in group])
            except Exception as exc:  # noqa: BLE001 - each waiting caller gets the error
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:  # cancelled (shutdown): no caller waits forever
                for _, future in group + self._pending:
                    future.cancel()
                self._pending = []
                raise
            for (_, future), result in zip(group, results, strict=True):
                if not future.done():
                    future.set_result(result)
