"""Verdict pages are served from a cache of wire forms keyed by each row's version:
whatever changes a verdict (new evidence, a status change, another replica's write)
shows on the next page, however often the page was read before."""

from __future__ import annotations

from typing import Any

from cockpit.events.verdict import Category, Severity, VerdictDrafted
from cockpit.platform.metrics import Metrics
from cockpit.verdict.service import VerdictEngine, VerdictFilters
from tests.integration.gateway.conftest import Harness


def draft(n: int, evidence: list[str], severity: Severity = Severity.HIGH) -> VerdictDrafted:
    return VerdictDrafted(
        fingerprint=f"page-{n}", fleet_id="pages", category=Category.THREAT, severity=severity,
        title=f"agent-{n} attempted credential theft", agents_involved=[f"agent-{n}"],
        evidence_chain=evidence, confidence=0.8, recommended_action="MUTE",
    )


async def page(h: Harness, **params: Any) -> list[dict[str, Any]]:
    r = await h.client.get("/verdicts", params={"limit": 50, **params}, headers=h.headers("VIEWER"))
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


async def test_a_page_shows_every_change_to_its_verdicts(harness: Harness) -> None:
    h = harness
    engine = h.cockpit.verdicts
    for n in range(3):
        await engine.on_draft(draft(n, [f"m-{n}-0"]))
    first = await page(h)
    assert [v["title"] for v in first] == [f"agent-{n} attempted credential theft" for n in (2, 1, 0)]
    assert await page(h) == first  # read again: the same answer

    # New evidence moves agent-0's verdict to the top, with its evidence extended.
    await engine.on_draft(draft(0, ["m-0-0", "m-0-1"], Severity.CRITICAL))
    after = await page(h)
    assert after[0]["agents_involved"] == ["agent-0"]
    assert after[0]["evidence_chain"] == ["m-0-0", "m-0-1"] and after[0]["severity"] == "CRITICAL"
    # The page serves what the engine announced for its own write: exactly the stored verdict.
    assert after[0] == (await h.client.get(f"/verdicts/{after[0]['id']}", headers=h.headers("VIEWER"))).json()

    # An operator's status change shows at once.
    dismissed = next(v["id"] for v in after if v["agents_involved"] == ["agent-2"])
    r = await h.client.patch(f"/verdicts/{dismissed}", json={"status": "DISMISSED"}, headers=h.headers())
    assert r.status_code == 200
    assert {v["id"]: v["status"] for v in await page(h)}[dismissed] == "DISMISSED"
    assert next(v for v in await page(h) if v["id"] == dismissed) == r.json()

    # Another replica's write (its own engine, the same database) shows too.
    other = VerdictEngine(h.cockpit.db, h.cockpit.bus, Metrics())
    await other.on_draft(draft(1, ["m-1-0", "m-1-9"]))
    latest = {v["agents_involved"][0]: v for v in await page(h)}
    assert latest["agent-1"]["evidence_chain"] == ["m-1-0", "m-1-9"]
    assert latest["agent-1"] == (await h.client.get(f"/verdicts/{latest['agent-1']['id']}",
                                                    headers=h.headers("VIEWER"))).json()
    # Filters and paging still come from the database.
    assert [v["id"] for v in await page(h, status="DISMISSED")] == [dismissed]
    assert len(await page(h, offset=2)) == 1


async def test_a_cache_smaller_than_the_page_still_serves_the_whole_page(harness: Harness) -> None:
    h = harness
    engine = VerdictEngine(h.cockpit.db, h.cockpit.bus, Metrics(), wire_cache=2)
    for n in range(5):
        await engine.on_draft(draft(n, [f"m-{n}"]))
    items, total = await engine.list(VerdictFilters(limit=50))
    assert total == 5 and [v["evidence_chain"] for v in items] == [[f"m-{n}"] for n in (4, 3, 2, 1, 0)]
    again, _ = await engine.list(VerdictFilters(limit=50))
    assert again == items


def named(n: int, agents: list[str], evidence: list[str], target: str | None = None) -> VerdictDrafted:
    return VerdictDrafted(
        fingerprint=f"named-{n}", fleet_id="pages", category=Category.COLLUSION, severity=Severity.MEDIUM,
        title=f"situation {n}", agents_involved=agents, target=target, evidence_chain=evidence,
        confidence=0.7, recommended_action="MONITOR",
    )


async def test_an_agents_page_is_newest_first_through_every_change(harness: Harness) -> None:
    """``?agent_id=`` lists the verdicts naming the agent (involved or target), ordered
    by their last change: new evidence and a status change move a verdict to the top,
    as they do on the unfiltered page, and filters combine with it."""
    h = harness
    engine = h.cockpit.verdicts
    await engine.on_draft(named(0, ["ana", "bo"], ["m-0"]))
    await engine.on_draft(named(1, ["cy", "dee"], ["m-1"], target="ana"))
    await engine.on_draft(named(2, ["ana", "eve"], ["m-2"]))
    await engine.on_draft(named(3, ["bo", "cy"], ["m-3"]))  # does not name ana

    def titles(items: list[dict[str, Any]]) -> list[str]:
        return [v["title"] for v in items]

    assert titles(await page(h, agent_id="ana")) == ["situation 2", "situation 1", "situation 0"]
    await engine.on_draft(named(0, ["ana", "bo"], ["m-0", "m-0b"]))  # new evidence
    assert titles(await page(h, agent_id="ana")) == ["situation 0", "situation 2", "situation 1"]
    assert titles(await page(h, agent_id="bo")) == ["situation 0", "situation 3"]

    situation_1 = next(v["id"] for v in await page(h, agent_id="ana") if v["title"] == "situation 1")
    r = await h.client.patch(f"/verdicts/{situation_1}", json={"status": "DISMISSED"}, headers=h.headers())
    assert r.status_code == 200, r.text
    ana = await page(h, agent_id="ana")
    assert titles(ana) == ["situation 1", "situation 0", "situation 2"]
    assert ana[0]["status"] == "DISMISSED" and ana == [
        v for v in await page(h) if v["title"] in {"situation 0", "situation 1", "situation 2"}]

    assert titles(await page(h, agent_id="ana", status="ACTIVE")) == ["situation 0", "situation 2"]
    assert titles(await page(h, agent_id="ana", offset=1)) == ["situation 0", "situation 2"]
    r = await h.client.get("/verdicts", params={"agent_id": "ana", "limit": 1}, headers=h.headers("VIEWER"))
    assert r.json()["total"] == 3 and len(r.json()["items"]) == 1
    r = await h.client.get("/verdicts", params={"agent_id": "ana", "status": "ACTIVE"}, headers=h.headers("VIEWER"))
    assert r.json()["total"] == 2
    since = ana[1]["updated_at"]  # situation 0's last change: it and what changed after
    assert titles(await page(h, agent_id="ana", since=since)) == ["situation 1", "situation 0"]
    assert await page(h, agent_id="nobody") == []
