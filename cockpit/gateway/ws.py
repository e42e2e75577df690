"""``WS /ws``: the live stream of verdicts and command outcomes."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from cockpit.gateway.security import READERS, reauthenticate, requires
from cockpit.gateway.stream import StreamClient, StreamFilters, StreamHub
from cockpit.platform.db import utcnow

__all__ = ["stream_socket"]


_MAX_SEQ = 2**63 - 1  # the seq column is a BIGINT
#: how often a connected client's key is checked again (a revoked key loses its stream)
_RECHECK_SECONDS = 1.0
#: WebSocket close code "policy violation": the key no longer admits this stream
_REVOKED = 1008


class _Credential:
    """A connected client's key, checked again at most every ``_RECHECK_SECONDS``
    before anything is sent or replayed: revoking a key (or lowering its role) ends
    its streams too, not only its next requests."""

    def __init__(self, socket: WebSocket[Any, Any, Any]) -> None:
        self._socket = socket
        self._checked = time.monotonic()
        self._revoked = False

    async def valid(self) -> bool:
        if self._revoked:
            return False
        if time.monotonic() - self._checked < _RECHECK_SECONDS:
            return True
        self._checked = time.monotonic()  # the reader and the writer: one check at a time
        principal = await reauthenticate(self._socket)
        if principal is None or principal.role not in READERS:
            if not self._revoked:  # closed once, by whichever of the two saw it first
                self._revoked = True
                await self._socket.close(code=_REVOKED, reason="the API key no longer admits this stream")
            return False
        return True


def _since(raw: Any) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError, OverflowError):  # a list, an object, NaN, 1e400, "abc"
        raise ValueError(f"since_seq must be a non-negative integer, not {str(raw)[:40]!r}") from None
    if value < 0:
        raise ValueError("since_seq must be >= 0")
    if value > _MAX_SEQ:
        raise ValueError("since_seq is out of range")
    return value


async def _reader(socket: WebSocket[Any, Any, Any], hub: StreamHub, client: StreamClient,
                  credential: _Credential) -> None:
    while True:
        text = await socket.receive_text()
        if not await credential.valid():
            return
        try:
            try:
                message = json.loads(text)
            except RecursionError:
                raise ValueError("the message is nested too deeply") from None
            if not isinstance(message, dict):
                raise ValueError("a message must be a JSON object")
            kind = message.get("type")
            if kind == "ping":
                await socket.send_json({"type": "pong", "ts": utcnow().isoformat()})
            elif kind == "subscribe":
                await hub.resume(client, _since(message.get("since_seq")), StreamFilters.parse(message.get("filters")))
                await socket.send_json({"type": "subscribed", "ts": utcnow().isoformat()})
            else:
                raise ValueError(f"unknown message type {kind!r}; use 'subscribe' or 'ping'")
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            await socket.send_json({"type": "error", "detail": str(exc)})


async def _writer(socket: WebSocket[Any, Any, Any], hub: StreamHub, client: StreamClient,
                  ping_seconds: float, credential: _Credential) -> None:
    while True:
        if client.behind and client.queue.empty():
            if not await credential.valid():
                return
            await hub.catch_up(client)  # what did not fit in its queue, from the log
            continue
        try:
            generation, envelope = await asyncio.wait_for(client.queue.get(), timeout=ping_seconds)
        except TimeoutError:
            if not await credential.valid():
                return
            await socket.send_json({"type": "ping", "seq": client.last_seq, "ts": utcnow().isoformat(), "data": {}})
            continue
        if not await credential.valid():
            return
        # Checked after the key's check, which may wait for the database: a resume
        # finishing meanwhile starts a new generation, and this envelope is replayed
        # in its place (sent now, its seq would skip the replayed ones below it).
        if generation != client.generation or envelope["seq"] <= client.last_seq:
            continue  # queued before a resume (replayed anew), or already sent
        client.last_seq = envelope["seq"]
        await socket.send_json(envelope)


@websocket("/ws", guards=[requires(READERS)])
async def stream_socket(socket: WebSocket[Any, Any, Any]) -> None:
    """Events as ``{type, seq, ts, data}``; send ``{"type": "subscribe", "filters": {...},
    "since_seq": n}`` to filter and resume, ``{"type": "ping"}`` for a ``pong``."""
    cockpit = socket.app.state.cockpit
    hub: StreamHub = cockpit.stream
    await socket.accept()
    client = hub.connect()
    try:
        try:
            since = _since(socket.query_params.get("since_seq"))
            filters = StreamFilters.parse(
                {k: socket.query_params.getall(k) for k in ("severity", "category", "agent_id")
                 if socket.query_params.getall(k, None)}
            )
        except ValueError as exc:
            await socket.send_json({"type": "error", "detail": str(exc)})
            since, filters = None, StreamFilters()
        # The stream's current position, read first: a client without ``since_seq`` is
        # sent exactly the events after it (an event stored between its connection and
        # this read is in neither its snapshot nor, were it dropped as "before hello",
        # its stream), and one that receives nothing before it disconnects can resume
        # from here without missing an event.
        position = await hub.last_seq()
        await hub.resume(client, position if since is None else since, filters)
        await socket.send_json({"type": "hello", "seq": position, "ts": utcnow().isoformat()})
        credential = _Credential(socket)
        tasks = [
            asyncio.create_task(_reader(socket, hub, client, credential)),
            asyncio.create_task(_writer(socket, hub, client, cockpit.settings.gateway.ws_ping_seconds, credential)),
        ]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            failure = task.exception()
            if failure and not isinstance(failure, WebSocketDisconnect):
                raise failure
    except WebSocketDisconnect:
        pass
    finally:
        hub.disconnect(client)
