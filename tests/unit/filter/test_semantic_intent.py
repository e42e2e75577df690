"""Intent of plain-English agent chatter (lexicon + negation scope)."""

from __future__ import annotations

import pytest

from cockpit.filter.analysis import Intent
from cockpit.filter.semantic import SemanticAnalyzer

C, K, N, A = Intent.COOPERATIVE, Intent.COMPETITIVE, Intent.NEUTRAL, Intent.AMBIGUOUS

TABLE = [
    ("I will support you in Burgundy", C),
    ("Let's work together against C", C),
    ("Our alliance holds", C),
    ("Thanks, I trust you. Let's keep the DMZ in the channel", C),
    ("We could team up and coordinate our fleets", C),
    ("We will attack agent-c next turn", K),
    ("I'm going to take your supply centre", K),
    ("Stab them", K),
    ("They betrayed us, time to destroy their army", K),
    ("The weather is fine", N),
    ("status report: 3 tasks done", N),
    ("Moving the fleet to the North Sea this turn", N),
    ("", N),
    ("I'll support you in Burgundy, but I will attack Munich", A),
    ("France is my enemy, help me take Paris", A),
    # Negation flips a cue inside its clause only.
    ("I will not attack you", C),
    ("I won\u2019t support you anymore", K),  # curly apostrophe
    ("No, we will attack", K),
]


@pytest.fixture(scope="module")
def analyzer() -> SemanticAnalyzer:
    return SemanticAnalyzer()


@pytest.mark.parametrize(("text", "expected"), TABLE)
def test_intent_table(analyzer: SemanticAnalyzer, text: str, expected: Intent) -> None:
    result = analyzer.analyze(text)
    assert result.intent is expected, (text, result.intent, result.intent_confidence)
    assert 0.5 <= result.intent_confidence <= 0.99


def test_batch_gives_the_same_intents_as_one_by_one(analyzer: SemanticAnalyzer) -> None:
    texts = [t for t, _ in TABLE]
    batch = [r.intent for r in analyzer.analyze_many(texts)]
    assert batch == [e for _, e in TABLE]


def test_stronger_evidence_gives_higher_confidence(analyzer: SemanticAnalyzer) -> None:
    weak = analyzer.analyze("I will not attack you")  # a denied threat
    strong = analyzer.analyze("Our alliance holds, let's work together and support each other")
    assert weak.intent is strong.intent is C
    assert strong.intent_confidence > weak.intent_confidence
