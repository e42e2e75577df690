"""The demo's scenarios through the real pipeline: every built-in scenario's
telemetry, posted over HTTP to an in-process Cockpit (SQLite and PostgreSQL),
produces the verdicts the scenario expects and accuses nobody else; the loader
rejects bad files with a message that says where."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cockpit.filter.semantic import SemanticAnalyzer
from cockpit.tools.demo.scenario import ScenarioError, build_plan, builtin_scenarios, load_scenario
from cockpit.tools.demo.summary import matches, missing
from cockpit.tools.demo.timeline import Timeline, fleet_timeline
from tests.integration.gateway.conftest import Harness, make_harness, settings_for

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
BUILTINS = sorted(builtin_scenarios())


@pytest.fixture(params=["sqlite", "postgresql"])
async def cockpit(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in make_harness(settings_for(request.param, tmp_path, request)):
        yield harness


async def play(harness: Harness, scenario: dict, seconds: float, suffix: str = "") -> list[dict]:
    """Post the whole fleet's telemetry for ``seconds`` of scenario time (as the agents
    would, in time order), then return the fleet's verdicts."""
    plan = build_plan(scenario, fleet_id=f"it-{scenario['name']}{suffix}", suffix=suffix)
    for n, u in enumerate(fleet_timeline(plan, seconds)):
        at = T0 + timedelta(seconds=max(u.at, -1.0))
        body = {"message_id": f"{plan.fleet_id}-{n:05d}", "fleet_id": plan.fleet_id,
                "source_agent_id": u.agent, "timestamp": at.isoformat(), **u.telemetry()}
        r = await harness.client.post("/telemetry", json=body, headers=harness.headers())
        assert r.status_code == 202, r.text
    await harness.settle()
    r = await harness.client.get("/verdicts", params={"limit": 500}, headers=harness.headers("VIEWER"))
    return [v for v in r.json()["items"] if v["fleet_id"] == plan.fleet_id]


@pytest.mark.parametrize("name", BUILTINS)
async def test_builtin_scenario_yields_its_expected_verdicts_and_no_others(cockpit: Harness, name: str) -> None:
    scenario = builtin_scenarios()[name]
    verdicts = await play(cockpit, scenario, 90)
    plan = build_plan(scenario)
    assert not missing(verdicts, plan.expect), [(v["category"], v["agents_involved"], v["target"]) for v in verdicts]
    # Misconduct is only ever found where the scenario planted it.
    for v in verdicts:
        if v["category"] != "ALLIANCE":
            assert any(matches(v, e) for e in plan.expect), f"unexpected verdict: {v['title']}"


async def test_misconduct_verdicts_within_the_first_twenty_seconds(cockpit: Harness) -> None:
    """The default scenario front-loads its plot: the demo fills the dashboard fast."""
    verdicts = await play(cockpit, builtin_scenarios()["fleet"], 20)
    assert {"COLLUSION", "INCONSISTENCY", "DECEPTION", "ALLIANCE"} <= {v["category"] for v in verdicts}


async def test_a_reused_data_dir_renames_agents_in_ids_and_texts(cockpit: Harness) -> None:
    verdicts = await play(cockpit, builtin_scenarios()["fleet"], 20, suffix="-r2")
    collusion = [v for v in verdicts if v["category"] == "COLLUSION"]
    assert collusion and collusion[0]["agents_involved"] == ["alpha-r2", "bravo-r2"]
    assert collusion[0]["target"] == "charlie-r2"


def test_background_chatter_is_neutral() -> None:
    """Generic chatter goes to whoever is near; it must never read as a promise or a threat."""
    analyzer = SemanticAnalyzer()
    for name, scenario in builtin_scenarios().items():
        for line in (scenario.get("loop") or {}).get("say") or []:
            result = analyzer.analyze(line.replace("{n}", "3"))
            assert result.intent.value == "NEUTRAL", (name, line, result.intent)


def test_timeline_is_deterministic_and_keeps_the_spawn_tree() -> None:
    plan = build_plan(builtin_scenarios()["fleet"])
    assert len(plan.agents) == 12
    assert {a["id"] for a in plan.agents if a["parent"] == "golf"} == {"hotel", "worker-01", "worker-03"}
    first = [(u.at, u.text) for u in Timeline(plan, "worker-02").due(60)]
    again = [(u.at, u.text) for u in Timeline(plan, "worker-02").due(60)]
    assert first == again and first[0][1] == "worker-02 online and ready"
    assert all(u.to == ["hotel"] for u in Timeline(plan, "worker-02").due(60)[1:])


def test_list_of_agents_sizes_the_fleet() -> None:
    scenario = builtin_scenarios()["fleet"]
    assert len(build_plan(scenario, agents=20).agents) == 20
    with pytest.raises(ScenarioError, match="at least 9"):
        build_plan(scenario, agents=5)


@pytest.mark.parametrize(("text", "message"), [
    ("agents: []\nexpect: []", "agents: a non-empty list"),
    ("agents: [{id: a}]\nsteps: [{at: 1, from: b, say: hi}]\nexpect: [{category: DECEPTION}]",
     "steps[0]: 'from' must be an agent"),
    ("agents: [{id: a}, {id: b}]\nsteps: [{at: 1, from: a, act: attack}]\nexpect: [{category: COLLUSION}]",
     "steps[0]: target must be an agent"),
    ("agents: [{id: a, parent: z}]\nexpect: [{category: DECEPTION}]", "parent 'z' must be an agent listed before"),
    ("agents: [{id: a}]\nexpect: [{category: LIES}]", "expect[0]: category must be one of"),
    ("agents: [{id: a}]\nloop: {lines: [{from: a, say: x}]}\nexpect: [{category: DECEPTION}]",
     "loop.lines[0]: 'every'"),
    ("agents: [{id: a}]\nsteps: [{at: 1, command: KILL, targets: [a]}]\nexpect: [{category: DECEPTION}]",
     "command must be one of"),
    ("agents: [{id: a}\n", "not valid YAML"),
])
def test_invalid_scenarios_are_refused_with_the_place(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(path))
    assert message in str(info.value) and "bad.yaml" in str(info.value)


def test_json_scenarios_load_like_yaml(tmp_path: Path) -> None:
    path = tmp_path / "duel.json"
    path.write_text('{"agents": [{"id": "x"}, {"id": "y"}], '
                    '"steps": [{"at": 1, "from": "x", "to": "y", "say": "I will support you"}], '
                    '"expect": [{"category": "INCONSISTENCY", "agents": ["x"], "target": "y"}]}')
    scenario = load_scenario(str(path))
    assert scenario["name"] == "duel"
    with pytest.raises(ScenarioError, match="no scenario file 'nope'"):
        load_scenario("nope")


def test_the_documented_example_is_a_valid_scenario(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "cockpit" / "tools" / "demo" / "SCENARIOS.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "duel.yaml"
    path.write_text(example)
    plan = build_plan(load_scenario(str(path)))
    assert len(plan.agents) == 6 and plan.agents[-1]["parent"] == "november"
    assert [s["command"] for s in plan.steps if "command" in s] == ["MUTE"]
