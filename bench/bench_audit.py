"""What a page of ``GET /audits`` costs as the audit grows.

    python bench/bench_audit.py [--rows 1000000] [--database-url URL]

Fills a fresh, migrated database (SQLite in a temporary directory unless
``--database-url`` names an empty PostgreSQL database) with ``--rows`` audit rows
written straight into the table (the chain's hashes are not computed: only the
queries are timed), then times ``AuditLog.query`` (a page of 50 and its total, as
``GET /audits`` asks) for several filters: the first query of each filter, and the
following ones. A full ``count(*)`` of the table is timed beside them for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, insert, select, text

from cockpit.c2l.audit import AuditLog
from cockpit.c2l.models import AuditRow
from cockpit.platform.db import Database

sys.path.insert(0, str(Path(__file__).resolve().parent))
from querybench import HEADER, fresh_database, page_row, timed

_LAYERS = ("api", "executor", "layer1_network", "layer2_process", "system")
_CHUNK = 5000


async def fill(db: Database, rows: int) -> None:
    table = AuditRow.__table__
    now = datetime.now(UTC)
    for start in range(1, rows + 1, _CHUNK):
        batch = [
            {"id": i, "command_id": f"cmd-{i // 6}", "agent_id": f"agent-{i % 500}", "operator": "bench",
             "layer": _LAYERS[i % len(_LAYERS)], "action": "MUTE", "success": True,
             "details": {"step": i % 6}, "timestamp": now, "prev_hash": "0" * 64, "row_hash": f"{i:064x}"}
            for i in range(start, min(start + _CHUNK, rows + 1))
        ]
        async with db.engine.begin() as conn:
            await conn.execute(insert(table), batch)


async def run(url: str, rows: int) -> None:
    db = Database(url)
    try:
        started = time.perf_counter()
        await fill(db, rows)
        print(f"{rows:,} audit rows on {db.dialect} ({time.perf_counter() - started:.1f} s to fill)")
        if db.dialect == "postgresql":  # the planner's statistics, as autovacuum keeps them
            async with db.engine.connect() as conn:
                await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(text("ANALYZE audit_logs"))
        async with db.reader.connect() as conn:
            full = await timed(lambda: conn.scalar(select(func.count()).select_from(AuditRow.__table__)), 5)
        print(f"full count(*) of the table: median {statistics.median(full):.2f} ms")
        audit = AuditLog(db)
        print(HEADER)
        for label, kw in (("none", {}), ("layer=executor", {"layer": "executor"}),
                          ("layer=unknown", {"layer": "unknown"}), ("agent_id=agent-7", {"agent_id": "agent-7"}),
                          ("command_id=cmd-77", {"command_id": "cmd-77"})):
            print(await page_row(label, lambda kw=kw: audit.query(limit=50, **kw)))
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    asyncio.run(run(fresh_database(args.database_url, "audit.db"), args.rows))


if __name__ == "__main__":
    main()
