"""Verdict engine: stores, serves and streams verdicts.

Public API: :class:`VerdictEngine` (queries and status changes), :class:`VerdictFilters`,
and its errors. It consumes ``VerdictDrafted`` and ``CommandConfirmed`` and emits
``VerdictIssued``.
"""

from __future__ import annotations

from cockpit.verdict.service import (
    IllegalTransition,
    VerdictEngine,
    VerdictFilters,
    VerdictNotFound,
)

__all__ = ["IllegalTransition", "VerdictEngine", "VerdictFilters", "VerdictNotFound"]
