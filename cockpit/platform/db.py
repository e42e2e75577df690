"""Database engine, declarative base and migrations (SQLAlchemy 2 async, alembic).

Every context declares its tables on :class:`Base` but owns them alone: no context
reads or writes another context's tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
from sqlalchemy import JSON, DateTime, MetaData, Table, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import memoized_property
from sqlalchemy.util.queue import AsyncAdaptedQueue

from cockpit.platform import sqlite_inline

__all__ = [
    "Base",
    "Database",
    "JSONType",
    "UTCDateTime",
    "increment",
    "insert_ignoring_duplicates",
    "migrate",
    "upsert",
    "urgent",
    "utcnow",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Now, in UTC, timezone-aware."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored with its zone and always returned timezone-aware (UTC).

    SQLite keeps no zone, so values are normalised to UTC on the way in and tagged
    UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSON(none_as_null=True), "postgresql")


class Base(DeclarativeBase):
    """The declarative base every context's tables are declared on."""

    metadata = MetaData(naming_convention=NAMING)

    if TYPE_CHECKING:
        # SQLAlchemy types it as the wider FromClause (a model may be mapped to a
        # join or a select); every model here is declared with a Table.
        __table__: ClassVar[Table]


_URGENT: ContextVar[bool] = ContextVar("cockpit_db_urgent", default=False)


@contextlib.contextmanager
def urgent() -> Iterator[None]:
    """Work done in this context (and in the tasks it starts) is served before the
    rest waiting for a database connection: the embedded engine's single writer
    connection, or a connection of PostgreSQL's pool once all are busy. The kill
    switch's commands, audit rows and directives do not queue behind telemetry."""
    token = _URGENT.set(True)
    try:
        yield
    finally:
        _URGENT.reset(token)


class _PriorityQueue:
    """The idle connections of a pool, with the interface SQLAlchemy's
    ``AsyncAdaptedQueue`` uses of ``asyncio.Queue``. A returned connection is handed
    straight to the next waiter, urgent waiters first (each group in arrival order),
    so nobody can take it in between."""

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._items: deque[Any] = deque()
        self._urgent: deque[asyncio.Future[Any]] = deque()
        self._others: deque[asyncio.Future[Any]] = deque()

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._items)

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: Any) -> None:
        for waiters in (self._urgent, self._others):
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(item)
                    return
        if self.full():
            raise asyncio.QueueFull
        self._items.append(item)

    async def put(self, item: Any) -> None:
        self.put_nowait(item)  # the pool never holds more connections than it made

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    async def get(self) -> Any:
        if self._items:
            return self._items.popleft()
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiters = self._urgent if _URGENT.get() else self._others
        waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.put_nowait(waiter.result())  # handed over as we gave up: pass it on
            else:
                with contextlib.suppress(ValueError):
                    waiters.remove(waiter)
            raise


class _PriorityAdaptedQueue(AsyncAdaptedQueue[Any]):
    @memoized_property
    def _queue(self) -> Any:
        return _PriorityQueue(self.maxsize)


class _PriorityPool(AsyncAdaptedQueuePool):
    """A pool whose waiters in :func:`urgent` go first (the SQLite writer's single
    connection; PostgreSQL's pool once every connection and overflow is in use)."""

    _queue_class = _PriorityAdaptedQueue


class Database:
    """The async engine and session factory, built from one URL."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 20,
        max_overflow: int = 10,
        pool_timeout: float = 30.0,
        echo: bool = False,
        sqlite_busy_timeout: float = 30.0,
    ) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        # msgspec encodes the JSON columns several times faster than the stdlib.
        kwargs: dict[str, Any] = {
            "echo": echo,
            "json_serializer": _json_dumps,
            "json_deserializer": msgspec.json.decode,
        }
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            # Writers: one connection handed out in turn by the pool's asyncio queue.
            # SQLite takes one writer at a time anyway, and writers contending through
            # its busy handler (sleeps of up to 100 ms) collapse under load. Readers:
            # a few read-only connections, which WAL lets run beside the writer. Both
            # run statements on the loop's thread (see sqlite_inline).
            inline = sqlite_inline.connect(parsed.database or ":memory:", busy_timeout=sqlite_busy_timeout)
            self.engine: AsyncEngine = create_async_engine(
                url, poolclass=_PriorityPool, pool_size=1, max_overflow=0, pool_timeout=pool_timeout,
                async_creator=inline, **kwargs,
            )
            self.reader: AsyncEngine = create_async_engine(
                url, pool_size=_SQLITE_READERS, max_overflow=0, pool_timeout=pool_timeout,
                async_creator=inline, **kwargs,
            )
            # Reads that walk whole tables: aiosqlite, on a worker thread, where SQLite's
            # own busy handler may sleep.
            self.bulk: AsyncEngine = create_async_engine(
                url, pool_size=1, max_overflow=1, pool_timeout=pool_timeout,
                connect_args={"timeout": sqlite_busy_timeout}, **kwargs,
            )
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.reader.sync_engine, "connect", _sqlite_reader_pragmas)
            event.listen(self.bulk.sync_engine, "connect", _sqlite_reader_pragmas)
        else:
            # The runbook's pool: 20 connections, 10 overflow, 30 s wait; when all are
            # busy, the kill switch's work takes the next one first.
            self.engine = create_async_engine(
                url, poolclass=_PriorityPool, pool_size=pool_size, max_overflow=max_overflow,
                pool_timeout=pool_timeout, connect_args={"connect_timeout": 5}, **kwargs,
            )
            _ping_when_idle(self.engine)
            # Reads in autocommit, on the same pool: no BEGIN and ROLLBACK round trips
            # around them. Each statement takes its own snapshot either way (READ
            # COMMITTED), so reads see exactly what they saw in a transaction.
            self.reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
            self.bulk = self.reader
        self.sessions = Sessions(
            reader=async_sessionmaker(self.reader, expire_on_commit=False),
            writer=async_sessionmaker(self.engine, expire_on_commit=False),
        )
        #: read sessions for scans of whole tables (off the event loop's thread on SQLite)
        self.bulk_sessions = async_sessionmaker(self.bulk, expire_on_commit=False)

    async def ping(self, timeout: float = 2.0) -> None:
        """Run ``SELECT 1``; raises when the database does not answer."""

        async def _probe() -> None:
            async with self.reader.connect() as conn:
                await conn.execute(text("SELECT 1"))

        await asyncio.wait_for(_probe(), timeout)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
        if self.dialect == "sqlite":  # elsewhere the reader shares the engine's pool
            await self.reader.dispose()
            await self.bulk.dispose()


_SQLITE_READERS = 4
#: a pooled connection unused for longer is pinged before it is handed out
_PING_AFTER_IDLE = 2.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Check a pooled connection before use only when it sat idle (the server may
    have restarted since). ``pool_pre_ping`` pings on every checkout: under load that
    was a quarter of all round trips to PostgreSQL, for connections used milliseconds
    before. A connection that breaks in use is still invalidated with the rest of the
    pool by SQLAlchemy's disconnect handling."""
    sync = engine.sync_engine

    @event.listens_for(sync, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        record.info["returned"] = time.monotonic()

    @event.listens_for(sync, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned = record.info.get("returned")
        if returned is None or time.monotonic() - returned < _PING_AFTER_IDLE:
            return
        try:
            sync.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # any failure: the pool retries with a new connection
            raise DisconnectionError(str(exc)) from exc


class Sessions:
    """``sessions()`` opens a session for reading, ``sessions.begin()`` a transaction
    for writing; on SQLite they come from separate pools (see :class:`Database`)."""

    def __init__(self, reader: async_sessionmaker[AsyncSession], writer: async_sessionmaker[AsyncSession]) -> None:
        self._reader = reader
        self._writer = writer

    def __call__(self) -> AsyncSession:
        return self._reader()

    def begin(self) -> Any:
        return self._writer.begin()


def _json_dumps(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _sqlite_reader_pragmas(dbapi_conn: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_conn, record)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA query_only=ON")  # a read session that tries to write fails loudly
    cur.close()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers work while the ingestion path writes; NORMAL sync is durable
    # across application crashes (not power loss), the usual trade-off for WAL. No
    # busy_timeout: on the loop's thread a busy statement is retried asynchronously.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` with the packaged alembic scripts."""
    from alembic import command
    from alembic.config import Config

    migrations = Path(__file__).resolve().parent.parent / "migrations"
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["cockpit_url"] = url
    command.upgrade(cfg, revision)


def _insert(dialect: str, table: Any) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def insert_ignoring_duplicates(dialect: str, table: Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the engine's dialect."""
    return _insert(dialect, table).on_conflict_do_nothing()


def upsert(dialect: str, table: Any, keys: list[str], where: Any = None) -> Any:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` of every other column (unless the
    primary key), only where ``where`` holds for the stored row. Build it once and
    execute it with parameters: compiling costs more than running it."""
    stmt = _insert(dialect, table)
    updates = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys and not c.primary_key}
    return stmt.on_conflict_do_update(index_elements=keys, set_=updates, where=where)


def increment(dialect: str, table: Any, keys: list[str], column: str) -> Any:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE SET column = column + excluded.column``:
    adds to a counter row, creating it at the first use. Build it once."""
    stmt = _insert(dialect, table)
    return stmt.on_conflict_do_update(index_elements=keys, set_={column: table.c[column] + stmt.excluded[column]})
