"""The agent SDK: what a cooperative agent uses to join Cockpit and obey it.

    client = CockpitAgentClient("http://cockpit:8000", api_key=REGISTRATION_KEY)
    client.register("planner", fleet_id="blue")      # runtime: this process
    client.install_signal_handlers()                  # SIGTERM -> stop cleanly
    client.send("I will support you", target_agent_ids=["b"])
    client.run(on_directive=print)                    # until shutdown / SIGTERM

Registration (``POST /agents``) needs an API key of role SOVEREIGN_OPERATOR or
CHIEF_ARCHITECT (a deployment that lets its agents register themselves hands them
such a key: it can also issue commands, so keep it to trusted launchers, and revoke
it once the fleet is up); the answer's token then replaces it: telemetry and directive polling use the
agent's own token in ``X-API-Key``. Directives arrive by polling
``GET /agents/{id}/directives?after=<seq>``; the client keeps the cursor and the
state they imply (``muted``, ``constraints``, ``stopping``). A cooperative agent
checks ``muted`` before talking to other agents and honours ``constraints``.
``send`` retries a 503 (Cockpit overloaded or its database briefly away) after the
answer's ``Retry-After``, with the same ``message_id``, so nothing is counted twice.
A client made from an existing token (``token=``, ``agent_id=``) need not name its
fleet: Cockpit files an agent's telemetry under the fleet it was registered in, and
refuses (403) telemetry that names another.

:class:`AsyncCockpitAgentClient` is the same for asyncio agents.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Self

import httpx

__all__ = ["AsyncCockpitAgentClient", "CockpitAgentClient", "CockpitError"]

Directive = dict[str, Any]


class CockpitError(Exception):
    """Cockpit answered with an error (``status_code``, ``detail``)."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


#: telemetry sends retried on 503 (Cockpit overloaded, or its database briefly down)
SEND_ATTEMPTS = 4
_MAX_RETRY_WAIT = 10.0


def _retry_wait(response: httpx.Response, attempt: int) -> float | None:
    """Seconds to wait before sending again, or ``None`` when the answer is final.
    Only 503 is retried (telemetry is idempotent by ``message_id``), after the
    server's ``Retry-After`` (capped), else an exponential backoff."""
    if response.status_code != 503 or attempt + 1 >= SEND_ATTEMPTS:
        return None
    try:
        wait = float(response.headers.get("retry-after", ""))
    except ValueError:
        wait = 0.5 * 2**attempt
    return min(max(wait, 0.0), _MAX_RETRY_WAIT)


def _checked(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            detail = str(response.json().get("detail", response.text))
        except ValueError:
            detail = response.text
        raise CockpitError(response.status_code, detail)
    return response.json() if response.content else None


class _AgentState:
    """What the directives received so far mean for the agent (shared by both clients)."""

    def __init__(self, base_url: str, api_key: str | None, token: str | None,
                 agent_id: str | None, fleet_id: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.token = token
        self.agent_id = agent_id
        self.fleet_id = fleet_id
        self.after_seq = 0
        self.muted = False
        self.constraints: list[str] = []
        self._stop = threading.Event()

    @property
    def stopping(self) -> bool:
        """True once a ``shutdown`` directive or SIGTERM/SIGINT arrived."""
        return self._stop.is_set()

    def request_stop(self) -> None:
        self._stop.set()

    def _registration(self, name: str, fleet_id: str, parent_id: str | None,
                      runtime: dict[str, Any] | None, agent_id: str | None) -> dict[str, Any]:
        if not self.api_key:
            raise ValueError("registration needs an operator api_key (SOVEREIGN_OPERATOR or CHIEF_ARCHITECT)")
        body: dict[str, Any] = {"name": name, "fleet_id": fleet_id,
                                "runtime": runtime or {"kind": "process", "pid": os.getpid()}}
        if parent_id:
            body["parent_id"] = parent_id
        if agent_id:
            body["agent_id"] = agent_id
        return body

    def _registered(self, answer: dict[str, Any], fleet_id: str) -> str:
        self.agent_id, self.token, self.fleet_id = answer["agent_id"], answer["token"], fleet_id
        return str(answer["token"])

    def _telemetry(self, content: str | None, kind: str, action: dict[str, Any] | None,
                   target_agent_ids: Iterable[str], conversation_id: str | None,
                   message_id: str | None, attributes: dict[str, Any] | None) -> dict[str, Any]:
        if not self.agent_id:
            raise ValueError("register first (or pass agent_id and token)")
        body: dict[str, Any] = {
            "message_id": message_id or uuid.uuid4().hex,
            "source_agent_id": self.agent_id, "target_agent_ids": list(target_agent_ids),
            "kind": kind, "timestamp": datetime.now(UTC).isoformat(),
            "attributes": attributes or {},
        }
        if self.fleet_id is not None:  # else the server files it under the agent's own fleet
            body["fleet_id"] = self.fleet_id
        if content is not None:
            body["content"] = content
        if action is not None:
            body["action"] = action
        if conversation_id:
            body["conversation_id"] = conversation_id
        return body

    def _token_headers(self) -> dict[str, str]:
        if not self.token:
            raise ValueError("no agent token: register first")
        return {"X-API-Key": self.token}

    def _apply(self, items: list[Directive]) -> list[Directive]:
        for item in items:
            self.after_seq = max(self.after_seq, int(item["seq"]))
            name = item["directive"]
            if name == "mute":
                self.muted = True
            elif name == "unmute":
                self.muted = False
            elif name == "constraint":
                self.constraints.append(str(item["parameters"].get("constraint", "")))
            elif name == "shutdown":
                self.request_stop()
        return items


class CockpitAgentClient(_AgentState):
    """Synchronous client (``httpx.Client``)."""

    def __init__(self, base_url: str, api_key: str | None = None, *, token: str | None = None,
                 agent_id: str | None = None, fleet_id: str | None = None, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, token, agent_id, fleet_id)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def register(self, name: str, fleet_id: str = "default", parent_id: str | None = None,
                 runtime: dict[str, Any] | None = None, agent_id: str | None = None) -> str:
        """Register this agent (default runtime: this process); returns its token."""
        body = self._registration(name, fleet_id, parent_id, runtime, agent_id)
        answer = _checked(self._http.post("/agents", json=body, headers={"X-API-Key": str(self.api_key)}))
        return self._registered(answer, fleet_id)

    def send(self, content: str | None = None, *, kind: str = "message",
             action: dict[str, Any] | None = None, target_agent_ids: Iterable[str] = (),
             conversation_id: str | None = None, message_id: str | None = None,
             attributes: dict[str, Any] | None = None) -> dict[str, Any]:
        """Report one message or action (``POST /telemetry``); a 503 is retried (up to
        ``SEND_ATTEMPTS`` times, after ``Retry-After``) with the same ``message_id``."""
        body = self._telemetry(content, kind, action, target_agent_ids, conversation_id,
                               message_id, attributes)
        for attempt in range(SEND_ATTEMPTS):
            response = self._http.post("/telemetry", json=body, headers=self._token_headers())
            wait = _retry_wait(response, attempt)
            if wait is None:
                break
            self._stop.wait(wait)
        return _checked(response)

    def directives(self) -> list[Directive]:
        """New directives since the last call (and apply them to the state)."""
        response = self._http.get(f"/agents/{self.agent_id}/directives",
                                  params={"after": self.after_seq}, headers=self._token_headers())
        return self._apply(list(_checked(response)["items"]))

    def install_signal_handlers(self) -> None:
        """SIGTERM / SIGINT request a clean stop (main thread only)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.request_stop())
        self._handles_signals = True

    def run(self, on_directive: Callable[[Directive], None] | None = None,
            poll_interval: float = 1.0) -> None:
        """Poll directives until ``shutdown`` or a signal; ``on_directive`` sees each."""
        while not self.stopping:
            try:
                for item in self.directives():
                    if on_directive is not None:
                        on_directive(item)
            except httpx.TransportError:
                pass  # Cockpit unreachable for a moment: keep polling
            self._stop.wait(poll_interval)
        if getattr(self, "_handles_signals", False):
            _ignore_further_stop_signals()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncCockpitAgentClient(_AgentState):
    """Asyncio client (``httpx.AsyncClient``), same API with coroutines."""

    def __init__(self, base_url: str, api_key: str | None = None, *, token: str | None = None,
                 agent_id: str | None = None, fleet_id: str | None = None, timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, token, agent_id, fleet_id)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def register(self, name: str, fleet_id: str = "default", parent_id: str | None = None,
                       runtime: dict[str, Any] | None = None, agent_id: str | None = None) -> str:
        body = self._registration(name, fleet_id, parent_id, runtime, agent_id)
        answer = _checked(await self._http.post("/agents", json=body,
                                                headers={"X-API-Key": str(self.api_key)}))
        return self._registered(answer, fleet_id)

    async def send(self, content: str | None = None, *, kind: str = "message",
                   action: dict[str, Any] | None = None, target_agent_ids: Iterable[str] = (),
                   conversation_id: str | None = None, message_id: str | None = None,
                   attributes: dict[str, Any] | None = None) -> dict[str, Any]:
        body = self._telemetry(content, kind, action, target_agent_ids, conversation_id,
                               message_id, attributes)
        for attempt in range(SEND_ATTEMPTS):
            response = await self._http.post("/telemetry", json=body, headers=self._token_headers())
            wait = _retry_wait(response, attempt)
            if wait is None:
                break
            await asyncio.sleep(wait)
        return _checked(response)

    async def directives(self) -> list[Directive]:
        response = await self._http.get(f"/agents/{self.agent_id}/directives",
                                        params={"after": self.after_seq}, headers=self._token_headers())
        return self._apply(list(_checked(response)["items"]))

    def install_signal_handlers(self) -> None:
        """SIGTERM / SIGINT request a clean stop (on the running loop)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        self._handles_signals = True

    async def run(self, on_directive: Callable[[Directive], Awaitable[None] | None] | None = None,
                  poll_interval: float = 1.0) -> None:
        while not self.stopping:
            try:
                for item in await self.directives():
                    if on_directive is not None:
                        outcome = on_directive(item)
                        if asyncio.iscoroutine(outcome):
                            await outcome
            except httpx.TransportError:
                pass
            await asyncio.to_thread(self._stop.wait, poll_interval)
        if getattr(self, "_handles_signals", False):
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            _ignore_further_stop_signals()

    async def aclose(self) -> None:
        await self._http.aclose()


def _ignore_further_stop_signals() -> None:
    """Once the stop is under way, a second SIGTERM (the kill switch sends one right
    after its shutdown directive) could only cut the clean-up short: Python restores
    the default action while the interpreter finalises, so it would end the process
    "killed by SIGTERM" after a clean stop. Ignored instead; a stop that hangs is
    still ended by the kill switch's SIGKILL after the grace period."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
