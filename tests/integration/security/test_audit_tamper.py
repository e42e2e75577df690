"""The audit trail is tamper-evident: rows edited, deleted or reordered straight in
the database, and the newest rows cut off, are caught by the real ``cockpit audit
verify`` CLI, on SQLite and PostgreSQL, and the restored chain verifies again."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection

from cockpit.settings import load_settings
from tests.integration.gateway.conftest import make_harness
from tests.integration.security.conftest import final, register

REPO = Path(__file__).resolve().parents[3]


def verify(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "cockpit", "audit", "verify", *args], check=False,
        env={**os.environ, "COCKPIT_LOG_LEVEL": "WARNING", **env},
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


async def fill_audit(settings: Any) -> None:
    """Real commands through the API, so the chain holds what production writes."""
    async for h in make_harness(settings):
        await register(h, "audited")
        for command in ("MUTE", "SNAPSHOT_STATE", "INJECT_CONSTRAINT", "MUTE"):
            parameters = {"constraint": "stay in your lane"} if command == "INJECT_CONSTRAINT" else {}
            r = await h.client.post("/commands", headers=h.headers(), json={
                "command_type": command, "target_agents": ["audited"], "parameters": parameters})
            assert r.status_code == 202, r.text
            await final(h, r.json()["command_id"])


def rows(conn: Connection) -> list[Any]:
    return list(conn.execute(text("SELECT id, details FROM audit_logs ORDER BY id")))


def check_tampering(sync_url: str, env: dict[str, str], anchor_file: Path) -> None:
    engine = create_engine(sync_url)
    try:
        with engine.connect() as conn:
            ids = [r.id for r in rows(conn)]
            head = conn.execute(text("SELECT row_hash FROM audit_logs WHERE id = :i"), {"i": ids[-1]}).scalar_one()
        assert len(ids) >= 8, ids
        # The server anchored every committed row in its data dir.
        assert len(anchor_file.read_text().splitlines()) == len(ids)
        code, out = verify(env)
        assert code == 0 and f"ok, {len(ids)} rows, {len(ids)} anchors checked, head {ids[-1]}:{head}" in out, out
        victim, after = ids[3], ids[4]
        cast = "CAST(:d AS JSON)" if engine.dialect.name == "postgresql" else ":d"

        # 1. Edit a row's details.
        with engine.begin() as conn:
            original = conn.execute(text("SELECT details FROM audit_logs WHERE id = :i"), {"i": victim}).scalar_one()
            original = original if isinstance(original, str) else json.dumps(original)
            conn.execute(text(f"UPDATE audit_logs SET details = {cast} WHERE id = :i"),
                         {"d": '{"note": "nothing happened here"}', "i": victim})
        code, out = verify(env)
        assert code == 1 and f"BROKEN at audit row {victim}:" in out and "altered" in out, out
        with engine.begin() as conn:
            conn.execute(text(f"UPDATE audit_logs SET details = {cast} WHERE id = :i"), {"d": original, "i": victim})
        assert verify(env)[0] == 0

        # 2. Delete a row from the middle: its successor's link breaks.
        with engine.begin() as conn:
            saved = conn.execute(text("SELECT * FROM audit_logs WHERE id = :i"), {"i": victim}).mappings().one()
            conn.execute(text("DELETE FROM audit_logs WHERE id = :i"), {"i": victim})
        code, out = verify(env)
        assert code == 1 and f"BROKEN at audit row {after}:" in out and "deleted" in out, out
        with engine.begin() as conn:
            columns = ", ".join(saved.keys())
            values = ", ".join(f"CAST(:{k} AS JSON)" if k == "details" and cast != ":d" else f":{k}" for k in saved)
            restored = dict(saved)
            if not isinstance(restored["details"], str):
                restored["details"] = json.dumps(restored["details"])
            conn.execute(text(f"INSERT INTO audit_logs ({columns}) VALUES ({values})"), restored)
        assert verify(env)[0] == 0

        # 3. Reorder two rows (swap their ids, i.e. their places in the chain).
        with engine.begin() as conn:
            for old, new in ((victim, -1), (after, victim), (-1, after)):
                conn.execute(text("UPDATE audit_logs SET id = :n WHERE id = :o"), {"n": new, "o": old})
        code, out = verify(env)
        assert code == 1 and f"BROKEN at audit row {victim}:" in out, out
        with engine.begin() as conn:
            for old, new in ((victim, -1), (after, victim), (-1, after)):
                conn.execute(text("UPDATE audit_logs SET id = :n WHERE id = :o"), {"n": new, "o": old})
        assert verify(env)[0] == 0

        # 4. Cut the newest rows: the shorter chain is valid, the anchors are not there.
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_logs WHERE id >= :i"), {"i": ids[-2]})
        code, out = verify(env)
        assert code == 1 and f"BROKEN at audit row {ids[-2]}:" in out and "deleted" in out, out
        # Without the anchor file only an anchor kept elsewhere (the printed head) tells.
        moved = anchor_file.rename(anchor_file.with_suffix(".moved"))
        code, out = verify(env)
        assert code == 0 and "no anchors" in out, out
        code, out = verify(env, "--anchor", f"{ids[-1]}:{head}")
        assert code == 1 and f"rows after {ids[-3]} were deleted" in out, out
        code, out = verify(env, "--anchor-file", str(moved))
        assert code == 1 and f"BROKEN at audit row {ids[-2]}:" in out, out
    finally:
        engine.dispose()


async def test_tampering_is_caught_on_sqlite(tmp_path: Path) -> None:
    await fill_audit(load_settings(data_dir=tmp_path))
    check_tampering(f"sqlite:///{tmp_path / 'cockpit.db'}", {"COCKPIT_DATA_DIR": str(tmp_path)},
                    tmp_path / "audit-anchors.log")


@pytest.mark.postgres
async def test_tampering_is_caught_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    await fill_audit(load_settings(database_url=postgres_url, auto_migrate=True, data_dir=tmp_path))
    check_tampering(postgres_url, {"COCKPIT_DATABASE_URL": postgres_url, "COCKPIT_DATA_DIR": str(tmp_path)},
                    tmp_path / "audit-anchors.log")


async def test_an_empty_chain_is_intact(tmp_path: Path) -> None:
    code, out = verify({"COCKPIT_DATA_DIR": str(tmp_path)})
    assert code == 0 and "ok, 0 rows, 0 anchors checked, empty" in out, out


async def test_a_missing_or_bad_anchor_is_a_clear_error(tmp_path: Path) -> None:
    env = {"COCKPIT_DATA_DIR": str(tmp_path)}
    code, out = verify(env, "--anchor-file", str(tmp_path / "nowhere.log"))
    assert code == 2 and "no anchor file at" in out and "Traceback" not in out, out
    code, out = verify(env, "--anchor", "12:not-a-hash")
    assert code == 2 and "not an audit anchor" in out and "Traceback" not in out, out


async def test_readers_asking_together_share_one_walk_of_the_chain(tmp_path: Path) -> None:
    """``GET /audits/verify`` is open to every reader and walks the whole chain: those
    asking while a walk runs share its report instead of starting one each."""
    settings = load_settings(data_dir=tmp_path)
    await fill_audit(settings)
    async for h in make_harness(settings):
        answers = await asyncio.gather(*(h.client.get("/audits/verify", headers=h.headers("VIEWER"))
                                         for _ in range(8)))
        reports = [a.json() for a in answers]
        assert all(a.status_code == 200 for a in answers) and all(r["ok"] for r in reports)
        assert len({r["head_id"] for r in reports}) == 1 and reports[0]["rows"] > 0
        shared = await asyncio.gather(h.cockpit.c2l.verify_audit(), h.cockpit.c2l.verify_audit())
        assert shared[0] is shared[1]  # one walk, one report
        assert (await h.cockpit.c2l.verify_audit()) is not shared[0]  # the next asks anew
