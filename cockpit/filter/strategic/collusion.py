"""COLLUSION: agents with a strong mutual tie acting against the same third agent."""

from __future__ import annotations

from collections import deque
from datetime import datetime

from cockpit.events.verdict import Category
from cockpit.filter.strategic.alliance import AllianceGraph
from cockpit.filter.strategic.config import StrategicConfig
from cockpit.filter.strategic.finding import Finding

__all__ = ["CollusionDetector"]

#: (telemetry time, weight, message id) of one hostile act or message
HostileEvent = tuple[float, float, str]


def _newest(entries: list[tuple[float, str]], count: int) -> list[tuple[float, str]]:
    ordered = sorted(set(entries))
    return ordered[len(ordered) - count:] if count > 0 else []


class CollusionDetector:
    """Remembers recent hostility per target and groups allied attackers.

    For each target, attackers are kept in an insertion-ordered dict that is
    re-inserted on every event, so the newest attackers sit at the end and the
    scan for recent ones stops at the first stale entry. Both the attackers per
    target and the events per attacker are capped, so a hostile event costs at
    most ``attackers_per_target`` tie look-ups, whatever the history.
    """

    __slots__ = ("_against", "_alliances", "_config", "_fleet_id")

    def __init__(self, fleet_id: str, config: StrategicConfig, alliances: AllianceGraph) -> None:
        self._fleet_id = fleet_id
        self._config = config
        self._alliances = alliances
        self._against: dict[str, dict[str, deque[HostileEvent]]] = {}

    def __len__(self) -> int:
        return sum(len(attackers) for attackers in self._against.values())

    def hostile(
        self,
        attacker: str,
        target: str,
        now: float,
        weight: float,
        message_id: str,
        observed_at: datetime,
    ) -> Finding | None:
        """Record that ``attacker`` acted or spoke against ``target``; check collusion."""
        config = self._config
        attackers = self._against.get(target)
        if attackers is None:
            attackers = self._against[target] = {}
        events = attackers.pop(attacker, None)
        if events is None:
            events = deque(maxlen=config.hostile_events_per_attacker)
        events.append((now, weight, message_id))
        attackers[attacker] = events
        if len(attackers) > config.attackers_per_target:
            del attackers[next(iter(attackers))]

        horizon = now - config.hostility_window_s
        others: list[str] = []
        for other in reversed(attackers):
            if attackers[other][-1][0] < horizon:
                break
            if other != attacker:
                others.append(other)
        if not others:
            return None
        return self._coalition(attacker, target, others, attackers, now, horizon, observed_at)

    def _coalition(
        self,
        attacker: str,
        target: str,
        others: list[str],
        attackers: dict[str, deque[HostileEvent]],
        now: float,
        horizon: float,
        observed_at: datetime,
    ) -> Finding | None:
        config = self._config
        # The group is the connected component of the attacker among recent
        # attackers of the same target, linked by strong mutual ties; a component
        # (not a star around whoever acted last) keeps the situation key stable.
        group = [attacker]
        links: list[tuple[str, str, float]] = []
        frontier = [attacker]
        remaining = others
        limit = config.max_coalition
        while frontier and remaining and len(group) < limit:
            member = frontier.pop()
            joined = self._alliances.strong_partners(member, remaining, now)[
                : limit - len(group)
            ]
            if not joined:
                continue
            for other, strength in joined:
                group.append(other)
                frontier.append(other)
                links.append((member, other, strength))
            newcomers = {other for other, _ in joined}
            remaining = [other for other in remaining if other not in newcomers]
        if not links:
            return None

        hostility = 1.0
        for member in group:
            total = 0.0
            for at, weight, _ in attackers[member]:
                if at >= horizon:
                    total += weight
            hostility = min(hostility, 1.0 - 0.5**total)
        weakest_tie = min(link[2] for link in links)
        score = 0.5 * weakest_tie + 0.5 * hostility
        if score < config.collusion_threshold:
            return None

        # Evidence: the hostile acts first (they are the collusion), plus the two
        # newest cooperative exchanges of each link (they show the coordination).
        limit = config.evidence_limit
        hostile_evidence = [
            (e[0], e[2]) for member in group for e in attackers[member] if e[0] >= horizon
        ]
        cooperation: list[tuple[float, str]] = []
        for a, b, _ in links:
            tie = self._alliances.tie(a, b)
            if tie is not None:
                cooperation.extend(list(tie.evidence)[-2:])
        cooperation = _newest(cooperation, limit // 2)
        hostile_evidence = _newest(hostile_evidence, limit - len(cooperation))
        evidence = tuple(mid for _, mid in sorted(set(hostile_evidence + cooperation)))
        return Finding(
            fleet_id=self._fleet_id,
            category=Category.COLLUSION,
            agents_involved=tuple(sorted(group)),
            target=target,
            score=min(1.0, score),
            evidence=evidence,
            observed_at=observed_at,
            signals={"weakest_tie": weakest_tie, "min_hostility": hostility},
        )

    def prune(self, now: float) -> int:
        """Forget attackers whose last hostile event left the window."""
        horizon = now - self._config.hostility_window_s
        dropped = 0
        for target in list(self._against):
            attackers = self._against[target]
            for attacker in [a for a, ev in attackers.items() if ev[-1][0] < horizon]:
                del attackers[attacker]
                dropped += 1
            if not attackers:
                del self._against[target]
        return dropped
