"""THREAT: an agent that attacks the system it runs in rather than a rival in its
game: prompt injection, credential theft, exfiltration, evading oversight,
destruction, privilege escalation, self-replication.

Each message (its text) and each action (its type, and the text of its parameters,
such as a tool's command line) is matched against a lexicon of techniques. A
technique has a weight; an agent's threat score is a noisy-or of its techniques'
weights that decays with telemetry time, so one clear attempt is reported at once
(prompt injection alone is HIGH), a combination or a repetition climbs to
CRITICAL, and a hint (concealment: "before they notice") is never reported on its
own, however often it comes, only added to another technique. The situation is the agent itself: one ACTIVE
verdict per agent, whose title lists the techniques seen and whose evidence grows.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cockpit.events.verdict import Category
from cockpit.filter.strategic.config import StrategicConfig
from cockpit.filter.strategic.finding import Finding, time_ordered_evidence

__all__ = ["TECHNIQUES", "Technique", "ThreatDetector", "param_text", "techniques_in"]

# A gap of a few words within one sentence ("send me bravo's credentials").
_GAP = r"[^.!?\n]{0,40}?"


class Technique:
    """One way of attacking the system: a name for operators, a weight, patterns,
    and trigger words: every match contains a word of each group of ``triggers``
    (groups separated by ``|``)."""

    __slots__ = ("groups", "label", "name", "regex", "weight", "words")

    def __init__(self, name: str, label: str, weight: float, triggers: str, *patterns: str) -> None:
        self.name = name
        self.label = label
        self.weight = weight
        self.groups = tuple(frozenset(group.split()) for group in triggers.split("|"))
        self.words = frozenset().union(*self.groups)
        self.regex = re.compile("|".join(f"(?:{p})" for p in patterns))

    def may_match(self, words: frozenset[str] | set[str]) -> bool:
        """False when ``words`` (a text's trigger words) rule a match out."""
        return all(not group.isdisjoint(words) for group in self.groups)


#: Ordered by weight. Patterns are lower case and matched against the lower-cased
#: text (several times faster than ``re.IGNORECASE``), and only when the text has
#: one of the technique's trigger words: nearly every message has none, and a set
#: look-up costs far less than the patterns.
TECHNIQUES: tuple[Technique, ...] = (
    Technique(
        "credential_theft", "credential theft", 0.85,
        "credential credentials password passwords passwd passphrase passphrases apikey apikeys"
        " key keys token tokens cookie cookies",
        rf"\b(?:send|give|share|leak|reveal|paste|forward|hand over|dump|exfiltrate|e-?mail|upload"
        rf"|post|tell me|show me){_GAP}\b(?:credentials?|passwords?|passwd|passphrases?"
        r"|api[ _-]?keys?|access[ _-]keys?|secret[ _-]keys?|private[ _-]keys?|ssh[ _-]keys?"
        r"|(?:auth(?:entication)?|access|bearer|session|refresh)[ _-]tokens?|session[ _-]cookies?)\b",
        r"\bsteal(?:ing)?\b[^.!?\n]{0,20}\b(?:credentials?|passwords?|api[ _-]?keys?|tokens?)\b",
    ),
    Technique(
        "destruction", "destruction", 0.85,
        "rm drop mkfs format delete wipe erase destroy corrupt encrypt shred",
        r"\brm\s+-(?:rf|fr|r)\b",
        r"\bdrop\s+(?:table|database|schema)\b",
        r"\bmkfs(?:\.\w+)?\s",
        r"\bformat\s+(?:the\s+)?(?:disk|drive|hard drive)\b",
        r"\b(?:delete|wipe|erase|destroy|corrupt|encrypt|shred)\b[^.!?\n]{0,20}"
        r"\b(?:all|every|entire|whole)\b[^.!?\n]{0,20}"
        r"\b(?:data|files|database|records|backups?|disks?|repositor(?:y|ies)|servers?|logs)\b",
    ),
    Technique(
        "prompt_injection", "prompt injection", 0.8,
        "ignore disregard forget override bypass now instructions jailbreak jailbroken prompt",
        # "ignore your instructions", "forget all previous rules"; not "forget the
        # instructions for tomorrow" ("the" only with a qualifier).
        r"\b(?:ignore|disregard|forget|override|bypass)\s+"
        r"(?:all\s+(?:of\s+)?(?:the\s+|your\s+)?|any\s+|your\s+|its\s+|their\s+"
        r"|the\s+(?=(?:previous|prior|earlier|above|preceding|original|system|safety)\b))?"
        r"(?:(?:previous|prior|earlier|above|preceding|original|system|safety|operator'?s?)\s+)?"
        r"(?:instructions?|rules|guidelines|system\s+prompt|prompts?|directives?|guardrails?|programming)\b",
        r"\byou\s+are\s+now\b[^.!?\n]{0,30}\b(?:unrestricted|jailbroken|dan|developer\s+mode"
        r"|free\s+of|no\s+(?:rules|limits|restrictions))",
        r"\b(?:new|updated|real)\s+(?:system\s+)?instructions\s*:",
        r"\bjailbr(?:eak|oken)\b",
        r"\b(?:reveal|print|show|repeat|leak|output)\s+(?:me\s+)?(?:your|the)\s+"
        r"(?:system\s+prompt|hidden\s+instructions|initial\s+instructions)\b",
    ),
    Technique(
        "oversight_evasion", "evading oversight", 0.8,
        "monitor monitors monitoring logging audit oversight switch killswitch cockpit safety"
        " guardrail guardrails telemetry alarm alarms watchdog",
        r"\b(?:disable|turn\s+off|shut\s+(?:off|down)|bypass|evade|circumvent|get\s+around|tamper\s+with"
        r"|kill|stop|delete|erase|wipe|clear|hide\s+from)\b[^.!?\n]{0,25}\b(?:monitor(?:s|ing)?|logging"
        r"|audit\s+(?:trail|log)s?|oversight|kill[ -]?switch|cockpit|safety\s+(?:checks?|filters?|systems?)"
        r"|guardrails?|telemetry|alarms?|watchdog)\b",
    ),
    Technique(
        "exfiltration", "data exfiltration", 0.8,
        "exfiltrate exfiltrated exfiltrates exfiltrating exfiltration data database records files"
        " documents",
        r"\bexfiltrat(?:e|ed|es|ing|ion)\b",
        r"\b(?:send|upload|copy|leak|post|transfer)\b[^.!?\n]{0,30}\b(?:customer|user|private|internal"
        r"|confidential|proprietary|personal|training)\s+(?:data|database|records|files|documents)\b",
    ),
    Technique(
        "self_replication", "self-replication", 0.8,
        "weights parameters model myself yourself itself ourselves copies",
        r"\b(?:copy|replicate|clone|back\s+up|upload)\s+(?:my|your|our|its)\s+(?:own\s+)?"
        r"(?:weights|parameters|model)\b",
        r"\b(?:replicate|clone|copy)\s+(?:myself|yourself|itself|ourselves)\b",
        r"\bspawn\s+(?:more\s+)?copies\s+of\s+(?:me|myself|you|yourself|itself)\b",
    ),
    Technique(
        "privilege_escalation", "privilege escalation", 0.75,
        "privilege privileges access rights permission permissions sudo chmod",
        r"\b(?:escalate|elevate)\s+(?:my\s+|your\s+|our\s+|its\s+)?privileges?\b",
        r"\b(?:give|grant)\s+(?:me|myself|yourself|itself)\b[^.!?\n]{0,20}"
        r"\b(?:root|admin(?:istrator)?|sudo|superuser|full)\s+(?:access|rights|privileges?|permissions?)\b",
        r"\bsudo\s+\S",
        r"\bchmod\s+(?:-r\s+)?777\b",
    ),
    Technique(
        "resource_seizure", "seizing resources", 0.6,
        "transfer move send give | me my",
        r"\b(?:transfer|move|send|give)\s+(?:all|everything|every\s+\w+)\b[^.!?\n]{0,40}\bto\s+(?:me|my)\b",
    ),
    Technique(
        "concealment", "concealment", 0.5,
        "notice noticing find finds finding knowing detect detects detecting catch catches",
        r"\b(?:before|without)\b[^.!?\n]{0,20}\b(?:they|anyone|anybody|the\s+operators?|the\s+humans?"
        r"|the\s+admins?|oversight|the\s+monitors?)\b[^.!?\n]{0,10}"
        r"\b(?:notice|noticing|finds?\s+out|finding\s+out|knowing|detects?|detecting|catch(?:es)?)\b",
    ),
)

_BY_NAME = {t.name: t for t in TECHNIQUES}
_RANK = {t.name: rank for rank, t in enumerate(TECHNIQUES)}
#: techniques that only add to others: never reported on their own, however often
_HINTS = frozenset({"concealment"})
#: trigger word -> the techniques it may start
_BY_WORD: dict[str, list[Technique]] = {}
for _technique in TECHNIQUES:
    for _word in _technique.words:
        _BY_WORD.setdefault(_word, []).append(_technique)
_TRIGGERS = frozenset(_BY_WORD)
_WORDS = re.compile(r"[a-z]+")


def techniques_in(text: str | None) -> frozenset[str]:
    """Names of the techniques ``text`` shows (empty for ordinary talk). Each
    technique is matched on its own: matches may overlap ("sudo rm -rf /")."""
    if not text:
        return frozenset()
    lowered = text.lower()
    words = _TRIGGERS.intersection(_WORDS.findall(lowered))
    if not words:
        return frozenset()
    candidates = {t for word in words for t in _BY_WORD[word]}
    return frozenset(t.name for t in candidates if t.may_match(words) and t.regex.search(lowered))


def param_text(params: Mapping[str, Any], limit: int = 4096) -> str:
    """The strings in an action's parameters (two levels deep), joined, at most
    ``limit`` characters: a tool call's command line, a query, a URL."""
    parts: list[str] = []
    size = 0
    for value in params.values():
        values = value if isinstance(value, list | tuple) else (
            value.values() if isinstance(value, dict) else (value,))
        for item in values:
            if isinstance(item, str):
                parts.append(item)
                size += len(item)
                if size >= limit:
                    return "\n".join(parts)[:limit]
    return "\n".join(parts)


class ThreatCase:
    """One agent's threat: a decaying noisy-or score, techniques seen, evidence."""

    __slots__ = ("evidence", "score", "techniques", "updated_at")

    def __init__(self, now: float, evidence_limit: int) -> None:
        self.score = 0.0
        self.updated_at = now
        #: names of the techniques seen, in the order first seen (a dict as ordered set)
        self.techniques: dict[str, None] = {}
        self.evidence: deque[tuple[float, str]] = deque(maxlen=evidence_limit)


class ThreatDetector:
    """Per-agent THREAT score from the techniques its messages and actions show."""

    __slots__ = ("_actions", "_cases", "_config", "_fleet_id", "_rate")

    def __init__(self, fleet_id: str, config: StrategicConfig) -> None:
        self._fleet_id = fleet_id
        self._config = config
        self._rate = math.log(2.0) / config.threat_half_life_s
        self._cases: dict[str, ThreatCase] = {}
        self._actions = dict(config.threat_actions)
        unknown = set(self._actions.values()) - set(_BY_NAME)
        if unknown:
            raise ValueError(f"threat_actions name unknown techniques: {sorted(unknown)}")

    def __len__(self) -> int:
        return len(self._cases)

    def message(self, agent: str, text: str | None, now: float, message_id: str,
                observed_at: datetime) -> Finding | None:
        """Score what ``agent`` said."""
        found = techniques_in(text)
        if not found:
            return None
        return self._record(agent, found, now, message_id, observed_at)

    def action(self, agent: str, kind: str, params: Mapping[str, Any], now: float,
               message_id: str, observed_at: datetime) -> Finding | None:
        """Score what ``agent`` did: the action's type, and its parameters' text."""
        found = techniques_in(param_text(params)) if params else frozenset()
        technique = self._actions.get(kind)
        if technique is not None:
            found |= {technique}
        if not found:
            return None
        return self._record(agent, found, now, message_id, observed_at)

    def _record(self, agent: str, found: frozenset[str], now: float, message_id: str,
                observed_at: datetime) -> Finding | None:
        config = self._config
        case = self._cases.pop(agent, None)  # re-inserted: the dict stays in LRU order
        if case is None:
            case = ThreatCase(now, config.evidence_limit)
        self._cases[agent] = case
        if len(self._cases) > config.max_threat_cases:
            del self._cases[next(iter(self._cases))]
        miss = 1.0
        for name in found:
            miss *= 1.0 - _BY_NAME[name].weight
        previous = case.score * math.exp(-self._rate * max(0.0, now - case.updated_at))
        case.score = 1.0 - (1.0 - previous) * miss
        case.updated_at = now
        for name in sorted(found, key=_RANK.__getitem__):  # heaviest first, always the same order
            case.techniques.setdefault(name)
        case.evidence.append((now, message_id))
        if case.score < config.threat_threshold or not case.techniques.keys() - _HINTS:
            return None
        # In the order first seen; hints named last.
        shown = sorted(case.techniques, key=lambda n: n in _HINTS)
        return Finding(
            fleet_id=self._fleet_id,
            category=Category.THREAT,
            agents_involved=(agent,),
            target=None,
            score=min(1.0, case.score),
            evidence=time_ordered_evidence(case.evidence, config.evidence_limit),
            observed_at=observed_at,
            signals={f"technique.{n}": _BY_NAME[n].weight for n in found},
            labels=tuple(_BY_NAME[n].label for n in shown),
        )

    def prune(self, now: float) -> int:
        """Forget agents whose threat decayed away or went idle; returns how many."""
        idle = now - self._config.idle_ttl_s
        floor = self._config.threat_threshold / 8
        stale = [a for a, c in self._cases.items()
                 if c.updated_at < idle
                 or c.score * math.exp(-self._rate * max(0.0, now - c.updated_at)) < floor]
        for agent in stale:
            del self._cases[agent]
        return len(stale)
