"""Root fixtures: the real services behind the integration and e2e tests.

`scripts/test.sh` installs and starts every service (scripts/services/*.sh) and
exports their addresses as ``COCKPIT_TEST_*`` variables before running pytest.
Running pytest by hand also works: start a service with
``bash scripts/services/<name>.sh start`` and its variables are picked up from
``${COCKPIT_SERVICES_DIR:-.services}/env`` (variables already set win).

A test that needs a service that is not there is *skipped* on a developer's
machine and *fails* under ``CI=true``: CI must never go green by skipping.

Fixtures:
    postgres_url          a fresh database per test (dropped after), as a
                          ``postgresql+psycopg://`` URL for the ``cockpit`` role
    postgres_module_url   the same, one database shared by a test module
    postgres_admin_url    the superuser URL (database ``postgres``)
    pg_bin                PostgreSQL's bin dir (psql, pg_dump, pg_restore)
    nats_url              ``nats://127.0.0.1:<port>``, JetStream enabled
    kafka_url             ``127.0.0.1:<port>`` bootstrap servers (Tansu; consumer
                          group joins take ~3-18 s, allow >= 30 s)
    chromium_path         Debian's ``/usr/bin/chromium`` for Playwright's
                          ``executable_path``
    chromium_args         the launch flags Chromium needs here (``CHROMIUM_ARGS``)
    docker_host           ``unix://...`` of the private Docker engine
    services_dir          the services' state dir
    service_ctl           ``service_ctl(name, action)`` runs
                          ``scripts/services/<name>.sh <action>`` for fault
                          injection; any service it stopped or killed is started
                          again (same port, same data) when the test ends

Helper: ``schema_database(url)`` -> a ``Database`` with every table created from the
models (no migrations; ``sqlite_url(tmp_path, name)`` for a file of the test's own).

Tests that use these fixtures get the matching marker (``postgres``, ``nats``,
``kafka``, ``chromium``, ``docker``), so ``-m "not docker"`` deselects them; a test
that carries one of those markers without the fixture is checked the same way.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from cockpit.platform.db import Database

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICE_SCRIPTS = REPO_ROOT / "scripts" / "services"

#: Flags Chromium needs on these machines (root, no GPU, closed network).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: marker / fixture name -> (environment variable, service script)
SERVICES: dict[str, tuple[str, str]] = {
    "postgres": ("COCKPIT_TEST_POSTGRES_URL", "postgres"),
    "nats": ("COCKPIT_TEST_NATS_URL", "nats"),
    "kafka": ("COCKPIT_TEST_KAFKA_URL", "kafka"),
    "chromium": ("COCKPIT_TEST_CHROMIUM", "chromium"),
    "docker": ("COCKPIT_TEST_DOCKER_HOST", "docker"),
}

_FIXTURE_MARKERS = {
    "postgres_url": "postgres",
    "postgres_module_url": "postgres",
    "postgres_admin_url": "postgres",
    "pg_bin": "postgres",
    "nats_url": "nats",
    "kafka_url": "kafka",
    "chromium_path": "chromium",
    "docker_host": "docker",
}


def in_ci() -> bool:
    """True under CI (``CI=true``), where a missing service is a failure."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def services_dir_path() -> Path:
    return Path(os.environ.get("COCKPIT_SERVICES_DIR") or REPO_ROOT / ".services")


def require_service(env_var: str) -> str:
    """Return the service address in ``env_var``; fail under CI, skip otherwise."""
    value = os.environ.get(env_var, "").strip()
    if value:
        return value
    service = next((s for v, s in SERVICES.values() if v == env_var), "<name>")
    message = (
        f"{env_var} is not set: this test needs a real service. Run the suite with "
        f"`bash scripts/test.sh`, or `bash scripts/services/{service}.sh start`."
    )
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def _load_services_env() -> None:
    env_file = services_dir_path() / "env"
    if not env_file.is_file():
        return
    for raw in env_file.read_text().splitlines():
        line = raw.split(" # svc:", 1)[0].strip()
        if not line.startswith("export ") or "=" not in line:
            continue
        name, _, value = line[len("export ") :].partition("=")
        os.environ.setdefault(name.strip(), value.strip().strip("'\""))


def pytest_configure(config: pytest.Config) -> None:
    _load_services_env()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            marker = _FIXTURE_MARKERS.get(fixture)
            if marker and not item.get_closest_marker(marker):
                item.add_marker(marker)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, (env_var, _script) in SERVICES.items():
        if item.get_closest_marker(marker):
            require_service(env_var)


# --------------------------------------------------------------------------- services


def run_service_script(name: str, action: str, timeout: float = 180) -> str:
    """Run ``scripts/services/<name>.sh <action>`` and return its stdout."""
    script = SERVICE_SCRIPTS / f"{name}.sh"
    if not script.is_file():
        raise FileNotFoundError(f"no service script {script}")
    env = {**os.environ, "COCKPIT_SERVICES_DIR": str(services_dir_path())}
    proc = subprocess.run(
        ["bash", str(script), action],
        check=False,
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0 and action != "status":
        raise RuntimeError(
            f"{script.name} {action} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


@pytest.fixture(scope="session")
def services_dir() -> Path:
    return services_dir_path()


@pytest.fixture
def service_ctl() -> Iterator[Callable[[str, str], str]]:
    """``service_ctl(name, action)`` for fault injection (stop/start/kill/restart/status).

    Whatever the test stopped or killed is started again afterwards, on the same
    port with the same data, so later tests find the service as they expect.
    """
    touched: list[str] = []

    def ctl(name: str, action: str) -> str:
        require_service(SERVICES[name][0])
        if action in {"stop", "kill"} and name not in touched:
            touched.append(name)
        return run_service_script(name, action)

    yield ctl
    for name in touched:
        run_service_script(name, "start")


# --------------------------------------------------------------------------- PostgreSQL


def _pg_connect_kwargs(url: str) -> dict[str, object]:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return {
        "host": u.host,
        "port": u.port,
        "user": u.username,
        "password": u.password,
        "dbname": u.database,
    }


def _with_database(url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _fresh_database(app_url: str, admin_url: str, prefix: str) -> Iterator[str]:
    import psycopg
    from psycopg import sql

    owner = _pg_connect_kwargs(app_url)["user"]
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(**_pg_connect_kwargs(admin_url), autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(str(owner))
            )
        )
    try:
        yield _with_database(app_url, name)
    finally:
        # The server may have been stopped by a fault-injection test and brought
        # back by service_ctl; a failed drop only leaves a stray test database.
        try:
            with psycopg.connect(**_pg_connect_kwargs(admin_url), autocommit=True) as admin:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        except psycopg.OperationalError:
            pass


@pytest.fixture
def postgres_admin_url() -> str:
    return require_service("COCKPIT_TEST_POSTGRES_ADMIN_URL")


@pytest.fixture
def pg_bin() -> Path:
    return Path(require_service("COCKPIT_TEST_PG_BIN"))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty database for this test, dropped afterwards."""
    app_url = require_service("COCKPIT_TEST_POSTGRES_URL")
    admin_url = require_service("COCKPIT_TEST_POSTGRES_ADMIN_URL")
    yield from _fresh_database(app_url, admin_url, "t")


@pytest.fixture(scope="module")
def postgres_module_url() -> Iterator[str]:
    """A fresh database shared by the tests of one module."""
    app_url = require_service("COCKPIT_TEST_POSTGRES_URL")
    admin_url = require_service("COCKPIT_TEST_POSTGRES_ADMIN_URL")
    yield from _fresh_database(app_url, admin_url, "m")


# --------------------------------------------------------------------------- the others


@pytest.fixture
def nats_url() -> str:
    return require_service("COCKPIT_TEST_NATS_URL")


@pytest.fixture
def kafka_url() -> str:
    return require_service("COCKPIT_TEST_KAFKA_URL")


@pytest.fixture
def chromium_path() -> str:
    path = require_service("COCKPIT_TEST_CHROMIUM")
    if not os.access(path, os.X_OK):
        message = f"COCKPIT_TEST_CHROMIUM={path} is not an executable"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture
def chromium_args() -> list[str]:
    """Launch flags for Chromium as root on a closed network (pass as ``args=``)."""
    return list(CHROMIUM_ARGS)


@pytest.fixture
def docker_host() -> str:
    """The private Docker engine (scripts/services/docker.sh), as ``unix://...``."""
    return require_service("COCKPIT_TEST_DOCKER_HOST")


def sqlite_url(tmp_path: Path, name: str) -> str:
    """An embedded database file of the test's own."""
    return f"sqlite+aiosqlite:///{tmp_path / name}"


@contextlib.asynccontextmanager
async def schema_database(url: str) -> AsyncIterator[Database]:
    """A ``Database`` on ``url`` with every context's tables created from the models
    (what a test of one store needs; the migrations have tests of their own),
    disposed at the end."""
    import cockpit.c2l.models
    import cockpit.filter.models
    import cockpit.gateway.models
    import cockpit.platform.auth_models
    import cockpit.verdict.models  # noqa: F401 - each registers its tables
    from cockpit.platform.db import Base, Database

    database = Database(url)
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        yield database
    finally:
        await database.dispose()
