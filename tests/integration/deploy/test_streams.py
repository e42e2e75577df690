"""``cockpit streams backup|restore`` against a real NATS JetStream: the two
sovereign streams come back with their configuration and every message on its
subject with its headers and exact payload."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.integration.deploy.conftest import REPO_ROOT

STREAMS = {"sovereign-commands": "sovereign.commands", "sovereign-confirmations": "sovereign.confirmations"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``cockpit streams ...`` through the CLI when it is wired, else the module."""
    from cockpit.cli import build_parser

    wired = "streams" in build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    prefix = ["-m", "cockpit"] if wired else ["-m", "cockpit.tools.streams"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCKPIT_") or k.startswith("COCKPIT_TEST_")}
    return subprocess.run([sys.executable, *prefix, "streams", *args], check=False, cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


async def _reset(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    for name in STREAMS:
        try:
            await js.delete_stream(name)
        except nats.js.errors.NotFoundError:
            pass
    await nc.close()


async def _fill(url: str) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """The streams as Cockpit creates them, holding commands and confirmations."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    for name, prefix in STREAMS.items():
        await js.add_stream(name=name, subjects=[f"{prefix}.>"], duplicate_window=120, max_msgs=10_000)
    sent = []
    for i in range(25):
        command_id = str(uuid.uuid4())
        body = json.dumps({"command_id": command_id, "command_type": "MUTE", "n": i}).encode()
        headers = {"Nats-Msg-Id": command_id, "X-Cockpit-Operator": f"op-{i % 3}"}
        await js.publish(f"sovereign.commands.agent-{i % 4}", body, headers=headers, stream="sovereign-commands")
        sent.append(("sovereign-commands", f"sovereign.commands.agent-{i % 4}", body, headers))
        confirmation = bytes([0, 255, i]) + body  # not UTF-8: payloads are bytes
        await js.publish(f"sovereign.confirmations.{command_id}", confirmation)
        sent.append(("sovereign-confirmations", f"sovereign.confirmations.{command_id}", confirmation, {}))
    # A deleted message leaves a gap in the sequence; it must not come back.
    await js.delete_msg("sovereign-commands", 3)
    await nc.close()
    return [m for m in sent if not (m[0] == "sovereign-commands" and m is sent[4])]


async def _read_all(url: str) -> dict[str, Any]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    out: dict[str, Any] = {}
    for name in STREAMS:
        info = await js.stream_info(name)
        msgs = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                m = await js.get_msg(name, seq)
            except nats.js.errors.NotFoundError:
                continue
            headers = {k: v for k, v in (m.headers or {}).items() if k != "Nats-Expected-Stream"}
            msgs.append((m.subject, m.data, headers))
        out[name] = {"subjects": info.config.subjects, "duplicate_window": info.config.duplicate_window,
                     "max_msgs": info.config.max_msgs, "messages": msgs}
    await nc.close()
    return out


def test_backup_and_restore_round_trip(nats_url: str, tmp_path: Path) -> None:
    asyncio.run(_reset(nats_url))
    asyncio.run(_fill(nats_url))
    before = asyncio.run(_read_all(nats_url))
    assert len(before["sovereign-commands"]["messages"]) == 24
    assert len(before["sovereign-confirmations"]["messages"]) == 25

    out = tmp_path / "streams"
    result = _cli("backup", "--out", str(out), "--nats-url", nats_url)
    assert result.returncode == 0, result.stderr
    assert "sovereign-commands: 24 messages" in result.stdout
    assert "sovereign-confirmations: 25 messages" in result.stdout
    lines = (out / "sovereign-commands.jsonl").read_text().splitlines()
    assert len(lines) == 24 and json.loads(lines[0])["headers"]["Nats-Msg-Id"]
    assert json.loads((out / "sovereign-commands.config.json").read_text())["config"]["subjects"] == [
        "sovereign.commands.>"]

    # Disaster: the streams are gone.
    asyncio.run(_reset(nats_url))
    result = _cli("restore", "--from", str(out), "--nats-url", nats_url)
    assert result.returncode == 0, result.stderr
    after = asyncio.run(_read_all(nats_url))
    assert after == before

    # A second restore refuses to clobber streams holding messages, unless told to.
    refused = _cli("restore", "--from", str(out), "--nats-url", nats_url)
    assert refused.returncode == 1 and "--replace" in refused.stderr
    replaced = _cli("restore", "--from", str(out), "--nats-url", nats_url, "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert asyncio.run(_read_all(nats_url)) == before

    info = _cli("info", "--nats-url", nats_url)
    assert info.returncode == 0, info.stderr
    assert "sovereign-commands: subjects=sovereign.commands.> messages=24" in info.stdout
    asyncio.run(_reset(nats_url))


def test_clear_errors(nats_url: str, tmp_path: Path) -> None:
    asyncio.run(_reset(nats_url))
    missing = _cli("backup", "--out", str(tmp_path), "--nats-url", nats_url)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    nothing = _cli("restore", "--from", str(tmp_path / "empty"), "--nats-url", nats_url)
    assert nothing.returncode == 1 and "no backup of 'sovereign-commands'" in nothing.stderr
    unreachable = _cli("info", "--nats-url", "nats://127.0.0.1:1")
    assert unreachable.returncode == 1 and "cannot connect to NATS" in unreachable.stderr
    no_url = _cli("info")
    assert no_url.returncode == 1 and "COCKPIT_NATS_URL" in no_url.stderr


@pytest.fixture(autouse=True)
def _clean_streams(nats_url: str) -> Any:
    yield
    asyncio.run(_reset(nats_url))
