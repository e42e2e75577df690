"""Shared pieces of the security tests: a Cockpit populated with one of everything
(agents, tokens, verdicts, commands, revoked credentials) and a log capture."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from cockpit.platform.auth import Role
from cockpit.settings import load_settings
from tests.integration.gateway.conftest import Harness, embedded, harness, make_harness

__all__ = ["embedded", "harness"]  # the gateway's fixtures, re-exported for these tests

TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT"}


@dataclass
class World:
    """A harness plus the credentials and resources every role is tried against."""

    h: Harness
    creds: dict[str, str | None] = field(default_factory=dict)
    #: the agent each agent credential belongs to
    own_agent: dict[str, str] = field(default_factory=dict)
    agent: str = "seed-agent"
    verdicts: list[str] = field(default_factory=list)
    command: str = ""
    #: TERMINATE commands waiting for a second operator, one per role that may approve
    pending: dict[str, str] = field(default_factory=dict)
    totp_secret: str = ""

    def headers(self, role: str) -> dict[str, str]:
        cred = self.creds[role]
        return {"X-API-Key": cred} if cred else {}

    @property
    def secrets(self) -> list[str]:
        return [c for c in self.creds.values() if c] + [self.totp_secret]


async def final(h: Harness, command_id: str, timeout: float = 20) -> dict[str, Any]:
    """The command once it reached a terminal status."""
    body: dict[str, Any] = {}
    for _ in range(int(timeout / 0.05)):
        body = (await h.client.get(f"/commands/{command_id}", headers=h.headers("VIEWER"))).json()
        if body.get("status") in TERMINAL:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"command {command_id} never finished: {body}")


async def register(h: Harness, agent_id: str) -> str:
    """Register an external agent; its token."""
    r = await h.client.post("/agents", json={"agent_id": agent_id, "name": agent_id}, headers=h.headers())
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


async def betrayal(h: Harness, a: str, b: str) -> None:
    """A promise then an attack: one INCONSISTENCY verdict about ``a``."""
    messages = [
        {"message_id": f"{a}-promise", "source_agent_id": a, "target_agent_ids": [b],
         "content": f"I will support you {b}, count on me"},
        {"message_id": f"{a}-attack", "source_agent_id": a, "kind": "action",
         "action": {"type": "attack", "target": b}},
    ]
    r = await h.client.post("/telemetry", json={"messages": messages}, headers=h.headers())
    assert r.status_code == 202, r.text


async def build_world(h: Harness) -> World:
    w = World(h)
    w.creds = {"none": None, **{role: h.keys[role] for role in ("VIEWER", "SOVEREIGN_OPERATOR", "CHIEF_ARCHITECT")}}
    await register(h, w.agent)
    w.creds["AGENT"] = await register(h, "agent-live")
    w.own_agent["AGENT"] = "agent-live"
    # A revoked operator key and a revoked agent token (REVOKE_ACCESS through the API).
    revoked_key, principal = await h.cockpit.api_keys.create("revoked-operator", Role.CHIEF_ARCHITECT)
    assert await h.cockpit.api_keys.revoke(principal.id)
    w.creds["revoked_key"] = revoked_key
    w.creds["revoked_token"] = await register(h, "agent-revoked")
    w.own_agent["revoked_token"] = "agent-revoked"
    r = await h.client.post("/commands", headers=h.headers(),
                            json={"command_type": "REVOKE_ACCESS", "target_agents": ["agent-revoked"]})
    assert r.status_code == 202, r.text
    assert (await final(h, r.json()["command_id"]))["status"] == "COMPLETED"
    w.command = r.json()["command_id"]
    # A TOTP-protected key, only so its secret can be looked for in logs and bodies.
    _, totp_principal = await h.cockpit.api_keys.create("careful", Role.SOVEREIGN_OPERATOR, with_totp=True)
    w.totp_secret = str(totp_principal.totp_secret)
    # Verdicts to read and to PATCH (one per role that may).
    for n in range(3):
        await betrayal(h, f"traitor-{n}", f"victim-{n}")
    await h.settle()
    items = (await h.client.get("/verdicts", headers=h.headers("VIEWER"))).json()["items"]
    w.verdicts = [v["id"] for v in items]
    assert len(w.verdicts) >= 3, items
    # TERMINATEs awaiting a second operator (two-person rule on), requested by a third key.
    requester, _ = await h.cockpit.api_keys.create("requester", Role.CHIEF_ARCHITECT)
    for role in ("SOVEREIGN_OPERATOR", "CHIEF_ARCHITECT"):
        target = f"doomed-{role.lower()}"
        await register(h, target)
        r = await h.client.post("/commands", headers={"X-API-Key": requester},
                                json={"command_type": "TERMINATE", "target_agents": [target]})
        assert r.status_code == 202 and r.json()["status"] == "PENDING_APPROVAL", r.text
        w.pending[role] = r.json()["command_id"]
    return w


def two_person_settings(tmp_path: Path, **overrides: Any) -> Any:
    return load_settings(data_dir=tmp_path, c2l={"two_person_terminate": True}, **overrides)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """Cockpit on the embedded default, populated by :func:`build_world`."""
    async for h in make_harness(two_person_settings(tmp_path)):
        yield await build_world(h)


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every loguru line (any level, with its structured extras) while the test runs."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m) + repr(m.record["extra"])), level=0, serialize=True)
    yield lines
    logger.remove(sink)
