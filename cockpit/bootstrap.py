"""The one place that builds and wires everything (and knows concrete classes)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from cockpit.c2l import C2L, build_c2l
from cockpit.filter import NarrativeFilter, build_filter
from cockpit.gateway.stream import StreamHub
from cockpit.platform.auth import ApiKeyStore, Role
from cockpit.platform.bus import EventBus, build_bus
from cockpit.platform.db import Database, migrate
from cockpit.platform.metrics import Metrics
from cockpit.settings import Settings, load_settings
from cockpit.verdict import VerdictEngine

__all__ = ["Cockpit", "StartupError", "bootstrap"]


class StartupError(RuntimeError):
    """A dependency is unreachable or misconfigured; the message is one clear line."""


@dataclass
class Cockpit:
    """Every context, wired; ``start``/``stop`` bring the process up and down."""

    settings: Settings
    db: Database
    bus: EventBus
    metrics: Metrics
    api_keys: ApiKeyStore
    filter: NarrativeFilter
    verdicts: VerdictEngine
    c2l: C2L
    stream: StreamHub
    instance_id: str
    first_operator_key: str | None = field(default=None, repr=False)
    _started: bool = False
    #: the locked file holding ``instance_id`` (:func:`_instance_id`), released at stop
    _id_lock: int | None = field(default=None, repr=False)

    async def start(self) -> None:
        """Migrate (embedded), probe the database, connect the brokers, rebuild state."""
        if self.settings.should_auto_migrate:
            try:
                await asyncio.to_thread(migrate, self.db.url)
            except Exception as exc:  # noqa: BLE001
                raise StartupError(f"database migration failed: {_one_line(exc)}") from exc
        try:
            await self.db.ping(timeout=self.settings.db_pool_timeout)
        except Exception as exc:  # noqa: BLE001
            raise StartupError(f"database unreachable ({self.db.dialect}): {_one_line(exc)}") from exc
        await self.stream.start()
        try:
            # Kafka consumer-group joins take seconds (3-18 s on Tansu): generous, bounded.
            await self.bus.start(timeout=self.settings.broker_connect_timeout * 6)
        except Exception as exc:  # noqa: BLE001
            await self.bus.stop()
            raise StartupError(f"message broker unreachable: {str(exc).splitlines()[0]}") from exc
        if self.settings.embedded and await self.api_keys.count_active() == 0:
            key, _ = await self.api_keys.create("operator", Role.CHIEF_ARCHITECT)
            self.first_operator_key = key
        await self.filter.rebuild()
        await self.filter.start()
        await self.c2l.start()
        self._started = True
        logger.info("cockpit_started", instance=self.instance_id, db=self.db.dialect,
                    bus=self.bus.transport_names)

    async def stop(self) -> None:
        """Stop background loops, drain the brokers, close the pool."""
        try:
            await self.stream.stop()
            await self.filter.stop()
            await self.c2l.stop()
        finally:
            await self.bus.stop()
            await self.db.dispose()
            self._started = False
            if self._id_lock is not None:
                os.close(self._id_lock)  # another process may take this id now
                self._id_lock = None
        logger.info("cockpit_stopped", instance=self.instance_id)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


#: instance id files tried in a shared data dir (``instance_id``, ``instance_id.1``, ...)
_ID_SLOTS = 64


def _instance_id(settings: Settings) -> tuple[str, int | None]:
    """This replica's id, and the descriptor of the file that holds it (locked for as
    long as this process runs), or ``None`` when set in the settings.

    The id is stable across restarts (kept in the data dir) so that the commands a
    replica was executing when it died are recovered as its own, at once, when it
    comes back. Replicas sharing a data dir (Compose's ``--scale`` over one volume)
    must not share an id, or a restarting one would take a live one's commands for its
    own: each holds an exclusive lock on its file, and a replica finding a file locked
    tries the next (``instance_id.1``, ...). A lock dies with its process, so a
    restarted replica takes back a dead one's id, and with it its commands."""
    if settings.instance_id:
        return settings.instance_id, None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(_ID_SLOTS):
        path = settings.data_dir / ("instance_id" if slot == 0 else f"instance_id.{slot}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by a live process (or a file system without locks)
            os.close(fd)
            continue
        value = os.read(fd, 256).decode(errors="replace").strip()
        if not value:
            value = uuid.uuid4().hex[:12]
            os.write(fd, value.encode())
            os.fsync(fd)
        return value, fd
    value = uuid.uuid4().hex[:12]
    logger.warning("instance_id_unkept", reason=f"all {_ID_SLOTS} id files in the data dir are locked",
                   instance=value)
    return value, None


def bootstrap(settings: Settings | None = None, *, runtimes: Any = None) -> Cockpit:
    """Build Cockpit from settings; nothing connects until :meth:`Cockpit.start`."""
    settings = settings or load_settings()
    instance_id, id_lock = _instance_id(settings)
    db = Database(
        settings.effective_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        echo=settings.db_echo,
    )
    bus = build_bus(
        settings.nats_url, settings.kafka_url,
        instance_id=instance_id, connect_timeout=settings.broker_connect_timeout,
        nats_partitions=settings.nats_partitions, nats_lease_seconds=settings.nats_lease_seconds,
        kafka_fetch_wait_ms=settings.kafka_fetch_wait_ms,
    )
    metrics = Metrics()
    bus.on_rejected = lambda channel: metrics.bus_rejected.labels(channel=channel.value).inc()
    narrative = build_filter(db, bus, metrics, settings.filter)
    verdicts = VerdictEngine(db, bus, metrics)
    c2l_settings = settings.c2l
    if c2l_settings.audit_anchor_file is None:
        c2l_settings = c2l_settings.model_copy(
            update={"audit_anchor_file": settings.data_dir / "audit-anchors.log"})
    c2l = build_c2l(db, bus, metrics, c2l_settings, runtimes=runtimes, instance_id=instance_id)
    narrative.muted = c2l.muted_agents  # for telemetry agents publish on the topic themselves
    stream = StreamHub(db, bus, metrics, settings.gateway.ws_replay_limit, settings.gateway.stream_retention_hours)
    for context in (narrative, verdicts, c2l, stream):
        context.register()
    return Cockpit(
        settings=settings, db=db, bus=bus, metrics=metrics, api_keys=ApiKeyStore(db, settings.auth_cache_seconds),
        filter=narrative, verdicts=verdicts, c2l=c2l, stream=stream, instance_id=instance_id,
        _id_lock=id_lock,
    )
