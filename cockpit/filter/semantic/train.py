"""Train the deception scorer on the Diplomacy corpus and ship it into this package.

    python -m cockpit.filter.semantic.train --data-dir ../shared/datasets/diplomacy

Fits on ``train.jsonl``; picks the regularisation strength and the decision
threshold on ``validation.jsonl`` only. The held-out test games are never read.
Needs the optional ``train`` extra (scikit-learn); serving needs only numpy.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cockpit.filter.diplomacy import DiplomacyMessage, default_data_dir, read_messages
from cockpit.filter.semantic.deception import ARTEFACT_NAME, SCORE_THRESHOLD
from cockpit.filter.semantic.evaluation import DeceptionQuality, best_threshold
from cockpit.filter.semantic.features import (
    CONTEXT_FEATURES,
    SHAPE_FEATURES,
    context_features,
    hashed_terms,
    shape_features,
)
from cockpit.filter.semantic.model_card import write_model_card
from cockpit.filter.semantic.tokens import TokenBatch

__all__ = ["HeadFit", "main", "train"]

DIM = 2**16
C_GRID = (0.03, 0.1, 0.3, 1.0)


@dataclass(frozen=True)
class HeadFit:
    """A fitted head, its chosen C and threshold, and its quality estimates."""

    terms: np.ndarray
    dense: np.ndarray
    intercept: float
    c: float
    threshold: float
    validation: DeceptionQuality
    honest_validation: DeceptionQuality
    validation_auc: float


def _matrix(messages: list[DiplomacyMessage], with_context: bool) -> Any:
    import scipy.sparse as sp  # training-only dependency (comes with scikit-learn)

    texts = [m.text for m in messages]
    batch = TokenBatch.from_texts(texts)
    t = hashed_terms(batch, DIM)
    dense = [shape_features(texts, batch)]
    if with_context:
        dense.append(context_features([m.attributes for m in messages])[0])
    terms = sp.csr_matrix((t.vals, (t.rows, t.cols)), shape=(t.n_rows, DIM))
    return sp.hstack([terms, sp.csr_matrix(np.hstack(dense))]).tocsr()


def _fit(x: Any, y: np.ndarray, c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    # Balanced weights: lies are ~4.5% of messages; liblinear is deterministic here.
    model = LogisticRegression(C=c, class_weight="balanced", solver="liblinear",
                               max_iter=5000, random_state=0)
    return model.fit(x, y)


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def _fit_head(train: list[DiplomacyMessage], val: list[DiplomacyMessage],
              with_context: bool) -> HeadFit:
    xt, xv = _matrix(train, with_context), _matrix(val, with_context)
    yt = np.array([m.sender_label is False for m in train])
    yv = np.array([m.sender_label is False for m in val])
    best: tuple[float, float, Any] | None = None
    for c in C_GRID:
        model = _fit(xt, yt, c)
        _, q = best_threshold(yv, model.decision_function(xv))
        print(f"  C={c:<5} validation macro F1 {q.macro_f1:.4f} lie F1 {q.lie_f1:.4f}")
        if best is None or q.macro_f1 > best[0] + 1e-9:
            best = (q.macro_f1, c, model)
    assert best is not None
    _, c, model = best
    # Tune the threshold on the weights exactly as shipped (terms stored as float16).
    coef = model.coef_.ravel()
    terms = coef[:DIM].astype(np.float16).astype(np.float32)
    dense = coef[DIM:].astype(np.float32)
    intercept = float(model.intercept_[0])
    val_decision = xv @ np.concatenate([terms, dense]).astype(np.float64) + intercept
    threshold, quality = best_threshold(yv, val_decision)
    # A less optimistic figure: threshold from out-of-fold (leave-one-game-out)
    # scores on train only, then applied unchanged to validation.
    games = np.array([m.game_id for m in train])
    oof = np.empty(len(train))
    for g in np.unique(games):
        held = games == g
        oof[held] = _fit(xt[~held], yt[~held], c).decision_function(xt[held])
    oof_threshold, _ = best_threshold(yt, oof)
    honest = DeceptionQuality.from_predictions(yv, val_decision >= oof_threshold)
    return HeadFit(terms, dense, intercept, c, threshold, quality, honest,
                   _auc(yv, val_decision))


def _labelled(path: Path) -> tuple[list[DiplomacyMessage], int]:
    messages = read_messages(path)
    labelled = [m for m in messages if m.sender_label is not None]
    return labelled, len(messages) - len(labelled)


def train(data_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Fit both heads, write the artefact and MODEL_CARD.md into ``out_dir``; return metadata."""
    train_msgs, train_skipped = _labelled(data_dir / "train.jsonl")
    val_msgs, val_skipped = _labelled(data_dir / "validation.jsonl")
    fits: dict[str, HeadFit] = {}
    for name, with_context in (("text", False), ("context", True)):
        print(f"head {name}:")
        fits[name] = _fit_head(train_msgs, val_msgs, with_context)
    metadata: dict[str, Any] = {
        "dim": DIM,
        "score_threshold": SCORE_THRESHOLD,
        "shape_features": list(SHAPE_FEATURES),
        "context_features": list(CONTEXT_FEATURES),
        "train": {"messages": len(train_msgs), "lies": sum(not m.sender_label for m in train_msgs),
                  "unlabelled_skipped": train_skipped},
        "validation": {"messages": len(val_msgs),
                       "lies": sum(not m.sender_label for m in val_msgs),
                       "unlabelled_skipped": val_skipped},
        "heads": {
            name: {
                "C": f.c,
                "raw_threshold": f.threshold,
                "validation_auc": round(f.validation_auc, 4),
                "validation": f.validation.as_dict(),
                "validation_threshold_from_train_cv": f.honest_validation.as_dict(),
            }
            for name, f in fits.items()
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"metadata": np.array(json.dumps(metadata))}
    for name, f in fits.items():
        # float16 halves the artefact; the threshold was tuned on these rounded weights.
        arrays[f"{name}_terms"] = f.terms.astype(np.float16)
        arrays[f"{name}_dense"] = f.dense
        arrays[f"{name}_intercept"] = np.array(f.intercept)
        arrays[f"{name}_threshold"] = np.array(f.threshold)
    np.savez_compressed(out_dir / ARTEFACT_NAME, **arrays)  # type: ignore[arg-type]  # numpy stub
    write_model_card(out_dir / "MODEL_CARD.md", metadata)
    return metadata


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="directory with train.jsonl and validation.jsonl "
                             "(default: $COCKPIT_DIPLOMACY_DIR or ../shared/datasets/diplomacy)")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent,
                        help="where to write the artefact and model card (default: this package)")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    if not (data_dir / "train.jsonl").is_file() or not (data_dir / "validation.jsonl").is_file():
        print(f"error: {data_dir} has no train.jsonl / validation.jsonl", file=sys.stderr)
        return 2
    metadata = train(data_dir, args.out_dir)
    print(json.dumps(metadata["heads"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
