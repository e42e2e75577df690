"""The audit chain: appends link, verification catches every kind of tampering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event, text

from cockpit.c2l.audit import (
    GENESIS_HASH,
    AnchorConflict,
    AuditEntry,
    AuditLog,
    audit_row_hash,
    read_anchors,
)
from cockpit.platform.db import Database
from tests.conftest import schema_database, sqlite_url


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")  # skipped (or failed under CI) without one
    else:
        url = sqlite_url(tmp_path, "audit.db")
    async with schema_database(url) as database:
        yield database


async def _fill(audit: AuditLog, n: int) -> None:
    for i in range(n):
        await audit.append(AuditEntry("software", f"action-{i}", i % 2 == 0, {"i": i, "nested": {"x": [i]}},
                                      command_id="c1", agent_id=f"a{i % 3}", operator="op"))


async def test_rows_are_chained_from_sixty_four_zeros(db: Database) -> None:
    audit = AuditLog(db)
    await _fill(audit, 3)
    items, total = await audit.query(limit=10)
    rows = sorted(items, key=lambda r: r["id"])
    assert total == 3
    assert rows[0]["prev_hash"] == GENESIS_HASH
    assert rows[1]["prev_hash"] == rows[0]["row_hash"]
    assert rows[2]["prev_hash"] == rows[1]["row_hash"]
    result = await audit.verify()
    assert result == {"ok": True, "rows": 3, "first_broken_id": None, "reason": "chain intact",
                      "head": rows[2]["row_hash"], "head_id": 3, "anchors": 0}


async def test_concurrent_appends_never_fork_the_chain(db: Database) -> None:
    audit = AuditLog(db)
    commits = []
    event.listen(db.engine.sync_engine, "commit", lambda conn: commits.append(1))
    rows = await asyncio.gather(*(audit.append(AuditEntry("network", "quarantine", True, {"n": n}))
                                  for n in range(40)))
    result = await audit.verify()
    assert result["ok"] and result["rows"] == 40
    # Each caller gets its own row, in the order it appended.
    assert [r["details"]["n"] for r in rows] == list(range(40)) and [r["id"] for r in rows] == list(range(1, 41))
    # Appends made while a write is in progress share the next transaction.
    assert len(commits) <= 3


async def test_an_altered_row_is_detected(db: Database) -> None:
    audit = AuditLog(db)
    await _fill(audit, 5)
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_logs SET details = :d WHERE id = 3"),
                           {"d": '{"i": 3, "nested": {"x": [999]}}'})
    result = await audit.verify()
    assert result["ok"] is False
    assert result["first_broken_id"] == 3
    assert "altered" in result["reason"]


async def test_an_altered_success_flag_is_detected(db: Database) -> None:
    audit = AuditLog(db)
    await _fill(audit, 4)
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_logs SET success = NOT success WHERE id = 2"))
    assert (await audit.verify())["first_broken_id"] == 2


async def test_a_deleted_row_is_detected(db: Database) -> None:
    audit = AuditLog(db)
    await _fill(audit, 5)
    async with db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_logs WHERE id = 2"))
    result = await audit.verify()
    assert result["ok"] is False
    assert result["first_broken_id"] == 3
    assert "deleted" in result["reason"]


async def test_a_deleted_first_row_is_detected(db: Database) -> None:
    audit = AuditLog(db)
    await _fill(audit, 3)
    async with db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_logs WHERE id = 1"))
    assert (await audit.verify())["first_broken_id"] == 2


async def test_swapped_rows_are_detected(db: Database) -> None:
    audit = AuditLog(db)
    await _fill(audit, 5)
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_logs SET id = 1000 WHERE id = 2"))
        await conn.execute(text("UPDATE audit_logs SET id = 2 WHERE id = 4"))
        await conn.execute(text("UPDATE audit_logs SET id = 4 WHERE id = 1000"))
    result = await audit.verify()
    assert result["ok"] is False
    assert result["first_broken_id"] == 2


async def test_query_filters_and_pages_newest_first(db: Database) -> None:
    audit = AuditLog(db)
    await _fill(audit, 6)
    await audit.append(AuditEntry("authorization", "rate_limited", False, {}, command_id="c2"))
    items, total = await audit.query(agent_id="a0")
    assert total == 2 and [r["agent_id"] for r in items] == ["a0", "a0"]
    assert items[0]["id"] > items[1]["id"]
    items, total = await audit.query(command_id="c2", layer="authorization")
    assert total == 1 and items[0]["action"] == "rate_limited" and items[0]["success"] is False
    page, total = await audit.query(command_id="c1", limit=2, offset=2)
    assert total == 6 and [r["id"] for r in page] == [4, 3]


async def test_totals_stay_exact_as_the_audit_grows(db: Database) -> None:
    # A total is kept per filter and topped up with the rows appended since: rows from
    # this process and from another replica (a second AuditLog) both count.
    reader, other = AuditLog(db), AuditLog(db)
    await _fill(reader, 6)
    filters = [{}, {"agent_id": "a1"}, {"layer": "software"}, {"layer": "nowhere"}, {"command_id": "c1"}]
    assert [(await reader.query(**f))[1] for f in filters] == [6, 2, 6, 0, 6]
    await _fill(other, 4)  # agents a0 a1 a2 a0
    await reader.append(AuditEntry("authorization", "rate_limited", False, {}, agent_id="a1"))
    assert [(await reader.query(**f))[1] for f in filters] == [11, 4, 10, 0, 10]
    assert (await reader.query(layer="authorization"))[1] == 1  # a filter first asked now
    # A fresh reader (a restarted replica) counts the same from scratch.
    assert [(await AuditLog(db).query(**f))[1] for f in filters] == [11, 4, 10, 0, 10]


async def test_two_writers_without_a_shared_lock_keep_one_chain(db: Database) -> None:
    # Two replicas (two AuditLog objects, no shared in-process lock) appending at once.
    one, two = AuditLog(db), AuditLog(db)
    await asyncio.gather(*(log.append(AuditEntry("software", "x", True, {"n": n}))
                           for n in range(20) for log in (one, two)))
    result = await one.verify()
    assert result["ok"] and result["rows"] == 40


async def test_every_committed_row_is_anchored_outside_the_database(db: Database, tmp_path: Path) -> None:
    audit = AuditLog(db, tmp_path / "anchors.log")
    await _fill(audit, 4)
    items, _ = await audit.query(limit=10)
    recorded = (tmp_path / "anchors.log").read_text().splitlines()
    assert recorded == [f"{r['id']} {r['row_hash']}" for r in sorted(items, key=lambda r: r["id"])]
    result = await audit.verify()
    assert result["ok"] and result["anchors"] == 4 and result["head_id"] == 4


async def test_a_cut_tail_is_caught_by_the_anchors(db: Database, tmp_path: Path) -> None:
    audit = AuditLog(db, tmp_path / "anchors.log")
    await _fill(audit, 5)
    async with db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_logs WHERE id >= 4"))
    assert (await AuditLog(db).verify())["ok"]  # the shorter chain is valid on its own
    result = await audit.verify()
    assert result["ok"] is False and result["first_broken_id"] == 4
    assert "rows after 3 were deleted" in result["reason"] and "row 5" in result["reason"]


async def test_a_rewritten_chain_is_caught_by_the_anchors(db: Database, tmp_path: Path) -> None:
    # Row 2 deleted, the later rows renumbered and every hash recomputed: a valid chain.
    audit = AuditLog(db, tmp_path / "anchors.log")
    await _fill(audit, 4)
    async with db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_logs WHERE id = 2"))
        for old, new in ((3, 2), (4, 3)):
            await conn.execute(text("UPDATE audit_logs SET id = :n WHERE id = :o"), {"n": new, "o": old})
    rewriter = AuditLog(db)
    prev = GENESIS_HASH
    async with db.engine.begin() as conn:
        rows = (await conn.execute(text("SELECT id FROM audit_logs ORDER BY id"))).scalars().all()
    for row_id in rows:
        items, _ = await rewriter.query(limit=10)
        row = next(r for r in items if r["id"] == row_id)
        fields = {k: row[k] for k in ("id", "command_id", "agent_id", "operator", "layer", "action",
                                      "success", "details", "timestamp")}
        new_hash = audit_row_hash(prev, fields)
        async with db.engine.begin() as conn:
            await conn.execute(text("UPDATE audit_logs SET prev_hash = :p, row_hash = :h WHERE id = :i"),
                               {"p": prev, "h": new_hash, "i": row_id})
        prev = new_hash
    assert (await rewriter.verify())["ok"]  # consistent without anchors
    result = await audit.verify()
    assert result["ok"] is False and result["first_broken_id"] == 2 and "rewritten" in result["reason"]


def test_anchors_that_disagree_about_a_row_mean_a_rollback() -> None:
    h1, h2 = "a" * 64, "b" * 64
    assert read_anchors([f"1 {h1}", "", "# comment", f"2:{h2.upper()}"]) == {1: h1, 2: h2}
    with pytest.raises(AnchorConflict, match="row 1 is anchored with two different hashes"):
        read_anchors([f"1 {h1}", f"1 {h2}"])
    with pytest.raises(ValueError, match="line 1: not an audit anchor"):
        read_anchors(["1 nothex"])


async def test_an_unreadable_or_contradictory_anchor_file_is_reported(db: Database, tmp_path: Path) -> None:
    audit = AuditLog(db, tmp_path / "anchors.log")
    await _fill(audit, 2)
    with (tmp_path / "anchors.log").open("a") as f:
        f.write(f"1 {'f' * 64}\n")
    result = await audit.verify()
    assert result["ok"] is False and result["first_broken_id"] == 1 and "two different hashes" in result["reason"]
    (tmp_path / "anchors.log").write_text("garbage\n")
    result = await audit.verify()
    assert result["ok"] is False and "cannot be read" in result["reason"]
