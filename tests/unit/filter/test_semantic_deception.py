"""The shipped deception model: loads from the package, scores in [0, 1], and
reproduces the validation numbers of its model card."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from cockpit.filter.diplomacy import default_data_dir, read_messages
from cockpit.filter.semantic import SCORE_THRESHOLD, DeceptionModel, SemanticAnalyzer
from cockpit.filter.semantic.evaluation import DeceptionQuality
from tests.conftest import in_ci

PACKAGE = resources.files("cockpit.filter.semantic")
CONTEXT = {"game_score_delta": -2, "season": "Fall", "year": 1903, "relative_message_index": 12}


@pytest.fixture(scope="module")
def analyzer() -> SemanticAnalyzer:
    return SemanticAnalyzer()


def test_artefact_and_card_ship_in_the_package() -> None:
    artefact = PACKAGE / "deception_model.npz"
    card = (PACKAGE / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert artefact.is_file()
    with resources.as_file(artefact) as path:
        assert path.stat().st_size < 5_000_000
    assert "CC BY 4.0" in card and "Peskov" in card
    assert "0.65" in card


def test_model_loads_from_package_with_threshold() -> None:
    model = DeceptionModel.load()
    assert model.deception_threshold == SCORE_THRESHOLD == 0.65
    assert model.is_deceptive(0.65) and not model.is_deceptive(0.6499)
    assert set(model.metadata["heads"]) == {"text", "context"}


def test_scores_are_in_unit_interval_with_and_without_context(analyzer: SemanticAnalyzer) -> None:
    texts = ["I will support you in Burgundy", "", "trust me!!! " * 300, "Ich helfe dir"]
    for attrs in (None, [CONTEXT] * len(texts), [None, CONTEXT, {}, {"season": "Spring"}]):
        scores = np.array([r.deception_score for r in analyzer.analyze_many(texts, attrs)])
        assert np.all((scores >= 0.0) & (scores <= 1.0))


def test_context_changes_the_score_only_when_present(analyzer: SemanticAnalyzer) -> None:
    text = "I promise I will move to Burgundy as agreed"
    bare = analyzer.analyze(text).deception_score
    assert analyzer.analyze(text, {"unrelated": 1}).deception_score == bare
    assert analyzer.analyze(text, CONTEXT).deception_score != bare


def test_attributes_must_match_texts(analyzer: SemanticAnalyzer) -> None:
    with pytest.raises(ValueError):
        analyzer.analyze_many(["a", "b"], [None])
    assert analyzer.analyze_many([]) == []


def _validation_file() -> Path | None:
    path = default_data_dir() / "validation.jsonl"
    if path.is_file():
        return path
    if in_ci():
        pytest.fail(f"CI=true but the Diplomacy validation split is missing at {path}")
    pytest.skip(f"Diplomacy data not found at {path} (set COCKPIT_DIPLOMACY_DIR)")
    return None


@pytest.mark.parametrize("head", ["context", "text"])
def test_shipped_model_reproduces_model_card_validation(
    analyzer: SemanticAnalyzer, head: str
) -> None:
    path = _validation_file()
    messages = [m for m in read_messages(path) if m.sender_label is not None]
    attrs = [m.attributes for m in messages] if head == "context" else None
    results = analyzer.analyze_many([m.text for m in messages], attrs)
    quality = DeceptionQuality.from_predictions(
        np.array([m.sender_label is False for m in messages]),
        np.array([analyzer.is_deceptive(r.deception_score) for r in results]),
    )
    recorded = analyzer.model.metadata["heads"][head]["validation"]["macro_f1"]
    assert quality.macro_f1 == pytest.approx(recorded, abs=0.005)
    card = (PACKAGE / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"{recorded:.4f}" in card
