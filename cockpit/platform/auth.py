"""API keys (stored hashed), roles and TOTP step-up.

Keys are random, shown once at creation, and kept only as sha256: a database leak
does not leak a usable key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

import pyotp
from sqlalchemy import select, update

from cockpit.platform.auth_models import ApiKeyRow
from cockpit.platform.cache import TtlCache
from cockpit.platform.db import Database, utcnow

__all__ = [
    "AGENT_TOKEN_PREFIX",
    "OPERATORS",
    "OPERATOR_KEY_PREFIX",
    "READERS",
    "ApiKeyStore",
    "Principal",
    "Role",
    "hash_secret",
    "new_secret",
    "totp_step",
]


class Role(StrEnum):
    VIEWER = "VIEWER"
    SOVEREIGN_OPERATOR = "SOVEREIGN_OPERATOR"
    CHIEF_ARCHITECT = "CHIEF_ARCHITECT"
    AGENT = "AGENT"


#: roles that may read (verdicts, agents, audits...)
READERS = frozenset({Role.VIEWER, Role.SOVEREIGN_OPERATOR, Role.CHIEF_ARCHITECT})
#: roles that may command agents
OPERATORS = frozenset({Role.SOVEREIGN_OPERATOR, Role.CHIEF_ARCHITECT})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an operator/viewer key, or an agent's token."""

    id: str
    name: str
    role: Role
    totp_secret: str | None = None
    agent_id: str | None = None
    #: an agent's fleet, as registered
    fleet_id: str | None = None

    @property
    def can_read(self) -> bool:
        return self.role in READERS

    @property
    def can_command(self) -> bool:
        return self.role in OPERATORS


#: what a credential starts with: an operator's API key, or an agent's token
OPERATOR_KEY_PREFIX = "ck_"
AGENT_TOKEN_PREFIX = "ag_"


def new_secret(prefix: str) -> str:
    """A fresh random credential like ``ck_...`` (256 bits after the prefix)."""
    return f"{prefix}{secrets.token_urlsafe(32)}"


def hash_secret(secret: str) -> str:
    """The stored form of a credential."""
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeyStore:
    """Create, look up and revoke API keys."""

    def __init__(self, db: Database, cache_seconds: float = 0.0) -> None:
        self._db = db
        self._cache: TtlCache[str, Principal | None] = TtlCache(cache_seconds)

    async def create(
        self, name: str, role: Role, *, with_totp: bool = False
    ) -> tuple[str, Principal]:
        """Create a key; returns the clear key (shown once) and its principal. Raises
        ``ValueError`` for an empty name or one of Cockpit's own (``system...``): the
        audit knows operators by their key's name, and a key named like Cockpit's own
        recovery would pass its actions off as Cockpit's."""
        if not name.strip() or name.strip().lower().startswith("system"):
            raise ValueError(f"{name!r} cannot name a key (empty, or reserved for Cockpit's own actions)")
        key = new_secret(OPERATOR_KEY_PREFIX)
        row = ApiKeyRow(
            id=secrets.token_hex(8),
            name=name,
            role=role.value,
            key_hash=hash_secret(key),
            totp_secret=pyotp.random_base32() if with_totp else None,
        )
        async with self._db.sessions.begin() as session:
            session.add(row)
        self._cache.clear()
        return key, _principal(row)

    async def authenticate(self, key: str) -> Principal | None:
        """The principal of an active key, or ``None``."""
        digest = hash_secret(key)
        cached = self._cache.get(digest)
        if cached is not TtlCache.MISSING:
            return cached
        async with self._db.sessions() as session:
            row = await session.scalar(
                select(ApiKeyRow).where(ApiKeyRow.key_hash == digest, ApiKeyRow.revoked_at.is_(None))
            )
        principal = _principal(row) if row else None
        self._cache.put(digest, principal)
        return principal

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key by id; it stops working at once."""
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        self._cache.clear()
        return bool(result.rowcount)

    async def list(self) -> list[dict[str, object]]:
        """Every key's public fields (never the hash or TOTP secret)."""
        async with self._db.sessions() as session:
            rows = (await session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at))).all()
        return [
            {
                "id": r.id,
                "name": r.name,
                "role": r.role,
                "totp": r.totp_secret is not None,
                "created_at": r.created_at.isoformat(),
                "revoked": r.revoked_at is not None,
            }
            for r in rows
        ]

    async def use_totp_step(self, key_id: str, step: int) -> bool:
        """Record that key ``key_id`` used its TOTP code of ``step``; ``False`` if it (or
        a later one) was used before: a code seen once, on any replica, is spent, so a
        code read over an operator's shoulder or from a log cannot be played again."""
        async with self._db.sessions.begin() as session:
            result = await session.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id,
                       (ApiKeyRow.totp_last_step.is_(None)) | (ApiKeyRow.totp_last_step < step))
                .values(totp_last_step=step))
        return bool(result.rowcount)

    async def count_active(self) -> int:
        async with self._db.sessions() as session:
            rows = await session.scalars(select(ApiKeyRow.id).where(ApiKeyRow.revoked_at.is_(None)))
            return len(rows.all())


def totp_step(secret: str, code: str | None) -> int | None:
    """The time step (``unix time // 30``) whose TOTP ``code`` is, the current one or
    one step either side (clock drift); ``None`` for no valid code."""
    if not code:
        return None
    totp = pyotp.TOTP(secret)
    current = int(time.time() // totp.interval)
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code.strip()):
            return step
    return None


def _principal(row: ApiKeyRow) -> Principal:
    return Principal(id=row.id, name=row.name, role=Role(row.role), totp_secret=row.totp_secret)
