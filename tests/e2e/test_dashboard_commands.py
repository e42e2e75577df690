"""The command console and the audit view in headless Chromium against a real
``cockpit serve``: MUTE of a real process with its per-layer outcome, TERMINATE
with blast radius, confirmation and TOTP step-up, rate-limit refusals, and the
hash-chained audit trail."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.sync_api import expect

from .conftest import CockpitServer, alliance_scenario

pytestmark = pytest.mark.chromium


@pytest.fixture
def sleeper() -> Iterator[Any]:
    """``sleeper()`` -> a real ``sleep`` process, reaped as soon as it dies (so a
    terminated agent is really gone, not a zombie), killed at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def spawn() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        threading.Thread(target=proc.wait, daemon=True).start()
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()


def _register(server: CockpitServer, name: str, runtime: dict[str, Any], parent: str | None = None) -> str:
    body: dict[str, Any] = {"name": name, "runtime": runtime}
    if parent:
        body["parent_id"] = parent
    response = server.request("POST", "/agents", body)
    assert response.status == 201, response.body
    return str(response.body["agent_id"])


def _pick_target(page: Any, name: str) -> None:
    """Choose a target in the console's agent list (keyboard-operable checkboxes)."""
    page.locator("#agent-search").fill(name)
    option = page.locator("#agent-list .agent-option", has_text=name)
    expect(option).to_have_count(1, timeout=20_000)  # the list refreshes from GET /agents
    option.locator("input[type=checkbox]").check()
    expect(page.locator("#target-chips .target-chip", has_text=name)).to_be_visible()


def _entry(page: Any, command_type: str) -> Any:
    return page.locator("#command-log .command-entry").filter(has_text=command_type).first


def test_mute_from_the_console_completes_with_its_layer(
    open_dashboard: Any, cockpit_server: CockpitServer, sleeper: Any, screenshots_dir: Path
) -> None:
    proc = sleeper()
    agent_id = _register(cockpit_server, "mute-target", {"kind": "process", "pid": proc.pid})
    page = open_dashboard()
    page.locator("#agent-list").wait_for()
    _pick_target(page, "mute-target")
    page.locator("#cmd-type").select_option("MUTE")
    page.locator("#p-duration").fill("120")
    page.locator("#cmd-reason").fill("e2e: mute from the console")
    page.locator("#cmd-submit").click()

    entry = _entry(page, "MUTE")
    expect(entry.locator(".status")).to_have_text("COMPLETED", timeout=10_000)
    layer = entry.locator('.layers [data-layer="software"]').first
    expect(layer).to_be_visible()
    expect(layer.locator(".ok-mark.yes")).to_have_text("✓")
    expect(page.locator("#cmd-message")).to_contain_text("MUTE accepted")
    # The graph and the list follow the agent's new status.
    expect(page.locator(f'#graph .node[data-agent-id="{agent_id}"]')).to_have_class(
        re.compile(r"\bst-MUTED\b"), timeout=20_000
    )
    page.screenshot(path=str(screenshots_dir / "04-command-console-result.png"))

    agent = cockpit_server.request("GET", f"/agents/{agent_id}").body
    assert agent["status"] == "MUTED"
    assert proc.poll() is None, "MUTE must not kill the process"


def test_terminate_shows_blast_radius_confirms_and_asks_for_totp(
    open_dashboard: Any, cockpit_server: CockpitServer, sleeper: Any, screenshots_dir: Path
) -> None:
    parent_proc, child_proc = sleeper(), sleeper()
    parent = _register(cockpit_server, "tree-root", {"kind": "process", "pid": parent_proc.pid})
    child = _register(cockpit_server, "tree-child", {"kind": "process", "pid": child_proc.pid}, parent=parent)
    chief = cockpit_server.create_key("CHIEF_ARCHITECT", "e2e-totp-chief", totp=True)
    page = open_dashboard(key=chief["key"])
    _pick_target(page, "tree-root")
    page.locator("#cmd-type").select_option("TERMINATE")

    blast = page.locator("#blast")
    expect(blast).to_contain_text("2 agents will be terminated")
    expect(blast).to_contain_text("tree-child")
    page.locator("#cmd-submit").click()

    confirm = page.locator("#confirm-dialog")
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text("tree-child")
    ok = page.locator("#confirm-ok")
    expect(ok).to_be_disabled()
    page.locator("#confirm-typed").fill("TERMINATE")
    expect(ok).to_be_enabled()
    page.screenshot(path=str(screenshots_dir / "07-terminate-confirmation.png"))
    ok.click()

    otp = page.locator("#otp-dialog")
    expect(otp).to_be_visible()  # 401 + WWW-Authenticate: TOTP
    page.locator("#otp-code").fill(pyotp.TOTP(chief["totp"]).now())
    page.locator("#otp-code").press("Enter")

    entry = _entry(page, "TERMINATE")
    expect(entry.locator(".status")).to_have_text("COMPLETED", timeout=20_000)
    expect(entry).to_contain_text("Cascade terminated")
    expect(entry).to_contain_text(child[:12])
    deadline = time.monotonic() + 5
    while (parent_proc.poll() is None or child_proc.poll() is None) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert parent_proc.poll() is not None and child_proc.poll() is not None, "processes still running"


def test_cancelled_confirmation_sends_nothing(open_dashboard: Any, cockpit_server: CockpitServer) -> None:
    agent = _register(cockpit_server, "isolate-keep", {"kind": "external"})
    page = open_dashboard()
    _pick_target(page, "isolate-keep")
    page.locator("#cmd-type").select_option("ISOLATE")
    page.locator("#cmd-submit").click()
    expect(page.locator("#confirm-dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#cmd-message")).to_contain_text("cancelled")
    assert cockpit_server.request("GET", f"/agents/{agent}").body["status"] == "ACTIVE"


def test_rate_limit_and_unknown_agents_are_clear_messages(open_dashboard: Any, cockpit_server: CockpitServer) -> None:
    operator = cockpit_server.create_key("SOVEREIGN_OPERATOR", "e2e-rate-limited")["key"]
    agent = _register(cockpit_server, "rate-target", {"kind": "external"})
    accepted = 0
    for _ in range(30):
        response = cockpit_server.request(
            "POST", "/commands", {"command_type": "MUTE", "target_agents": [agent], "parameters": {"duration_seconds": 5}},
            key=operator,
        )
        if response.status == 429:
            break
        assert response.status in (200, 202), response.body
        accepted += 1
    else:
        pytest.fail("no 429 after 30 MUTE commands")
    page = open_dashboard(key=operator)
    _pick_target(page, "rate-target")
    page.locator("#cmd-type").select_option("MUTE")
    page.locator("#cmd-submit").click()
    message = page.locator("#cmd-message")
    expect(message).to_contain_text("Rate limit reached")
    expect(message).to_contain_text(re.compile(r"Try again in \d+ s"))

    # An agent that only exists in telemetry (not registered) is refused with its id.
    ghost = f"ghost-{os.getpid()}"
    cockpit_server.request("POST", "/telemetry", {"message_id": f"{ghost}-1", "source_agent_id": ghost, "kind": "message", "content": "hello"})
    other_page = open_dashboard(role="SOVEREIGN_OPERATOR")
    _pick_target(other_page, ghost)
    other_page.locator("#cmd-type").select_option("SNAPSHOT_STATE")
    other_page.locator("#cmd-submit").click()
    expect(other_page.locator("#cmd-message")).to_contain_text("rejected")
    expect(other_page.locator("#cmd-message")).to_contain_text(ghost)


def test_audit_view_lists_commands_rows_and_chain_status(
    open_dashboard: Any, cockpit_server: CockpitServer, screenshots_dir: Path
) -> None:
    agent = _register(cockpit_server, "audited", {"kind": "external"})
    receipt = cockpit_server.request(
        "POST", "/commands",
        {"command_type": "INJECT_CONSTRAINT", "target_agents": [agent], "parameters": {"constraint": "stay in your lane"}, "reason": "e2e audit"},
    )
    assert receipt.status == 202, receipt.body
    command_id = receipt.body["command_id"]
    deadline = time.monotonic() + 10
    while cockpit_server.request("GET", f"/commands/{command_id}").body["status"] not in ("COMPLETED", "FAILED") and time.monotonic() < deadline:
        time.sleep(0.1)

    page = open_dashboard(role="VIEWER")
    page.locator("#tab-audit").click()
    expect(page.locator("#chain-status")).to_contain_text("intact", timeout=10_000)
    row = page.locator(f'#commands-table tr[data-command-id="{command_id}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("INJECT_CONSTRAINT")
    expect(row).to_contain_text("COMPLETED")

    # Filtering the trail by command shows that command's layers only.
    row.locator("button.link").click()
    assert page.locator("#audit-filters [name=command_id]").input_value() == command_id
    rows = page.locator("#audit-table tbody tr[data-layer]")
    expect(page.locator(f'#audit-table tbody tr[data-layer]:not([data-command-id="{command_id}"])')).to_have_count(0)
    expect(rows.first).to_be_visible()
    layers = rows.evaluate_all("els => els.map(e => e.dataset.layer)")
    assert "software" in layers, layers
    page.locator("#audit-filters [name=command_id]").fill("")
    page.locator("#audit-filters [name=agent_id]").fill(agent)
    expect(page.locator(f'#audit-table tbody tr[data-layer]:not([data-agent-id="{agent}"])')).to_have_count(0)
    expect(rows.first).to_be_visible()
    # The layer filter.
    page.locator("#audit-filters [name=layer]").select_option("software")
    expect(page.locator('#audit-table tbody tr[data-layer]:not([data-layer="software"])')).to_have_count(0)
    page.locator("#audit-filters [name=layer]").select_option("")
    page.locator("#audit-filters [name=agent_id]").fill("")
    page.locator("#commands-filters [name=status]").focus()
    expect(page.locator("#audit-table tbody tr[data-layer]").nth(4)).to_be_visible()  # unfiltered again
    page.screenshot(path=str(screenshots_dir / "05-audit-view.png"))


def test_graph_click_selects_targets_and_act_on_it_prefills_the_console(
    open_dashboard: Any, cockpit_server: CockpitServer
) -> None:
    agents, messages = alliance_scenario("graph")
    assert cockpit_server.request("POST", "/telemetry", {"messages": messages}).status == 202
    page = open_dashboard()
    node = page.locator(f'#graph .node[data-agent-id="{agents["c"]}"]')
    expect(node).to_be_visible(timeout=5_000)
    node.locator(".dot").click()
    expect(page.locator("#target-chips .target-chip", has_text=agents["c"])).to_be_visible()
    expect(node).to_have_class(re.compile(r"\bselected\b"))
    expect(page.locator("#graph-info")).to_contain_text(agents["c"])

    card = page.locator("#feed .card").filter(has=page.locator(".agent-chip", has_text=agents["a"])).first
    verdict_title = card.locator(".card-title").inner_text()
    recommended = card.locator(".rec-action").inner_text()
    card.locator('[data-action="act"]').click()
    chips = page.locator("#target-chips .target-chip .chip-text").all_text_contents()
    assert agents["a"] in chips and agents["b"] in chips and agents["c"] not in chips
    expected_type = recommended if recommended in {"MUTE", "ISOLATE", "TERMINATE", "SNAPSHOT_STATE", "REVOKE_ACCESS", "INJECT_CONSTRAINT"} else "MUTE"
    assert page.locator("#cmd-type").input_value() == expected_type
    expect(page.locator("#cmd-reason")).to_have_value(re.compile(re.escape(verdict_title)))
    expect(page.locator("#cmd-verdict")).to_contain_text(verdict_title)
    expect(page.locator("#cmd-submit")).to_be_focused()
