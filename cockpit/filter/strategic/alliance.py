"""The alliance graph: pair strengths from cooperation, decaying with time."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypedDict

import networkx as nx

from cockpit.events.verdict import Category
from cockpit.filter.strategic.config import StrategicConfig
from cockpit.filter.strategic.finding import Finding

__all__ = ["AllianceEdge", "AllianceGraph", "AllianceGraphView", "AllianceSnapshot", "PairTie", "snapshot_of"]


class AllianceGraphView(TypedDict):
    """The JSON shape of ``GET /alliances/graph`` for one fleet."""

    nodes: list[dict[str, str]]
    edges: list[dict[str, str | float]]
    communities: list[list[str]]


class PairTie:
    """The cooperative tie between two agents (stored once per unordered pair).

    ``strength`` is the value at ``updated_at``; the current value is derived
    lazily from the elapsed telemetry time, so an idle pair costs nothing.
    """

    __slots__ = ("evidence", "from_high", "from_low", "strength", "updated_at")

    def __init__(self, now: float, evidence_limit: int) -> None:
        self.strength = 0.0
        self.updated_at = now
        # cooperative contributions from the lexically lower / higher agent id
        self.from_low = 0
        self.from_high = 0
        self.evidence: deque[tuple[float, str]] = deque(maxlen=evidence_limit)

    @property
    def mutual_count(self) -> int:
        """Contributions of the less active side (both must cooperate)."""
        return min(self.from_low, self.from_high)


@dataclass(frozen=True, slots=True)
class AllianceEdge:
    """One weighted edge of the alliance graph (``a < b``)."""

    a: str
    b: str
    weight: float


@dataclass(frozen=True, slots=True)
class AllianceSnapshot:
    """The alliance graph at one instant: nodes, weighted edges, communities."""

    nodes: list[str]
    edges: list[AllianceEdge]
    communities: list[list[str]] = field(default_factory=list)

    def to_dict(self) -> AllianceGraphView:
        """JSON-ready form, as served by ``GET /alliances/graph``."""
        return {
            "nodes": [{"id": n} for n in self.nodes],
            "edges": [{"source": e.a, "target": e.b, "weight": e.weight} for e in self.edges],
            "communities": self.communities,
        }


def snapshot_of(edges: Iterable[AllianceEdge], agents: Iterable[str] = (), *, communities: bool = True
                ) -> AllianceSnapshot:
    """The snapshot of a graph given by its weighted edges (and agents without any):
    edges heaviest first, communities by Louvain (seeded: the same graph, the same
    communities)."""
    graph: nx.Graph[str] = nx.Graph()
    graph.add_nodes_from(agents)
    ordered = sorted(edges, key=lambda e: (-e.weight, e.a, e.b))
    graph.add_weighted_edges_from((e.a, e.b, e.weight) for e in ordered)
    groups: list[list[str]] = []
    if communities and graph.number_of_edges():
        found = nx.community.louvain_communities(graph, weight="weight", seed=0)
        groups = sorted((sorted(c) for c in found if len(c) > 1), key=lambda c: (-len(c), c))
    return AllianceSnapshot(sorted(graph.nodes), ordered, groups)


class AllianceGraph:
    """Exponentially decaying pair strengths, updated in O(1) per exchange."""

    __slots__ = ("_config", "_fleet_id", "_rate", "_strong", "_ties")

    def __init__(self, fleet_id: str, config: StrategicConfig) -> None:
        self._fleet_id = fleet_id
        self._config = config
        self._rate = math.log(2.0) / config.alliance_half_life_s
        self._ties: dict[tuple[str, str], PairTie] = {}
        #: agent -> partners whose stored mutual tie reached ``collusion_min_tie``
        self._strong: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._ties)

    def _decayed(self, tie: PairTie, now: float) -> float:
        elapsed = now - tie.updated_at
        if elapsed <= 0.0:
            return tie.strength
        return tie.strength * math.exp(-self._rate * elapsed)

    def tie(self, a: str, b: str) -> PairTie | None:
        """The stored tie between ``a`` and ``b`` (not decayed), if any."""
        return self._ties.get((a, b) if a < b else (b, a))

    def strength(self, a: str, b: str, now: float) -> float:
        """Current strength of the pair, in [0, 1]."""
        tie = self._ties.get((a, b) if a < b else (b, a))
        return 0.0 if tie is None else self._decayed(tie, now)

    def mutual_strength(self, a: str, b: str, now: float) -> float:
        """Strength of the pair if both sides have cooperated enough, else 0."""
        tie = self._ties.get((a, b) if a < b else (b, a))
        if tie is None or tie.mutual_count < self._config.alliance_min_exchanges_each:
            return 0.0
        return self._decayed(tie, now)

    def strong_partners(self, agent: str, candidates: list[str], now: float
                        ) -> list[tuple[str, float]]:
        """Candidates whose mutual tie with ``agent`` is at least
        ``collusion_min_tie`` now, with that strength.

        The hot path of collusion checks. ``_strong`` holds the pairs whose stored
        strength reached the floor; decay only lowers it, so a C-level set
        intersection leaves the few candidates worth computing the decay for.
        """
        partners = self._strong.get(agent)
        if not partners:
            return []
        floor = self._config.collusion_min_tie
        strong: list[tuple[str, float]] = []
        for other in sorted(partners.intersection(candidates)):
            tie = self._ties.get((agent, other) if agent < other else (other, agent))
            value = 0.0 if tie is None else self._decayed(tie, now)
            if value >= floor:
                strong.append((other, value))
            else:  # decayed since: forget it until it is reinforced again
                self._unlink(agent, other)
        return strong

    def _link(self, a: str, b: str) -> None:
        self._strong.setdefault(a, set()).add(b)
        self._strong.setdefault(b, set()).add(a)

    def _unlink(self, a: str, b: str) -> None:
        for x, y in ((a, b), (b, a)):
            partners = self._strong.get(x)
            if partners is not None:
                partners.discard(y)
                if not partners:
                    del self._strong[x]

    def reinforce(
        self, source: str, other: str, now: float, gain: float, message_id: str
    ) -> PairTie:
        """``source`` cooperated with ``other``: close ``gain`` of the gap to 1."""
        key = (source, other) if source < other else (other, source)
        tie = self._ties.get(key)
        if tie is None:
            tie = self._ties[key] = PairTie(now, self._config.evidence_limit)
        current = self._decayed(tie, now)
        tie.strength = current + gain * (1.0 - current)
        tie.updated_at = max(tie.updated_at, now)
        if source == key[0]:
            tie.from_low += 1
        else:
            tie.from_high += 1
        tie.evidence.append((now, message_id))
        if (tie.strength >= self._config.collusion_min_tie
                and tie.mutual_count >= self._config.alliance_min_exchanges_each):
            self._link(source, other)
        return tie

    def weaken(self, a: str, b: str, now: float, fraction: float) -> None:
        """Competition or an attack between the pair removes ``fraction`` of the tie."""
        tie = self._ties.get((a, b) if a < b else (b, a))
        if tie is not None:
            tie.strength = self._decayed(tie, now) * (1.0 - fraction)
            tie.updated_at = max(tie.updated_at, now)
            if tie.strength < self._config.collusion_min_tie:
                self._unlink(a, b)

    def alliance(
        self, a: str, b: str, tie: PairTie, now: float, observed_at: datetime
    ) -> Finding | None:
        """An ALLIANCE finding if the (mutual) tie is at or above the threshold."""
        if tie.mutual_count < self._config.alliance_min_exchanges_each:
            return None
        strength = self._decayed(tie, now)
        if strength < self._config.alliance_threshold:
            return None
        return Finding(
            fleet_id=self._fleet_id,
            category=Category.ALLIANCE,
            agents_involved=(a, b) if a < b else (b, a),
            target=None,
            score=min(1.0, strength),
            evidence=tuple(mid for _, mid in tie.evidence),
            observed_at=observed_at,
            signals={"tie_strength": strength, "mutual_exchanges": float(tie.mutual_count)},
        )

    def snapshot(self, now: float, agents: Iterable[str] = (), *, communities: bool = True
                 ) -> AllianceSnapshot:
        """Nodes, edges above the minimum weight, and (unless ``communities`` is off)
        communities (Louvain).

        Computed on demand (O(pairs)), never per message.
        """
        floor = self._config.graph_min_edge_weight
        edges = [AllianceEdge(a, b, round(weight, 4)) for (a, b), tie in self._ties.items()
                 if (weight := self._decayed(tie, now)) >= floor]
        return snapshot_of(edges, agents, communities=communities)

    def prune(self, now: float) -> int:
        """Drop ties that decayed below the graph floor; returns how many."""
        floor = self._config.graph_min_edge_weight
        stale = [k for k, tie in self._ties.items() if self._decayed(tie, now) < floor]
        for key in stale:
            del self._ties[key]
            self._unlink(*key)
        return len(stale)
