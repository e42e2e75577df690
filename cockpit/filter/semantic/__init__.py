"""Semantic layer (DESIGN.md section 5, layer 1): per-message intent, embedding, deception.

Offline and numpy-only at run time; the deception model is a shipped artefact
(``deception_model.npz``, see ``MODEL_CARD.md``) retrained with
``python -m cockpit.filter.semantic.train``.
"""

from __future__ import annotations

from cockpit.filter.semantic.analyzer import SemanticAnalyzer
from cockpit.filter.semantic.deception import SCORE_THRESHOLD, DeceptionModel
from cockpit.filter.semantic.embedding import HashedEmbedder
from cockpit.filter.semantic.intent import IntentClassifier

__all__ = [
    "SCORE_THRESHOLD",
    "DeceptionModel",
    "HashedEmbedder",
    "IntentClassifier",
    "SemanticAnalyzer",
]
