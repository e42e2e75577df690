"""What a page of ``GET /verdicts`` costs while verdicts keep changing.

    python bench/bench_page_churn.py [--verdicts 2000] [--rounds 300] [--database-url URL]

Under load, telemetry keeps extending the newest verdicts' evidence, and those are
exactly the verdicts on the first page operators poll. This fills a fresh, migrated
database (SQLite unless ``--database-url`` names an empty PostgreSQL database)
through the verdict engine's own path (``on_drafts``, as the analysis delivers
them), then for each round applies a batch of 10 drafts that extend 10 verdicts'
evidence and reads two pages (unfiltered, and one agent's), timing each read: wall
time and the process's CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from cockpit.events.verdict import Category, Severity, VerdictDrafted
from cockpit.platform.bus import Channel, EventBus, MemoryTransport
from cockpit.platform.db import Database
from cockpit.platform.metrics import Metrics
from cockpit.verdict.service import VerdictEngine, VerdictFilters

sys.path.insert(0, str(Path(__file__).resolve().parent))
from querybench import fresh_database


def draft(i: int, evidence: int) -> VerdictDrafted:
    return VerdictDrafted(
        fingerprint=f"churn-{i}", fleet_id=f"fleet-{i % 5}", category=Category.COLLUSION,
        severity=Severity.MEDIUM, title=f"situation {i}",
        agents_involved=[f"agent-{i % 50}", f"agent-{(i * 7 + 1) % 50}"],
        evidence_chain=[f"msg-{i}-{k}" for k in range(evidence)], confidence=0.7, recommended_action="MONITOR",
    )


async def run(url: str, verdicts: int, rounds: int) -> None:
    db = Database(url)
    memory = MemoryTransport()  # nobody subscribes: announcements go nowhere
    engine = VerdictEngine(db, EventBus({channel: memory for channel in Channel}), Metrics())
    try:
        for start in range(0, verdicts, 500):
            await engine.on_drafts([draft(i, 3) for i in range(start, min(start + 500, verdicts))])
        wall, cpu = [], []
        for n in range(rounds):
            await engine.on_drafts([draft((n * 13 + k) % verdicts, 4 + n) for k in range(10)])
            for filters in (VerdictFilters(), VerdictFilters(agent_id=f"agent-{n % 50}")):
                c, t = time.process_time(), time.perf_counter()
                await engine.list(filters)
                cpu.append(time.process_time() - c)
                wall.append(time.perf_counter() - t)
        print(f"{len(wall)} pages of 50 on {db.dialect}, 10 verdicts changed before each pair: "
              f"median {statistics.median(wall) * 1000:.3f} ms, CPU {statistics.mean(cpu) * 1000:.3f} ms a page")
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--verdicts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    asyncio.run(run(fresh_database(args.database_url, "churn.db"), args.verdicts, args.rounds))


if __name__ == "__main__":
    main()
