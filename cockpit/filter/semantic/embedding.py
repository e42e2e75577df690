"""Offline message embedding: signed feature hashing of word unigrams and bigrams.

No model download, deterministic across processes (hashes come from
:mod:`cockpit.filter.semantic.tokens`), unit-norm float32. Texts that share words
and phrases land close together, which is what the strategic layer needs to
group near-duplicate or coordinated messages; it is not a semantic model.
"""

from __future__ import annotations

import numpy as np

from cockpit.filter.semantic.tokens import TokenBatch, mix

__all__ = ["HashedEmbedder"]

_SEED_INDEX = 0xE3B0_0001
_SEED_BIGRAM = 0xE3B0_0002
_BIGRAM_WEIGHT = 0.5  # word order matters, but less than the words themselves


class HashedEmbedder:
    """Maps a :class:`TokenBatch` to an ``(n, dim)`` float32 matrix of unit rows."""

    def __init__(self, dim: int = 256) -> None:
        if dim < 2 or dim & (dim - 1):
            raise ValueError("embedding dim must be a power of two >= 2")
        self.dim = dim

    def _signed_buckets(self, hashes: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        h = mix(hashes, seed)
        bucket = (h & np.uint64(self.dim - 1)).astype(np.int64)
        # A sign bit independent of the bucket bits keeps collisions unbiased.
        sign = 1.0 - 2.0 * ((h >> np.uint64(63)) & np.uint64(1)).astype(np.float64)
        return bucket, sign

    def embed(self, batch: TokenBatch) -> np.ndarray:
        """One unit-norm row per text; a text without tokens gets the first basis vector."""
        n, dim = batch.size, self.dim
        uni_b, uni_s = self._signed_buckets(batch.hashes, _SEED_INDEX)
        bi_b, bi_s = self._signed_buckets(batch.bigram_hashes, _SEED_BIGRAM)
        flat = np.concatenate([batch.rows * dim + uni_b, batch.bigram_rows * dim + bi_b])
        weights = np.concatenate([uni_s, bi_s * _BIGRAM_WEIGHT])
        out = np.bincount(flat, weights=weights, minlength=n * dim).astype(np.float64)
        out = out.reshape(n, dim)
        norms = np.linalg.norm(out, axis=1)
        empty = norms == 0.0
        out[empty, 0] = 1.0
        norms[empty] = 1.0
        unit: np.ndarray = (out / norms[:, None]).astype(np.float32)
        return unit
