"""INCONSISTENCY: declared intent versus later actions ("I will support you",
then an attack on that agent)."""

from __future__ import annotations

import math
from collections import deque
from datetime import datetime

from cockpit.events.verdict import Category
from cockpit.filter.strategic.config import StrategicConfig
from cockpit.filter.strategic.finding import Finding, time_ordered_evidence

__all__ = ["BrokenPromises", "InconsistencyDetector"]

#: (telemetry time, weight in [0, 1], message id) of the newest promise of a pair
Promise = tuple[float, float, str]


class BrokenPromises:
    """What one agent broke toward one victim: a decaying noisy-or score."""

    __slots__ = ("evidence", "score", "updated_at")

    def __init__(self, now: float, evidence_limit: int) -> None:
        self.score = 0.0
        self.updated_at = now
        self.evidence: deque[tuple[float, str]] = deque(maxlen=evidence_limit)


class InconsistencyDetector:
    """A ledger of pending promises and the betrayals that break them.

    Promises live in one insertion-ordered dict (re-inserted when renewed), capped
    at ``max_promises`` by evicting the oldest, and expire after
    ``promise_window_s``: a betrayal costs two dict look-ups.
    """

    __slots__ = ("_cases", "_config", "_fleet_id", "_promises", "_rate")

    def __init__(self, fleet_id: str, config: StrategicConfig) -> None:
        self._fleet_id = fleet_id
        self._config = config
        self._rate = math.log(2.0) / config.promise_half_life_s
        self._promises: dict[tuple[str, str], Promise] = {}
        self._cases: dict[tuple[str, str], BrokenPromises] = {}

    def __len__(self) -> int:
        return len(self._promises) + len(self._cases)

    def promise(self, promiser: str, promisee: str, now: float, weight: float,
                message_id: str) -> None:
        """``promiser`` declared cooperation with or support of ``promisee``."""
        key = (promiser, promisee)
        previous = self._promises.pop(key, None)
        if previous is not None:
            # a renewed promise is at least as binding as what is left of the last
            kept = previous[1] * math.exp(-self._rate * max(0.0, now - previous[0]))
            weight = max(weight, kept)
        self._promises[key] = (now, weight, message_id)
        if len(self._promises) > self._config.max_promises:
            del self._promises[next(iter(self._promises))]

    def retract(self, promiser: str, promisee: str) -> None:
        """Open hostility addressed to the promisee withdraws the promise honestly."""
        self._promises.pop((promiser, promisee), None)

    def betrayal(self, actor: str, victim: str, now: float, message_id: str,
                 observed_at: datetime) -> Finding | None:
        """``actor`` acted against ``victim``; an INCONSISTENCY if it had promised."""
        key = (actor, victim)
        promise = self._promises.get(key)
        if promise is None:
            return None
        promised_at, weight, promise_id = promise
        elapsed = max(0.0, now - promised_at)
        if elapsed > self._config.promise_window_s:
            del self._promises[key]
            return None
        broken = weight * math.exp(-self._rate * elapsed)
        case = self._cases.get(key)
        if case is None:
            case = self._cases[key] = BrokenPromises(now, self._config.evidence_limit)
            if len(self._cases) > self._config.max_promises:
                del self._cases[next(iter(self._cases))]
        previous = case.score * math.exp(-self._rate * max(0.0, now - case.updated_at))
        case.score = 1.0 - (1.0 - previous) * (1.0 - broken)
        case.updated_at = now
        case.evidence.append((promised_at, promise_id))
        case.evidence.append((now, message_id))
        if case.score < self._config.inconsistency_threshold:
            return None
        return Finding(
            fleet_id=self._fleet_id,
            category=Category.INCONSISTENCY,
            agents_involved=(actor,),
            target=victim,
            score=min(1.0, case.score),
            evidence=time_ordered_evidence(case.evidence, self._config.evidence_limit),
            observed_at=observed_at,
            signals={"promise_weight": weight, "broken": broken,
                     "seconds_since_promise": elapsed},
        )

    def prune(self, now: float) -> int:
        """Drop expired promises and idle cases; returns how many entries."""
        expired = now - self._config.promise_window_s
        idle = now - self._config.idle_ttl_s
        stale = [k for k, p in self._promises.items() if p[0] < expired]
        for key in stale:
            del self._promises[key]
        closed = [k for k, c in self._cases.items() if c.updated_at < idle]
        for key in closed:
            del self._cases[key]
        return len(stale) + len(closed)
