"""Load shedding: past a bound on bulk requests in flight, more bulk traffic gets a
fast 503 with ``Retry-After`` instead of a slow answer.

One process serves everything on one event loop. Past its capacity requests queue,
every answer is late (the kill switch's included), and clients time out while the
server still works on what they gave up on. A bound on the requests in progress
keeps the server's own queue, and so its latency, short (Little's law: latency =
in flight / throughput); the excess is refused at once, costing the server almost
nothing, and the clients retry after a second.

The bound is counted in requests in progress, not in loop lateness: a saturated loop
runs each request across many short iterations, so a timer is late by one iteration
(tens of milliseconds, measured) while requests wait seconds.

Only bulk, retryable traffic counts and is shed: telemetry ingestion (agents and
collectors retry) and read-only queries of verdicts, alliances, stats and audits.
Commands, approvals, agent registration and directive polling (how a kill reaches an
agent), health, metrics and the WebSocket are always served.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from cockpit.platform.metrics import Metrics

__all__ = ["LoadShedder", "is_sheddable"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: POST paths that are bulk ingestion
_SHED_POSTS = frozenset({"/telemetry", "/v1/traces"})
#: GET path prefixes that are operators' read-only queries
_SHED_READS = ("/verdicts", "/alliances", "/stats", "/audits")

_BODY = json.dumps({"status_code": 503, "detail": "overloaded, retry later"}).encode()


def is_sheddable(method: str, path: str) -> bool:
    """True for the requests shed under overload (see the module docstring)."""
    if method == "POST":
        return path in _SHED_POSTS
    if method == "GET":
        return path.startswith(_SHED_READS) and not path.startswith("/audits/verify")
    return False


class LoadShedder:
    """Counts sheddable requests in progress and refuses those past ``max_inflight``
    (``0``: no bound)."""

    def __init__(self, metrics: Metrics, max_inflight: int, *, retry_after: int = 1) -> None:
        self._metrics = metrics
        self.max_inflight = max_inflight
        self.inflight = 0
        self._retry_after = str(retry_after).encode()
        metrics.http_in_flight.set_function(lambda: self.inflight)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """The ASGI middleware: answers shed requests before authentication."""

        async def shed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or not self.max_inflight or not is_sheddable(scope["method"], scope["path"]):
                await app(scope, receive, send)
                return
            if self.inflight >= self.max_inflight:
                await self._refuse(scope, send)
                return
            self.inflight += 1
            try:
                await app(scope, receive, send)
            finally:
                self.inflight -= 1

        return shed

    async def _refuse(self, scope: Scope, send: Send) -> None:
        self._metrics.http_shed.labels(method=scope["method"]).inc()
        self._metrics.http_errors.labels(status="503").inc()
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"retry-after", self._retry_after),
            (b"content-length", str(len(_BODY)).encode()),
        ]})
        await send({"type": "http.response.body", "body": _BODY})
