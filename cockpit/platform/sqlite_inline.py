"""SQLite driven from the event loop's own thread, for SQLAlchemy's aiosqlite dialect.

aiosqlite runs every call (cursor, execute, fetch, close, commit) on a worker thread
and wakes the loop when it is done: five thread round trips and GIL hand-offs for a
statement that SQLite itself answers in microseconds. Measured on Cockpit's tables,
that made each query cost about a millisecond of the loop's time and capped the whole
process near a thousand queries per second, whatever the concurrency.

These connections run the statement right away on the calling thread. The
statements Cockpit sends on its hot paths (indexed look-ups, inserts, short pages)
finish in tens of microseconds. What could hold the loop longer is bounded:

- *Big statements.* A statement with many bound values (the multi-row insert of a
  telemetry batch) or long ones (the id list of a batch's claim), and the commit of
  its transaction, run on a worker thread, where SQLite (which releases the GIL)
  works beside the loop.
- *Long runs of statements.* Every ``_YIELD_EVERY`` statements a connection lets the
  loop serve others, as a driver on a thread would.
- *Lock waits.* Another process (``cockpit apikey create`` during ``serve``) may hold
  the write lock. SQLite's busy handler would sleep in the loop's thread, so it is
  off here (``busy_timeout=0``) and a busy statement is retried with ``asyncio.sleep``
  until ``busy_timeout`` seconds have passed, the loop serving others meanwhile.
- *Long scans.* :class:`cockpit.platform.db.Database` keeps an aiosqlite engine
  (``Database.bulk``) for the few reads that walk a whole table (audit verification,
  state rebuild at start).

The classes quack like the parts of ``aiosqlite.Connection`` and ``aiosqlite.Cursor``
that SQLAlchemy's adapter calls (``connectors/asyncio.py``, ``dialects/sqlite/aiosqlite.py``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["InlineConnection", "connect"]

T = TypeVar("T")

#: statements binding more values than this, or more characters, run on a worker thread
_HEAVY_PARAMETERS = 256
_HEAVY_TEXT = 8192
#: a connection yields to the event loop once every this many statements
_YIELD_EVERY = 16
#: first retry delay of a statement refused with SQLITE_BUSY (doubles up to _MAX_DELAY)
_FIRST_DELAY = 0.001
_MAX_DELAY = 0.05


def _busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY or "database is locked" in str(exc)


def _heavy(parameters: Any) -> bool:
    """Many bound values, or a long one (an id list bound as one JSON array): work in
    proportion, for the worker thread."""
    if len(parameters) > _HEAVY_PARAMETERS:
        return True
    values = parameters.values() if isinstance(parameters, dict) else parameters
    return sum(len(v) for v in values if isinstance(v, str | bytes)) > _HEAVY_TEXT


class InlineCursor:
    """An ``aiosqlite.Cursor`` look-alike over a ``sqlite3.Cursor``."""

    __slots__ = ("_cursor", "_owner")

    def __init__(self, owner: InlineConnection) -> None:
        self._owner = owner
        self._cursor = owner._live.cursor()

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Any = None) -> InlineCursor:
        if parameters is None:
            await self._owner._run(self._cursor.execute, sql)
        else:
            await self._owner._run(self._cursor.execute, sql, parameters, heavy=_heavy(parameters))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        rows = list(parameters)  # a retry needs the parameters again
        heavy = sum(len(r) for r in rows) > _HEAVY_PARAMETERS
        await self._owner._run(self._cursor.executemany, sql, rows, heavy=heavy)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class _Immediate:
    """Stands in for aiosqlite's request queue (``Connection._tx``), which SQLAlchemy
    uses to set ``isolation_level``: runs the function at once."""

    __slots__ = ()

    @staticmethod
    def put_nowait(item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting caller
            future.set_exception(exc)


class InlineConnection:
    """An ``aiosqlite.Connection`` look-alike whose calls run on the caller's thread."""

    _tx = _Immediate()

    def __init__(self, conn: sqlite3.Connection, busy_timeout: float) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._busy_timeout = busy_timeout
        self._statements = 0
        #: the open transaction ran a big statement: its commit goes to a thread too
        self._heavy_transaction = False

    @property
    def _connection(self) -> sqlite3.Connection | None:  # SQLAlchemy checks it before commit/rollback
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._live.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        # typeshed omits "", which SQLAlchemy's pysqlite dialect sets and sqlite3 accepts
        self._live.isolation_level = value  # type: ignore[assignment]

    @property
    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError("Connection closed")
        return self._conn

    async def _run(self, function: Callable[..., T], *args: Any, heavy: bool = False) -> T:
        """Run ``function`` now (on a worker thread when ``heavy``); while SQLite
        answers busy, retry without blocking the loop."""
        self._live  # noqa: B018 - raises on a closed connection
        self._statements += 1
        if heavy:
            self._heavy_transaction = True
        elif self._statements % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
        deadline: float | None = None
        delay = _FIRST_DELAY
        while True:
            try:
                if heavy:
                    return await asyncio.get_running_loop().run_in_executor(None, function, *args)
                return function(*args)
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self._busy_timeout
                if now >= deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)

    def cursor(self) -> InlineCursor:
        return InlineCursor(self)

    async def commit(self) -> None:
        heavy, self._heavy_transaction = self._heavy_transaction, False
        await self._run(self._live.commit, heavy=heavy)

    async def rollback(self) -> None:
        self._heavy_transaction = False
        self._live.rollback()

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Close at once (also SQLAlchemy's terminate)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._live.create_function(*args, **kwargs)


def connect(database: str, busy_timeout: float = 30.0) -> Callable[[], Any]:
    """An ``async_creator`` for ``create_async_engine``: a new inline connection to ``database``."""

    async def creator() -> InlineConnection:
        # check_same_thread off: big statements run on a worker thread, and the pool
        # may close a connection from another thread (garbage collection at exit).
        # Calls never overlap: each is awaited before the next.
        conn = sqlite3.connect(database, timeout=0, check_same_thread=False)
        return InlineConnection(conn, busy_timeout)

    return creator
