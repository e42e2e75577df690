"""The kill switch goes first for a database connection: the embedded engine's one
writer connection, and PostgreSQL's pool once every connection is busy. A command
does not queue behind the telemetry and reads that were waiting before it, and a
waiter that gives up loses no connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeout

from cockpit.platform.db import Database, urgent

#: a pool of one connection stands for a pool whose connections are all in use
_ONE_CONNECTION = {"pool_size": 1, "max_overflow": 0}


@pytest.fixture(params=["sqlite", "postgresql"])
async def open_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Callable[..., Database]]:
    """Opens ``Database`` objects on one fresh database (with a ``notes`` table)."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        key = "id SERIAL PRIMARY KEY"
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}"
        key = "id INTEGER PRIMARY KEY"
    opened: list[Database] = []

    def open_(**kwargs: float) -> Database:
        opened.append(Database(url, **_ONE_CONNECTION, **kwargs))  # type: ignore[arg-type]
        return opened[-1]

    async with open_().engine.begin() as conn:
        await conn.execute(text(f"CREATE TABLE notes ({key}, body TEXT)"))
    yield open_
    for db in opened:
        await db.dispose()


async def _hold(db: Database, held: asyncio.Event, release: asyncio.Event) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(text("INSERT INTO notes (body) VALUES ('holder')"))
        held.set()
        await release.wait()


async def _insert(db: Database, body: str) -> None:
    with urgent() if body.startswith("kill") else contextlib.nullcontext():
        async with db.engine.begin() as conn:
            await conn.execute(text("INSERT INTO notes (body) VALUES (:b)"), {"b": body})


async def _bodies(db: Database) -> list[str]:
    async with db.reader.connect() as conn:
        return list((await conn.execute(text("SELECT body FROM notes ORDER BY id"))).scalars().all())


async def test_the_kill_switch_gets_the_next_free_connection(open_db: Callable[..., Database]) -> None:
    db = open_db(pool_timeout=10)
    held, release = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(_hold(db, held, release))
    await held.wait()
    waiting = []
    for body in ("telemetry-1", "telemetry-2", "kill-1", "telemetry-3", "kill-2"):
        waiting.append(asyncio.create_task(_insert(db, body)))
        await asyncio.sleep(0.02)  # each is waiting before the next arrives
    release.set()
    await asyncio.gather(holder, *waiting)
    assert await _bodies(db) == ["holder", "kill-1", "kill-2", "telemetry-1", "telemetry-2", "telemetry-3"]


async def test_a_waiter_that_gives_up_loses_no_connection(open_db: Callable[..., Database]) -> None:
    db = open_db(pool_timeout=0.2)
    held, release = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(_hold(db, held, release))
    await held.wait()
    with pytest.raises(PoolTimeout):
        await _insert(db, "too late")
    waiting = asyncio.create_task(_insert(db, "next"))
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(holder, waiting)
    await _insert(db, "after")  # the connection went back to the pool every time
    assert await _bodies(db) == ["holder", "next", "after"]
