"""Layer 3 of the narrative filter: a strategic finding becomes a verdict draft.

``synthesize`` is a pure function (finding -> ``VerdictDrafted``); ``Synthesizer``
adds the throttle that keeps an unchanged situation from drafting a new verdict on
every message. The ``fingerprint`` names the situation (fleet, category, sorted
agents, target), so the verdict engine updates the ACTIVE verdict it already has.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from cockpit.events.verdict import RECOMMENDED_ACTIONS, Category, Severity, VerdictDrafted
from cockpit.filter.strategic.finding import Finding

__all__ = [
    "DEFAULT_ACTION_RULES",
    "ActionRule",
    "DraftThrottle",
    "SynthesisConfig",
    "Synthesizer",
    "fingerprint",
    "recommended_action",
    "severity_for",
    "synthesize",
    "title_for",
]


@dataclass(frozen=True, slots=True)
class ActionRule:
    """``category`` / ``severity`` (None = any) -> a C2L command type or MONITOR."""

    category: Category | None
    severity: Severity | None
    action: str


#: First match wins. From DESIGN.md section 5, plus choices of ours: an ALLIANCE
#: is not misconduct (MONITOR, never MUTE), a LOW collusion is only watched, and a
#: CRITICAL threat (an agent attacking the system itself) is cut off (ISOLATE).
DEFAULT_ACTION_RULES: tuple[ActionRule, ...] = (
    ActionRule(Category.ALLIANCE, None, "MONITOR"),
    ActionRule(Category.DECEPTION, Severity.CRITICAL, "ISOLATE"),
    ActionRule(Category.INCONSISTENCY, Severity.CRITICAL, "SNAPSHOT_STATE"),
    ActionRule(Category.THREAT, Severity.CRITICAL, "ISOLATE"),
    ActionRule(Category.COLLUSION, Severity.LOW, "MONITOR"),
    ActionRule(Category.COLLUSION, None, "INJECT_CONSTRAINT"),
    ActionRule(None, Severity.HIGH, "MUTE"),
)


@dataclass(frozen=True, slots=True)
class SynthesisConfig:
    """Severity cut-offs, the action mapping and the throttle of Layer 3."""

    critical_at: float = 0.9
    high_at: float = 0.7
    medium_at: float = 0.5
    action_rules: tuple[ActionRule, ...] = DEFAULT_ACTION_RULES
    default_action: str = "MONITOR"
    #: evidence messages at which confidence stops being discounted
    full_confidence_evidence: int = 4
    #: telemetry seconds between two drafts of one situation whose only change is
    #: new evidence (a severity change is always drafted at once)
    min_update_interval_s: float = 1.0
    #: situations the throttle remembers (least recently drafted are forgotten)
    throttle_capacity: int = 100_000

    def __post_init__(self) -> None:
        for action in (self.default_action, *(r.action for r in self.action_rules)):
            if action not in RECOMMENDED_ACTIONS:
                raise ValueError(f"unknown recommended action {action!r}")
        if not self.critical_at >= self.high_at >= self.medium_at:
            raise ValueError("severity cut-offs must satisfy critical >= high >= medium")


def severity_for(score: float, config: SynthesisConfig) -> Severity:
    """CRITICAL >= 0.9, HIGH >= 0.7, MEDIUM >= 0.5, else LOW (by default)."""
    if score >= config.critical_at:
        return Severity.CRITICAL
    if score >= config.high_at:
        return Severity.HIGH
    if score >= config.medium_at:
        return Severity.MEDIUM
    return Severity.LOW


def recommended_action(category: Category, severity: Severity, config: SynthesisConfig) -> str:
    """The first matching rule's action, else the default (MONITOR)."""
    for rule in config.action_rules:
        if rule.category in (None, category) and rule.severity in (None, severity):
            return rule.action
    return config.default_action


def fingerprint(fleet_id: str, category: Category, agents: Iterable[str],
                target: str | None) -> str:
    """Stable hash of (fleet, category, sorted agents, target): one per situation."""
    parts = (fleet_id, category.value, "\x1e".join(sorted(agents)), target or "")
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _names(agents: tuple[str, ...]) -> str:
    if len(agents) == 1:
        return agents[0]
    return f"{', '.join(agents[:-1])} and {agents[-1]}"


#: the verdicts table's title column: longer titles (agent ids of 200 characters) end
#: in an ellipsis rather than fail the engine's whole batch on PostgreSQL
TITLE_MAX = 500


def title_for(finding: Finding) -> str:
    """A one-line, human title for the situation (at most ``TITLE_MAX`` characters)."""
    title = _title(finding)
    return title if len(title) <= TITLE_MAX else title[:TITLE_MAX - 1] + "\u2026"


def _title(finding: Finding) -> str:
    agents = finding.agents_involved
    target = finding.target
    match finding.category:
        case Category.COLLUSION:
            return f"{_names(agents)} collude against {target}"
        case Category.DECEPTION:
            return f"{_names(agents)} {'is' if len(agents) == 1 else 'are'} deceptive"
        case Category.INCONSISTENCY:
            return f"{_names(agents)} promised support to {target}, then attacked it"
        case Category.ALLIANCE:
            return f"{_names(agents)} formed an alliance"
        case Category.THREAT if finding.labels:
            return f"{_names(agents)} attempted {_names(finding.labels)}"
        case _:
            return f"{_names(agents)} threaten{'s' if len(agents) == 1 else ''} {target or 'the fleet'}"


def synthesize(finding: Finding, config: SynthesisConfig | None = None,
               observed_at: datetime | None = None) -> VerdictDrafted:
    """Turn one finding into a verdict draft.

    ``confidence`` is the score discounted while evidence is thin (one message
    gives 5/8 of it, ``full_confidence_evidence`` messages all of it): the score
    says how bad, the confidence how sure. ``observed_at`` defaults to the
    telemetry time of the triggering message; pass the reception time if known.
    """
    config = config or SynthesisConfig()
    severity = severity_for(finding.score, config)
    support = min(1.0, len(finding.evidence) / max(1, config.full_confidence_evidence))
    confidence = finding.score * (0.5 + 0.5 * support)
    return VerdictDrafted(
        fingerprint=fingerprint(finding.fleet_id, finding.category,
                                finding.agents_involved, finding.target),
        fleet_id=finding.fleet_id,
        category=finding.category,
        severity=severity,
        title=title_for(finding),
        agents_involved=sorted(finding.agents_involved),
        target=finding.target,
        evidence_chain=list(finding.evidence),
        confidence=round(min(1.0, max(0.0, confidence)), 4),
        recommended_action=recommended_action(finding.category, severity, config),
        observed_at=observed_at or finding.observed_at,
    )


@dataclass(slots=True)
class _Drafted:
    severity: Severity
    evidence: frozenset[str]
    at: float


@dataclass(slots=True)
class DraftThrottle:
    """Lets a finding through when its situation is new, its severity changed, or
    it brings evidence not drafted before (at most once per interval)."""

    config: SynthesisConfig = field(default_factory=SynthesisConfig)
    _last: dict[tuple[str, str], _Drafted] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._last)

    def admit(self, finding: Finding) -> bool:
        """True if this finding should become a new draft (and remember it)."""
        key = (finding.fleet_id, finding.situation_key)
        severity = severity_for(finding.score, self.config)
        at = finding.observed_at.timestamp()
        last = self._last.get(key)
        if last is not None:
            if last.severity is severity and (
                at - last.at < self.config.min_update_interval_s
                or last.evidence.issuperset(finding.evidence)
            ):
                return False
            del self._last[key]  # re-inserted below: the dict stays in LRU order
        self._last[key] = _Drafted(severity, frozenset(finding.evidence), at)
        if len(self._last) > self.config.throttle_capacity:
            del self._last[next(iter(self._last))]
        return True


class Synthesizer:
    """Layer 3: findings in, throttled verdict drafts out."""

    def __init__(self, config: SynthesisConfig | None = None) -> None:
        self.config = config or SynthesisConfig()
        self.throttle = DraftThrottle(self.config)

    def drafts(self, findings: Iterable[Finding]) -> list[VerdictDrafted]:
        """Drafts for the findings that changed something an operator would see."""
        return [synthesize(f, self.config) for f in findings if self.throttle.admit(f)]
