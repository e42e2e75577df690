"""Who is calling, and may they? Litestar guards over API keys and agent tokens.

Credentials come in the ``X-API-Key`` header (HTTP and WebSocket) or, for browsers'
WebSockets that cannot set headers, the ``api_key`` query parameter. No key: 401.
A key whose role is not allowed on the route: 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from cockpit.platform.auth import (
    AGENT_TOKEN_PREFIX,
    OPERATOR_KEY_PREFIX,
    OPERATORS,
    READERS,
    Principal,
    Role,
)

__all__ = ["AGENT_OR_OPERATOR", "OPERATORS", "READERS", "authenticate", "principal_of", "reauthenticate", "requires"]

AGENT_OR_OPERATOR = OPERATORS | {Role.AGENT}

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def _credential(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    key = connection.headers.get("x-api-key")
    if not key and connection.scope["type"] == "websocket":
        key = connection.query_params.get("api_key")
    return key.strip() if key else None


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """The principal behind the connection's credential, or ``None``."""
    cached = connection.scope.get("cockpit_principal")
    if cached is not None:
        return cast(Principal, cached)  # only ever set below, to a Principal
    key = _credential(connection)
    if not key or len(key) > 512:
        return None
    cockpit = connection.app.state.cockpit
    # Each kind of credential is looked up in its own table only.
    principal = None if key.startswith(AGENT_TOKEN_PREFIX) else await cockpit.api_keys.authenticate(key)
    if principal is None and not key.startswith(OPERATOR_KEY_PREFIX):
        identity = await cockpit.c2l.identify_agent(key)
        if identity is not None:
            agent_id, fleet_id = identity
            principal = Principal(id=agent_id, name=agent_id, role=Role.AGENT, agent_id=agent_id, fleet_id=fleet_id)
    if principal is not None:
        connection.scope["cockpit_principal"] = principal  # type: ignore[typeddict-unknown-key]
    return principal


async def reauthenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """The connection's principal looked up again, as on a new request: a WebSocket
    outlives the check its handshake passed, and its key may be revoked meanwhile."""
    connection.scope.pop("cockpit_principal", None)  # type: ignore[typeddict-item]
    return await authenticate(connection)


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The principal a guard has already authenticated on this connection."""
    return connection.scope["cockpit_principal"]  # type: ignore[typeddict-item]


def requires(roles: frozenset[Role]) -> Guard:
    """A guard admitting only ``roles`` (401 without a valid credential, 403 otherwise)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = await authenticate(connection)
        if principal is None:
            raise NotAuthorizedException("missing or invalid API key (X-API-Key)")
        if principal.role not in roles:
            raise PermissionDeniedException(
                f"role {principal.role.value} may not do this; needs one of "
                + ", ".join(sorted(r.value for r in roles))
            )

    guard.__name__ = "requires_" + "_or_".join(sorted(r.value.lower() for r in roles))
    return guard
