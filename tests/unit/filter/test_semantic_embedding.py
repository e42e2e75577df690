"""The offline hashed embedding: deterministic, unit-norm, similarity-preserving."""

from __future__ import annotations

import numpy as np
import pytest

from cockpit.filter.semantic import HashedEmbedder, SemanticAnalyzer
from cockpit.filter.semantic.tokens import TokenBatch, token_hash


def _embed(texts: list[str], dim: int = 256) -> np.ndarray:
    return HashedEmbedder(dim).embed(TokenBatch.from_texts(texts))


def test_token_hash_is_pinned_so_features_match_across_processes() -> None:
    # Python's hash() is salted per process; ours must not be. If this value moves,
    # the shipped deception model no longer matches its features: retrain it.
    assert token_hash("attack") == 951710670632851336
    curly = "won\u2019t"
    assert token_hash(curly) != token_hash("won't")  # raw hash; the batch normalises
    batch = TokenBatch.from_texts([curly, "won't"])
    assert batch.hashes[0] == batch.hashes[1]


def test_embedding_is_unit_norm_float32_fixed_dim() -> None:
    vectors = _embed(["I will support you in Burgundy", "", "!!!", "a" * 5000])
    assert vectors.shape == (4, 256)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_same_text_same_vector_in_any_batch() -> None:
    alone = _embed(["Let's work together against C"])[0]
    in_batch = _embed(["noise first", "Let's work together against C", "more"])[1]
    np.testing.assert_array_equal(alone, in_batch)


def test_similar_texts_are_closer_than_unrelated_ones() -> None:
    a, b, c = _embed([
        "We will attack agent-c next turn",
        "we will attack agent-c on the next turn",
        "status report: 3 tasks done",
    ])
    assert float(a @ b) > 0.6
    assert float(a @ b) > float(a @ c) + 0.4


def test_dim_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError):
        HashedEmbedder(300)


def test_analyzer_results_are_read_only() -> None:
    result = SemanticAnalyzer().analyze("hello")
    with pytest.raises(ValueError):
        result.embedding[0] = 2.0
