"""The registry's cached set of MUTED agents (read by every telemetry request) follows
this replica's status changes at once, however long it is cached."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

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

