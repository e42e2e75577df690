"""scripts/backup_cockpit_db.sh and restore_cockpit_db.sh against a real
PostgreSQL: a database written by Cockpit itself survives backup, DROP DATABASE
and restore row for row; old backups are pruned; a bad restore changes nothing."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from tests.integration.deploy.conftest import REPO_ROOT, CockpitServer

SCRIPTS = REPO_ROOT / "scripts"


def _connect(url: str, **kw: Any) -> psycopg.Connection[Any]:
    u = make_url(url)
    return psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password,
                           dbname=u.database, connect_timeout=5, **kw)


def _snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (and the alembic revision), in a stable order."""
    with _connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]
        out = {}
        for table in tables:
            rows = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))).fetchall()
            out[table] = sorted(rows, key=repr)
        out["__indexes__"] = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname").fetchall()
        return out


def _env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCKPIT_") or k.startswith("COCKPIT_TEST_")}
    return {**env, "COCKPIT_DATABASE_URL": url, **extra}


def _run(cmd: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL, **kw)


def _recreate(admin_url: str, database: str, owner: str) -> None:
    with _connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(owner)))


def _write_through_cockpit(url: str, cockpit_server: Callable[..., CockpitServer]) -> None:
    """Rows written the way production writes them: the CLI and the HTTP API."""
    created = _run([sys.executable, "-m", "cockpit", "apikey", "create", "--role", "CHIEF_ARCHITECT",
                    "--name", "backup-test", "--totp"], _env(url))
    assert created.returncode == 0, created.stderr
    key = re.search(r"^key:\s+(\S+)", created.stdout, re.MULTILINE).group(1)  # type: ignore[union-attr]
    server = cockpit_server(COCKPIT_DATABASE_URL=url)
    messages = [
        {"message_id": f"m{i}", "source_agent_id": "agent-a", "target_agent_ids": ["agent-b"],
         "content": text}
        for i, text in enumerate([
            "I will support you against agent-c", "Let us attack agent-c together",
            "Trust me, I am moving to Burgundy", "I never promised you anything",
        ])
    ]
    resp = httpx.post(f"{server.url}/telemetry", json={"messages": messages},
                      headers={"X-API-Key": key}, timeout=30)
    assert resp.status_code == 202, resp.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with _connect(url) as conn:
            if conn.execute("SELECT count(*) FROM telemetry").fetchone()[0] >= len(messages):
                break
        time.sleep(0.2)
    server.process.terminate()
    server.process.wait(20)


def test_backup_drop_restore_round_trip(
    postgres_url: str, postgres_admin_url: str, pg_bin: Path, tmp_path: Path,
    cockpit_server: Callable[..., CockpitServer],
) -> None:
    migrated = _run([sys.executable, "-m", "alembic", "upgrade", "head"], _env(postgres_url))
    assert migrated.returncode == 0, migrated.stderr
    _write_through_cockpit(postgres_url, cockpit_server)
    before = _snapshot(postgres_url)
    assert before["api_keys"] and before["telemetry"] and before["alembic_version"]
    assert {"idx_verdicts_agent_id", "idx_audit_command_id"} <= {name for name, _ in before["__indexes__"]}

    backups = tmp_path / "backups"
    backups.mkdir()
    stale = backups / "cockpit_20000101_000000.sql.gz"
    recent = backups / "cockpit_20000102_000000.sql.gz"
    for path, days in ((stale, 8), (recent, 6)):
        path.write_bytes(gzip.compress(b"-- old\n"))
        os.utime(path, (time.time() - days * 86400, time.time() - days * 86400))

    env = _env(postgres_url, BACKUP_DIR=str(backups), PG_DUMP=str(pg_bin / "pg_dump"), PSQL=str(pg_bin / "psql"))
    backup = _run(["bash", str(SCRIPTS / "backup_cockpit_db.sh")], env)
    assert backup.returncode == 0, backup.stderr
    written = Path(backup.stdout.strip().splitlines()[-1])
    assert written.parent == backups and re.fullmatch(r"cockpit_\d{8}_\d{6}\.sql\.gz", written.name)
    assert b"CREATE TABLE" in gzip.decompress(written.read_bytes())
    assert not stale.exists(), "backups older than 7 days are deleted"
    assert recent.exists()

    u = make_url(postgres_url)
    _recreate(postgres_admin_url, u.database, u.username)
    assert _snapshot(postgres_url) == {"__indexes__": []}

    restore = _run(["bash", str(SCRIPTS / "restore_cockpit_db.sh"), str(written)], env)
    assert restore.returncode == 0, restore.stderr
    assert _snapshot(postgres_url) == before

    # A libpq URL (no +psycopg) works the same, and the restored database is
    # the schema Cockpit expects (alembic sees head, nothing to do).
    libpq = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    again = _run(["bash", str(SCRIPTS / "backup_cockpit_db.sh")], {**env, "COCKPIT_DATABASE_URL": libpq})
    assert again.returncode == 0, again.stderr
    current = _run([sys.executable, "-m", "alembic", "current"], _env(postgres_url))
    assert "(head)" in current.stdout, current.stdout + current.stderr


def test_a_failed_restore_changes_nothing(postgres_url: str, pg_bin: Path, tmp_path: Path) -> None:
    with _connect(postgres_url) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('before')")
    bad = tmp_path / "cockpit_bad.sql.gz"
    bad.write_bytes(gzip.compress(b"INSERT INTO kept VALUES ('half');\nTHIS IS NOT SQL;\n"))
    env = _env(postgres_url, PSQL=str(pg_bin / "psql"))
    result = _run(["bash", str(SCRIPTS / "restore_cockpit_db.sh"), str(bad)], env)
    assert result.returncode != 0
    assert "syntax error" in result.stderr
    with _connect(postgres_url) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("before",)]

    missing = _run(["bash", str(SCRIPTS / "restore_cockpit_db.sh")], env)
    assert missing.returncode == 2 and "usage" in missing.stderr
    no_url = _run(["bash", str(SCRIPTS / "backup_cockpit_db.sh")],
                  {k: v for k, v in env.items() if k not in ("COCKPIT_DATABASE_URL", "DATABASE_URL")})
    assert no_url.returncode == 2 and "COCKPIT_DATABASE_URL" in no_url.stderr
