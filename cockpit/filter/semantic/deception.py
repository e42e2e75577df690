"""The trained per-message deception scorer (numpy-only inference).

Two logistic-regression heads share one artefact: ``context`` for messages that
carry game context in their attributes (Diplomacy's score delta, season, ...)
and ``text`` for free-text agent chatter. Each head's tuned decision threshold is
moved, by a shift in logit space, onto :data:`SCORE_THRESHOLD` (0.65, the product's
deception default), so one threshold means "deceptive" for every score.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from cockpit.filter.semantic.features import (
    context_features,
    hashed_terms,
    shape_features,
)
from cockpit.filter.semantic.tokens import TokenBatch

__all__ = ["ARTEFACT_NAME", "SCORE_THRESHOLD", "DeceptionHead", "DeceptionModel"]

ARTEFACT_NAME = "deception_model.npz"
SCORE_THRESHOLD = 0.65
_SCORE_LOGIT = math.log(SCORE_THRESHOLD / (1 - SCORE_THRESHOLD))


@dataclass(frozen=True, slots=True)
class DeceptionHead:
    """One linear model: hashed-term weights, dense weights, intercept, tuned threshold.

    ``raw_threshold`` is the tuned threshold on the decision value (log-odds).
    """

    term_weights: np.ndarray
    dense_weights: np.ndarray
    intercept: float
    raw_threshold: float

    def decision(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray,
                 dense: np.ndarray) -> np.ndarray:
        """Log-odds per text (higher = more likely a lie)."""
        sparse: np.ndarray = np.bincount(rows, weights=self.term_weights[cols] * vals,
                             minlength=dense.shape[0]).astype(np.float64)
        out: np.ndarray = sparse + dense @ self.dense_weights + self.intercept
        return out

    def to_score(self, decision: np.ndarray) -> np.ndarray:
        """Shift log-odds so ``raw_threshold`` lands on ``SCORE_THRESHOLD``; squash to [0, 1]."""
        z = np.clip(decision - self.raw_threshold + _SCORE_LOGIT, -30.0, 30.0)
        return 1.0 / (1.0 + np.exp(-z))


class DeceptionModel:
    """Scores messages in [0, 1]; ``score >= deception_threshold`` means deceptive."""

    deception_threshold: float = SCORE_THRESHOLD

    def __init__(self, dim: int, text: DeceptionHead, context: DeceptionHead,
                 metadata: Mapping[str, Any]) -> None:
        self.dim = dim
        self.text_head = text
        self.context_head = context
        self.metadata = dict(metadata)

    @classmethod
    def load(cls, path: str | Path | None = None) -> DeceptionModel:
        """Load the artefact at ``path``, or the one shipped in this package."""
        if path is None:
            with resources.as_file(resources.files(__package__) / ARTEFACT_NAME) as shipped:
                return cls.load(shipped)
        with np.load(Path(path), allow_pickle=False) as z:
            metadata = json.loads(str(z["metadata"]))
            heads = {
                name: DeceptionHead(
                    term_weights=z[f"{name}_terms"].astype(np.float32),
                    dense_weights=z[f"{name}_dense"].astype(np.float32),
                    intercept=float(z[f"{name}_intercept"]),
                    raw_threshold=float(z[f"{name}_threshold"]),
                )
                for name in ("text", "context")
            }
        return cls(int(metadata["dim"]), heads["text"], heads["context"], metadata)

    def is_deceptive(self, score: float) -> bool:
        """The per-message verdict for a score returned by :meth:`score`."""
        return score >= self.deception_threshold

    def score(self, texts: Sequence[str], batch: TokenBatch,
              attributes: Sequence[Mapping[str, Any] | None] | None = None) -> np.ndarray:
        """Deception scores in [0, 1] for ``texts`` (already tokenised as ``batch``)."""
        terms = hashed_terms(batch, self.dim)
        shape = shape_features(texts, batch)
        scores = self.text_head.to_score(
            self.text_head.decision(terms.rows, terms.cols, terms.vals, shape))
        if attributes is None:
            return scores
        context, present = context_features(attributes)
        if not present.any():
            return scores
        # Context head only where context exists; both heads share the term features.
        dense = np.hstack([shape, context])
        ctx_scores = self.context_head.to_score(
            self.context_head.decision(terms.rows, terms.cols, terms.vals, dense))
        return np.where(present, ctx_scores, scores)
