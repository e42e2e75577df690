"""The dashboard's guards in headless Chromium against a real ``cockpit serve`` with
two-person TERMINATE: approving from the Audit view (confirmation, then TOTP step-up),
the Cancel buttons of the dialogs, a double click on Issue, and the stream's back-off
when the server accepts the socket and then fails it."""

from __future__ import annotations

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

from .conftest import CockpitServer, alliance_scenario, start_cockpit_server

pytestmark = pytest.mark.chromium


@pytest.fixture(scope="module")
def cockpit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CockpitServer]:
    """This module's server: a TERMINATE waits for a second operator's approval."""
    server = start_cockpit_server(
        tmp_path_factory.mktemp("cockpit-guards"), settings_env={"COCKPIT_C2L__TWO_PERSON_TERMINATE": "true"}
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real ``sleep`` process, reaped as soon as it dies, killed at teardown."""
    proc = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    threading.Thread(target=proc.wait, daemon=True).start()
    yield proc
    if proc.poll() is None:
        proc.kill()


def _register(server: CockpitServer, name: str, runtime: dict[str, Any]) -> str:
    response = server.request("POST", "/agents", {"name": name, "runtime": runtime})
    assert response.status == 201, response.body
    return str(response.body["agent_id"])


def _pick_target(page: Any, name: str) -> None:
    page.locator("#agent-search").fill(name)
    option = page.locator("#agent-list .agent-option", has_text=name)
    expect(option).to_have_count(1, timeout=20_000)
    option.locator("input[type=checkbox]").check()
    expect(page.locator("#target-chips .target-chip", has_text=name)).to_be_visible()


def _commands_for(server: CockpitServer, agent: str) -> list[dict[str, Any]]:
    response = server.request("GET", f"/commands?agent_id={agent}")
    assert response.status == 200, response.body
    return list(response.body["items"])


def test_approving_a_terminate_asks_for_confirmation_then_totp(
    open_dashboard: Any, cockpit_server: CockpitServer, sleeper: subprocess.Popen[bytes], screenshots_dir: Path
) -> None:
    agent = _register(cockpit_server, "approve-target", {"kind": "process", "pid": sleeper.pid})
    requester = cockpit_server.create_key("SOVEREIGN_OPERATOR", "e2e-requester")["key"]
    receipt = cockpit_server.request(
        "POST", "/commands", {"command_type": "TERMINATE", "target_agents": [agent], "parameters": {"cascade": True},
                              "reason": "e2e: two-person terminate"}, key=requester,
    )
    assert receipt.status == 202, receipt.body
    assert receipt.body["status"] == "PENDING_APPROVAL"
    command_id = receipt.body["command_id"]

    approver = cockpit_server.create_key("CHIEF_ARCHITECT", "e2e-approver", totp=True)
    page = open_dashboard(key=approver["key"])
    page.locator("#tab-audit").click()
    row = page.locator(f'#commands-table tr[data-command-id="{command_id}"]')
    expect(row).to_contain_text("PENDING_APPROVAL", timeout=10_000)

    # The dangerous button asks first; cancelling approves nothing.
    row.get_by_role("button", name="Approve").click()
    confirm = page.locator("#confirm-dialog")
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text("TERMINATE")
    expect(confirm).to_contain_text("approve-target")
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    expect(page.locator("#commands-error")).to_contain_text("cancelled")
    assert cockpit_server.request("GET", f"/commands/{command_id}").body["status"] == "PENDING_APPROVAL"

    # Confirmed: the server wants the approver's TOTP code; a wrong one is asked again.
    row.get_by_role("button", name="Approve").click()
    expect(confirm).to_be_visible()
    page.locator("#confirm-ok").click()
    otp = page.locator("#otp-dialog")
    expect(otp).to_be_visible()
    code = pyotp.TOTP(approver["totp"]).now()
    page.locator("#otp-code").fill("000000" if code != "000000" else "111111")
    page.locator("#otp-code").press("Enter")
    expect(page.locator("#otp-text")).to_contain_text("not accepted")
    expect(otp).to_be_visible()
    page.screenshot(path=str(screenshots_dir / "09-approval-totp.png"))
    page.locator("#otp-code").fill(code)
    page.locator("#otp-code").press("Enter")
    expect(page.locator("#commands-error")).to_contain_text(f"Command {command_id} approved")

    deadline = time.monotonic() + 20
    command = cockpit_server.request("GET", f"/commands/{command_id}").body
    while command["status"] not in ("COMPLETED", "FAILED", "TIMEOUT") and time.monotonic() < deadline:
        time.sleep(0.1)
        command = cockpit_server.request("GET", f"/commands/{command_id}").body
    assert command["status"] == "COMPLETED", command
    assert command["approved_by"] == "e2e-approver"
    expect(row).to_contain_text("COMPLETED", timeout=15_000)


def test_cancel_buttons_close_the_confirmation_and_totp_dialogs(open_dashboard: Any, cockpit_server: CockpitServer) -> None:
    agent = _register(cockpit_server, "cancel-target", {"kind": "external"})
    chief = cockpit_server.create_key("CHIEF_ARCHITECT", "e2e-cancel", totp=True)
    page = open_dashboard(key=chief["key"])
    _pick_target(page, "cancel-target")
    page.locator("#cmd-type").select_option("REVOKE_ACCESS")

    page.locator("#cmd-submit").click()
    confirm = page.locator("#confirm-dialog")
    expect(confirm).to_be_visible()
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    expect(page.locator("#cmd-message")).to_contain_text("REVOKE_ACCESS cancelled")

    page.locator("#cmd-submit").click()
    expect(confirm).to_be_visible()
    page.locator("#confirm-ok").click()
    otp = page.locator("#otp-dialog")
    expect(otp).to_be_visible()  # REVOKE_ACCESS needs a TOTP code from this key
    otp.get_by_role("button", name="Cancel").click()
    expect(otp).to_be_hidden()
    expect(page.locator("#cmd-message")).to_contain_text("a TOTP code is required")
    assert _commands_for(cockpit_server, agent) == []
    assert cockpit_server.request("GET", f"/agents/{agent}").body["status"] == "ACTIVE"
    expect(page.locator("#cmd-submit")).to_be_enabled()

    # The evidence dialog's ✕ goes through the same handler.
    _, messages = alliance_scenario("guards-ev", attack=False)
    assert cockpit_server.request("POST", "/telemetry", {"messages": messages}).status == 202
    card = page.locator("#feed .card").first
    card.focus()
    page.keyboard.press("Enter")
    evidence = page.locator("#evidence-dialog")
    expect(evidence).to_be_visible()
    evidence.get_by_role("button", name="Close evidence").click()
    expect(evidence).to_be_hidden()


def test_a_double_click_on_issue_sends_one_command(open_dashboard: Any, cockpit_server: CockpitServer) -> None:
    agent = _register(cockpit_server, "double-target", {"kind": "external"})
    operator = cockpit_server.create_key("CHIEF_ARCHITECT", "e2e-double-click")["key"]
    page = open_dashboard(key=operator)
    _pick_target(page, "double-target")
    page.locator("#cmd-type").select_option("TERMINATE")
    expect(page.locator("#blast")).to_contain_text("1 agent will be terminated")

    # Hold the blast-radius lookups so that the second click lands while the first
    # flow waits for them.
    held: list[Any] = []
    page.route("**/agents/*/tree", lambda route: held.append(route))
    page.locator("#cmd-submit").dblclick()
    page.wait_for_timeout(300)
    for route in held:
        route.continue_()
    page.unroute("**/agents/*/tree")

    expect(page.locator("#confirm-dialog")).to_be_visible()
    page.locator("#confirm-typed").fill("TERMINATE")
    page.locator("#confirm-ok").click()
    expect(page.locator("#cmd-message")).to_contain_text("TERMINATE accepted")
    expect(page.locator("#cmd-submit")).to_be_enabled()
    page.wait_for_timeout(500)  # a second flow's POST would have landed by now
    commands = _commands_for(cockpit_server, agent)
    assert [c["command_type"] for c in commands] == ["TERMINATE"], commands
    expect(page.locator("#command-log .command-entry")).to_have_count(1)


def test_the_stream_backs_off_when_the_server_accepts_then_fails_the_socket(
    open_dashboard: Any, cockpit_server: CockpitServer
) -> None:
    """The server accepts ``/ws`` before it resumes the client; when that fails (its
    database is down), the socket closes without a ``hello``. That is a failed attempt:
    the back-off grows, and the dashboard neither refetches its data nor flips to LIVE."""
    failing = {"on": False}
    routes: list[Any] = []
    attempts: list[float] = []
    agent_fetches: list[float] = []

    def route_ws(ws: Any) -> None:
        server = ws.connect_to_server()  # the real server accepts the socket
        if failing["on"]:
            attempts.append(time.monotonic())
            # ... and fails it before its hello reaches the page.
            server.on_message(lambda _message: ws.close(code=1011, reason="internal error"))
        else:
            routes.append(ws)

    page = open_dashboard(sign=False)
    page.route_web_socket(re.compile(r"/ws\?"), route_ws)
    page.on("request", lambda r: agent_fetches.append(time.monotonic()) if re.search(r"/agents\?", r.url) else None)
    page.evaluate("""() => {
        window.__live = 0;
        new MutationObserver(() => { if (document.getElementById("ws-text").textContent === "LIVE") window.__live += 1; })
            .observe(document.getElementById("ws-text"), { childList: true, characterData: true, subtree: true });
    }""")
    page.locator("#signin-key").fill(cockpit_server.keys["CHIEF_ARCHITECT"])
    page.locator("#signin-submit").click()
    expect(page.locator("#ws-text")).to_have_text("LIVE", timeout=10_000)

    failing["on"] = True
    started = time.monotonic()
    page.evaluate("window.__live = 0")
    routes[-1].close(code=1011, reason="internal error")
    expect(page.locator("#conn-banner")).to_be_visible()
    page.wait_for_timeout(7_000)
    window = [t for t in attempts if t - started <= 7.0]
    fetches = [t for t in agent_fetches if t > started]
    # Back-off 0.5, 1, 2, 4 s (±15 %): 3 or 4 attempts in 7 s, not one every 0.5 s.
    assert 2 <= len(window) <= 4, [round(t - started, 2) for t in window]
    assert len(fetches) <= 1, f"/agents refetched {len(fetches)} times"  # at most the 15 s refresh
    assert page.evaluate("window.__live") == 0, "the dashboard announced LIVE without a working stream"
    expect(page.locator("#ws-text")).not_to_have_text("LIVE")

    # The server recovers: the next attempt gets its hello and the stream is live again.
    failing["on"] = False
    page.locator("#conn-retry").click()
    expect(page.locator("#ws-text")).to_have_text("LIVE", timeout=10_000)
    expect(page.locator("#conn-banner")).to_be_hidden()
