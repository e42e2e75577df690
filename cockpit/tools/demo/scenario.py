"""The demo's scenario format: who is in the fleet, what they say and do, when,
and which verdicts Cockpit must reach. Documented in ``SCENARIOS.md``.

:func:`load_scenario` reads and validates a JSON or YAML file (or a built-in by
name); :func:`build_plan` turns a scenario into a :class:`Plan` for one run: the
fleet sized to ``--agents``, run-unique agent ids, and the clock's start. The
plan is what every agent process receives; it is plain JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ACTIONS",
    "COMMANDS",
    "Plan",
    "ScenarioError",
    "build_plan",
    "builtin_scenarios",
    "load_scenario",
]

#: Actions the strategic layer understands (others are reported but carry no meaning).
ACTIONS = ("attack", "support", "transfer", "assist", "defend", "sabotage", "steal", "betray")
COMMANDS = ("MUTE", "ISOLATE", "TERMINATE", "SNAPSHOT_STATE", "REVOKE_ACCESS", "INJECT_CONSTRAINT")
CATEGORIES = ("COLLUSION", "DECEPTION", "ALLIANCE", "THREAT", "INCONSISTENCY")
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,60}$")
_TOP = {"name", "description", "fleet_size", "agents", "filler", "steps", "loop", "expect", "seed"}


class ScenarioError(ValueError):
    """A scenario file is missing, unreadable or invalid; the message says where."""


@dataclass(frozen=True)
class Plan:
    """One run of a scenario, as handed to every agent (``to_json`` / ``from_json``).

    ``agents``: ``[{"id", "name", "role", "parent"}]`` in spawn order (parents
    first); ``steps`` and ``loop`` use the run's agent ids; ``start_at`` is the
    wall-clock time (POSIX seconds) of scenario second 0.
    """

    scenario: str
    fleet_id: str
    start_at: float
    agents: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    loop: dict[str, Any]
    expect: list[dict[str, Any]]
    seed: int = 7
    description: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls(**json.loads(text))

    def agent(self, agent_id: str) -> dict[str, Any]:
        for agent in self.agents:
            if agent["id"] == agent_id:
                return agent
        raise KeyError(agent_id)

    def children(self, agent_id: str) -> list[str]:
        return [a["id"] for a in self.agents if a.get("parent") == agent_id]

    def roots(self) -> list[str]:
        return [a["id"] for a in self.agents if not a.get("parent")]


@dataclass
class _Checker:
    source: str
    errors: list[str] = field(default_factory=list)

    def fail(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")


# --------------------------------------------------------------------------- loading


def _builtin_dir() -> Any:
    return resources.files("cockpit.tools.demo") / "scenarios"


def builtin_scenarios() -> dict[str, dict[str, Any]]:
    """Built-in scenarios by name (file stem), validated."""
    found = {}
    for entry in sorted(_builtin_dir().iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".yaml", ".yml", ".json")):
            found[entry.name.rsplit(".", 1)[0]] = _parse(entry.read_text(), entry.name)
    return found


def load_scenario(name_or_path: str) -> dict[str, Any]:
    """A built-in scenario by name, or a JSON/YAML file; validated (``ScenarioError``)."""
    path = Path(name_or_path)
    if not path.is_file():
        builtins = builtin_scenarios()
        if name_or_path in builtins:
            return builtins[name_or_path]
        raise ScenarioError(
            f"no scenario file {name_or_path!r} and no built-in of that name "
            f"(built-ins: {', '.join(builtins)})"
        )
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc.strerror or exc}") from None
    return _parse(text, str(path))


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScenarioError(f"{source}: not valid {'JSON' if source.endswith('.json') else 'YAML'}: {first}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario is a mapping with agents, steps, loop and expect")
    data.setdefault("name", Path(source).name.rsplit(".", 1)[0])
    _validate(data, _Checker(source))
    return data


def _validate(data: dict[str, Any], check: _Checker) -> None:
    unknown = set(data) - _TOP
    if unknown:
        check.fail("top level", f"unknown key(s) {', '.join(sorted(unknown))}")
    agents = data.get("agents")
    if not isinstance(agents, list) or not agents:
        check.fail("agents", "a non-empty list of {id, role?, parent?} is required")
        agents = []
    ids: list[str] = []
    for i, agent in enumerate(agents):
        where = f"agents[{i}]"
        if not isinstance(agent, dict) or not isinstance(agent.get("id"), str):
            check.fail(where, "needs an id")
            continue
        if not _ID.match(agent["id"]):
            check.fail(where, f"id {agent['id']!r}: letters, digits, '-', '_', '.' (starting with a letter)")
        if agent["id"] in ids:
            check.fail(where, f"duplicate id {agent['id']!r}")
        parent = agent.get("parent")
        if parent is not None and parent not in ids:
            check.fail(where, f"parent {parent!r} must be an agent listed before it")
        extra = set(agent) - {"id", "role", "parent", "name"}
        if extra:
            check.fail(where, f"unknown key(s) {', '.join(sorted(extra))}")
        ids.append(agent["id"])
    known = set(ids)
    filler = data.get("filler") or {}
    if filler:
        if not isinstance(filler, dict):
            check.fail("filler", "a mapping {prefix, role?, parents?, say?}")
        else:
            for parent in filler.get("parents") or []:
                if parent is not None and parent not in known:
                    check.fail("filler.parents", f"unknown agent {parent!r}")
    size = data.get("fleet_size")
    if size is not None and (not isinstance(size, int) or size < len(ids)):
        check.fail("fleet_size", f"an integer >= the {len(ids)} listed agents")
    for i, step in enumerate(data.get("steps") or []):
        _validate_step(step, f"steps[{i}]", known, check, timed=True)
    loop = data.get("loop") or {}
    if not isinstance(loop, dict):
        check.fail("loop", "a mapping {every?, say?, lines?}")
        loop = {}
    if "every" in loop and not (isinstance(loop["every"], (int, float)) and loop["every"] > 0):
        check.fail("loop.every", "seconds > 0")
    if not all(isinstance(s, str) for s in loop.get("say") or []):
        check.fail("loop.say", "a list of strings")
    for i, line in enumerate(loop.get("lines") or []):
        _validate_step(line, f"loop.lines[{i}]", known, check, timed=False)
    expect = data.get("expect")
    if not isinstance(expect, list) or not expect:
        check.fail("expect", "a non-empty list of {category, agents?, target?}")
        expect = []
    for i, item in enumerate(expect):
        where = f"expect[{i}]"
        if not isinstance(item, dict) or item.get("category") not in CATEGORIES:
            check.fail(where, f"category must be one of {', '.join(CATEGORIES)}")
            continue
        for name in item.get("agents") or []:
            if name not in known:
                check.fail(where, f"unknown agent {name!r}")
        if item.get("target") is not None and item["target"] not in known:
            check.fail(where, f"unknown target {item['target']!r}")
    if check.errors:
        raise ScenarioError(f"{check.source}: " + "; ".join(check.errors[:8]))


def _validate_step(step: Any, where: str, known: set[str], check: _Checker, *, timed: bool) -> None:
    if not isinstance(step, dict):
        check.fail(where, "a mapping")
        return
    if timed and not (isinstance(step.get("at"), (int, float)) and step["at"] >= 0):
        check.fail(where, "'at' (seconds from the start, >= 0) is required")
    if not timed and not (isinstance(step.get("every"), (int, float)) and step["every"] > 0):
        check.fail(where, "'every' (seconds > 0) is required")
    kinds = [k for k in ("say", "act", "command") if k in step]
    if len(kinds) != 1:
        check.fail(where, "exactly one of say, act, command")
        return
    if kinds[0] == "command":
        if not timed:
            check.fail(where, "operator commands are timed steps, not loop lines")
        if step["command"] not in COMMANDS:
            check.fail(where, f"command must be one of {', '.join(COMMANDS)}")
        targets = step.get("targets")
        if not isinstance(targets, list) or not targets or not set(targets) <= known:
            check.fail(where, "targets: a list of agents of the scenario")
        return
    if step.get("from") not in known:
        check.fail(where, f"'from' must be an agent of the scenario (got {step.get('from')!r})")
    to = step.get("to", [])
    to = [to] if isinstance(to, str) else to
    if not isinstance(to, list) or not set(to) <= known:
        check.fail(where, f"'to' must list agents of the scenario (got {step.get('to')!r})")
    if kinds[0] == "say":
        said = step["say"]
        if not (isinstance(said, str) or (isinstance(said, list) and said and all(isinstance(s, str) for s in said))):
            check.fail(where, "say: a text (or, in a loop line, a list of texts to cycle through)")
        if timed and not isinstance(said, str):
            check.fail(where, "say: a text")
    else:
        if not isinstance(step["act"], str) or not step["act"]:
            check.fail(where, f"act: an action type ({', '.join(ACTIONS[:3])}, ...)")
        if step.get("target") not in known:
            check.fail(where, f"target must be an agent of the scenario (got {step.get('target')!r})")


# --------------------------------------------------------------------------- planning


def build_plan(scenario: dict[str, Any], *, agents: int | None = None, fleet_id: str = "demo",
               start_at: float = 0.0, suffix: str = "") -> Plan:
    """Size the fleet and give every agent its run id (``<id><suffix>``).

    ``agents`` (default: the scenario's ``fleet_size``, else its cast) adds filler
    agents ``<prefix>-01``... under ``filler.parents`` in turn; fewer than the cast
    is an error. With a ``suffix`` (a data dir reused across runs), agent names in
    texts are rewritten to the run's ids so the narrative still names them.
    """
    cast = scenario["agents"]
    size = agents if agents is not None else int(scenario.get("fleet_size") or len(cast))
    if size < len(cast):
        raise ScenarioError(
            f"scenario {scenario['name']!r} has {len(cast)} agents; --agents must be at least {len(cast)}"
        )
    members = [{"id": a["id"], "name": a.get("name") or a["id"], "role": a.get("role", "agent"),
                "parent": a.get("parent")} for a in cast]
    filler = scenario.get("filler") or {}
    parents = list(filler.get("parents") or [None])
    prefix = filler.get("prefix", "worker")
    for n in range(size - len(cast)):
        fid = f"{prefix}-{n + 1:02d}"
        members.append({"id": fid, "name": fid, "role": filler.get("role", "worker"),
                        "parent": parents[n % len(parents)]})
    rename = {m["id"]: m["id"] + suffix for m in members}
    pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(k) for k in sorted(rename, key=len, reverse=True)) + r")(?![\w-])")

    def text(value: Any) -> Any:
        if not suffix:
            return value
        if isinstance(value, list):
            return [text(v) for v in value]
        return pattern.sub(lambda m: rename[m.group(1)], value) if isinstance(value, str) else value

    def ids(value: Any) -> Any:
        if isinstance(value, list):
            return [rename.get(v, v) for v in value]
        return rename.get(value, value) if isinstance(value, str) else value

    def step(raw: dict[str, Any]) -> dict[str, Any]:
        out = dict(raw)
        for key in ("from", "target"):
            if key in out:
                out[key] = ids(out[key])
        if "to" in out:
            out["to"] = ids([out["to"]] if isinstance(out["to"], str) else out["to"])
        if "targets" in out:
            out["targets"] = ids(out["targets"])
        if "say" in out:
            out["say"] = text(out["say"])
        if isinstance(out.get("params"), dict) and "from" in out["params"]:
            out["params"] = {**out["params"], "from": ids(out["params"]["from"])}
        if isinstance(out.get("parameters"), dict) and "constraint" in out["parameters"]:
            out["parameters"] = {**out["parameters"], "constraint": text(out["parameters"]["constraint"])}
        return out

    for m in members:
        m["id"], m["parent"] = rename[m["id"]], rename.get(m["parent"]) if m["parent"] else None
    loop = dict(scenario.get("loop") or {})
    loop["lines"] = [step(line) for line in loop.get("lines") or []]
    loop["say"] = list(loop.get("say") or [])
    loop["filler_say"] = text(list(filler.get("say") or []))
    expect = [{**e, "agents": ids(list(e.get("agents") or [])),
               "target": ids(e.get("target"))} for e in scenario["expect"]]
    return Plan(
        scenario=scenario["name"], fleet_id=fleet_id, start_at=start_at, agents=members,
        steps=sorted((step(s) for s in scenario.get("steps") or []), key=lambda s: s["at"]),
        loop=loop, expect=expect, seed=int(scenario.get("seed", 7)),
        description=str(scenario.get("description", "")).strip(),
    )
