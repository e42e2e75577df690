"""Intent of a message from a weighted cue lexicon, with negation scope.

Cues are word unigrams and bigrams, each pulling towards COOPERATIVE or
COMPETITIVE. A negator ("not", "won't", "never", ...) up to three tokens before a
cue, inside the same clause, flips it at reduced weight: "I won't attack you" is
mildly cooperative, "I will not support you" mildly competitive. Lookups run on
the batch's token hashes with ``np.searchsorted``, so there is no per-token Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cockpit.filter.analysis import Intent
from cockpit.filter.semantic.lexicon import COMPETITIVE_CUES, COOPERATIVE_CUES, NEGATORS
from cockpit.filter.semantic.tokens import CLAUSE_BREAKS, TokenBatch, mix, token_hash

__all__ = ["IntentClassifier", "IntentScores"]

_NEGATION_WINDOW = 3
_NEGATED_WEIGHT = 0.7   # a denied threat is weaker evidence than an affirmed promise
_NEUTRAL_BELOW = 0.5    # total cue weight under which a message says nothing either way
_AMBIGUOUS_RATIO = 0.5  # minority / majority weight at or above which signals are mixed
_ORDER = (Intent.NEUTRAL, Intent.COOPERATIVE, Intent.COMPETITIVE, Intent.AMBIGUOUS)


def _cue_hash(cue: str) -> int:
    words = cue.split()
    h = np.array([token_hash(words[0])], dtype=np.uint64)
    for word in words[1:]:
        h = mix(h, token_hash(word))
    return int(h[0])


def _table(cues: list[tuple[str, float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted hashes and their (cooperative, competitive) weights."""
    merged: dict[int, np.ndarray] = {}
    for cue, coop, comp in cues:
        merged.setdefault(_cue_hash(cue), np.zeros(2))[:] += (coop, comp)
    keys = np.array(sorted(merged), dtype=np.uint64)
    return keys, np.array([merged[int(k)] for k in keys], dtype=np.float64).reshape(-1, 2)


def _member(sorted_keys: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    # searchsorted beats np.isin by far on the small arrays of one message.
    pos = np.searchsorted(sorted_keys, hashes).clip(max=len(sorted_keys) - 1)
    found: np.ndarray = sorted_keys[pos] == hashes
    return found


def _lookup(keys: np.ndarray, weights: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(keys, hashes).clip(max=len(keys) - 1)
    hit = keys[pos] == hashes
    return np.where(hit[:, None], weights[pos], 0.0)


@dataclass(frozen=True, slots=True)
class IntentScores:
    """Per text: the intent code (index into ``_ORDER``), confidence, raw cue weights."""

    codes: np.ndarray
    confidence: np.ndarray
    cooperative: np.ndarray
    competitive: np.ndarray

    def intents(self) -> list[Intent]:
        """The codes as :class:`Intent` values."""
        return [_ORDER[c] for c in self.codes.tolist()]


class IntentClassifier:
    """Lexicon intent classifier over a :class:`TokenBatch`."""

    def __init__(self) -> None:
        cues = [(c, w, 0.0) for c, w in COOPERATIVE_CUES.items()]
        cues += [(c, 0.0, w) for c, w in COMPETITIVE_CUES.items()]
        self._keys, self._weights = _table(cues)
        self._negators = np.array(sorted(token_hash(t) for t in NEGATORS), dtype=np.uint64)
        self._breaks = np.array(sorted(token_hash(t) for t in CLAUSE_BREAKS), dtype=np.uint64)

    def _negated(self, batch: TokenBatch) -> np.ndarray:
        h, rows = batch.hashes, batch.rows
        is_neg = _member(self._negators, h)
        clause = np.cumsum(_member(self._breaks, h)) + rows * (len(h) + 1)
        out = np.zeros(len(h), dtype=bool)
        for k in range(1, _NEGATION_WINDOW + 1):
            # Token i is negated if token i-k is a negator in the same text and clause.
            out[k:] |= is_neg[:-k] & (clause[:-k] == clause[k:])
        return out

    def classify(self, batch: TokenBatch) -> IntentScores:
        """Intent and confidence for every text of ``batch``."""
        negated = self._negated(batch)
        uni = _lookup(self._keys, self._weights, batch.hashes)
        same = batch.rows[1:] == batch.rows[:-1]
        bi = _lookup(self._keys, self._weights, batch.bigram_hashes)
        bi_negated = negated[:-1][same]  # a bigram is negated when its first word is
        weights = np.concatenate([uni, bi])
        flip = np.concatenate([negated, bi_negated])
        weights[flip] = weights[flip][:, ::-1] * _NEGATED_WEIGHT
        rows = np.concatenate([batch.rows, batch.bigram_rows])
        n = batch.size
        # astype: bincount of zero tokens returns ints.
        coop = np.bincount(rows, weights=weights[:, 0], minlength=n).astype(np.float64)
        comp = np.bincount(rows, weights=weights[:, 1], minlength=n).astype(np.float64)
        return self._decide(coop, comp)

    @staticmethod
    def _decide(coop: np.ndarray, comp: np.ndarray) -> IntentScores:
        total = coop + comp
        high, low = np.maximum(coop, comp), np.minimum(coop, comp)
        ratio = np.divide(low, high, out=np.zeros_like(high), where=high > 0)
        neutral = total < _NEUTRAL_BELOW
        mixed = ~neutral & (ratio >= _AMBIGUOUS_RATIO)
        codes = np.where(coop >= comp, 1, 2)
        codes = np.where(mixed, 3, codes)
        codes = np.where(neutral, 0, codes)
        share = np.divide(high, total, out=np.ones_like(total), where=total > 0)
        # Confidence grows with the dominant side's evidence and shrinks with dissent.
        conf = share * (1.0 - np.exp(-1.5 * high))
        conf = np.where(mixed, 0.5 + 0.4 * ratio, conf)
        conf = np.where(neutral, 0.9 - 0.6 * total, conf)
        return IntentScores(codes.astype(np.int8), np.clip(conf, 0.5, 0.99), coop, comp)
