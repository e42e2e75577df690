"""`alembic upgrade head` from the repo root creates every table on SQLite and
PostgreSQL, with the runbook's indexes, and round-trips through `downgrade base`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

REPO = Path(__file__).resolve().parents[3]
TABLES = {
    "telemetry", "strategic_patterns", "alliances", "verdicts", "agents", "c2l_commands",
    "command_executions", "audit_logs", "snapshots", "api_keys", "stream_events",
}
RUNBOOK_INDEXES = {
    "verdicts": {"idx_verdicts_agent_id", "idx_verdicts_created_at", "idx_verdicts_final_verdict"},
    "audit_logs": {"idx_audit_command_id", "idx_audit_timestamp"},
}


def _alembic(url: str, *args: str) -> None:
    env = {**os.environ, "COCKPIT_DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "alembic", *args], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=120)


def _sync(url: str) -> str:
    return url.replace("+aiosqlite", "").replace("+psycopg", "+psycopg")


def _check_schema(url: str) -> None:
    engine = create_engine(_sync(url))
    try:
        insp = inspect(engine)
        assert TABLES <= set(insp.get_table_names())
        for table, expected in RUNBOOK_INDEXES.items():
            assert expected <= {ix["name"] for ix in insp.get_indexes(table)}
        verdict_columns = {c["name"] for c in insp.get_columns("verdicts")}
        assert {"agent_id", "created_at", "final_verdict"} <= verdict_columns
        assert {"command_id", "timestamp"} <= {c["name"] for c in insp.get_columns("audit_logs")}
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'cockpit.db'}"
    return request.getfixturevalue("postgres_url")


def test_upgrade_downgrade_round_trip(database_url: str) -> None:
    _alembic(database_url, "upgrade", "head")
    _check_schema(database_url)
    _alembic(database_url, "downgrade", "base")
    engine = create_engine(_sync(database_url))
    try:
        assert not (TABLES & set(inspect(engine).get_table_names()))
    finally:
        engine.dispose()
    _alembic(database_url, "upgrade", "head")
    _check_schema(database_url)


def test_cockpit_migrate_command(database_url: str) -> None:
    env = {**os.environ, "COCKPIT_DATABASE_URL": database_url}
    out = subprocess.run([sys.executable, "-m", "cockpit", "migrate"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "head" in out.stdout
    _check_schema(database_url)


def test_models_and_migrations_agree(database_url: str) -> None:
    """`alembic check`: the migration creates exactly what the models declare."""
    _alembic(database_url, "upgrade", "head")
    env = {**os.environ, "COCKPIT_DATABASE_URL": database_url}
    out = subprocess.run([sys.executable, "-m", "alembic", "check"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
