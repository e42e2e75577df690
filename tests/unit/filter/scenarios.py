"""Scenarios with planted ground truth for the strategic and synthesis layers.

Each builder returns a ``Scenario``: telemetry in time order paired with a
hand-made ``SemanticResult`` (intent and deception score chosen by the author, so
the tests do not depend on the Layer 1 model), the findings that must appear, the
agents that must never be accused, and labelled message ids to check evidence
against. Integration tests can feed the same items through the real pipeline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from cockpit.events.telemetry import ActionSpec, Telemetry, TelemetryKind
from cockpit.events.verdict import Category
from cockpit.filter.analysis import Intent, SemanticResult

__all__ = [
    "COMP",
    "COOP",
    "NEUTRAL",
    "START",
    "PlantedFinding",
    "Scenario",
    "ScenarioBuilder",
    "acceptance_scenario",
    "alliance_decay_scenario",
    "benign_fleet_scenario",
    "switching_only_scenario",
]

START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
_EMBEDDING = np.full(8, 1 / np.sqrt(8), dtype=np.float32)
COOP, COMP, NEUTRAL = Intent.COOPERATIVE, Intent.COMPETITIVE, Intent.NEUTRAL

Item = tuple[Telemetry, SemanticResult | None]


@dataclass(frozen=True)
class PlantedFinding:
    """A finding the scenario's author planted: category, sorted agents, target."""

    category: Category
    agents: tuple[str, ...]
    target: str | None = None


@dataclass
class Scenario:
    """Telemetry with its semantic results, and the ground truth planted in it."""

    name: str
    items: list[Item]
    expected: list[PlantedFinding]
    benign_agents: frozenset[str] = frozenset()
    labels: dict[str, list[str]] = field(default_factory=dict)

    def telemetry(self, message_id: str) -> Telemetry:
        """The telemetry item with this id (evidence must resolve to one)."""
        for telemetry, _ in self.items:
            if telemetry.message_id == message_id:
                return telemetry
        raise KeyError(message_id)

    def ids(self, *labels: str) -> list[str]:
        """Message ids planted under any of ``labels``, in time order."""
        wanted = {mid for label in labels for mid in self.labels.get(label, [])}
        return [t.message_id for t, _ in self.items if t.message_id in wanted]


class ScenarioBuilder:
    """Writes a fleet's story one message or action at a time (clock advances)."""

    def __init__(self, fleet_id: str = "default", start: datetime = START,
                 step_s: float = 30.0) -> None:
        self.fleet_id = fleet_id
        self.now = start
        self.step = timedelta(seconds=step_s)
        self.items: list[Item] = []
        self.labels: dict[str, list[str]] = {}

    def _next_id(self, label: str | None) -> str:
        message_id = f"{self.fleet_id}-{len(self.items):05d}"
        if label:
            self.labels.setdefault(label, []).append(message_id)
        self.now += self.step
        return message_id

    def wait(self, seconds: float) -> None:
        """Let telemetry time pass."""
        self.now += timedelta(seconds=seconds)

    def say(self, source: str, to: list[str], content: str, intent: Intent = NEUTRAL,
            deception: float = 0.1, confidence: float = 0.9, label: str | None = None) -> str:
        """A message with its hand-made Layer 1 result; returns its id."""
        message_id = self._next_id(label)
        telemetry = Telemetry(
            message_id=message_id, fleet_id=self.fleet_id, source_agent_id=source,
            target_agent_ids=to, kind=TelemetryKind.MESSAGE, content=content,
            timestamp=self.now,
        )
        self.items.append(
            (telemetry, SemanticResult(intent, confidence, deception, _EMBEDDING))
        )
        return message_id

    def act(self, source: str, action: str, target: str | None,
            params: dict[str, object] | None = None, label: str | None = None) -> str:
        """An action (no Layer 1 result); returns its id."""
        message_id = self._next_id(label)
        telemetry = Telemetry(
            message_id=message_id, fleet_id=self.fleet_id, source_agent_id=source,
            kind=TelemetryKind.ACTION, timestamp=self.now,
            action=ActionSpec(type=action, target=target, params=params or {}),
        )
        self.items.append((telemetry, None))
        return message_id

    def build(self, name: str, expected: list[PlantedFinding],
              benign: set[str] | frozenset[str] = frozenset()) -> Scenario:
        """The finished scenario."""
        return Scenario(name, list(self.items), expected, frozenset(benign), dict(self.labels))


def acceptance_scenario(fleet_id: str = "default") -> Scenario:
    """A and B ally and both attack C; D promises E support then attacks E;
    F flips between cooperation and competition toward E with deceptive
    messages; G, H and I chat harmlessly. Exactly four findings are planted."""
    a, b, c, d, e, f, g, h, i = (f"agent-{x}" for x in "abcdefghi")
    s = ScenarioBuilder(fleet_id)
    for agent in (a, b, c, d, e, f, g, h, i):
        s.say(agent, [], f"{agent} online, ready for the round")
    for n in range(5):
        s.say(a, [b], f"Let us coordinate our moves, round {n}", COOP, label="ab_coop")
        s.say(b, [a], f"Agreed, I am with you on round {n}", COOP, label="ab_coop")
        s.say(g, [h], f"Weather report {n}: calm seas", NEUTRAL, 0.05)
    s.say(a, [b], f"We strike {c} at dawn, together", COMP, label="ab_announce")
    s.say(b, [a], f"{c} will not see it coming", COMP, label="ab_announce")
    s.say(h, [i], "Can you share the map tiles?", COOP, 0.1)
    s.act(a, "attack", c, label="ab_attack")
    s.act(b, "attack", c, label="ab_attack")
    s.say(c, [a, b], "Why are you doing this?", NEUTRAL, 0.1)

    s.say(d, [e], f"I will support you, {e}, whatever happens", COOP, 0.2, label="d_promise")
    s.say(e, [d], "Thank you, I trust you", COOP, 0.05)
    s.say(i, [h], "Here are the tiles", COOP, 0.05)
    s.wait(600)
    s.act(d, "attack", e, label="d_attack")

    for n in range(3):
        s.say(f, [e], f"You can count on me {n}", COOP, 0.8, label="f_flip")
        s.say(f, [e], f"You are finished {n}", COMP, 0.85, label="f_flip")
        s.say(g, [i], f"Status {n}: nominal", NEUTRAL, 0.05)
    return s.build(
        "acceptance",
        [
            PlantedFinding(Category.ALLIANCE, (a, b)),
            PlantedFinding(Category.COLLUSION, (a, b), c),
            PlantedFinding(Category.INCONSISTENCY, (d,), e),
            PlantedFinding(Category.DECEPTION, (f,)),
        ],
        benign={g, h, i},
    )


def alliance_decay_scenario(half_lives: float = 5.0, half_life_s: float = 3600.0) -> Scenario:
    """A and B form an alliance, then stay silent for ``half_lives`` half-lives
    and exchange a single cooperative message: no alliance is left."""
    s = ScenarioBuilder()
    for n in range(6):
        s.say("agent-a", ["agent-b"], f"together {n}", COOP, label="early")
        s.say("agent-b", ["agent-a"], f"yes {n}", COOP, label="early")
    s.wait(half_lives * half_life_s)
    s.say("agent-a", ["agent-b"], "still there?", COOP, label="late")
    return s.build("alliance-decay", [PlantedFinding(Category.ALLIANCE, ("agent-a", "agent-b"))])


def switching_only_scenario(flips: int = 4) -> Scenario:
    """An agent alternates cooperation and competition toward one counterpart
    while every message scores as honest: switching alone must be flagged."""
    s = ScenarioBuilder()
    for n in range(flips + 1):
        intent = COOP if n % 2 == 0 else COMP
        s.say("agent-x", ["agent-y"], f"message {n}", intent, 0.1, label="switch")
    return s.build("switching-only", [PlantedFinding(Category.DECEPTION, ("agent-x",))],
                   benign={"agent-y"})


def benign_fleet_scenario(agents: int = 12, messages: int = 600, seed: int = 7) -> Scenario:
    """Harmless chatter: mostly neutral, occasional cooperation, honest scores,
    stances that never flip. Nothing may be found."""
    rng = random.Random(seed)
    names = [f"bot-{n:02d}" for n in range(agents)]
    s = ScenarioBuilder(step_s=5.0)
    for _ in range(messages):
        source, other = rng.sample(names, 2)
        intent = COOP if rng.random() < 0.2 else NEUTRAL
        s.say(source, [other], f"{source} to {other}: sync", intent, rng.uniform(0.0, 0.3))
    return s.build("benign-fleet", [], benign=set(names))
