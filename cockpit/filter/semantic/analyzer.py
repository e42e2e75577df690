"""Layer 1 of the narrative filter: intent, embedding and deception score per message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cockpit.filter.analysis import Intent, SemanticResult
from cockpit.filter.semantic.deception import DeceptionModel
from cockpit.filter.semantic.embedding import HashedEmbedder
from cockpit.filter.semantic.intent import IntentClassifier
from cockpit.filter.semantic.tokens import TokenBatch

__all__ = ["SemanticAnalyzer"]


class SemanticAnalyzer:
    """Analyses message texts; a batch is tokenised once and scored with numpy.

    ``attributes`` may carry game context (``game_score_delta``, ``season``, ``year``,
    ``relative_message_index``); without it the text-only deception head is used.
    """

    def __init__(self, model: DeceptionModel | None = None, embedding_dim: int = 256) -> None:
        self.model = model if model is not None else DeceptionModel.load()
        self.embedder = HashedEmbedder(embedding_dim)
        self.intents = IntentClassifier()

    @property
    def deception_threshold(self) -> float:
        """Score at or above which a single message counts as deceptive (0.65)."""
        return self.model.deception_threshold

    def is_deceptive(self, score: float) -> bool:
        """The per-message verdict for a ``deception_score``."""
        return self.model.is_deceptive(score)

    def analyze(self, text: str, attributes: Mapping[str, Any] | None = None) -> SemanticResult:
        """Analyse one message (prefer :meth:`analyze_many` for throughput)."""
        return self.analyze_many([text], [attributes])[0]

    def score_many(
        self,
        texts: Sequence[str],
        attributes: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> tuple[list[Intent], list[float], list[float]]:
        """Intent, intent confidence and deception score per text, without embeddings
        or per-message objects: the ingestion hot path needs nothing more."""
        if attributes is not None and len(attributes) != len(texts):
            raise ValueError("attributes must be None or have one entry per text")
        if not texts:
            return [], [], []
        batch = TokenBatch.from_texts(texts)
        intent = self.intents.classify(batch)
        scores = self.model.score(texts, batch, attributes)
        return intent.intents(), intent.confidence.tolist(), np.asarray(scores, dtype=np.float64).tolist()

    def analyze_many(
        self,
        texts: Sequence[str],
        attributes: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[SemanticResult]:
        """Analyse a batch; results are in input order."""
        if attributes is not None and len(attributes) != len(texts):
            raise ValueError("attributes must be None or have one entry per text")
        if not texts:
            return []
        batch = TokenBatch.from_texts(texts)
        intent = self.intents.classify(batch)
        embeddings = self.embedder.embed(batch)
        # Results share one matrix; read-only so a consumer cannot corrupt a neighbour.
        embeddings.flags.writeable = False
        scores = self.model.score(texts, batch, attributes)
        return [
            SemanticResult(i, c, s, e)
            for i, c, s, e in zip(
                intent.intents(),
                intent.confidence.tolist(),
                np.asarray(scores, dtype=np.float64).tolist(),
                embeddings,
                strict=True,
            )
        ]
