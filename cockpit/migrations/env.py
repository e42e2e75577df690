"""Alembic environment covering every context's tables."""

from __future__ import annotations

import asyncio

from alembic import context

import cockpit.c2l.models
import cockpit.filter.models
import cockpit.gateway.models
import cockpit.platform.auth_models
import cockpit.verdict.models  # noqa: F401  (register every context's tables)
from cockpit.platform.db import Base, Database
from cockpit.settings import load_settings

target_metadata = Base.metadata


def _url() -> str:
    url = context.config.attributes.get("cockpit_url")
    if url:
        return str(url)
    return load_settings().effective_database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _do_run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    db = Database(_url())  # creates the SQLite data dir when needed
    async with db.engine.connect() as connection:
        await connection.run_sync(_do_run)
        await connection.commit()
    await db.dispose()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _do_run(connection)
        return
    asyncio.run(_run_async())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
