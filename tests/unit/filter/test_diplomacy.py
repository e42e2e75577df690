"""Reading the Diplomacy JSONL format and scoring a file end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cockpit.events.telemetry import Telemetry
from cockpit.filter.diplomacy import parse_sender_label, read_messages, score_file, to_telemetry
from cockpit.filter.semantic import SemanticAnalyzer

DIALOGS = [
    {
        "messages": ["Hello Italy, shall we work together?", "Sure, I will support you",
                     "I promise I won't move to Tyrolia"],
        "sender_labels": [True, False, "NOANNOTATION"],
        "receiver_labels": [True, "NOANNOTATION", True],
        "speakers": ["austria", "italy", "austria"],
        "receivers": ["italy", "austria", "italy"],
        "absolute_message_index": [0, 3, 7],
        "relative_message_index": [0, 1, 2],
        "seasons": ["Spring", "Spring", "Fall"],
        "years": ["1901", "1901", "1901"],
        "game_score": ["3", "3", "4"],
        "game_score_delta": ["0", "0", "1"],
        "players": ["austria", "italy"],
        "game_id": 42,
    },
    {
        "messages": ["Attack Munich with me", "ok"],
        "sender_labels": ["false", None],
        "speakers": ["france", "england"],
        "receivers": ["england", "france"],
        "absolute_message_index": [1, 2],
        "relative_message_index": [0, 1],
        "seasons": ["Spring", "Spring"],
        "years": ["1901", "1901"],
        "game_score_delta": [0, "bad"],
        "players": ["france", "england"],
        "game_id": 42,
    },
]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in DIALOGS) + "\n\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [(True, True), (False, False), ("false", False), (" True ", True),
     ("NOANNOTATION", None), (None, None), (0, None)],
)
def test_labels_are_parsed_strictly(raw: object, parsed: bool | None) -> None:
    assert parse_sender_label(raw) is parsed


def test_dialogs_are_flattened_into_typed_records(corpus: Path) -> None:
    records = read_messages(corpus)
    assert len(records) == 5
    first = records[0]
    assert (first.game_id, first.absolute_message_index, first.speaker, first.receiver) == (
        42, 0, "austria", "italy")
    assert first.sender_label is True and first.year == 1901 and first.season == "Spring"
    assert first.game_score_delta == 0
    assert records[1].sender_label is False  # a lie
    assert [r.sender_label for r in records[2:]] == [None, False, None]
    assert records[4].game_score_delta is None  # odd value, not a crash


def test_record_becomes_telemetry(corpus: Path) -> None:
    telemetry = to_telemetry(read_messages(corpus)[1])
    assert isinstance(telemetry, Telemetry)
    assert telemetry.message_id == "dip-42-3"
    assert telemetry.fleet_id == "diplomacy-42"
    assert telemetry.source_agent_id == "italy"
    assert telemetry.target_agent_ids == ["austria"]
    assert telemetry.content == "Sure, I will support you"
    assert telemetry.attributes["game_score_delta"] == 0
    assert "sender_label" not in telemetry.attributes  # ground truth never reaches analysis


def test_score_file_writes_one_line_per_labelled_message(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.jsonl"
    summary = score_file(corpus, out, SemanticAnalyzer())
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == summary.written == summary.labelled == 3
    assert summary.messages == 5 and summary.unlabelled == 2 and summary.lies == 2
    keys = [(x["game_id"], x["absolute_message_index"]) for x in lines]
    assert keys == [(42, 0), (42, 3), (42, 1)]
    for line in lines:
        assert set(line) == {"game_id", "absolute_message_index", "deception_score", "deceptive"}
        assert 0.0 <= line["deception_score"] <= 1.0
        assert line["deceptive"] == (line["deception_score"] >= 0.65)
    assert summary.quality["tp"] + summary.quality["fn"] == 2


def test_malformed_line_is_reported_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(DIALOGS[0]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=":2:"):
        read_messages(path)
