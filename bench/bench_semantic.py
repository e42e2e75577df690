"""Throughput of the semantic layer (``SemanticAnalyzer.analyze_many``).

    python bench/bench_semantic.py [--messages 200000] [--batch 1000]

Prints messages/s for short agent chatter without context and with Diplomacy-style
context attributes. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import time

from cockpit.filter.semantic import SemanticAnalyzer

__all__ = ["main"]

_PHRASES = [
    "I will support you in Burgundy",
    "Let's work together against agent-c",
    "Our alliance holds",
    "We will attack agent-c next turn",
    "I'm going to take your supply centre",
    "Stab them",
    "The weather is fine",
    "status report: 3 tasks done",
    "Can you move your fleet to the North Sea? I'll cover Belgium.",
    "No, I won't attack you this turn, you have my word",
]


def _corpus(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    # Append a counter so texts are not all identical (no accidental caching win).
    return [f"{rng.choice(_PHRASES)} #{i % 997}" for i in range(n)]


def _run(analyzer: SemanticAnalyzer, texts: list[str], batch: int,
         with_context: bool) -> float:
    attrs = [{"game_score_delta": i % 5 - 2, "season": "Spring", "year": 1903,
              "relative_message_index": i % 40} for i in range(batch)] if with_context else None
    analyzer.analyze_many(texts[:batch], attrs)  # warm the token cache
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        chunk = texts[i : i + batch]
        analyzer.analyze_many(chunk, attrs[: len(chunk)] if attrs else None)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    """Run the benchmark and print one line per scenario."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    analyzer = SemanticAnalyzer()
    texts = _corpus(args.messages)
    for with_context in (False, True):
        rate = _run(analyzer, texts, args.batch, with_context)
        label = "with context" if with_context else "text only"
        print(f"analyze_many batch={args.batch} {label}: {rate:,.0f} messages/s")
    start = time.perf_counter()
    for text in texts[:20_000]:
        analyzer.analyze(text)
    print(f"analyze (one at a time): {20_000 / (time.perf_counter() - start):,.0f} messages/s")


if __name__ == "__main__":
    main()
