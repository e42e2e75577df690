"""Cockpit's configuration, read once (env prefix ``COCKPIT_``, nested with ``__``).

With no configuration at all Cockpit runs embedded: SQLite in ``COCKPIT_DATA_DIR``
(default ``./.cockpit``) and the in-process bus. ``COCKPIT_DATABASE_URL`` switches to
PostgreSQL, ``COCKPIT_NATS_URL`` / ``COCKPIT_KAFKA_URL`` bind the real brokers.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "C2LSettings",
    "FilterSettings",
    "GatewaySettings",
    "Settings",
    "load_settings",
]


class FilterSettings(BaseModel):
    """Narrative filter thresholds (DESIGN.md section 5 defaults)."""

    alliance_threshold: float = 0.75
    deception_threshold: float = 0.65
    inconsistency_threshold: float = 0.7
    threat_threshold: float = 0.6
    max_batch: int = Field(default=1000, ge=1, le=100_000)
    #: telemetry stored but not analysed yet past which ingestion answers 503 (0: no
    #: bound); about 2 s of analysis at the PostgreSQL + NATS rate
    max_backlog: int = Field(default=8000, ge=0)
    #: refuse telemetry from MUTED agents (``refuse``) or keep it unanalysed (``quarantine``)
    muted_policy: str = Field(default="quarantine", pattern="^(refuse|quarantine)$")


class C2LSettings(BaseModel):
    """Command bus and kill switch."""

    grace_seconds: float = 5.0
    command_deadline_seconds: float = 60.0
    recovery_interval_seconds: float = 2.0
    two_person_terminate: bool = False
    rate_limits: dict[str, str] = Field(
        default_factory=lambda: {"MUTE": "10/minute", "ISOLATE": "5/minute", "TERMINATE": "3/hour"}
    )

    @field_validator("rate_limits")
    @classmethod
    def _command_types(cls, value: dict[str, str]) -> dict[str, str]:
        """A limit under a name no command has ("terminate") would limit nothing."""
        from cockpit.events import CommandType

        known = [t.value for t in CommandType]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"rate limits for unknown command types {unknown}; the types are {known}")
        return value
    #: seconds a replica trusts its cached view of an agent's token and mute state
    #: (its own changes are seen at once; other replicas' within this bound)
    registry_cache_seconds: float = 1.0
    docker_url: str | None = None
    kubernetes_host: str | None = None
    kubernetes_token: str | None = None
    kubernetes_verify_ssl: bool = True
    kubeconfig: str | None = None
    #: append-only file where each committed audit row's id and hash is recorded, so
    #: ``cockpit audit verify`` can tell a cut or rewritten chain (default:
    #: ``<data_dir>/audit-anchors.log``; better on storage the database's admins
    #: cannot rewrite)
    audit_anchor_file: Path | None = None


class GatewaySettings(BaseModel):
    """HTTP and WebSocket edge."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 8 * 1024 * 1024
    ws_ping_seconds: float = 20.0
    ws_replay_limit: int = 10_000
    #: how long the stream log (``stream_events``) keeps an event for resuming clients;
    #: a client resuming from before that is told to reload (``stream.reset``); 0 = forever
    stream_retention_hours: float = Field(default=72.0, ge=0)
    #: telemetry and read-query requests in progress at once; past it they are shed
    #: (503 + Retry-After: 1); 0 = no bound
    max_inflight: int = Field(default=128, ge=0)


class Settings(BaseSettings):
    """All of Cockpit's settings. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="COCKPIT_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Path(".cockpit")
    database_url: str | None = None
    nats_url: str | None = None
    kafka_url: str | None = None
    log_level: str = "INFO"
    log_json: bool = True
    db_pool_size: int = 20
    db_max_overflow: int = 10
    db_pool_timeout: float = 30.0
    db_echo: bool = False
    auto_migrate: bool | None = None
    broker_connect_timeout: float = 5.0
    #: NATS only: telemetry is split into this many partitions by fleet, each analysed
    #: by the one replica holding its lease (the same number on every replica)
    nats_partitions: int = Field(default=16, ge=1, le=1024)
    #: NATS only: seconds after its last renewal that a replica's partition lease
    #: lapses (how long a dead replica's fleets wait for another)
    nats_lease_seconds: float = Field(default=6.0, ge=1.0, le=300.0)
    #: Kafka only: milliseconds a consumer's fetch (and the verdict engine's batch
    #: poll) waits for data (each hop's latency when idle, against a fetch per
    #: consumer that often)
    kafka_fetch_wait_ms: int = Field(default=20, ge=1, le=5000)
    #: seconds a replica trusts its cached lookup of an API key (revocations made by
    #: this process apply at once; by another process within this bound)
    auth_cache_seconds: float = 1.0
    instance_id: str | None = None

    filter: FilterSettings = Field(default_factory=FilterSettings)
    c2l: C2LSettings = Field(default_factory=C2LSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)

    @property
    def embedded(self) -> bool:
        """True when no external database is configured."""
        return self.database_url is None

    @property
    def effective_database_url(self) -> str:
        """The SQLAlchemy async URL in use."""
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'cockpit.db').as_posix()}"

    @property
    def should_auto_migrate(self) -> bool:
        """Embedded mode migrates itself at start; production only when asked."""
        return self.embedded if self.auto_migrate is None else self.auto_migrate


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
