"""Render MODEL_CARD.md for the deception artefact from its training metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_model_card"]

ATTRIBUTION = (
    'Source: Peskov, Cheng, Elgohary, Barrow, Danescu-Niculescu-Mizil, Boyd-Graber, '
    '"It Takes Two to Lie: One to Lie, and One to Listen", ACL 2020. The data is '
    "licensed CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/); keep this "
    "attribution with any copy or derived model."
)


def _head_rows(heads: dict[str, Any]) -> str:
    lines = [
        "| head | used when | C | raw threshold (log-odds) | val AUC | val lie F1 | val macro F1 "
        "| val macro F1, threshold from train CV |",
        "|---|---|---|---|---|---|---|---|",
    ]
    when = {"text": "no `game_score_delta` in attributes (agent chatter)",
            "context": "`game_score_delta` present (Diplomacy)"}
    for name, h in heads.items():
        v, hv = h["validation"], h["validation_threshold_from_train_cv"]
        lines.append(
            f"| {name} | {when[name]} | {h['C']} | {h['raw_threshold']:.4f} | "
            f"{h['validation_auc']:.3f} | {v['lie_f1']:.4f} | {v['macro_f1']:.4f} | "
            f"{hv['macro_f1']:.4f} (lie F1 {hv['lie_f1']:.4f}) |"
        )
    return "\n".join(lines)


def write_model_card(path: Path, metadata: dict[str, Any]) -> None:
    """Write the card; every number comes from ``metadata`` (nothing hand-edited)."""
    tr, va = metadata["train"], metadata["validation"]
    text = f"""# Deception scorer (`deception_model.npz`)

Per-message probability-like score that a message is a lie, used by the semantic
layer (`SemanticAnalyzer.analyze*().deception_score`). Inference is numpy only.

## Data and attribution

Trained on the Diplomacy deception corpus, `train.jsonl` ({tr['messages']} labelled
messages, {tr['lies']} lies); regularisation and decision threshold chosen on
`validation.jsonl` ({va['messages']} messages, {va['lies']} lies) only. The held-out
test games were never read. Lie (sender label false) is the positive class.

{ATTRIBUTION}

## Model

Two L2 logistic-regression heads (scikit-learn liblinear, class weights balanced),
weights exported to `.npz` (hashed-term weights as float16):

- hashed word unigrams + bigrams (BLAKE2b token hash + splitmix64, {metadata['dim']} buckets),
  binary, L2-normalised per message;
- text shape: {", ".join(metadata['shape_features'])};
- context head only: {", ".join(metadata['context_features'])} (from `attributes`).

## Validation (lie = positive)

{_head_rows(metadata['heads'])}

"val macro F1" uses the threshold tuned on validation itself, so it is optimistic
(one game, {va['lies']} lies). The last column fixes the threshold from
leave-one-game-out scores on train and only then looks at validation; it is the
fairer estimate. Reference (test games): humans 22.5 lie F1 / ~58 macro F1.

## Scores and the 0.65 deception threshold

Each head's tuned threshold (log-odds above) is moved onto **{metadata['score_threshold']}**
by a shift in logit space: `score = sigmoid(z - raw_threshold + logit(0.65))`. So
`deception_score >= 0.65` (`DeceptionModel.is_deceptive`, `deception_threshold = 0.65`)
is exactly the validation-tuned per-message decision, for both heads, and the
product's per-agent default of 0.65 compares against the same scale: an agent whose
aggregated (e.g. mean) message score reaches 0.65 is one whose typical message sits
on the lie side of the tuned boundary. Scores are monotone in the model's odds but
are not calibrated probabilities (training used balanced class weights; lies are
~4.5% of messages).

## Limits

Validation is a single game; numbers move by several points between games. English
Diplomacy negotiation is the only training domain; on other agent chatter the
text head is a weak signal, best combined with intent switching and
declared-intent-vs-action inconsistency in the strategic layer.

Retrain: `python -m cockpit.filter.semantic.train --data-dir ../shared/datasets/diplomacy`
"""
    path.write_text(text, encoding="utf-8")
