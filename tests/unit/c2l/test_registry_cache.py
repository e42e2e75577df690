"""The registry's cached set of MUTED agents and its cached tokens (read by every
telemetry request) follow this replica's changes at once, however long they are cached."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from cockpit.c2l.models import AgentRow
from cockpit.c2l.registry import AgentRegistry
from cockpit.platform.db import Database, utcnow
from tests.conftest import schema_database, sqlite_url


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with schema_database(sqlite_url(tmp_path, "registry.db")) as database:
        yield database


async def test_the_cached_mutes_follow_this_replicas_changes(db: Database) -> None:
    registry = AgentRegistry(db, cache_seconds=3600)  # never expires during the test
    for name in ("a", "b", "c"):
        await registry.register({"agent_id": name, "name": name})
    assert await registry.muted(["a", "b", "c"]) == set()  # cached from here on

    await registry.raise_status("a", "MUTED", muted_until=utcnow() + timedelta(minutes=5))
    await registry.raise_status("b", "MUTED", muted_until=utcnow() + timedelta(minutes=5))
    assert await registry.muted(["a", "b", "c"]) == {"a", "b"}

    # Isolating a muted agent replaces its mute; the mute's expiry ends another.
    await registry.raise_status("a", "ISOLATED")
    async with db.engine.begin() as conn:  # b's mute ran out
        await conn.execute(update(AgentRow).where(AgentRow.id == "b").values(muted_until=utcnow()))
    assert await registry.unmute_if_expired("b", utcnow())
    assert await registry.muted(["a", "b", "c"]) == set()

    # A mute that has passed stops counting even before it is ended.
    await registry.raise_status("c", "MUTED", muted_until=utcnow() - timedelta(seconds=1))
    assert await registry.muted(["c"]) == set()



async def test_a_token_read_racing_its_revocation_is_not_cached(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read of a token that started before this replica revoked it must not put the
    token back into the cache as usable (for ``cache_seconds``): the revocation holds
    at once on the replica that made it."""
    registry = AgentRegistry(db, cache_seconds=3600)
    token = (await registry.register({"agent_id": "a", "name": "a"}))["token"]
    read, go_on = asyncio.Event(), asyncio.Event()
    reader = db.reader

    class PausedReader:  # the read done, its caching not yet: where the revocation lands
        @contextlib.asynccontextmanager
        async def connect(self) -> AsyncIterator[Any]:
            async with reader.connect() as conn:
                yield conn
            read.set()
            await go_on.wait()

    monkeypatch.setattr(db, "reader", PausedReader())
    racing = asyncio.create_task(registry.identify(token))
    await read.wait()
    monkeypatch.setattr(db, "reader", reader)
    await registry.revoke_token("a")
    go_on.set()
    assert await racing == ("a", "default")  # it read the row before the revocation
    assert await registry.identify(token) is None
