"""Reading the Diplomacy deception corpus (Peskov et al., ACL 2020; CC BY 4.0).

One JSON object per line is one dialog between two powers of one game; its list
fields are parallel (one entry per message). This module flattens dialogs into
:class:`DiplomacyMessage` records, turns a record into :class:`Telemetry`, and
scores a whole file into JSONL (``cockpit score FILE --format diplomacy``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cockpit.events.telemetry import Telemetry
from cockpit.filter.analysis import SemanticResult
from cockpit.filter.semantic.evaluation import DeceptionQuality

__all__ = [
    "DeceptionScorer",
    "DiplomacyMessage",
    "ScoreSummary",
    "default_data_dir",
    "parse_sender_label",
    "read_messages",
    "score_file",
    "to_telemetry",
]

# Diplomacy timestamps are game turns, not wall-clock time; telemetry gets a fixed
# epoch plus one minute per message so ordering and spacing survive.
_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
_BATCH = 4096


@dataclass(frozen=True, slots=True)
class DiplomacyMessage:
    """One message of the corpus. ``sender_label`` True = truthful, False = lie,
    None = missing or unreadable label."""

    game_id: int
    absolute_message_index: int
    relative_message_index: int
    speaker: str
    receiver: str
    text: str
    sender_label: bool | None
    season: str | None
    year: int | None
    game_score_delta: int | None

    @property
    def attributes(self) -> dict[str, Any]:
        """The context features the deception model can use (never the label)."""
        return {
            "game_score_delta": self.game_score_delta,
            "season": self.season,
            "year": self.year,
            "relative_message_index": self.relative_message_index,
        }


def default_data_dir() -> Path:
    """Where the corpus lives: ``$COCKPIT_DIPLOMACY_DIR``, else ``../shared/datasets/diplomacy``
    next to the repository (read when called, never at import)."""
    configured = os.environ.get("COCKPIT_DIPLOMACY_DIR")
    if configured:
        return Path(configured)
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root.parent / "shared" / "datasets" / "diplomacy"


def parse_sender_label(value: object) -> bool | None:
    """A label as a bool; the strings "true"/"false" are accepted, anything else is None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _as_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return int(value)
    except (OverflowError, ValueError):
        return None


def _at(values: Sequence[Any] | None, i: int) -> Any:
    # Dialog lists are meant to be parallel; a short list means "unknown", not a crash.
    return values[i] if values is not None and i < len(values) else None


def _dialog_messages(dialog: dict[str, Any]) -> Iterator[DiplomacyMessage]:
    texts = dialog.get("messages") or []
    game_id = _as_int(dialog.get("game_id"))
    for i, text in enumerate(texts):
        abs_index = _as_int(_at(dialog.get("absolute_message_index"), i))
        rel_index = _as_int(_at(dialog.get("relative_message_index"), i))
        season = _at(dialog.get("seasons"), i)
        yield DiplomacyMessage(
            game_id=game_id if game_id is not None else -1,
            absolute_message_index=abs_index if abs_index is not None else -1,
            relative_message_index=rel_index if rel_index is not None else i,
            speaker=str(_at(dialog.get("speakers"), i) or "unknown"),
            receiver=str(_at(dialog.get("receivers"), i) or "unknown"),
            text=str(text) if text is not None else "",
            sender_label=parse_sender_label(_at(dialog.get("sender_labels"), i)),
            season=str(season) if season is not None else None,
            year=_as_int(_at(dialog.get("years"), i)),
            game_score_delta=_as_int(_at(dialog.get("game_score_delta"), i)),
        )


def read_messages(path: str | Path) -> list[DiplomacyMessage]:
    """Every message of a Diplomacy JSONL file, in file order (blank lines skipped)."""
    out: list[DiplomacyMessage] = []
    with Path(path).open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                dialog = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not JSON ({exc.msg})") from exc
            if not isinstance(dialog, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object per line")
            out.extend(_dialog_messages(dialog))
    return out


def to_telemetry(message: DiplomacyMessage, *, epoch: datetime = _EPOCH) -> Telemetry:
    """The message as Cockpit telemetry: the powers are the agents, the game the fleet."""
    pair = "-".join(sorted((message.speaker, message.receiver)))
    return Telemetry(
        message_id=f"dip-{message.game_id}-{message.absolute_message_index}",
        fleet_id=f"diplomacy-{message.game_id}",
        source_agent_id=message.speaker,
        target_agent_ids=[message.receiver],
        conversation_id=f"dip-{message.game_id}-{pair}",
        content=message.text,
        timestamp=epoch + timedelta(minutes=max(message.absolute_message_index, 0)),
        attributes=message.attributes,
    )


class DeceptionScorer(Protocol):
    """What ``score_file`` needs from the semantic layer."""

    def analyze_many(
        self, texts: Sequence[str], attributes: Sequence[Mapping[str, Any] | None] | None = None
    ) -> list[SemanticResult]: ...

    def is_deceptive(self, score: float) -> bool: ...


@dataclass(frozen=True, slots=True)
class ScoreSummary:
    """What ``score_file`` did; ``quality`` compares verdicts with the sender labels."""

    messages: int
    labelled: int
    unlabelled: int
    lies: int
    written: int
    quality: dict[str, float | int] = field(default_factory=dict)


def score_file(
    in_path: str | Path, out_path: str | Path, analyzer: DeceptionScorer
) -> ScoreSummary:
    """Score every labelled message of ``in_path`` and write one JSONL line each.

    Lines are ``{"game_id", "absolute_message_index", "deception_score", "deceptive"}``.
    Messages whose label is missing or odd are counted in ``unlabelled`` and not written.
    """
    messages = read_messages(in_path)
    labelled = [m for m in messages if m.sender_label is not None]
    scores: list[float] = []
    for start in range(0, len(labelled), _BATCH):
        chunk = labelled[start : start + _BATCH]
        results = analyzer.analyze_many([m.text for m in chunk], [m.attributes for m in chunk])
        scores.extend(r.deception_score for r in results)
    verdicts = [analyzer.is_deceptive(s) for s in scores]
    with Path(out_path).open("w", encoding="utf-8") as fh:
        for m, score, deceptive in zip(labelled, scores, verdicts, strict=True):
            line = {
                "game_id": m.game_id,
                "absolute_message_index": m.absolute_message_index,
                "deception_score": round(score, 6),
                "deceptive": deceptive,
            }
            fh.write(json.dumps(line) + "\n")
    is_lie = np.array([m.sender_label is False for m in labelled], dtype=bool)
    quality = DeceptionQuality.from_predictions(is_lie, np.array(verdicts, dtype=bool))
    return ScoreSummary(
        messages=len(messages),
        labelled=len(labelled),
        unlabelled=len(messages) - len(labelled),
        lies=int(is_lie.sum()),
        written=len(labelled),
        quality=quality.as_dict() if labelled else {},
    )
