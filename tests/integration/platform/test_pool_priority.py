"""PostgreSQL's pool serves the kill switch first once every connection is busy: a
command does not queue behind the telemetry and reads that were waiting before it."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeout

from cockpit.platform.db import Database, urgent


async def _hold(db: Database, held: asyncio.Event, release: asyncio.Event) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(text("INSERT INTO notes (body) VALUES ('holder')"))
        held.set()
        await release.wait()


async def _insert(db: Database, body: str) -> None:
    with urgent() if body.startswith("kill") else contextlib.nullcontext():
        async with db.engine.begin() as conn:
            await conn.execute(text("INSERT INTO notes (body) VALUES (:b)"), {"b": body})


async def test_the_kill_switch_gets_the_next_free_postgresql_connection(postgres_url: str) -> None:
    # A pool of one connection stands for a pool whose connections are all in use.
    db = Database(postgres_url, pool_size=1, max_overflow=0, pool_timeout=10)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE notes (id SERIAL PRIMARY KEY, body TEXT)"))
        held, release = asyncio.Event(), asyncio.Event()
        holder = asyncio.create_task(_hold(db, held, release))
        await held.wait()
        waiting = []
        for body in ("telemetry-1", "telemetry-2", "kill-1", "telemetry-3", "kill-2"):
            waiting.append(asyncio.create_task(_insert(db, body)))
            await asyncio.sleep(0.02)  # each is waiting before the next arrives
        release.set()
        await asyncio.gather(holder, *waiting)
        async with db.engine.connect() as conn:
            bodies = (await conn.execute(text("SELECT body FROM notes ORDER BY id"))).scalars().all()
        assert bodies == ["holder", "kill-1", "kill-2", "telemetry-1", "telemetry-2", "telemetry-3"]

        # Giving up on the wait loses no connection.
        short = Database(postgres_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
        held, release = asyncio.Event(), asyncio.Event()
        holder = asyncio.create_task(_hold(short, held, release))
        await held.wait()
        with pytest.raises(PoolTimeout):
            await _insert(short, "too late")
        release.set()
        await holder
        await _insert(short, "after")
        await short.dispose()
    finally:
        await db.dispose()
