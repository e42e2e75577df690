"""Deception-scorer quality: F1 of the lie class, of the truth class, and their mean.

Numpy only, so the same numbers are computed by training, by ``score_file`` and
by the test that checks the shipped artefact against its model card.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DeceptionQuality", "best_threshold"]


def _f1(tp: int, fp: int, fn: int) -> float:
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0


@dataclass(frozen=True, slots=True)
class DeceptionQuality:
    """Confusion counts with lie = positive class."""

    tp: int
    fp: int
    fn: int
    tn: int

    @classmethod
    def from_predictions(cls, is_lie: np.ndarray, predicted_lie: np.ndarray) -> DeceptionQuality:
        """Count a confusion matrix from two boolean arrays."""
        y, p = np.asarray(is_lie, dtype=bool), np.asarray(predicted_lie, dtype=bool)
        return cls(
            tp=int(np.sum(y & p)),
            fp=int(np.sum(~y & p)),
            fn=int(np.sum(y & ~p)),
            tn=int(np.sum(~y & ~p)),
        )

    @property
    def lie_f1(self) -> float:
        """F1 of the lie (positive) class."""
        return _f1(self.tp, self.fp, self.fn)

    @property
    def truth_f1(self) -> float:
        """F1 of the truthful class."""
        return _f1(self.tn, self.fn, self.fp)

    @property
    def macro_f1(self) -> float:
        """Unweighted mean of lie F1 and truth F1 (the paper's headline metric)."""
        return (self.lie_f1 + self.truth_f1) / 2

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready counts and scores."""
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
            "lie_f1": round(self.lie_f1, 4),
            "truth_f1": round(self.truth_f1, 4),
            "macro_f1": round(self.macro_f1, 4),
        }


def best_threshold(is_lie: np.ndarray, scores: np.ndarray) -> tuple[float, DeceptionQuality]:
    """The score threshold (``score >= t`` means lie) that maximises macro F1."""
    candidates = np.unique(np.quantile(scores, np.linspace(0.5, 0.995, 200)))
    best_t, best_q = float(candidates[0]), None
    for t in candidates:
        q = DeceptionQuality.from_predictions(is_lie, scores >= t)
        if best_q is None or q.macro_f1 > best_q.macro_f1:
            best_t, best_q = float(t), q
    assert best_q is not None
    return best_t, best_q
