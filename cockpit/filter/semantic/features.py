"""Deception-model features: hashed word n-grams, text shape, and game context.

Shared by training (which builds a scipy matrix from the triplets) and serving
(which scores the triplets with numpy), so the two can never drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cockpit.filter.semantic.tokens import TokenBatch, mix

__all__ = [
    "CONTEXT_FEATURES",
    "SHAPE_FEATURES",
    "HashedTerms",
    "context_features",
    "hashed_terms",
    "shape_features",
]

# Independent hash family from the embedding's, so collisions are not shared.
_SEED_UNIGRAM = 0x5EED_0001
_SEED_BIGRAM = 0x5EED_0002

SHAPE_FEATURES = ("log_tokens", "has_question", "has_exclamation", "log_chars_per_token")
CONTEXT_FEATURES = (
    "score_delta",
    "behind",
    "ahead",
    "season_spring",
    "season_fall",
    "season_winter",
    "game_year",
    "log_relative_index",
)
_SEASONS = {"spring": 3, "fall": 4, "autumn": 4, "winter": 5}


@dataclass(frozen=True, slots=True)
class HashedTerms:
    """A sparse matrix as COO triplets: ``vals[i]`` at (``rows[i]``, ``cols[i]``)."""

    rows: np.ndarray
    cols: np.ndarray
    vals: np.ndarray
    n_rows: int
    dim: int


def hashed_terms(batch: TokenBatch, dim: int) -> HashedTerms:
    """Unigrams and bigrams hashed into ``dim`` buckets, L2-normalised per text.

    Repeated terms are kept as separate entries (term counts); deduplicating to
    binary presence cost a sort per batch and did not score better on validation.
    L2 normalisation leaves message length to the shape features.
    """
    d = np.uint64(dim)
    cols = np.concatenate(
        [mix(batch.hashes, _SEED_UNIGRAM) % d, mix(batch.bigram_hashes, _SEED_BIGRAM) % d]
    ).astype(np.int64)
    rows = np.concatenate([batch.rows, batch.bigram_rows])
    # Approximates the L2 norm by the term count (exact when no term repeats).
    per_row = np.bincount(rows, minlength=batch.size).astype(np.float32)
    vals = 1.0 / np.sqrt(per_row[rows])
    return HashedTerms(rows, cols, vals.astype(np.float32), batch.size, dim)


def shape_features(texts: Sequence[str], batch: TokenBatch) -> np.ndarray:
    """Length and punctuation of each text, one row per text (see ``SHAPE_FEATURES``)."""
    n = batch.counts.astype(np.float32)
    chars = np.fromiter((len(t) for t in texts), dtype=np.float32, count=len(texts))
    out = np.empty((len(texts), len(SHAPE_FEATURES)), dtype=np.float32)
    out[:, 0] = np.log1p(n) / 4.0
    out[:, 1] = np.fromiter(("?" in t for t in texts), dtype=np.float32, count=len(texts))
    out[:, 2] = np.fromiter(("!" in t for t in texts), dtype=np.float32, count=len(texts))
    out[:, 3] = np.log1p(chars / np.maximum(n, 1.0)) / 2.0
    return out


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past a float's range
        return None
    return number if math.isfinite(number) else None


def context_features(
    attributes: Sequence[Mapping[str, Any] | None],
) -> tuple[np.ndarray, np.ndarray]:
    """Game context per message, and a mask of the messages that carry any.

    A message "has context" when ``game_score_delta`` is present; free-text agent
    chatter has none and is scored by the text-only head instead.
    """
    out = np.zeros((len(attributes), len(CONTEXT_FEATURES)), dtype=np.float32)
    present = np.zeros(len(attributes), dtype=bool)
    for i, attrs in enumerate(attributes):
        if not attrs:
            continue
        delta = _number(attrs.get("game_score_delta"))
        if delta is None:
            continue
        present[i] = True
        out[i, 0] = max(-10.0, min(10.0, delta)) / 5.0
        out[i, 1] = float(delta < 0)
        out[i, 2] = float(delta > 0)
        season = _SEASONS.get(str(attrs.get("season", "")).lower())
        if season is not None:
            out[i, season] = 1.0
        year = _number(attrs.get("year"))
        if year is not None:
            out[i, 6] = max(0.0, min(12.0, year - 1901.0)) / 5.0
        index = _number(attrs.get("relative_message_index"))
        if index is not None:
            out[i, 7] = math.log1p(max(0.0, index)) / 4.0
    return out, present
