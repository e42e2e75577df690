"""What the semantic layer says about one message; the strategic layer consumes it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

__all__ = ["Intent", "SemanticResult"]


class Intent(StrEnum):
    COOPERATIVE = "COOPERATIVE"
    COMPETITIVE = "COMPETITIVE"
    NEUTRAL = "NEUTRAL"
    AMBIGUOUS = "AMBIGUOUS"


@dataclass(frozen=True, slots=True)
class SemanticResult:
    """Layer 1 output for one message (actions get no semantic result).

    ``deception_score`` is in [0, 1]; ``embedding`` is a unit-norm float32 vector.
    """

    intent: Intent
    intent_confidence: float
    deception_score: float
    embedding: np.ndarray
