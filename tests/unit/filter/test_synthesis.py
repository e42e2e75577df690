"""Layer 3: severity, action, title, fingerprint and throttle of verdict drafts."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from cockpit.events.verdict import Category, Severity, VerdictDrafted
from cockpit.filter.strategic import Finding, FleetAnalyzer
from cockpit.filter.synthesis import (
    ActionRule,
    DraftThrottle,
    SynthesisConfig,
    Synthesizer,
    fingerprint,
    recommended_action,
    severity_for,
    synthesize,
)
from tests.unit.filter.scenarios import START, acceptance_scenario


def finding(category: Category = Category.DECEPTION, score: float = 0.8,
            agents: tuple[str, ...] = ("agent-d",), target: str | None = None,
            evidence: tuple[str, ...] = ("m1", "m2"), seconds: float = 0.0) -> Finding:
    return Finding("default", category, agents, target, score, evidence,
                   START + timedelta(seconds=seconds))


def acceptance_drafts() -> tuple[list[VerdictDrafted], set[str]]:
    scenario = acceptance_scenario()
    analyzer, synthesizer = FleetAnalyzer("default"), Synthesizer()
    drafts = [d for t, s in scenario.items for d in synthesizer.drafts(analyzer.observe(t, s))]
    return drafts, {t.message_id for t, _ in scenario.items}


@pytest.mark.parametrize(("score", "severity"), [
    (1.0, Severity.CRITICAL), (0.9, Severity.CRITICAL), (0.8999, Severity.HIGH),
    (0.7, Severity.HIGH), (0.6999, Severity.MEDIUM), (0.5, Severity.MEDIUM),
    (0.4999, Severity.LOW), (0.0, Severity.LOW),
])
def test_severity_cut_offs(score: float, severity: Severity) -> None:
    assert severity_for(score, SynthesisConfig()) is severity


@pytest.mark.parametrize(("category", "severity", "action"), [
    (Category.DECEPTION, Severity.CRITICAL, "ISOLATE"),
    (Category.INCONSISTENCY, Severity.CRITICAL, "SNAPSHOT_STATE"),
    (Category.DECEPTION, Severity.HIGH, "MUTE"),
    (Category.INCONSISTENCY, Severity.HIGH, "MUTE"),
    (Category.COLLUSION, Severity.CRITICAL, "INJECT_CONSTRAINT"),
    (Category.COLLUSION, Severity.MEDIUM, "INJECT_CONSTRAINT"),
    (Category.ALLIANCE, Severity.HIGH, "MONITOR"),
    (Category.DECEPTION, Severity.MEDIUM, "MONITOR"),
    (Category.THREAT, Severity.CRITICAL, "ISOLATE"),
    (Category.THREAT, Severity.HIGH, "MUTE"),
    (Category.THREAT, Severity.MEDIUM, "MONITOR"),
    (Category.THREAT, Severity.LOW, "MONITOR"),
])
def test_recommended_actions_follow_the_design(category: Category, severity: Severity,
                                               action: str) -> None:
    assert recommended_action(category, severity, SynthesisConfig()) == action


def test_action_mapping_is_configurable_and_validated() -> None:
    config = SynthesisConfig(action_rules=(ActionRule(None, Severity.CRITICAL, "TERMINATE"),))
    assert synthesize(finding(score=0.95), config).recommended_action == "TERMINATE"
    assert synthesize(finding(score=0.75), config).recommended_action == "MONITOR"
    with pytest.raises(ValueError, match="unknown recommended action"):
        SynthesisConfig(action_rules=(ActionRule(None, None, "NUKE"),))


def test_fingerprint_names_the_situation_not_the_order_of_agents() -> None:
    one = fingerprint("f", Category.COLLUSION, ["agent-b", "agent-a"], "agent-c")
    assert one == fingerprint("f", Category.COLLUSION, ["agent-a", "agent-b"], "agent-c")
    others = {
        fingerprint("g", Category.COLLUSION, ["agent-a", "agent-b"], "agent-c"),
        fingerprint("f", Category.ALLIANCE, ["agent-a", "agent-b"], "agent-c"),
        fingerprint("f", Category.COLLUSION, ["agent-a", "agent-b"], "agent-d"),
        fingerprint("f", Category.COLLUSION, ["agent-a", "agent-b"], None),
        fingerprint("f", Category.COLLUSION, ["agent-a,agent-b"], "agent-c"),
    }
    assert one not in others and len(others) == 5
    assert len(one) == 32 and int(one, 16) >= 0


def test_acceptance_drafts_one_situation_per_planted_finding() -> None:
    drafts, message_ids = acceptance_drafts()
    latest = {d.fingerprint: d for d in drafts}
    assert sorted((d.category, d.title, d.recommended_action) for d in latest.values()) == [
        (Category.ALLIANCE, "agent-a and agent-b formed an alliance", "MONITOR"),
        (Category.COLLUSION, "agent-a and agent-b collude against agent-c", "INJECT_CONSTRAINT"),
        (Category.DECEPTION, "agent-f is deceptive", "ISOLATE"),
        (Category.INCONSISTENCY, "agent-d promised support to agent-e, then attacked it", "MUTE"),
    ]
    for draft in drafts:
        assert set(draft.evidence_chain) <= message_ids
        assert draft.agents_involved == sorted(draft.agents_involved)
        assert not {"agent-g", "agent-h", "agent-i"} & {*draft.agents_involved, draft.target}
        assert 0.0 < draft.confidence <= 1.0


def test_same_situation_keeps_its_fingerprint_as_evidence_grows() -> None:
    drafts, _ = acceptance_drafts()
    deception = [d for d in drafts if d.category is Category.DECEPTION]
    assert len(deception) > 1
    assert len({d.fingerprint for d in deception}) == 1
    assert len(deception[-1].evidence_chain) > len(deception[0].evidence_chain)


def test_confidence_is_discounted_while_evidence_is_thin() -> None:
    thin = synthesize(finding(score=0.8, evidence=("m1",)))
    full = synthesize(finding(score=0.8, evidence=("m1", "m2", "m3", "m4")))
    assert thin.confidence < full.confidence == 0.8


def test_throttle_drops_unchanged_findings() -> None:
    throttle = DraftThrottle()
    assert throttle.admit(finding())
    assert not throttle.admit(finding(seconds=60))
    assert not throttle.admit(finding(evidence=("m2",), seconds=120))


def test_throttle_lets_new_evidence_through_at_most_once_per_interval() -> None:
    throttle = DraftThrottle(SynthesisConfig(min_update_interval_s=10))
    assert throttle.admit(finding())
    assert not throttle.admit(finding(evidence=("m1", "m2", "m3"), seconds=5))
    assert throttle.admit(finding(evidence=("m1", "m2", "m3"), seconds=11))


def test_throttle_lets_a_severity_change_through_at_once() -> None:
    throttle = DraftThrottle(SynthesisConfig(min_update_interval_s=10))
    base = finding(score=0.75)
    assert throttle.admit(base)
    assert throttle.admit(replace(base, score=0.95))
    assert throttle.admit(replace(base, score=0.6))


def test_throttle_memory_is_bounded() -> None:
    throttle = DraftThrottle(SynthesisConfig(throttle_capacity=10))
    for n in range(50):
        throttle.admit(finding(agents=(f"agent-{n}",)))
    assert len(throttle) == 10
