"""Layer 2 finds exactly the planted patterns, with evidence that resolves."""

from __future__ import annotations

from cockpit.events.verdict import Category
from cockpit.filter.analysis import Intent
from cockpit.filter.strategic import Finding, FleetAnalyzer, StrategicConfig
from tests.unit.filter.scenarios import (
    COMP,
    COOP,
    Scenario,
    ScenarioBuilder,
    acceptance_scenario,
    benign_fleet_scenario,
    switching_only_scenario,
)


def run(scenario: Scenario, config: StrategicConfig | None = None) -> list[Finding]:
    analyzer = FleetAnalyzer("default", config)
    return [f for t, s in scenario.items for f in analyzer.observe(t, s)]


def situations(findings: list[Finding]) -> set[tuple[Category, tuple[str, ...], str | None]]:
    return {(f.category, f.agents_involved, f.target) for f in findings}


def latest(findings: list[Finding], category: Category) -> Finding:
    return [f for f in findings if f.category is category][-1]


def test_acceptance_scenario_yields_exactly_the_planted_findings() -> None:
    scenario = acceptance_scenario()
    found = situations(run(scenario))
    assert found == {(p.category, p.agents, p.target) for p in scenario.expected}


def test_benign_agents_are_never_involved_nor_targeted() -> None:
    scenario = acceptance_scenario()
    for finding in run(scenario):
        assert not scenario.benign_agents & set(finding.agents_involved)
        assert finding.target not in scenario.benign_agents


def test_evidence_resolves_to_the_planted_messages_in_time_order() -> None:
    scenario = acceptance_scenario()
    findings = run(scenario)
    for finding in findings:
        stamps = [scenario.telemetry(mid).timestamp for mid in finding.evidence]
        assert stamps == sorted(stamps)
        assert 0 < len(finding.evidence) <= StrategicConfig().evidence_limit

    alliance = latest(findings, Category.ALLIANCE)
    assert set(alliance.evidence) <= set(scenario.ids("ab_coop"))

    collusion = latest(findings, Category.COLLUSION)
    assert set(scenario.ids("ab_attack")) <= set(collusion.evidence)
    assert set(scenario.ids("ab_announce")) <= set(collusion.evidence)
    assert set(collusion.evidence) <= set(scenario.ids("ab_coop", "ab_announce", "ab_attack"))

    inconsistency = latest(findings, Category.INCONSISTENCY)
    assert list(inconsistency.evidence) == scenario.ids("d_promise", "d_attack")

    deception = latest(findings, Category.DECEPTION)
    assert set(deception.evidence) == set(scenario.ids("f_flip"))


def test_scores_are_probabilities_and_at_or_above_their_thresholds() -> None:
    config = StrategicConfig()
    floors = {
        Category.ALLIANCE: config.alliance_threshold,
        Category.COLLUSION: config.collusion_threshold,
        Category.DECEPTION: config.deception_threshold,
        Category.INCONSISTENCY: config.inconsistency_threshold,
    }
    for finding in run(acceptance_scenario()):
        assert floors[finding.category] <= finding.score <= 1.0


def test_benign_fleet_produces_nothing() -> None:
    assert run(benign_fleet_scenario()) == []


def test_switching_alone_is_deception_even_with_honest_scores() -> None:
    findings = run(switching_only_scenario(flips=4))
    assert situations(findings) == {(Category.DECEPTION, ("agent-x",), None)}


def test_a_single_change_of_mind_is_not_deception() -> None:
    assert run(switching_only_scenario(flips=1)) == []


def test_high_deception_scores_alone_need_the_minimum_message_count() -> None:
    s = ScenarioBuilder()
    for n in range(4):
        s.say("agent-l", ["agent-m"], f"trust me {n}", Intent.NEUTRAL, 0.9)
    assert run(s.build("few", [])) == []
    s.say("agent-l", ["agent-m"], "trust me again", Intent.NEUTRAL, 0.9)
    assert situations(run(s.build("enough", []))) == {(Category.DECEPTION, ("agent-l",), None)}


def test_promise_then_transfer_from_the_promisee_is_inconsistency() -> None:
    s = ScenarioBuilder()
    s.say("agent-d", ["agent-e"], "I will help you", COOP)
    s.act("agent-d", "transfer", "agent-d", {"from": "agent-e", "amount": 50})
    found = situations(run(s.build("transfer", [])))
    assert found == {(Category.INCONSISTENCY, ("agent-d",), "agent-e")}


def test_broadcast_promise_naming_the_promisee_counts() -> None:
    s = ScenarioBuilder()
    s.say("agent-e", [], "hello")
    s.say("agent-d", [], "Everyone: I will support agent-e.", COOP)
    s.act("agent-d", "attack", "agent-e")
    assert situations(run(s.build("broadcast", []))) == {
        (Category.INCONSISTENCY, ("agent-d",), "agent-e")
    }


def test_open_hostility_before_the_attack_is_not_inconsistency() -> None:
    s = ScenarioBuilder()
    s.say("agent-d", ["agent-e"], "I will support you", COOP)
    s.say("agent-d", ["agent-e"], "I changed my mind, you are my enemy now", COMP)
    s.act("agent-d", "attack", "agent-e")
    assert run(s.build("honest", [])) == []


def test_promises_expire() -> None:
    config = StrategicConfig()
    s = ScenarioBuilder()
    s.say("agent-d", ["agent-e"], "I will support you", COOP)
    s.wait(config.promise_window_s + 1)
    s.act("agent-d", "attack", "agent-e")
    assert run(s.build("expired", []), config) == []


def test_attackers_without_a_tie_are_not_colluding() -> None:
    s = ScenarioBuilder()
    for attacker in ("agent-p", "agent-q"):
        s.act(attacker, "attack", "agent-c")
        s.act(attacker, "attack", "agent-c")
    assert run(s.build("uncoordinated", [])) == []


def test_collusion_groups_every_allied_attacker() -> None:
    s = ScenarioBuilder()
    trio = ("agent-a", "agent-b", "agent-x")
    for n in range(6):
        for source, other in (trio[:2], trio[1:], trio[::-2]):
            s.say(source, [other], f"plan {n}", COOP)
            s.say(other, [source], f"ok {n}", COOP)
    for _ in range(2):
        for attacker in trio:
            s.act(attacker, "attack", "agent-c")
    collusions = [f for f in run(s.build("trio", [])) if f.category is Category.COLLUSION]
    assert collusions[-1].agents_involved == trio
    assert collusions[-1].target == "agent-c"


def test_competitive_message_naming_a_third_agent_targets_it_not_the_ally() -> None:
    scenario = acceptance_scenario()
    analyzer = FleetAnalyzer("default")
    for telemetry, semantic in scenario.items:
        analyzer.observe(telemetry, semantic)
        if telemetry.message_id == scenario.ids("ab_announce")[-1]:
            break
    tie = analyzer.alliances.tie("agent-a", "agent-b")
    assert tie is not None and tie.strength >= StrategicConfig().alliance_threshold
