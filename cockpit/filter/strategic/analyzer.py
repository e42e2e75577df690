"""One fleet's strategic analysis: telemetry in, findings out, incrementally."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from datetime import datetime

from cockpit.events.telemetry import MAX_AGENT_ID, ActionSpec, Telemetry, TelemetryKind
from cockpit.filter.analysis import Intent, SemanticResult
from cockpit.filter.strategic.alliance import AllianceGraph, AllianceSnapshot
from cockpit.filter.strategic.collusion import CollusionDetector
from cockpit.filter.strategic.config import StrategicConfig
from cockpit.filter.strategic.deception import DeceptionDetector
from cockpit.filter.strategic.directory import AgentDirectory
from cockpit.filter.strategic.finding import Finding
from cockpit.filter.strategic.inconsistency import InconsistencyDetector
from cockpit.filter.strategic.threat import ThreatDetector

__all__ = ["FleetAnalyzer"]

_COOPERATIVE = Intent.COOPERATIVE
_COMPETITIVE = Intent.COMPETITIVE
_ACTION = TelemetryKind.ACTION


class FleetAnalyzer:
    """Layer 2 for one fleet: alliance graph, collusion, deception, inconsistency,
    threat.

    ``observe`` costs O(1) in the length of the history: every structure is a
    bounded deque, a capped dict, or a lazily decayed value; a periodic prune
    (every ``prune_every`` messages) drops what decayed or went idle. The clock is
    the telemetry's own timestamp (never the wall clock), made monotonic so late
    messages never "un-decay" a tie. The state lives in one replica at a time;
    another replica rebuilds it with ``replay`` from stored telemetry.
    """

    def __init__(self, fleet_id: str, config: StrategicConfig | None = None) -> None:
        self.fleet_id = fleet_id
        self.config = config = config or StrategicConfig()
        self.directory = AgentDirectory()
        self.alliances = AllianceGraph(fleet_id, config)
        self.collusion = CollusionDetector(fleet_id, config, self.alliances)
        self.deception = DeceptionDetector(fleet_id, config)
        self.inconsistency = InconsistencyDetector(fleet_id, config)
        self.threat = ThreatDetector(fleet_id, config)
        self.messages_observed = 0
        self._clock = float("-inf")
        self._since_prune = 0
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque(maxlen=config.dedupe_window)
        self._keywords = tuple(k.lower() for k in config.support_keywords)
        # hot-path copies (attribute chains cost more than the work they guard)
        self._last_seen = self.directory.last_seen
        self._prune_every = config.prune_every
        self._max_fanout = config.max_fanout

    @property
    def clock(self) -> float:
        """The newest telemetry time seen (POSIX seconds)."""
        return self._clock

    def introduce(self, agent_ids: Iterable[str], at: float | None = None) -> None:
        """Make agents known (e.g. from the registry) so their names are found in text."""
        now = self._clock if at is None else at
        for agent_id in agent_ids:
            self.directory.see(agent_id, now)

    def observe(self, telemetry: Telemetry, semantic: SemanticResult | None = None
                ) -> list[Finding]:
        """Analyse one telemetry item (with its Layer 1 result for messages).

        Returns the findings this item touched and that are at or above their
        thresholds; a redelivered ``message_id`` returns nothing.
        """
        message_id = telemetry.message_id
        seen = self._seen
        if message_id in seen:
            return []
        order = self._seen_order
        if len(order) == order.maxlen:
            seen.discard(order[0])
        order.append(message_id)
        seen.add(message_id)

        self.messages_observed += 1
        observed_at = telemetry.timestamp
        now = observed_at.timestamp()
        now = max(now, self._clock)
        self._clock = now
        self._since_prune += 1
        if self._since_prune >= self._prune_every:
            self.prune()

        source = telemetry.source_agent_id
        last_seen = self._last_seen
        last_seen[source] = now
        addressees: list[str] = []
        targets = telemetry.target_agent_ids
        if targets:
            if len(targets) > self._max_fanout:
                targets = targets[: self._max_fanout]
            for other in targets:
                if other != source:
                    last_seen[other] = now
                    addressees.append(other)

        if telemetry.kind is _ACTION:
            assert telemetry.action is not None  # guaranteed by Telemetry's validator
            return self._on_action(source, telemetry.action, now, message_id, observed_at)
        if semantic is None:
            return []
        return self._on_message(
            source, addressees, telemetry.content, semantic, now, message_id, observed_at
        )

    def _on_action(self, source: str, action: ActionSpec, now: float, message_id: str,
                   observed_at: datetime) -> list[Finding]:
        config = self.config
        findings: list[Finding] = []
        other = action.target
        kind = action.type
        found = self.threat.action(source, kind, action.params, now, message_id, observed_at)
        if found is not None:
            findings.append(found)
        if other is not None and other != source:
            self._last_seen[other] = now
            if kind in config.cooperative_actions:
                tie = self.alliances.reinforce(
                    source, other, now, config.support_action_gain, message_id
                )
                found = self.alliances.alliance(source, other, tie, now, observed_at)
                if found is not None:
                    findings.append(found)
                return findings
        victim = other if kind in config.hostile_actions else None
        if victim is None and kind in config.transfer_actions:
            taken_from = action.params.get("from")
            # An agent id, as long as any (params are free-form: a longer string is no
            # agent, and as a verdict's target the database would refuse the batch).
            victim = taken_from if isinstance(taken_from, str) and 0 < len(taken_from) <= MAX_AGENT_ID else None
        if victim is None or victim == source:
            return findings
        self.alliances.weaken(source, victim, now, config.attack_penalty)
        found = self.collusion.hostile(source, victim, now, 1.0, message_id, observed_at)
        if found is not None:
            findings.append(found)
        found = self.inconsistency.betrayal(source, victim, now, message_id, observed_at)
        if found is not None:
            findings.append(found)
        return findings

    def _on_message(self, source: str, addressees: list[str], content: str | None,
                    semantic: SemanticResult, now: float, message_id: str,
                    observed_at: datetime) -> list[Finding]:
        config = self.config
        findings: list[Finding] = []
        found = self.threat.message(source, content, now, message_id, observed_at)
        if found is not None:
            findings.append(found)
        conduct = self.deception.record_message(
            source, now, semantic.deception_score, message_id
        )
        intent = semantic.intent
        confidence = semantic.intent_confidence
        touched = semantic.deception_score >= config.deception_threshold
        if intent is _COOPERATIVE:
            # Cooperation is with whom the message is addressed to; a broadcast
            # ("I will support agent-e") is with the agents it names.
            partners = addressees or self.directory.mentions(content, source, config.max_fanout)
            if partners:
                weight = confidence
                if content and self._says_support(content):
                    weight = max(weight, config.explicit_promise_weight)
                gain = config.cooperative_message_gain * confidence
                for other in partners:
                    tie = self.alliances.reinforce(source, other, now, gain, message_id)
                    found = self.alliances.alliance(source, other, tie, now, observed_at)
                    if found is not None:
                        findings.append(found)
                    touched |= self.deception.record_stance(
                        conduct, other, intent, now, message_id
                    )
                    self.inconsistency.promise(source, other, now, weight, message_id)
        elif intent is _COMPETITIVE:
            # Hostility is toward the agents a message names; the addressee is
            # only the audience when a third party is named.
            named = self.directory.mentions(content, source, config.max_fanout)
            rivals = named or addressees
            weight = config.hostile_message_weight * confidence
            for other in rivals:
                self.alliances.weaken(source, other, now, config.competitive_message_penalty)
                found = self.collusion.hostile(source, other, now, weight, message_id,
                                               observed_at)
                if found is not None:
                    findings.append(found)
                touched |= self.deception.record_stance(conduct, other, intent, now, message_id)
                if other in addressees:
                    self.inconsistency.retract(source, other)
        found = self.deception.evaluate(source, conduct, now, observed_at, touched)
        if found is not None:
            findings.append(found)
        return findings

    def _says_support(self, content: str) -> bool:
        lowered = content.lower()
        return any(keyword in lowered for keyword in self._keywords)

    def replay(self, items: Iterable[tuple[Telemetry, SemanticResult | None]]) -> int:
        """Rebuild the state from stored telemetry (oldest first); returns the count.

        Findings are discarded: their verdicts already exist, and the fingerprints
        make any re-emission an update, not a new verdict.
        """
        count = 0
        for telemetry, semantic in items:
            self.observe(telemetry, semantic)
            count += 1
        return count

    def graph(self, at: datetime | None = None, *, communities: bool = True) -> AllianceSnapshot:
        """The alliance graph now (or at ``at``): nodes, weighted edges, communities."""
        now = self._clock if at is None else at.timestamp()
        return self.alliances.snapshot(now, self.directory.agents(), communities=communities)

    def prune(self) -> int:
        """Drop decayed ties, stale hostility, idle agents, expired promises."""
        self._since_prune = 0
        now = self._clock
        return (
            self.alliances.prune(now)
            + self.collusion.prune(now)
            + self.deception.prune(now)
            + self.inconsistency.prune(now)
            + self.threat.prune(now)
            + self.directory.prune(now - self.config.idle_ttl_s)
        )

    def state_sizes(self) -> dict[str, int]:
        """How many entries each structure holds (for metrics and boundedness tests)."""
        return {
            "agents": len(self.directory),
            "ties": len(self.alliances),
            "hostility": len(self.collusion),
            "conduct": len(self.deception),
            "promises": len(self.inconsistency),
            "threats": len(self.threat),
            "dedupe": len(self._seen),
        }
