"""`alembic upgrade head` from the repo root creates every table on SQLite and
PostgreSQL, with the runbook's indexes, and round-trips through `downgrade base`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

REPO = Path(__file__).resolve().parents[3]
TABLES = {
    "telemetry", "strategic_patterns", "alliances", "verdicts", "agents", "c2l_commands",
    "command_executions", "audit_logs", "snapshots", "api_keys", "stream_events", "verdict_agents",
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


def test_verdicts_written_before_0003_are_found_by_agent(database_url: str) -> None:
    """0003 fills verdict_agents from the verdicts already stored."""
    _alembic(database_url, "upgrade", "0002")
    engine = create_engine(_sync(database_url))
    try:
        with engine.begin() as conn:
            for vid, agents, target in (("v1", '["alpha", "bravo"]', "charlie"), ("v2", '["delta"]', None),
                                        ("v3", '["alpha"]', "alpha")):
                conn.execute(text(
                    "INSERT INTO verdicts (id, fingerprint, fleet_id, agent_id, final_verdict, category, severity, "
                    "title, agents_involved, target, evidence_chain, confidence, recommended_action, status, "
                    "created_at, updated_at) VALUES (:id, :id, 'f', 'a', 'ALLIANCE', 'ALLIANCE', 'LOW', 't', "
                    ":agents, :target, '[]', 0.5, 'MONITOR', 'ACTIVE', :now, :now)"),
                    {"id": vid, "agents": agents, "target": target, "now": "2026-11-27 00:00:00"})
        _alembic(database_url, "upgrade", "head")
        with engine.connect() as conn:
            links = set(conn.execute(text("SELECT agent_id, verdict_id FROM verdict_agents")).all())
        assert links == {("alpha", "v1"), ("bravo", "v1"), ("charlie", "v1"), ("delta", "v2"), ("alpha", "v3")}
    finally:
        engine.dispose()


def test_verdicts_written_before_0008_are_counted(database_url: str) -> None:
    """0008 fills verdict_counts from the verdicts already stored."""
    _alembic(database_url, "upgrade", "0007")
    engine = create_engine(_sync(database_url))
    try:
        with engine.begin() as conn:
            for vid, fleet, status, severity in (("v1", "f1", "ACTIVE", "LOW"), ("v2", "f1", "ACTIVE", "LOW"),
                                                 ("v3", "f1", "DISMISSED", "LOW"), ("v4", "f2", "ACTIVE", "HIGH")):
                conn.execute(text(
                    "INSERT INTO verdicts (id, fingerprint, fleet_id, agent_id, final_verdict, category, severity, "
                    "title, agents_involved, target, evidence_chain, confidence, recommended_action, status, "
                    "created_at, updated_at) VALUES (:id, :id, :fleet, 'a', 'ALLIANCE', 'ALLIANCE', :severity, 't', "
                    "'[\"a\"]', NULL, '[]', 0.5, 'MONITOR', :status, :now, :now)"),
                    {"id": vid, "fleet": fleet, "status": status, "severity": severity, "now": "2026-11-28 00:00:00"})
        _alembic(database_url, "upgrade", "head")
        with engine.connect() as conn:
            counts = set(conn.execute(text("SELECT fleet_id, status, severity, category, n FROM verdict_counts")).all())
        assert counts == {("f1", "ACTIVE", "LOW", "ALLIANCE", 2), ("f1", "DISMISSED", "LOW", "ALLIANCE", 1),
                          ("f2", "ACTIVE", "HIGH", "ALLIANCE", 1)}
    finally:
        engine.dispose()


def test_verdicts_named_before_0009_keep_their_times_by_agent(database_url: str) -> None:
    """0009 copies each verdict's updated_at onto the rows naming its agents."""
    _alembic(database_url, "upgrade", "0008")
    engine = create_engine(_sync(database_url))
    try:
        with engine.begin() as conn:
            for vid, at in (("v1", "2026-11-28 01:00:00"), ("v2", "2026-11-28 02:00:00")):
                conn.execute(text(
                    "INSERT INTO verdicts (id, fingerprint, fleet_id, agent_id, final_verdict, category, severity, "
                    "title, agents_involved, target, evidence_chain, confidence, recommended_action, status, "
                    "created_at, updated_at) VALUES (:id, :id, 'f', 'a', 'ALLIANCE', 'ALLIANCE', 'LOW', 't', "
                    "'[\"a\", \"b\"]', NULL, '[]', 0.5, 'MONITOR', 'ACTIVE', :at, :at)"), {"id": vid, "at": at})
                for agent in ("a", "b"):
                    conn.execute(text("INSERT INTO verdict_agents (agent_id, verdict_id) VALUES (:a, :v)"),
                                 {"a": agent, "v": vid})
        _alembic(database_url, "upgrade", "head")
        with engine.connect() as conn:
            mismatched = conn.execute(text(
                "SELECT count(*) FROM verdict_agents JOIN verdicts ON verdicts.id = verdict_agents.verdict_id "
                "WHERE verdict_agents.updated_at IS NULL OR verdict_agents.updated_at <> verdicts.updated_at"
            )).scalar()
            newest_first = conn.execute(text(
                "SELECT verdict_id FROM verdict_agents WHERE agent_id = 'a' "
                "ORDER BY updated_at DESC, verdict_id")).scalars().all()
        assert mismatched == 0 and newest_first == ["v2", "v1"]
    finally:
        engine.dispose()
