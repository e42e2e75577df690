"""Tokenising a batch of messages into stable 64-bit token hashes.

Every feature of the semantic layer (embedding, intent, deception) is computed
from one :class:`TokenBatch`, so a batch is tokenised once. Hashes come from
BLAKE2b, never from Python's salted ``hash()``, so features are identical across
processes and between training and serving.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["CLAUSE_BREAKS", "TokenBatch", "mix", "token_hash", "tokenize"]

# Words with an optional contraction tail ("won't", "let's") so negators and
# hortatives survive as single tokens; clause punctuation is kept as tokens so
# negation scope can stop at it ("No, we attack" is not a negated attack). NUL
# separates texts of a batch (see ``TokenBatch.from_texts``).
_TOKEN_RE = re.compile(r"[^\W_]+(?:['\u2019\u2018`][^\W_]+)?|[.,;:!?]|\x00")
_SEPARATOR = "\x00"
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})
# A bound on the token cache: chatter has a small vocabulary, but a hostile
# stream of random strings must not grow memory without limit.
_CACHE_LIMIT = 500_000
_K_GOLDEN, _K_MIX1, _K_MIX2 = (np.uint64(k) for k in (
    0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))
_S27, _S30, _S31 = np.uint64(27), np.uint64(30), np.uint64(31)
CLAUSE_BREAKS = (".", ",", ";", ":", "!", "?", "but", "however", "although")


def token_hash(token: str) -> int:
    """A stable 63-bit hash of one token (fits an int64 without sign issues)."""
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class _HashCache(dict[str, int]):
    """token -> hash, filled on first sight so lookups run at C speed via ``map``."""

    def __missing__(self, token: str) -> int:
        # Curly and straight apostrophes hash alike (U+2019 in "won\u2019t").
        value = _SEPARATOR_HASH if token == _SEPARATOR else token_hash(
            token.translate(_APOSTROPHES))
        if len(self) < _CACHE_LIMIT:
            self[token] = value
        return value


# token_hash() is 63-bit, so -1 (all ones as uint64) can never be a real token.
_SEPARATOR_HASH = -1
_CACHE = _HashCache()


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens of ``text`` (apostrophes normalised)."""
    tokens = _TOKEN_RE.findall(text.lower().translate(_APOSTROPHES))
    return [t for t in tokens if t != _SEPARATOR]


def mix(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """Combine two uint64 hash arrays into a new well-spread uint64 hash array.

    A splitmix64 finaliser over ``a * K + b``; used for bigrams and for deriving
    independent hash families (embedding vs. deception) from one token hash.
    Array arithmetic on uint64 wraps silently (scalars would warn, hence
    ``atleast_1d``).
    """
    x = np.atleast_1d(np.asarray(a, dtype=np.uint64)) * _K_GOLDEN
    x += np.asarray(b, dtype=np.uint64)
    x ^= x >> _S30
    x *= _K_MIX1
    x ^= x >> _S27
    x *= _K_MIX2
    x ^= x >> _S31
    return x


@dataclass(frozen=True, slots=True)
class TokenBatch:
    """All tokens of a batch of texts, flattened.

    ``hashes[i]`` is the hash of token ``i``; ``rows[i]`` the index of the text it
    came from; ``counts[r]`` the number of tokens of text ``r``.
    ``bigram_*`` are the hashes/rows of adjacent token pairs inside one text.
    """

    hashes: np.ndarray
    rows: np.ndarray
    counts: np.ndarray
    bigram_hashes: np.ndarray
    bigram_rows: np.ndarray

    @property
    def size(self) -> int:
        """Number of texts in the batch."""
        return int(self.counts.shape[0])

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> TokenBatch:
        """Tokenise and hash ``texts``.

        The batch is joined with NUL and tokenised by one regex call, so the
        per-text Python cost is nil; NUL tokens then give each token its row.
        """
        joined = _SEPARATOR.join(texts)
        if joined.count(_SEPARATOR) != max(len(texts) - 1, 0):
            joined = _SEPARATOR.join(t.replace(_SEPARATOR, " ") for t in texts)
        flat = _TOKEN_RE.findall(joined.lower())
        raw = np.fromiter(map(_CACHE.__getitem__, flat), dtype=np.int64, count=len(flat))
        is_sep = raw == _SEPARATOR_HASH
        rows = np.cumsum(is_sep)[~is_sep]
        hashes = raw[~is_sep].astype(np.uint64)
        counts = np.bincount(rows, minlength=len(texts)).astype(np.int64)
        same = rows[1:] == rows[:-1]
        bigram_hashes = mix(hashes[:-1][same], hashes[1:][same])
        return cls(hashes, rows, counts, bigram_hashes, rows[1:][same])
