"""What a demo run produced, read back over the API, and whether the scenario's
expected verdicts appeared."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from cockpit.tools.demo.scenario import Plan

__all__ = ["RunSummary", "collect", "matches", "missing"]


def matches(verdict: dict[str, Any], expectation: dict[str, Any]) -> bool:
    """A verdict meets an expectation: same category, every named agent involved,
    and the same target when one is named."""
    if verdict["category"] != expectation["category"]:
        return False
    if not set(expectation.get("agents") or []) <= set(verdict["agents_involved"]):
        return False
    target = expectation.get("target")
    return target is None or verdict.get("target") == target


def missing(verdicts: list[dict[str, Any]], expect: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The expectations no verdict meets."""
    return [e for e in expect if not any(matches(v, e) for v in verdicts)]


def describe(expectation: dict[str, Any]) -> str:
    text = expectation["category"]
    if expectation.get("agents"):
        text += f" of {', '.join(expectation['agents'])}"
    if expectation.get("target"):
        text += f" against {expectation['target']}"
    return text


@dataclass
class RunSummary:
    """Messages, verdicts and commands of one run, and what was expected."""

    messages: int = 0
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def lines(self, plan: Plan) -> list[str]:
        out = [f"scenario {plan.scenario}: {len(plan.agents)} agents, fleet {plan.fleet_id}",
               f"messages sent: {self.messages}"]
        by_category = Counter(v["category"] for v in self.verdicts)
        by_severity = Counter(v["severity"] for v in self.verdicts)
        out.append(f"verdicts: {len(self.verdicts)}"
                   + (" (" + ", ".join(f"{k} {n}" for k, n in sorted(by_category.items())) + ")" if by_category else ""))
        if by_severity:
            order = ("CRITICAL", "HIGH", "MEDIUM", "LOW")
            out.append("  by severity: " + ", ".join(f"{s} {by_severity[s]}" for s in order if by_severity[s]))
        for v in sorted(self.verdicts, key=lambda v: v["created_at"]):
            out.append(f"  {v['severity']:<8} {v['category']:<13} {v['title']}")
        by_type = Counter(f"{c['command_type']} {c['status']}" for c in self.commands)
        out.append(f"commands executed: {len(self.commands)}"
                   + (" (" + ", ".join(f"{k} x{n}" for k, n in sorted(by_type.items())) + ")" if by_type else ""))
        if self.missing:
            out.append("MISSING expected verdicts: " + "; ".join(describe(e) for e in self.missing))
        else:
            out.append(f"expected verdicts: all {len(plan.expect)} appeared")
        return out


async def fleet_verdicts(client: httpx.AsyncClient, plan: Plan) -> list[dict[str, Any]]:
    """Every verdict (any status) of the plan's fleet."""
    found: list[dict[str, Any]] = []
    offset = 0
    while True:
        r = await client.get("/verdicts", params={"limit": 500, "offset": offset})
        r.raise_for_status()
        page = r.json()
        found.extend(v for v in page["items"] if v.get("fleet_id") == plan.fleet_id)
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return found


async def collect(client: httpx.AsyncClient, plan: Plan, messages: int) -> RunSummary:
    """Read the run's verdicts and commands (the client carries the operator key)."""
    verdicts = await fleet_verdicts(client, plan)
    ids = {a["id"] for a in plan.agents}
    r = await client.get("/commands", params={"limit": 500})
    r.raise_for_status()
    commands = [c for c in r.json()["items"] if set(c.get("target_agents") or []) & ids]
    return RunSummary(messages=messages, verdicts=verdicts, commands=commands,
                      missing=missing(verdicts, plan.expect))
