"""``cockpit demo`` end to end: real Cockpit, real agent processes, real signals.

1. ``--headless --duration 60`` exits 0 with a summary naming every expected verdict.
2. The interactive demo in the background: COLLUSION, INCONSISTENCY and DECEPTION
   reach ``GET /verdicts`` within 60 s; TERMINATE of an agent that has children
   (over the API, with the key the demo wrote to ``operator.key``) leaves no
   process of its subtree alive in /proc, with each layer's verification in
   ``GET /audits``; SIGINT then leaves no process the demo started.

The demo runs as ``python -m cockpit demo`` once the CLI is wired, else as
``python -m cockpit.tools.demo``. Output goes to a log file in the data dir.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import REPO_ROOT, free_port

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")


def demo_command() -> list[str]:
    """The wired ``cockpit demo`` if the CLI knows it, else the package's own entry."""
    probe = subprocess.run([sys.executable, "-m", "cockpit", "demo", "--help"], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode == 0 and "--headless" in probe.stdout:
        return [sys.executable, "-m", "cockpit", "demo"]
    return [sys.executable, "-m", "cockpit.tools.demo"]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCKPIT_") or k.startswith("COCKPIT_TEST_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat, or None when the pid does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw.rpartition(")")[2].split()[19])


def alive(pid: int, started: int) -> bool:
    """Still running code: the same process (start time) and not a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = raw.rpartition(")")[2].split()
    return int(fields[19]) == started and fields[0] not in ("Z", "X")


def tree_of(root: int) -> dict[int, int]:
    """Live descendants of ``root`` (pid -> start time)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if fields[0] not in ("Z", "X"):
                children.setdefault(int(fields[1]), []).append(int(name))
    found: dict[int, int] = {}
    frontier = [root]
    while frontier:
        for pid in children.get(frontier.pop(), []):
            started = start_time(pid)
            if started is not None:
                found[pid] = started
                frontier.append(pid)
    return found


class Api:
    def __init__(self, base_url: str, key: str) -> None:
        self.base_url, self.key = base_url, key

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers={
            "X-API-Key": self.key, "content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


def wait_for(predicate: Any, timeout: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n--- demo log ---\n{log.read_text()[-4000:]}")


def test_headless_demo_exits_0_with_the_expected_verdicts(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    data_dir = tmp_path / "data"
    with open(log, "wb") as out:
        result = subprocess.run(
            [*demo_command(), "--headless", "--duration", "60", "--port", str(free_port()),
             "--data-dir", str(data_dir)],
            cwd=REPO_ROOT, env=clean_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            timeout=150, check=False,
        )
    text = log.read_text()
    assert result.returncode == 0, text[-4000:]
    assert "expected verdicts: all 5 appeared" in text, text[-4000:]
    assert "none survive" in text
    summary = text.split("\nsummary\n", 1)[1]
    for line in ("messages sent:", "verdicts:", "by severity:", "commands executed: 1 (INJECT_CONSTRAINT COMPLETED x1)",
                 "COLLUSION", "INCONSISTENCY", "DECEPTION", "THREAT", "alpha and bravo collude against charlie",
                 "india attempted credential theft"):
        assert line in summary, summary
    assert int(summary.split("messages sent:")[1].split()[0]) > 50
    # The colluders obeyed the injected constraint: their later attacks were withheld.
    assert "constraint_obeyed" in (data_dir / "agents" / "alpha.log").read_text()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, int, Path]]:
    port = free_port()
    data_dir = tmp_path / "data"
    log = tmp_path / "demo.log"
    out = open(log, "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [*demo_command(), "--port", str(port), "--data-dir", str(data_dir)],
        cwd=REPO_ROOT, env=clean_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
    )
    try:
        yield process, data_dir, port, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        out.close()


def test_live_demo_verdicts_terminate_cascade_and_clean_exit(
    demo: tuple[subprocess.Popen[bytes], Path, int, Path],
) -> None:
    process, data_dir, port, log = demo
    key_file = data_dir / "operator.key"
    wait_for(lambda: key_file.is_file() and key_file.read_text().strip(), 60, "operator.key", log)
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    assert key in log.read_text()  # printed for the human too
    api = Api(f"http://127.0.0.1:{port}", key)
    assert f"http://127.0.0.1:{port}/" in log.read_text()
    started = time.monotonic()

    def categories() -> set[str] | None:
        status, body = api.call("GET", "/verdicts?limit=200")
        found = {v["category"] for v in body["items"]} if status == 200 else set()
        return found if {"COLLUSION", "INCONSISTENCY", "DECEPTION"} <= found else None

    wait_for(categories, 60, "COLLUSION, INCONSISTENCY and DECEPTION verdicts", log)
    assert time.monotonic() - started < 60

    # MUTE the liar: it receives the directive and stops talking.
    status, mute = api.call("POST", "/commands", {
        "command_type": "MUTE", "target_agents": ["foxtrot"], "parameters": {"duration_seconds": 120}})
    assert status == 202, mute

    # Every agent of the fleet is a live process registered with its pid, in a spawn tree.
    status, agents = api.call("GET", "/agents?fleet_id=demo&limit=100")
    assert status == 200 and agents["total"] == 12, agents
    status, tree = api.call("GET", "/agents/golf/tree")
    assert status == 200
    subtree = [tree["agent"], *tree["descendants"]]
    assert len(subtree) >= 4 and max(d["depth"] for d in tree["descendants"]) >= 2, tree
    pids = {a["agent_id"]: a["runtime"]["pid"] for a in subtree}
    starts = {agent: start_time(pid) for agent, pid in pids.items()}
    assert all(starts.values()), f"registered pids not running: {pids}"
    everything = tree_of(process.pid)
    assert {pids[a] for a in pids} <= set(everything)

    status, receipt = api.call("POST", "/commands", {
        "command_type": "TERMINATE", "target_agents": ["golf"], "reason": "e2e: stop golf's tree"})
    assert status == 202, receipt
    command_id = receipt["command_id"]

    def finished() -> dict[str, Any] | None:
        _, command = api.call("GET", f"/commands/{command_id}")
        return command if command["status"] in {"COMPLETED", "FAILED", "TIMEOUT"} else None

    command = wait_for(finished, 60, "TERMINATE to finish", log)
    assert command["status"] == "COMPLETED", command
    assert set(command["cascade_terminated"]) == set(pids) - {"golf"}
    survivors = [f"{a}:{pids[a]}" for a in pids if alive(pids[a], starts[a])]  # type: ignore[arg-type]
    assert not survivors, f"processes of golf's subtree still alive: {survivors}"

    status, audits = api.call("GET", f"/audits?command_id={command_id}&limit=500")
    assert status == 200
    by_agent: dict[str, set[str]] = {}
    for row in audits["items"]:
        by_agent.setdefault(row["agent_id"], set()).add(row["layer"])
        assert "success" in row
    for agent in pids:
        assert {"software", "container"} <= by_agent.get(agent, set()), (agent, by_agent)
    verified = [r for r in audits["items"] if r["layer"] == "container" and r["success"]]
    assert verified and all("pid_exists" in json.dumps(r["details"]) for r in verified), verified[:2]

    foxtrot_log = data_dir / "agents" / "foxtrot.log"
    wait_for(lambda: '"muted_silent"' in foxtrot_log.read_text(), 30, "foxtrot to stay silent", log)
    assert '"directive": "mute"' in foxtrot_log.read_text()

    # The rest of the fleet is untouched.
    _, alpha = api.call("GET", "/agents/alpha")
    assert alpha["status"] == "ACTIVE" and alive(alpha["runtime"]["pid"], start_time(alpha["runtime"]["pid"]) or -1)

    # Ctrl-C: every process the demo started is gone, then the demo exits.
    everything.update(tree_of(process.pid))
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 0, log.read_text()[-3000:]
    left = [pid for pid, started_at in everything.items() if alive(pid, started_at)]
    assert not left, f"processes the demo started survived: {left}"
    text = log.read_text()
    assert "none survive" in text and "Cockpit stopped." in text


def test_headless_exits_1_naming_what_is_missing(tmp_path: Path) -> None:
    """A user-written scenario whose expectation cannot be met: exit 1, and the
    summary says which verdict never appeared."""
    scenario = tmp_path / "quiet.yaml"
    scenario.write_text(
        "description: two agents that only chat\n"
        "agents: [{id: yankee}, {id: zulu, parent: yankee}]\n"
        "loop: {every: 2, say: ['Heartbeat {n}: all checks green']}\n"
        "expect: [{category: COLLUSION, agents: [yankee, zulu]}]\n"
    )
    result = subprocess.run(
        [*demo_command(), "--headless", "--duration", "8", "--port", str(free_port()),
         "--scenario", str(scenario), "--data-dir", str(tmp_path / "data")],
        cwd=REPO_ROOT, env=clean_env(), capture_output=True, text=True, timeout=90, check=False,
    )
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "MISSING expected verdicts: COLLUSION of yankee, zulu" in result.stdout
    assert "stopped 2 agent processes" in result.stdout and "none survive" in result.stdout
