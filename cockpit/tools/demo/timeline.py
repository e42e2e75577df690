"""What each agent of a plan says and does, and when (pure, no I/O).

An agent process walks its own :class:`Timeline`; the scenario tests walk the
whole fleet's (:func:`fleet_timeline`) on a simulated clock. Times are scenario
seconds (0 = ``Plan.start_at``); the announcement comes first, at ``-1``.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cockpit.tools.demo.scenario import ACTIONS, Plan

__all__ = ["Timeline", "Utterance", "fleet_timeline", "forbidden_by", "operator_steps"]

ANNOUNCE_AT = float("-inf")  # at once, whatever the clock says


@dataclass(frozen=True)
class Utterance:
    """One message or action an agent reports to Cockpit."""

    at: float
    agent: str
    to: list[str]
    text: str | None = None
    action: dict[str, Any] | None = None
    source: str = "step"  # "hello", "step", "loop", "chatter"

    def telemetry(self) -> dict[str, Any]:
        """The fields of a telemetry object (without ids and timestamps)."""
        if self.action is not None:
            return {"kind": "action", "action": self.action, "target_agent_ids": self.to}
        return {"kind": "message", "content": self.text, "target_agent_ids": self.to}


@dataclass(order=True)
class _Entry:
    at: float
    seq: int
    spec: dict[str, Any] = field(compare=False)
    source: str = field(compare=False)
    every: float = field(compare=False, default=0.0)


class Timeline:
    """One agent's utterances in time order; loop lines and chatter repeat forever."""

    def __init__(self, plan: Plan, agent_id: str) -> None:
        self.agent_id = agent_id
        self._rng = random.Random(f"{plan.seed}:{agent_id}")
        self._heap: list[_Entry] = []
        self._seq = 0
        self._count = 0
        self._cycles: dict[int, int] = {}
        me = plan.agent(agent_id)
        neighbours = ([me["parent"]] if me.get("parent") else []) + plan.children(agent_id)
        self._peers = neighbours or [a["id"] for a in plan.agents if a["id"] != agent_id]
        self._push(ANNOUNCE_AT, {"say": f"{agent_id} online and ready", "to": []}, "hello")
        for step in plan.steps:
            if step.get("from") == agent_id and "command" not in step:
                self._push(float(step["at"]), step, "step")
        loop = plan.loop
        start = float(loop.get("start", 0))
        for line in loop.get("lines") or []:
            if line.get("from") == agent_id:
                every = float(line["every"])
                first = float(line.get("first", start + every * self._rng.uniform(0.5, 1.0)))
                self._push(first, line, "loop", every)
        lines = loop.get("filler_say") if me.get("role") == "worker" and loop.get("filler_say") else loop.get("say")
        if lines and loop.get("every"):
            every = float(loop["every"])
            self._push(self._rng.uniform(1.0, every), {"say": list(lines)}, "chatter", every)

    def _push(self, at: float, spec: dict[str, Any], source: str, every: float = 0.0) -> None:
        self._seq += 1
        heapq.heappush(self._heap, _Entry(at, self._seq, spec, source, every))

    def next_at(self) -> float:
        """Scenario time of the next utterance (``inf`` when there is none)."""
        return self._heap[0].at if self._heap else float("inf")

    def due(self, now: float) -> list[Utterance]:
        """Every utterance at or before ``now``, in order (repeating ones rescheduled)."""
        out = []
        while self._heap and self._heap[0].at <= now:
            entry = heapq.heappop(self._heap)
            out.append(self._render(entry))
            if entry.every:
                jitter = entry.every * self._rng.uniform(0.8, 1.2) if entry.source == "chatter" else entry.every
                self._push(entry.at + jitter, entry.spec, entry.source, entry.every)
        return out

    def _render(self, entry: _Entry) -> Utterance:
        spec = entry.spec
        self._count += 1
        to = spec.get("to")
        to = [to] if isinstance(to, str) else list(to or [])
        if entry.source == "chatter":
            to = [self._rng.choice(self._peers)] if self._peers else []
        if "act" in spec:
            action: dict[str, Any] = {"type": spec["act"], "target": spec["target"]}
            if spec.get("params"):
                action["params"] = dict(spec["params"])
            return Utterance(entry.at, self.agent_id, to or [spec["target"]], action=action,
                             source=entry.source)
        said = spec["say"]
        if isinstance(said, list):
            if entry.source == "chatter":
                said = self._rng.choice(said)
            else:  # a loop line cycles through its texts
                turn = self._cycles.get(id(spec), 0)
                self._cycles[id(spec)] = turn + 1
                said = said[turn % len(said)]
        return Utterance(entry.at, self.agent_id, to, text=said.replace("{n}", str(self._count)),
                         source=entry.source)


def fleet_timeline(plan: Plan, until: float) -> Iterator[Utterance]:
    """Every agent's utterances up to ``until``, merged in time order."""
    timelines = [Timeline(plan, a["id"]) for a in plan.agents]
    merged: list[Utterance] = []
    for timeline in timelines:
        merged.extend(timeline.due(until))
    merged.sort(key=lambda u: (u.at, u.source != "hello"))
    return iter(merged)


def operator_steps(plan: Plan) -> list[dict[str, Any]]:
    """The plan's timed operator commands (``{at, command, targets, ...}``)."""
    return [s for s in plan.steps if "command" in s]


def forbidden_by(constraints: list[str]) -> set[str]:
    """Action words a constraint rules out ("do not attack charlie" -> {"attack"})."""
    words: set[str] = set()
    for constraint in constraints:
        lowered = constraint.lower()
        words.update(a for a in ACTIONS if a in lowered)
    return words
