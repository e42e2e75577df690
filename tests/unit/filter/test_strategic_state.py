"""Layer 2 state: decay, bounded size, replay, graph, fleets."""

from __future__ import annotations

import pickle
from datetime import timedelta

from cockpit.events.telemetry import Telemetry
from cockpit.events.verdict import Category
from cockpit.filter.strategic import FleetAnalyzer, StrategicConfig, StrategicLayer
from tests.unit.filter.scenarios import (
    COMP,
    COOP,
    START,
    ScenarioBuilder,
    acceptance_scenario,
    alliance_decay_scenario,
)


def test_an_old_alliance_decays_below_the_threshold() -> None:
    config = StrategicConfig()
    scenario = alliance_decay_scenario(half_lives=5, half_life_s=config.alliance_half_life_s)
    analyzer = FleetAnalyzer("default", config)
    late = scenario.ids("late")[0]
    for telemetry, semantic in scenario.items:
        findings = analyzer.observe(telemetry, semantic)
        if telemetry.message_id == scenario.ids("early")[-1]:
            assert [f.category for f in findings] == [Category.ALLIANCE]
            strong = analyzer.alliances.strength("agent-a", "agent-b", analyzer.clock)
        if telemetry.message_id == late:
            assert findings == []
    weak = analyzer.alliances.strength("agent-a", "agent-b", analyzer.clock)
    assert weak < 0.25 < config.alliance_threshold <= strong


def test_graph_edge_weights_decay_lazily_with_the_query_time() -> None:
    scenario = alliance_decay_scenario(half_lives=0)
    analyzer = FleetAnalyzer("default")
    analyzer.replay(scenario.items)
    now = scenario.items[-1][0].timestamp
    fresh = analyzer.graph(now).edges[0].weight
    later = analyzer.graph(now + timedelta(hours=1)).edges[0].weight
    assert abs(later - fresh / 2) < 0.01


def test_an_attack_breaks_an_alliance() -> None:
    s = ScenarioBuilder()
    for n in range(6):
        s.say("agent-a", ["agent-b"], f"with you {n}", COOP)
        s.say("agent-b", ["agent-a"], f"with you too {n}", COOP)
    s.act("agent-a", "attack", "agent-b")
    analyzer = FleetAnalyzer("default")
    analyzer.replay(s.build("broken", []).items)
    assert analyzer.alliances.strength("agent-a", "agent-b", analyzer.clock) < 0.5


def test_graph_reports_weighted_edges_and_communities() -> None:
    s = ScenarioBuilder()
    for n in range(4):
        for a, b in (("a1", "a2"), ("a2", "a3"), ("a1", "a3"), ("b1", "b2"), ("b2", "b3")):
            s.say(a, [b], f"coop {n}", COOP)
            s.say(b, [a], f"coop {n}", COOP)
    s.say("loner", [], "anyone?")
    analyzer = FleetAnalyzer("default")
    analyzer.replay(s.build("blocs", []).items)
    graph = analyzer.graph()
    assert "loner" in graph.nodes
    assert {(e.a, e.b) for e in graph.edges} == {
        ("a1", "a2"), ("a2", "a3"), ("a1", "a3"), ("b1", "b2"), ("b2", "b3")
    }
    assert all(0 < e.weight <= 1 for e in graph.edges)
    assert graph.communities == [["a1", "a2", "a3"], ["b1", "b2", "b3"]]
    assert graph.to_dict()["communities"] == graph.communities


def _chatter(builder: ScenarioBuilder, agents: list[str], rounds: int) -> None:
    for n in range(rounds):
        for i, source in enumerate(agents):
            other = agents[(i + 1 + n) % len(agents)]
            if other == source:
                continue
            intent = (COOP, COMP)[(n + i) % 2]
            builder.say(source, [other], f"{n}", intent, 0.5)
            if n % 3 == 0:
                builder.act(source, "attack", other)


def test_state_stays_bounded_as_history_grows() -> None:
    """The per-message cost cannot grow if no structure grows with history."""
    agents = [f"agent-{n}" for n in range(12)]
    config = StrategicConfig(prune_every=500, dedupe_window=256)
    analyzer = FleetAnalyzer("default", config)
    s = ScenarioBuilder(step_s=1.0)
    _chatter(s, agents, 60)
    analyzer.replay(s.items)
    early = analyzer.state_sizes()
    s.items.clear()
    _chatter(s, agents, 600)
    analyzer.replay(s.items)
    assert analyzer.messages_observed > 5000
    assert analyzer.state_sizes() == early | {"dedupe": config.dedupe_window}
    for conduct in analyzer.deception.conducts():
        assert len(conduct.scores) <= config.deception_window
        assert len(conduct.turns) <= config.stance_window


def test_idle_agents_and_decayed_ties_are_pruned() -> None:
    config = StrategicConfig(prune_every=200, idle_ttl_s=3600)
    analyzer = FleetAnalyzer("default", config)
    s = ScenarioBuilder(step_s=10.0)
    for generation in range(20):  # a new cast every ~3 hours of telemetry time
        _chatter(s, [f"gen{generation}-{n}" for n in range(8)], 12)
        s.wait(3 * 3600)
    analyzer.replay(s.items)
    analyzer.prune()
    sizes = analyzer.state_sizes()
    assert sizes["agents"] <= 8 and sizes["conduct"] <= 8
    assert sizes["ties"] <= 28 and sizes["hostility"] <= 8 * 7


def test_redelivered_messages_are_not_reprocessed() -> None:
    scenario = acceptance_scenario()
    analyzer = FleetAnalyzer("default")
    for telemetry, semantic in scenario.items:
        analyzer.observe(telemetry, semantic)
    for telemetry, semantic in scenario.items:
        assert analyzer.observe(telemetry, semantic) == []
    assert analyzer.messages_observed == len(scenario.items)


def test_replay_rebuilds_the_same_state_as_live_processing() -> None:
    scenario = acceptance_scenario()
    half = len(scenario.items) // 2
    live = FleetAnalyzer("default")
    live_tail = []
    for n, (telemetry, semantic) in enumerate(scenario.items):
        found = live.observe(telemetry, semantic)
        if n >= half:
            live_tail.extend(found)
    taken_over = FleetAnalyzer("default")
    assert taken_over.replay(scenario.items[:half]) == half
    tail = [f for t, s in scenario.items[half:] for f in taken_over.observe(t, s)]
    assert tail == live_tail
    assert taken_over.graph() == live.graph()
    assert taken_over.state_sizes() == live.state_sizes()


def test_late_messages_never_undo_decay() -> None:
    s = ScenarioBuilder()
    for n in range(6):
        s.say("agent-a", ["agent-b"], f"{n}", COOP)
        s.say("agent-b", ["agent-a"], f"{n}", COOP)
    analyzer = FleetAnalyzer("default")
    analyzer.replay(s.items)
    before = analyzer.alliances.strength("agent-a", "agent-b", analyzer.clock)
    late = Telemetry(message_id="late", source_agent_id="agent-a", target_agent_ids=["agent-b"],
                     content="old news", timestamp=START - timedelta(days=1))
    analyzer.observe(late, s.items[0][1])
    assert analyzer.clock == s.items[-1][0].timestamp.timestamp()
    assert before < analyzer.alliances.strength("agent-a", "agent-b", analyzer.clock) <= 1.0


def test_strategic_layer_keeps_fleets_apart() -> None:
    layer = StrategicLayer()
    red, blue = acceptance_scenario("red"), acceptance_scenario("blue")
    found = [f for pair in zip(red.items, blue.items, strict=True) for t, s in pair
             for f in layer.observe(t, s)]
    alone = FleetAnalyzer("red")
    red_alone = [f for t, s in red.items for f in alone.observe(t, s)]
    assert layer.fleets() == ["blue", "red"]
    assert [f for f in found if f.fleet_id == "red"] == red_alone
    assert len([f for f in found if f.fleet_id == "blue"]) == len(red_alone)


def test_adopting_a_fleet_rebuilds_it_from_history() -> None:
    scenario = acceptance_scenario("red")
    layer = StrategicLayer()
    rebuilt = layer.adopt("red", scenario.items)
    assert layer.analyzer("red") is rebuilt
    assert rebuilt.messages_observed == len(scenario.items)
    layer.release("red")
    assert "red" not in layer


def test_analyzer_state_survives_a_pickle_round_trip() -> None:
    """A replica may hand a fleet over as a snapshot instead of a replay."""
    scenario = acceptance_scenario()
    half = len(scenario.items) // 2
    live = FleetAnalyzer("default")
    live.replay(scenario.items[:half])
    copy = pickle.loads(pickle.dumps(live))
    rest = scenario.items[half:]
    tail = [f for t, s in rest for f in copy.observe(t, s)]
    assert tail and tail == [f for t, s in rest for f in live.observe(t, s)]
    assert len({*tail}) <= len(tail)  # findings are hashable (usable as set members)
