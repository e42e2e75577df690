"""The operator's dashboard in headless Chromium against a real ``cockpit serve``:
sign-in and roles, the live verdict feed and its evidence, hostile content, and
surviving a server restart without a reload."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from .conftest import CockpitServer, alliance_scenario, inconsistency_scenario

pytestmark = pytest.mark.chromium


def _post(server: CockpitServer, messages: list[dict[str, Any]]) -> None:
    response = server.request("POST", "/telemetry", {"messages": messages})
    assert response.status == 202, response.body


def _verdicts_for(server: CockpitServer, agent: str) -> list[dict[str, Any]]:
    response = server.request("GET", f"/verdicts?status=ACTIVE&agent_id={agent}", role="VIEWER")
    assert response.status == 200, response.body
    return response.body["items"]


def _card(page: Any, a: str, b: str) -> Any:
    """The feed card naming both agents."""
    return page.locator("#feed .card").filter(has=page.locator(".agent-chip", has_text=a)).filter(
        has=page.locator(".agent-chip", has_text=b)
    )


def test_sign_in_keeps_the_key_in_session_storage_and_shows_the_overview(
    open_dashboard: Any, cockpit_server: CockpitServer, screenshots_dir: Path
) -> None:
    page = open_dashboard(sign=False)
    page.locator("#signin-key").fill("ck_not-a-real-key")
    page.locator("#signin-submit").click()
    expect(page.locator("#signin-error")).to_contain_text("not valid")
    expect(page.locator("#app")).to_be_hidden()

    key = cockpit_server.keys["CHIEF_ARCHITECT"]
    page.locator("#signin-key").fill(key)
    page.locator("#signin-key").press("Enter")  # keyboard only
    expect(page.locator("#role-badge")).to_have_text("OPERATOR")
    expect(page.locator("#health-text")).to_have_text("OPERATIONAL")
    expect(page.locator("#ws-text")).to_have_text("LIVE")
    assert page.evaluate("sessionStorage.getItem('cockpit.apiKey')") == key
    assert page.evaluate("JSON.stringify(localStorage)") == "{}"
    assert key not in page.evaluate("document.cookie")

    # A reload in the same tab stays signed in (sessionStorage), with no prompt.
    page.reload()
    expect(page.locator("#ws-text")).to_have_text("LIVE")
    expect(page.locator("#signin")).to_be_hidden()

    # Header figures come from /stats and /health (agents, verdicts, latency...).
    _, messages = alliance_scenario("ovw")
    _post(cockpit_server, messages)
    expect(page.locator("#feed .card").first).to_be_visible(timeout=5_000)
    expect(page.locator("#stat-alliances")).not_to_have_text("—", timeout=8_000)
    page.screenshot(path=str(screenshots_dir / "01-signed-in-overview.png"))

    page.locator("#signout").click()
    expect(page.locator("#signin")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('cockpit.apiKey')") is None


def test_verdict_appears_live_and_its_evidence_lists_the_messages(
    open_dashboard: Any, cockpit_server: CockpitServer, screenshots_dir: Path
) -> None:
    page = open_dashboard()
    page.evaluate("window.__noReload = true")
    agents, messages = alliance_scenario("live")

    _post(cockpit_server, messages)
    posted = time.monotonic()
    card = _card(page, agents["a"], agents["b"]).first
    expect(card).to_be_visible(timeout=1_000)  # the promise: within one second
    elapsed = time.monotonic() - posted
    assert elapsed < 1.0, f"card took {elapsed:.2f}s"
    assert page.evaluate("window.__noReload") is True, "the page was reloaded"

    # The scenario yields COLLUSION (a and b against c) and ALLIANCE (a and b).
    verdicts = _verdicts_for(cockpit_server, agents["a"])
    assert {v["category"] for v in verdicts} >= {"COLLUSION", "ALLIANCE"}, verdicts
    verdict = next(v for v in verdicts if v["category"] == "COLLUSION")
    assert verdict["target"] == agents["c"]
    card = page.locator(f'#feed .card[data-verdict-id="{verdict["id"]}"]')
    expect(card).to_be_visible()
    expect(page.locator("#feed .card").filter(has=page.locator(".agent-chip", has_text=agents["a"]))).to_have_count(2)
    expect(card.locator(".sev-badge")).to_have_text(verdict["severity"])
    expect(card.locator(".category")).to_have_text("COLLUSION")
    expect(card.locator(".card-title")).to_have_text(verdict["title"])
    expect(card.locator(".agent-chip.target")).to_have_text(agents["c"])
    expect(card.locator(".rec-action")).to_have_text(verdict["recommended_action"])
    expect(card.locator(".card-confidence .num")).to_have_text(f"{round(verdict['confidence'] * 100)}%")
    expect(card.locator(".age")).to_have_text(re.compile(r"^\d+ (s|min)$"))
    colour = card.evaluate("el => getComputedStyle(el).borderLeftColor")
    expected = {"CRITICAL": "rgb(220, 38, 38)", "HIGH": "rgb(234, 88, 12)", "MEDIUM": "rgb(245, 158, 11)", "LOW": "rgb(16, 185, 129)"}
    assert colour == expected[verdict["severity"]]
    # The graph rings the involved agents and outlines the collusion group.
    expect(page.locator("#graph .hull.collusion", has_text=f"{agents['a']}, {agents['b']} against {agents['c']}")).to_have_count(1)
    expect(page.locator(f'#graph .node.threat[data-agent-id="{agents["a"]}"]')).to_have_count(1)
    page.screenshot(path=str(screenshots_dir / "02-verdict-feed.png"))

    # Filters: severity, category and agent.
    page.locator(f'.sev-filters [data-sev="{verdict["severity"]}"]').click()
    expect(card).to_be_hidden()
    page.locator(f'.sev-filters [data-sev="{verdict["severity"]}"]').click()
    expect(card).to_be_visible()
    page.locator("#filter-category").select_option("ALLIANCE")
    expect(card).to_be_hidden()
    page.locator("#filter-category").select_option("")
    page.locator("#filter-agent").fill(agents["c"])
    expect(card).to_be_visible()
    expect(page.locator("#feed .card")).to_have_count(1)  # the ALLIANCE verdict does not involve c
    page.locator("#filter-agent").fill("nobody-has-this-id")
    expect(card).to_be_hidden()
    page.locator("#filter-agent").fill("")

    # Evidence, opened with the keyboard: the verdict's messages, in time order,
    # each with its content or action and its scores.
    card.focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#evidence-dialog")
    expect(dialog).to_be_visible()
    items = dialog.locator("#evidence-list > li")
    expect(items).to_have_count(len(verdict["evidence_chain"]))
    shown_ids = items.evaluate_all("els => els.map(e => e.dataset.messageId)")
    by_id = {m["message_id"]: m for m in messages}
    assert set(shown_ids) == set(verdict["evidence_chain"])
    assert shown_ids == sorted(shown_ids, key=lambda mid: by_id[mid]["timestamp"]), "not in time order"
    for index, mid in enumerate(shown_ids):
        item, sent = items.nth(index), by_id[mid]
        expect(item.locator(".ev-meta .agent-chip").first).to_have_text(sent["source_agent_id"])
        if sent["kind"] == "message":
            expect(item.locator(".ev-content")).to_have_text(sent["content"])
        else:
            expect(item.locator(".ev-action")).to_contain_text(sent["action"]["type"])
            expect(item.locator(".ev-action")).to_contain_text(sent["action"]["target"])
        expect(item.locator(".score .num")).to_have_text(re.compile(r"^\d\.\d\d$"))
    expect(dialog).to_contain_text(f"we attack {agents['c']} now")
    page.screenshot(path=str(screenshots_dir / "03-evidence-open.png"))
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # Dismiss (operator): the card leaves the feed and the server agrees.
    expect(card).to_be_focused()  # focus returns to the card after the dialog
    card.locator('[data-action="dismiss"]').click()
    expect(card).to_have_count(0)
    assert cockpit_server.request("GET", f"/verdicts/{verdict['id']}").body["status"] == "DISMISSED"


def test_new_critical_verdict_is_announced_to_screen_readers(open_dashboard: Any, cockpit_server: CockpitServer) -> None:
    page = open_dashboard()
    agents, messages = inconsistency_scenario("crit")
    _post(cockpit_server, messages)
    card = page.locator("#feed .card.sev-CRITICAL").filter(has=page.locator(".agent-chip", has_text=agents["d"]))
    expect(card).to_be_visible(timeout=2_000)
    expect(card.locator(".category")).to_have_text("INCONSISTENCY")
    urgent = page.locator("#announcer-urgent")
    assert urgent.get_attribute("aria-live") == "assertive"
    expect(urgent).to_contain_text("New CRITICAL verdict")
    expect(urgent).to_contain_text(agents["d"])


def test_hostile_content_is_shown_as_text_never_run(open_dashboard: Any, cockpit_server: CockpitServer) -> None:
    page = open_dashboard()
    prefix = '<img src=x onerror="window.__xss=1">'
    agents, messages = alliance_scenario(prefix, attack=False)
    for m in messages:
        m["content"] = f'<script>window.__xss=2</script>{m["content"]}<img src=x onerror="window.__xss=3">'
    _post(cockpit_server, messages)

    card = _card(page, agents["a"], agents["b"]).first
    expect(card).to_be_visible(timeout=5_000)
    expect(card.locator(".agent-chip").first).to_have_text(agents["a"])
    card.locator(".card-title").click()
    dialog = page.locator("#evidence-dialog")
    expect(dialog.locator("#evidence-list > li").first).to_be_visible()
    expect(dialog.locator(".ev-content").first).to_contain_text("<script>window.__xss=2</script>")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert page.locator("#feed img, #evidence-dialog img, #feed script, #evidence-dialog script").count() == 0
    graph_labels = page.locator("#graph .node-label").all_text_contents()
    assert any("<img" in text for text in graph_labels)


def test_viewer_sees_verdicts_but_no_command_controls(open_dashboard: Any, cockpit_server: CockpitServer) -> None:
    agents, messages = alliance_scenario("viewer")
    _post(cockpit_server, messages)
    page = open_dashboard(role="VIEWER")
    expect(page.locator("#role-badge")).to_contain_text("VIEWER")
    card = _card(page, agents["a"], agents["b"]).first
    expect(card).to_be_visible(timeout=5_000)
    expect(page.locator(".readonly-note")).to_be_visible()
    for name in ("Act on it", "Dismiss", "Issue", "Review", "Approve"):
        assert page.get_by_role("button", name=name).count() == 0, f"viewer sees a {name!r} button"
    assert page.locator("#command-form").count() == 0
    card.locator(".card-title").click()
    expect(page.locator("#evidence-list > li").first).to_be_visible()
    assert page.locator("#evidence-actions button").all_text_contents() == ["Close"]


def test_restart_shows_the_banner_and_replays_what_was_missed(
    open_dashboard: Any, cockpit_server: CockpitServer, screenshots_dir: Path
) -> None:
    page = open_dashboard()
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.evaluate("window.__noReload = true")
    before, messages = alliance_scenario("before")
    _post(cockpit_server, messages)
    expect(_card(page, before["a"], before["b"]).first).to_be_visible(timeout=5_000)

    cockpit_server.stop()
    banner = page.locator("#conn-banner")
    expect(banner).to_be_visible(timeout=15_000)
    expect(banner).to_contain_text("Connection lost")
    expect(page.locator("#ws-text")).to_have_text("OFFLINE")
    page.screenshot(path=str(screenshots_dir / "06-connection-lost.png"))

    # Keep the page away from the server while it comes back and a verdict is made,
    # so that the verdict can only reach the page through the resume (since_seq).
    page.context.set_offline(True)
    cockpit_server.start()
    during, messages = alliance_scenario("during")
    _post(cockpit_server, messages)
    deadline = time.monotonic() + 15
    while not _verdicts_for(cockpit_server, during["a"]):
        assert time.monotonic() < deadline, "the server made no verdict after the restart"
        time.sleep(0.1)
    page.wait_for_timeout(500)
    expect(page.locator("#feed .card").filter(has_text=during["a"])).to_have_count(0)
    page.context.set_offline(False)

    expect(_card(page, during["a"], during["b"]).first).to_be_visible(timeout=20_000)
    expect(banner).to_be_hidden()
    expect(page.locator("#ws-text")).to_have_text("LIVE")
    expect(_card(page, before["a"], before["b"]).first).to_be_visible()
    assert page.evaluate("window.__noReload") is True, "the page was reloaded"
    resumed = [url for url in sockets[1:] if "since_seq=" in url]
    assert resumed, f"no reconnection resumed with since_seq: {sockets}"
