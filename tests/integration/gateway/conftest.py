"""Cockpit (bootstrap + Litestar app) served by a real uvicorn on a free loopback port,
in the test's event loop, on SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from cockpit.bootstrap import Cockpit, bootstrap
from cockpit.gateway.app import create_app
from cockpit.platform.auth import Role
from cockpit.settings import load_settings


@dataclass
class Harness:
    client: httpx.AsyncClient
    cockpit: Cockpit
    keys: dict[str, str]
    base_url: str

    def ws_url(self, role: str = "VIEWER", **params: Any) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"api_key": self.keys[role], **params}.items())
        return self.base_url.replace("http://", "ws://") + "/ws?" + query

    def headers(self, role: str = "SOVEREIGN_OPERATOR") -> dict[str, str]:
        return {"X-API-Key": self.keys[role]}

    async def settle(self) -> None:
        """Wait until the in-process bus has handled everything published so far."""
        for _ in range(3):
            await self.cockpit.bus.drain()


async def register(h: Harness, name: str, runtime: dict[str, Any], parent: str | None = None) -> dict[str, Any]:
    """Register an agent through ``POST /agents``; its record, with its token."""
    body: dict[str, Any] = {"agent_id": name, "name": name, "runtime": runtime}
    if parent:
        body["parent_id"] = parent
    r = await h.client.post("/agents", json=body, headers=h.headers())
    assert r.status_code == 201, r.text
    return r.json()


def settings_for(kind: str, tmp_path: Path, request: pytest.FixtureRequest, **overrides: Any) -> Any:
    if kind == "postgresql":
        url = request.getfixturevalue("postgres_url")
        return load_settings(database_url=url, auto_migrate=True, data_dir=tmp_path, **overrides)
    return load_settings(data_dir=tmp_path, **overrides)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def make_harness(settings: Any) -> AsyncIterator[Harness]:
    cockpit = bootstrap(settings)
    await cockpit.start()
    port = free_port()
    config = uvicorn.Config(
        create_app(cockpit, manage_lifecycle=False), host="127.0.0.1", port=port,
        log_config=None, access_log=False, lifespan="on", ws_ping_interval=None,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            keys = {}
            for role in Role:
                if role is Role.AGENT:
                    continue
                key, _ = await cockpit.api_keys.create(f"test-{role.value.lower()}", role)
                keys[role.value] = key
            yield Harness(client, cockpit, keys, base_url)
    finally:
        server.should_exit = True
        await task
        await cockpit.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    """Cockpit on the embedded default and on PostgreSQL, in-process bus."""
    async for h in make_harness(settings_for(request.param, tmp_path, request)):
        yield h


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[Harness]:
    """Cockpit on the embedded default only (for tests about the edge itself)."""
    async for h in make_harness(load_settings(data_dir=tmp_path)):
        yield h
