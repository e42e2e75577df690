"""Throughput of Layers 2 and 3 (strategic + synthesis) on a synthetic fleet.

    python bench/bench_strategic.py [--agents 200] [--messages 200000] [--adversarial]

Telemetry and semantic results are built before the clock starts (Layer 1 and
ingestion are benchmarked elsewhere); the timed loop is exactly what the filter
does per item: ``FleetAnalyzer.observe`` then ``Synthesizer.drafts``.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from datetime import UTC, datetime, timedelta

import numpy as np

from cockpit.events.telemetry import ActionSpec, Telemetry, TelemetryKind
from cockpit.filter.analysis import Intent, SemanticResult
from cockpit.filter.strategic import FleetAnalyzer
from cockpit.filter.synthesis import Synthesizer

__all__ = ["synthetic_fleet"]

_EMBEDDING = np.full(8, 1 / np.sqrt(8), dtype=np.float32)
_INTENTS = (Intent.COOPERATIVE, Intent.COMPETITIVE, Intent.NEUTRAL, Intent.AMBIGUOUS)
_PHRASES = (
    "Let us share the eastern route and split the supplies",
    "I will support you if {x} moves against us next turn",
    "Your fleet is exposed, I would not trust {x} with that",
    "Checking in: status nominal, queue depth 12, no errors",
    "We should coordinate before {x} takes the northern port",
)


def synthetic_fleet(agents: int, messages: int, adversarial: bool, seed: int = 1
                    ) -> list[tuple[Telemetry, SemanticResult | None]]:
    """A busy fleet: stable per-pair stances with 5% noise (or random intents
    when ``adversarial``), a few liars, 25% actions, 200 items/s of telemetry time."""
    rng = random.Random(seed)
    names = [f"agent-{n:03d}" for n in range(agents)]
    liars = set(rng.sample(names, max(1, agents // 50)))
    start = datetime(2025, 1, 1, tzinfo=UTC)
    stance: dict[tuple[str, str], Intent] = {}
    items: list[tuple[Telemetry, SemanticResult | None]] = []
    for n in range(messages):
        source, other = rng.sample(names, 2)
        ts = start + timedelta(seconds=n / 200)
        if rng.random() < 0.25:
            kind = rng.choices(("support", "attack", "call_tool", "transfer"), (4, 3, 2, 1))[0]
            params = {"from": rng.choice(names)} if kind == "transfer" else {}
            telemetry = Telemetry.model_construct(
                message_id=f"m{n}", fleet_id="bench", source_agent_id=source,
                target_agent_ids=[], kind=TelemetryKind.ACTION, content=None,
                action=ActionSpec.model_construct(type=kind, target=other, params=params),
                timestamp=ts,
            )
            items.append((telemetry, None))
            continue
        pair = (source, other)
        if pair not in stance:
            stance[pair] = rng.choices(_INTENTS[:3], (40, 15, 45))[0]
        noisy = adversarial or rng.random() < 0.05
        intent = rng.choice(_INTENTS) if noisy else stance[pair]
        third = rng.choice(names)
        content = rng.choice(_PHRASES).format(x=third)
        broadcast = rng.random() < 0.1
        telemetry = Telemetry.model_construct(
            message_id=f"m{n}", fleet_id="bench", source_agent_id=source,
            target_agent_ids=[] if broadcast else [other], kind=TelemetryKind.MESSAGE,
            content=content, action=None, timestamp=ts,
        )
        deception = rng.uniform(0.6, 1.0) if source in liars else rng.uniform(0.0, 0.4)
        items.append((telemetry, SemanticResult(intent, rng.uniform(0.6, 1.0), deception,
                                                _EMBEDDING)))
    return items


def main() -> None:
    """Build the fleet, time both layers, print one markdown table row."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--adversarial", action="store_true")
    args = parser.parse_args()
    items = synthetic_fleet(args.agents, args.messages, args.adversarial)
    analyzer, synthesizer = FleetAnalyzer("bench"), Synthesizer()
    observe, drafts = analyzer.observe, synthesizer.drafts
    findings = drafted = 0
    gc.collect()
    gc.freeze()  # the pre-built items are not garbage; do not rescan them
    started, cpu_started = time.perf_counter(), time.process_time()
    for telemetry, semantic in items:
        found = observe(telemetry, semantic)
        if found:
            findings += len(found)
            drafted += len(drafts(found))
    elapsed = time.perf_counter() - started
    # CPU time of this process: robust to other work sharing the cores
    cpu = time.process_time() - cpu_started
    per_item = elapsed / len(items) * 1e6
    mode = "adversarial (random intents)" if args.adversarial else "stable stances, 5% noise"
    print("| agents | items | traffic | µs/item wall | µs/item CPU | items/s (CPU) | findings"
          " | drafts | state |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.agents} | {len(items)} | {mode} | {per_item:.2f}"
          f" | {cpu / len(items) * 1e6:.2f} | {len(items) / cpu:,.0f} | {findings} | {drafted}"
          f" | {analyzer.state_sizes()} |")


if __name__ == "__main__":
    main()
