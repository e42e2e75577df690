"""The ``cockpit`` command as a user runs it: clear one-line start-up errors, graceful
SIGTERM, API keys, replay, verdict recount, score and audit verify."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.integration.gateway.test_scenario import scenario

REPO = Path(__file__).resolve().parents[2]


def _cockpit(tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120,
             ) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "COCKPIT_DATA_DIR": str(tmp_path / "data"), "COCKPIT_LOG_LEVEL": "WARNING", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cockpit", *args], cwd=REPO, env=full,
                          capture_output=True, text=True, timeout=timeout)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(port: int) -> None:
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"cockpit on port {port} never became healthy")


def test_bad_database_url_fails_fast_with_one_line(tmp_path: Path) -> None:
    out = _cockpit(tmp_path, "serve", "--port", str(_port()),
                   env={"COCKPIT_DATABASE_URL": "postgresql+psycopg://u:p@127.0.0.1:1/nope"}, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("cockpit: error: database unreachable")
    assert "Traceback" not in out.stderr


def test_unreachable_broker_fails_fast_with_one_line(tmp_path: Path) -> None:
    out = _cockpit(tmp_path, "serve", "--port", str(_port()),
                   env={"COCKPIT_NATS_URL": "nats://127.0.0.1:1", "COCKPIT_BROKER_CONNECT_TIMEOUT": "1"},
                   timeout=60)
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("cockpit: error: message broker unreachable: nats at nats://127.0.0.1:1")
    assert "Traceback" not in out.stderr


def test_serve_prints_a_key_once_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = _port()
    env = {**os.environ, "COCKPIT_DATA_DIR": str(tmp_path / "data")}
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "cockpit", "serve", "--port", str(port)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(port)
        text = (tmp_path / "serve.log").read_text()
        key = next(line.split()[0] for line in text.splitlines() if line.strip().startswith("ck_"))
        r = httpx.get(f"http://127.0.0.1:{port}/verdicts", headers={"X-API-Key": key.strip()})
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert '"event": "cockpit_stopped"' in text
    # A second start on the same data dir prints no new key.
    proc = subprocess.Popen([sys.executable, "-m", "cockpit", "serve", "--port", str(port)],
                            cwd=REPO, env=env, stdout=open(tmp_path / "again.log", "w"), stderr=subprocess.STDOUT)
    try:
        _wait_healthy(port)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert "ck_" not in (tmp_path / "again.log").read_text()


def test_serve_logs_only_json_lines(tmp_path: Path) -> None:
    # Every library's log (SQLAlchemy's pool at shutdown, uvicorn, FastStream) reaches
    # stderr as one JSON object per line, for the log pipeline to parse.
    port = _port()
    env = {**os.environ, "COCKPIT_DATA_DIR": str(tmp_path / "data"), "COCKPIT_LOG_LEVEL": "DEBUG"}
    with open(tmp_path / "out.log", "w") as out, open(tmp_path / "err.log", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "cockpit", "serve", "--port", str(port)],
                                cwd=REPO, env=env, stdout=out, stderr=err)
        try:
            _wait_healthy(port)
            assert httpx.get(f"http://127.0.0.1:{port}/verdicts").status_code == 401
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    # The start-up banner (the first key, the address) is indented text for a person.
    lines = [line for line in (tmp_path / "err.log").read_text().splitlines() if line.strip() and line[0] != " "]
    events = [json.loads(line) for line in lines]  # a plain-text log line fails here
    assert any(e["event"] == "cockpit_stopped" for e in events)


def test_apikey_lifecycle(tmp_path: Path) -> None:
    out = _cockpit(tmp_path, "apikey", "create", "--role", "VIEWER", "--name", "alice", "--totp")
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(":", 1) for line in out.stdout.splitlines() if ":" in line)
    assert fields["role"].strip() == "VIEWER" and fields["key"].strip().startswith("ck_")
    assert fields["uri"].strip().startswith("otpauth://totp/")
    listed = _cockpit(tmp_path, "apikey", "list").stdout
    assert "alice" in listed and fields["key"].strip() not in listed
    assert _cockpit(tmp_path, "apikey", "revoke", fields["id"].strip()).returncode == 0
    assert "revoked" in _cockpit(tmp_path, "apikey", "list").stdout
    assert _cockpit(tmp_path, "apikey", "revoke", "no-such-id").returncode == 1
    # A key named like Cockpit's own actions (the recovery loop is "system:recovery" in
    # the audit) is refused; so is an AGENT key, which would be bound to no agent.
    refused = _cockpit(tmp_path, "apikey", "create", "--role", "SOVEREIGN_OPERATOR", "--name", "system:recovery")
    assert refused.returncode == 2 and "reserved" in refused.stderr
    assert _cockpit(tmp_path, "apikey", "create", "--role", "AGENT", "--name", "bot").returncode == 2


def test_replay_pushes_a_file_through_the_pipeline(tmp_path: Path) -> None:
    items, _ = scenario()
    path = tmp_path / "telemetry.jsonl"
    path.write_text("\n".join(json.dumps(i) for i in items) + "\n")
    out = _cockpit(tmp_path, "replay", str(path))
    assert out.returncode == 0, out.stderr
    assert f"messages: {len(items)}  accepted: {len(items)}" in out.stdout
    for category in ("COLLUSION", "INCONSISTENCY", "DECEPTION"):
        assert category in out.stdout
    again = _cockpit(tmp_path, "replay", str(path))
    assert f"accepted: 0  duplicates: {len(items)}" in again.stdout
    created = int(out.stdout.split("verdicts created or updated: ")[1].split()[0])
    recount = _cockpit(tmp_path, "verdicts", "recount")
    assert recount.returncode == 0, recount.stderr
    assert recount.stdout.startswith(f"counted {created} verdicts into ")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"message_id": "x"}\n')
    out = _cockpit(tmp_path, "replay", str(bad))
    assert out.returncode == 2 and "bad.jsonl:1" in out.stderr


def _diplomacy_file(path: Path) -> int:
    dialog = {
        "messages": ["I will support you into Burgundy", "Sure, I trust you", "Moving to attack Munich now"],
        "sender_labels": [True, True, False], "receiver_labels": [True, True, "NOANNOTATION"],
        "speakers": ["france", "germany", "france"], "receivers": ["germany", "france", "germany"],
        "absolute_message_index": [10, 11, 12], "relative_message_index": [0, 1, 2],
        "seasons": ["Spring", "Spring", "Fall"], "years": ["1901", "1901", "1901"],
        "game_score": ["4", "4", "5"], "game_score_delta": ["0", "0", "1"],
        "players": ["france", "germany"], "game_id": 99,
    }
    path.write_text(json.dumps(dialog) + "\n")
    return 3


def test_score_writes_one_line_per_labelled_message(tmp_path: Path) -> None:
    source = tmp_path / "dialogs.jsonl"
    n = _diplomacy_file(source)
    out_path = tmp_path / "scores.jsonl"
    out = _cockpit(tmp_path, "score", str(source), "--format", "diplomacy", "--out", str(out_path))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert len(lines) == n
    assert {line["absolute_message_index"] for line in lines} == {10, 11, 12}
    for line in lines:
        assert line["game_id"] == 99 and 0.0 <= line["deception_score"] <= 1.0
        assert isinstance(line["deceptive"], bool)
    replay = _cockpit(tmp_path, "replay", str(source), "--format", "diplomacy")
    assert replay.returncode == 0 and f"messages: {n}" in replay.stdout


def test_audit_verify_on_a_fresh_database(tmp_path: Path) -> None:
    out = _cockpit(tmp_path, "audit", "verify")
    assert out.returncode == 0 and out.stdout.startswith("ok, 0 rows")


def test_serve_refuses_rate_limits_that_would_limit_nothing(tmp_path: Path) -> None:
    """A rate limit under a name no command has ("terminate") silently limited nothing,
    and a malformed one crashed the start with a traceback: both are one clear line."""
    for limits, says in (('{"terminate": "3/hour"}', "unknown command types ['terminate']"),
                         ('{"MUTE": "often"}', "invalid rate limit 'often'")):
        out = _cockpit(tmp_path, "serve", "--port", str(_port()), env={"COCKPIT_C2L__RATE_LIMITS": limits})
        assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr, out.stderr
