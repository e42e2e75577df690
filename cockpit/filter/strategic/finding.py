"""What the strategic layer reports: one situation, scored, with its evidence."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from cockpit.events.verdict import Category

__all__ = ["Finding", "situation_key", "time_ordered_evidence"]


def situation_key(category: Category, agents: Iterable[str], target: str | None) -> str:
    """A readable, stable key for a situation: category, sorted agents, target.

    The same situation (e.g. the same pair colluding against the same agent) keeps
    the same key as evidence accumulates, so synthesis can update one verdict.
    """
    return f"{category.value}|{','.join(sorted(agents))}|{target or ''}"


def time_ordered_evidence(
    entries: Iterable[tuple[float, str]], limit: int
) -> tuple[str, ...]:
    """Message ids of the newest ``limit`` distinct entries, oldest first."""
    ordered = sorted(set(entries))
    seen: set[str] = set()
    picked: list[str] = []
    for _, message_id in reversed(ordered):
        if message_id not in seen:
            seen.add(message_id)
            picked.append(message_id)
            if len(picked) == limit:
                break
    picked.reverse()
    return tuple(picked)


@dataclass(frozen=True, slots=True)
class Finding:
    """A pattern the strategic layer detected in one fleet.

    Produced by ``FleetAnalyzer.observe``; consumed by synthesis, which turns it
    into a ``VerdictDrafted``. ``score`` is in [0, 1]; ``evidence`` holds message
    ids in time order (bounded, the most relevant ones); ``signals`` explains the
    score (tie strength, flips, mean deception...) for operators and tests;
    ``labels`` names what was seen in words, for the title (a threat's techniques).
    """

    fleet_id: str
    category: Category
    agents_involved: tuple[str, ...]
    target: str | None
    score: float
    evidence: tuple[str, ...]
    observed_at: datetime
    signals: dict[str, float] = field(default_factory=dict, hash=False, compare=False)
    labels: tuple[str, ...] = ()

    @property
    def situation_key(self) -> str:
        """Stable key of the situation (category, sorted agents, target)."""
        return situation_key(self.category, self.agents_involved, self.target)
