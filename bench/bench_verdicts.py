"""What a page of ``GET /verdicts`` and ``GET /verdicts/stats`` cost as verdicts pile up.

    python bench/bench_verdicts.py [--verdicts 500000] [--database-url URL]

Fills a fresh, migrated database (SQLite in a temporary directory unless
``--database-url`` names an empty PostgreSQL database) with ``--verdicts`` verdicts
through the verdict engine's own write path (batches of new drafts, then status
changes), so every table the engine keeps is as it would be, then times what
operators' dashboards ask: a page of 50 and its total for several filters, and the
stats. Verdicts are spread over 20 fleets, 500 agents (two named per verdict), four
categories (THREAT, which the data never has, stands for a filter matching nothing)
and four severities; a fifth of them stay ACTIVE, the rest are MITIGATED or
DISMISSED, as on a deployment whose operators keep up.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text

from cockpit.events.verdict import Category, Severity, VerdictDrafted
from cockpit.platform.bus import EventBus
from cockpit.platform.db import Database, utcnow
from cockpit.platform.metrics import Metrics
from cockpit.verdict.service import VerdictEngine, VerdictFilters

sys.path.insert(0, str(Path(__file__).resolve().parent))
from querybench import HEADER, fresh_database, page_row, timed

_CATEGORIES = (Category.ALLIANCE, Category.COLLUSION, Category.DECEPTION, Category.INCONSISTENCY)
_SEVERITIES = (Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)
_BATCH = 500


def draft(i: int) -> VerdictDrafted:
    return VerdictDrafted(
        fingerprint=f"bench-{i}", fleet_id=f"fleet-{i % 20}", category=_CATEGORIES[i % 4],
        severity=_SEVERITIES[(i // 4) % 4], title=f"situation {i}",
        agents_involved=[f"agent-{i % 500}", f"agent-{(i * 7 + 1) % 500}"],
        evidence_chain=[f"msg-{i}-{k}" for k in range(3)], confidence=0.8, recommended_action="MONITOR",
    )


async def fill(engine: VerdictEngine, db: Database, verdicts: int) -> None:
    for start in range(0, verdicts, _BATCH):
        await engine._upsert([draft(i) for i in range(start, min(start + _BATCH, verdicts))])
    # Four in five verdicts resolved. An operator's PATCH changes one verdict (and its
    # count) at a time; here they change in bulk and are counted again, as a migration
    # to verdict_counts counts the verdicts already stored.
    async with db.engine.begin() as conn:
        await conn.execute(text(
            "UPDATE verdicts SET status = CASE WHEN CAST(substr(fingerprint, 7) AS INTEGER) % 10 < 8"
            " THEN 'MITIGATED' ELSE 'DISMISSED' END"
            " WHERE CAST(substr(fingerprint, 7) AS INTEGER) % 5 <> 0"))
        counted = await conn.run_sync(lambda sync: inspect(sync).has_table("verdict_counts"))
    if counted:
        await engine.recount()


async def run(url: str, verdicts: int) -> None:
    db = Database(url)
    engine = VerdictEngine(db, EventBus({}), Metrics())
    try:
        started = time.perf_counter()
        await fill(engine, db, verdicts)
        print(f"{verdicts:,} verdicts on {db.dialect} ({time.perf_counter() - started:.1f} s to fill)")
        if db.dialect == "postgresql":
            # What autovacuum does after the bulk update: dead row versions out of the
            # indexes, the visibility map and the planner's statistics up to date.
            async with db.engine.connect() as conn:
                autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.execute(text("VACUUM ANALYZE"))
        hour_ago = utcnow() - timedelta(hours=1)
        print(HEADER)
        for label, filters in (
            ("none", VerdictFilters()),
            ("status=ACTIVE", VerdictFilters(status="ACTIVE")),
            ("category=DECEPTION", VerdictFilters(category="DECEPTION")),
            ("status=ACTIVE&severity=CRITICAL&category=ALLIANCE",
             VerdictFilters(status="ACTIVE", severity="CRITICAL", category="ALLIANCE")),
            ("category=THREAT (none)", VerdictFilters(category="THREAT")),
            ("fleet_id=fleet-5&status=ACTIVE", VerdictFilters(fleet_id="fleet-5", status="ACTIVE")),
            ("agent_id=agent-7", VerdictFilters(agent_id="agent-7")),
            ("agent_id=agent-7&status=ACTIVE (none of its verdicts)",
             VerdictFilters(agent_id="agent-7", status="ACTIVE")),
            ("agent_id=agent-7&status=MITIGATED", VerdictFilters(agent_id="agent-7", status="MITIGATED")),
            ("since=an hour ago", VerdictFilters(since=hour_ago)),
            ("offset=10000", VerdictFilters(offset=10_000)),
        ):
            print(await page_row(label, lambda f=filters: engine.list(f)))

        async def stats() -> tuple[dict[str, Any], int]:
            counts = await engine.stats()
            return counts, counts["total"]

        print(await page_row("/verdicts/stats", stats))
        # The write side: what a batch of 50 new drafts costs with this many verdicts.
        writes = []
        for n in range(20):
            batch = [draft(verdicts + n * 50 + k) for k in range(50)]
            writes += await timed(lambda b=batch: engine._upsert(b), 1)
        print(f"a batch of 50 new drafts: median {statistics.median(writes):.2f} ms, max {max(writes):.2f} ms")
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--verdicts", type=int, default=500_000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    asyncio.run(run(fresh_database(args.database_url, "verdicts.db"), args.verdicts))


if __name__ == "__main__":
    main()
