"""``cockpit replay FILE``: push a JSONL of telemetry through the real pipeline."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cockpit.events import Telemetry
from cockpit.platform.db import utcnow

__all__ = ["read_telemetry", "replay_file"]


def read_telemetry(path: str | Path, fmt: str) -> Iterator[Telemetry]:
    """Telemetry from a JSONL file: Cockpit's schema, or the Diplomacy dataset's."""
    if fmt == "diplomacy":
        from cockpit.filter.diplomacy import read_messages, to_telemetry

        for message in read_messages(path):
            yield to_telemetry(message)
        return
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield Telemetry.model_validate(json.loads(line))
            except (ValueError, ValidationError) as exc:
                raise ValueError(f"{path}:{number}: invalid telemetry: {str(exc).splitlines()[0]}") from None


async def replay_file(cockpit: Any, path: str, fmt: str, batch: int = 500) -> int:
    """Ingest every message in batches, wait for the analysis, print a summary."""
    from rich.progress import Progress

    from cockpit.verdict import VerdictFilters

    started_at = utcnow()
    t0 = time.perf_counter()
    try:
        messages = list(read_telemetry(path, fmt))
    except (OSError, ValueError) as exc:
        print(f"cockpit: error: {exc}", file=sys.stderr)
        return 2
    accepted = duplicates = 0
    with Progress(transient=True) as progress:
        task = progress.add_task("replaying", total=len(messages))
        for start in range(0, len(messages), batch):
            chunk = messages[start : start + batch]
            result = await cockpit.filter.ingest(chunk)
            accepted += result.accepted
            duplicates += result.duplicates
            progress.advance(task, len(chunk))
    await cockpit.bus.drain()
    elapsed = time.perf_counter() - t0
    items, total = await cockpit.verdicts.list(VerdictFilters(since=started_at, limit=500))
    by = Counter((v["category"], v["severity"]) for v in items)
    print(f"messages: {len(messages)}  accepted: {accepted}  duplicates: {duplicates}  "
          f"time: {elapsed:.1f}s  ({len(messages) / max(elapsed, 1e-9):,.0f} msg/s)")
    print(f"verdicts created or updated: {total}")
    for (category, severity), count in sorted(by.items()):
        print(f"  {category:<14} {severity:<9} {count}")
    return 0
