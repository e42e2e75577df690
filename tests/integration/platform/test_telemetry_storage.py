"""The embedded engine's batch insert writes telemetry exactly as the ORM would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cockpit.events import MessageAnalysis, Telemetry
from cockpit.filter.ingest import TelemetryStore, _row
from cockpit.filter.models import TelemetryRow
from cockpit.platform.db import Database
from tests.conftest import schema_database, sqlite_url


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with schema_database(sqlite_url(tmp_path, "telemetry.db")) as database:
        yield database


def _messages(prefix: str) -> list[Telemetry]:
    return [
        Telemetry(
            message_id=f"{prefix}-said", fleet_id="blue", source_agent_id="a", target_agent_ids=["b", "c"],
            conversation_id="conv", content="Je vous soutiendrai, 約束する \"quoted\"",
            timestamp=datetime(2026, 3, 1, 23, 30, 5, 120, tzinfo=timezone(timedelta(hours=-5))),
            provenance_chain=["root", "a"], attributes={"turn": 3, "nested": {"x": [1.5, None, True]}},
        ),
        Telemetry(
            message_id=f"{prefix}-did", source_agent_id="a", kind="action",
            action={"type": "attack", "target": "b", "params": {"force": 2}},
            timestamp=datetime(2026, 3, 2, 4, 0, tzinfo=UTC),
        ),
    ]


async def _stored(db: Database, prefix: str) -> list[dict[str, Any]]:
    async with db.engine.connect() as conn:
        rows = (await conn.exec_driver_sql(
            "SELECT * FROM telemetry WHERE message_id LIKE ? ORDER BY message_id", (f"{prefix}-%",)
        )).mappings().all()
    return [{k: v for k, v in r.items() if k not in ("message_id", "received_at")} for r in rows]


async def test_batch_insert_stores_the_same_values_as_the_orm(db: Database) -> None:
    store = TelemetryStore(db)
    analysis = MessageAnalysis(intent="COOPERATIVE", intent_confidence=0.75, deception_score=0.125)
    fast = _messages("fast")
    result = await store.insert_new(fast, quarantined_agents=(), analysis={"fast-said": analysis})
    assert result.accepted == 2 and result.inserted == {"fast-said", "fast-did"}

    orm = _messages("orm")
    async with db.sessions.begin() as session:
        for t in orm:
            received = datetime.now(UTC)
            session.add(TelemetryRow(**_row(t, received, False, analysis if t.message_id == "orm-said" else None)))

    # Byte for byte what SQLAlchemy writes (timestamps in UTC, JSON text, null action).
    assert await _stored(db, "fast") == await _stored(db, "orm")
    # And it reads back as the messages that were sent.
    evidence = {e["message_id"]: e for e in await store.messages(["fast-said", "fast-did"])}
    for t in fast:
        assert evidence[t.message_id]["timestamp"] == t.timestamp.astimezone(UTC).isoformat()
    said, did = evidence["fast-said"], evidence["fast-did"]
    assert said["attributes"] == fast[0].attributes and said["action"] is None
    assert (said["intent"], said["deception_score"]) == ("COOPERATIVE", 0.125)
    assert did["action"] == {"type": "attack", "target": "b", "params": {"force": 2}}


async def test_batch_insert_ignores_known_ids_and_reports_them(db: Database) -> None:
    store = TelemetryStore(db)
    first = await store.insert_new(_messages("dup"))
    again = await store.insert_new([*_messages("dup"), *_messages("new")])
    assert first.accepted == 2
    assert (again.accepted, again.duplicates) == (2, 2)
    assert again.inserted == {"new-said", "new-did"}
    assert await store.count() == 4


async def test_an_id_held_by_another_agent_or_fleet_is_a_conflict_not_a_duplicate(db: Database) -> None:
    store = TelemetryStore(db)

    def said(mid: str, agent: str, fleet: str = "default") -> Telemetry:
        return Telemetry(message_id=mid, source_agent_id=agent, fleet_id=fleet, content="hello")

    await store.insert_new([said("held", "mallory")])
    batch = [said("held", "alice"), said("held", "mallory"), said("held", "mallory", "other"),
             said("new", "alice"), said("new", "alice"), said("new", "bob")]
    result = await store.insert_new(batch)
    assert (result.accepted, result.duplicates) == (1, 2)
    assert {(t.message_id, t.source_agent_id, t.fleet_id) for t in result.conflicts} == {
        ("new", "bob", "default"), ("held", "alice", "default"), ("held", "mallory", "other")}
    stored = {m["message_id"]: m["source_agent_id"] for m in await store.messages(["held", "new"])}
    assert stored == {"held": "mallory", "new": "alice"}
