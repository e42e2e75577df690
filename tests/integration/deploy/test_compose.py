"""compose.yaml: valid against the Compose specification's JSON schema (no compose
binary needed), and it keeps its promises: health checks everywhere, ordered
start-up on health / completion, a scalable Cockpit behind one published entry,
an internal network, Kafka topics with 6 partitions, no hard-coded secret.

``compose_spec.json`` is the Compose specification schema shipped by
docker/compose 1.29.2 (Apache-2.0; Debian's ``docker-compose`` package,
``compose/config/compose_spec.json``), vendored so validation works offline.
When a ``docker compose`` or ``docker-compose`` binary exists, its own
``config`` check runs too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema  # in the [test] extra through kubernetes-validate
import pytest
import yaml

from tests.conftest import in_ci
from tests.integration.deploy.conftest import REPO_ROOT

COMPOSE = REPO_ROOT / "compose.yaml"
SCHEMA = Path(__file__).with_name("compose_spec.json")
SECRETS = {"POSTGRES_PASSWORD": "pg-secret", "NATS_TOKEN": "nats-secret", "GRAFANA_ADMIN_PASSWORD": "gf-secret"}

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3)
        current = env.get(name)
        if op in (":-", "-"):
            return current if current not in (None, "") or (op == "-" and current is not None) else arg
        if op in (":?", "?"):
            if current in (None, "") if op == ":?" else current is None:
                raise MissingVariable(f"{name}: {arg}")
            return current
        return current or ""

    return _VAR.sub(replace, value)


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE.read_text())
    return interpolate(raw, {**SECRETS, **(env or {})})


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def _one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart") == "no"


def test_valid_against_the_compose_schema() -> None:
    validator = jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text()))
    validator.validate(compose())
    broken = compose()
    broken["services"]["cockpit"]["depends_on"]["postgres"]["condition"] = "service_ready"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_secrets_come_from_the_environment_and_are_required() -> None:
    text = COMPOSE.read_text()
    for name in SECRETS:
        assert f"${{{name}:?" in text, f"{name} must be required with ${{{name}:?...}}"
        with pytest.raises(MissingVariable):
            interpolate(yaml.safe_load(text), {k: v for k, v in SECRETS.items() if k != name})
    # Nothing that looks like a literal credential.
    for line in text.splitlines():
        if re.search(r"(PASSWORD|TOKEN|SECRET)[A-Z_]*:\s*\S", line) and "${" not in line:
            pytest.fail(f"hard-coded secret? {line.strip()}")
    env = services()["cockpit"]["environment"]
    assert "pg-secret" in env["COCKPIT_DATABASE_URL"] and "nats-secret" in env["COCKPIT_NATS_URL"]


def test_every_long_running_service_has_a_health_check() -> None:
    for name, service in services().items():
        check = service.get("healthcheck") or {}
        if _one_shot(service):
            continue
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"
    expected = {"postgres", "nats", "kafka", "kafka-init", "migrate", "cockpit", "proxy", "prometheus", "grafana"}
    assert set(services()) == expected


def test_start_up_waits_for_health_and_for_one_shots_to_finish() -> None:
    svc = services()
    for name, service in svc.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            wanted = "service_completed_successfully" if _one_shot(svc[dep]) else "service_healthy"
            assert cond["condition"] == wanted, f"{name} -> {dep}: {cond['condition']}"
    cockpit_deps = set(svc["cockpit"]["depends_on"])
    assert cockpit_deps == {"postgres", "nats", "kafka", "migrate", "kafka-init"}
    assert svc["migrate"]["command"] == ["migrate"]
    assert svc["migrate"]["image"] == svc["cockpit"]["image"]
    assert svc["cockpit"]["environment"]["COCKPIT_AUTO_MIGRATE"] == "false"


def test_cockpit_scales_behind_one_published_entry() -> None:
    svc = services()
    cockpit = svc["cockpit"]
    assert "container_name" not in cockpit and "ports" not in cockpit, "fixed names/ports break --scale"
    published = {name for name, s in svc.items() if s.get("ports")}
    assert published == {"proxy", "grafana"}
    assert svc["proxy"]["ports"] == ["127.0.0.1:8000:8080"]
    nginx = (REPO_ROOT / "deploy" / "compose" / "nginx.conf").read_text()
    assert "proxy_pass $cockpit" in nginx and "resolver 127.0.0.11" in nginx and "Upgrade" in nginx


def test_internal_network_isolates_the_data_plane() -> None:
    doc = compose()
    assert doc["networks"]["internal"]["internal"] is True
    for name, service in doc["services"].items():
        networks = set(service.get("networks") or [])
        assert "internal" in networks, name
        if name not in ("proxy", "grafana"):
            assert networks == {"internal"}, f"{name} must not reach the outside"


def test_brokers_and_database_are_the_promised_ones() -> None:
    svc = services()
    assert svc["postgres"]["image"].startswith("postgres:15")
    assert svc["nats"]["image"].startswith("nats:2.10")
    assert "--jetstream" in svc["nats"]["command"]
    assert any(v.endswith(":/data") for v in svc["nats"]["volumes"])
    assert re.match(r"apache/kafka:3\.\d+", svc["kafka"]["image"])
    assert svc["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    script = "\n".join(svc["kafka-init"]["command"])
    assert "agent-communications narrative-analysis" in script and "--partitions 6" in script
    env = svc["cockpit"]["environment"]
    assert env["COCKPIT_KAFKA_URL"] == "kafka:9092" and env["COCKPIT_NATS_URL"].endswith("@nats:4222")
    assert env["COCKPIT_DATABASE_URL"].startswith("postgresql+psycopg://") and env["COCKPIT_DATABASE_URL"].endswith("@postgres:5432/cockpit")


def test_mounted_files_exist() -> None:
    for name, service in services().items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"


def test_the_compose_binary_accepts_it() -> None:
    docker = shutil.which("docker")
    commands = []
    if docker and subprocess.run([docker, "compose", "version"], check=False, capture_output=True).returncode == 0:
        commands.append([docker, "compose"])
    if shutil.which("docker-compose"):
        commands.append(["docker-compose"])
    if not commands:
        message = "no docker compose / docker-compose binary (scripts/services/docker.sh install adds it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    for cmd in commands:
        result = subprocess.run([*cmd, "-f", str(COMPOSE), "config", "-q"], check=False, cwd=REPO_ROOT,
                                env={**os.environ, **SECRETS}, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
