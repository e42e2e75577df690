"""The embedded engine runs SQLite on the event loop's thread without ever stalling it:
a write that meets another process's lock waits asynchronously and then succeeds;
work that must not be lost waits out a longer outage, a wrong statement fails at once."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from cockpit.platform.db import Database
from cockpit.platform.retry import until_done


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    async with database.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
    yield database
    await database.dispose()


async def _ticks_while(coro: asyncio.Future[object] | asyncio.Task[object]) -> list[float]:
    """Gaps between 10 ms ticks of another task while ``coro`` runs."""
    gaps: list[float] = []
    last = time.perf_counter()
    while not coro.done():
        await asyncio.sleep(0.01)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    return gaps


async def test_a_write_waits_for_another_process_lock_without_blocking_the_loop(
    db: Database, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "inline.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    other.execute("INSERT INTO notes (body) VALUES ('theirs')")

    async def write() -> None:
        async with db.engine.begin() as conn:
            await conn.execute(text("INSERT INTO notes (body) VALUES ('ours')"))

    task = asyncio.create_task(write())
    await asyncio.sleep(0.3)
    assert not task.done()  # still waiting for the lock...
    other.execute("COMMIT")
    gaps = await _ticks_while(task)
    await task
    other.close()

    async with db.reader.connect() as conn:
        bodies = (await conn.execute(text("SELECT body FROM notes ORDER BY id"))).scalars().all()
    assert bodies == ["theirs", "ours"]
    # ...and the loop kept serving others meanwhile (no busy handler sleeping in it).
    assert max(gaps, default=0) < 0.2


async def test_a_lock_held_too_long_fails_the_write_cleanly(db: Database, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "inline.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    impatient = Database(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}", sqlite_busy_timeout=0.3)
    started = time.perf_counter()
    with pytest.raises(OperationalError, match="locked"):
        async with impatient.engine.begin() as conn:
            await conn.execute(text("INSERT INTO notes (body) VALUES ('late')"))
    assert 0.25 < time.perf_counter() - started < 5
    other.execute("ROLLBACK")
    other.close()
    await impatient.dispose()


async def test_a_large_batch_is_written_from_the_worker_thread(db: Database) -> None:
    rows = [{"body": f"note {i} " + "x" * 50} for i in range(5000)]
    async with db.engine.begin() as conn:
        await conn.execute(text("INSERT INTO notes (body) VALUES (:body)"), rows)
    async with db.reader.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM notes")) == 5000
        assert await conn.scalar(text("SELECT body FROM notes WHERE id = 5000")) == "note 4999 " + "x" * 50


async def test_work_that_must_not_be_lost_waits_out_a_lock_held_past_the_busy_timeout(
    db: Database, tmp_path: Path
) -> None:
    # The verdict engine's and the filter's writes past the claim go through until_done:
    # a database unusable for longer than the busy timeout delays them, never drops them.
    other = sqlite3.connect(tmp_path / "inline.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    impatient = Database(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}", sqlite_busy_timeout=0.1)
    attempts = 0

    async def write() -> str:
        nonlocal attempts
        attempts += 1
        async with impatient.engine.begin() as conn:
            await conn.execute(text("INSERT INTO notes (body) VALUES ('kept')"))
        return "written"

    task = asyncio.create_task(until_done(write, what="note_write", first_delay=0.05, max_delay=0.1))
    await asyncio.sleep(1.0)
    assert not task.done() and attempts >= 3  # failed with "locked" several times, still trying
    other.execute("ROLLBACK")
    other.close()
    assert await asyncio.wait_for(task, 5) == "written"
    async with db.reader.connect() as conn:
        assert (await conn.execute(text("SELECT body FROM notes"))).scalars().all() == ["kept"]
    await impatient.dispose()


async def test_a_wrong_statement_is_not_mistaken_for_an_outage(db: Database) -> None:
    # SQLite reports "no such table" as an OperationalError, like "database is locked".
    async def wrong() -> None:
        async with db.engine.begin() as conn:
            await conn.execute(text("INSERT INTO no_such_table (body) VALUES ('x')"))

    with pytest.raises(OperationalError, match="no such table"):
        await asyncio.wait_for(until_done(wrong, what="wrong_write"), 2)
