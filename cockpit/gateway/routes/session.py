"""``GET /me``: who the presented key belongs to (the dashboard shapes itself on it)."""

from __future__ import annotations

from typing import Any

from litestar import Request, get

from cockpit.gateway.openapi import GUARDED, Identity, errors
from cockpit.gateway.security import AGENT_OR_OPERATOR, READERS, principal_of, requires

__all__ = ["me"]


@get("/me", guards=[requires(READERS | AGENT_OR_OPERATOR)], responses=errors(*GUARDED),
     summary="The caller's identity and role", tags=["operations"])
async def me(request: Request[Any, Any, Any]) -> Identity:
    principal = principal_of(request)
    return {
        "id": principal.id,
        "name": principal.name,
        "role": principal.role,
        "agent_id": principal.agent_id,
        "totp": principal.totp_secret is not None,
        "can_command": principal.can_command,
    }
