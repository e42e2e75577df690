"""docs/RUNBOOK.md is executable: every `cockpit ...` subcommand it mentions exists,
every file and anchor it points to exists, and the commands that can run here do
run: promtool, the PromQL examples (in a real Prometheus), the SQL (in a real,
migrated PostgreSQL), the jq filters (on Cockpit's real log lines), the health
checker, `cockpit audit verify` and the API-key commands."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.integration.deploy.conftest import REPO_ROOT, CockpitServer, need

RUNBOOK = REPO_ROOT / "docs" / "RUNBOOK.md"
TEXT = RUNBOOK.read_text()
#: words after `cockpit` that name a Compose service or the Kubernetes object, not a subcommand
NOT_SUBCOMMANDS = {"cockpit", "postgres", "nats", "kafka", "proxy", "prometheus", "grafana", "migrate-job"}


def blocks(language: str) -> list[str]:
    return [m.group(2) for m in re.finditer(r"```(\w*)\n(.*?)```", TEXT, re.DOTALL) if m.group(1) == language]


def bash_lines() -> list[str]:
    """Every command line of the bash blocks, continuations joined, comments dropped."""
    out = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCKPIT_") or k.startswith("COCKPIT_TEST_")}
    return {**env, **extra}


def _cockpit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cockpit", *args], check=False, cwd=REPO_ROOT, env=env or _env(),
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def mentioned_subcommands() -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for line in bash_lines():
        line = re.sub(r"(-n|--namespace)\s+cockpit\b|deploy/cockpit\b", " ", line)
        for m in re.finditer(r"(?=(?:^|[\s(])cockpit\s+([a-z][\w-]*)(?:\s+([a-z][\w-]*))?)", line):
            command, action = m.group(1), m.group(2)
            if command in NOT_SUBCOMMANDS:
                continue
            found.add((command, action) if action else (command,))
    return found


def test_every_cockpit_subcommand_mentioned_exists() -> None:
    mentioned = mentioned_subcommands()
    assert {("apikey", "create"), ("audit", "verify"), ("streams", "backup"), ("streams", "restore"),
            ("migrate",), ("serve",)} <= {m[:2] if m[0] in ("apikey", "audit", "streams") else m[:1] for m in mentioned}
    for words in sorted(mentioned):
        result = _cockpit(*words[:1], "--help")
        hint = " (cockpit/tools/streams.py's add_parser must be registered in cockpit/cli.py)" \
            if words[0] == "streams" else ""
        assert result.returncode == 0, f"`cockpit {words[0]}` does not exist{hint}: {result.stderr.strip()}"
        if len(words) > 1 and "{" in result.stdout.split("\n\n", 1)[0]:  # it has sub-actions
            result = _cockpit(*words, "--help")
            assert result.returncode == 0, f"`cockpit {' '.join(words)}` does not exist: {result.stderr.strip()}"


def test_referenced_files_links_and_anchors_exist() -> None:
    for path in set(re.findall(r"(?<![\w/])((?:scripts|deploy|docs|tests)/[\w./-]*\w)", TEXT)):
        if path == "deploy/cockpit":  # kubectl's name for the Deployment
            continue
        assert (REPO_ROOT / path).exists(), f"RUNBOOK mentions missing {path}"
    headings = {_slug(h) for h in re.findall(r"^#+\s+(.*)$", TEXT, re.MULTILINE)}
    for target in re.findall(r"\]\(([^)]+)\)", TEXT):
        if target.startswith("#"):
            assert target[1:] in headings, f"broken anchor {target}"
        elif not target.startswith("http") and target != "../BENCHMARKS.md":  # written by bench/
            assert (RUNBOOK.parent / target).exists(), f"broken link {target}"
    # The alert rules point operators at sections of this runbook.
    alerts = (REPO_ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    for anchor in re.findall(r"docs/RUNBOOK\.md#([\w-]+)", alerts):
        assert anchor in headings, f"alerts.yml links to missing section #{anchor}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_promtool_commands_run(promtool: str) -> None:
    lines = [line for line in bash_lines() if line.startswith("promtool ")]
    assert len(lines) == 3
    for line in lines:
        result = subprocess.run([promtool, *line.split()[1:]], check=False, cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=120, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"{line}\n{result.stdout}{result.stderr}"


def test_promql_examples_run_in_a_real_prometheus(prometheus_url: str) -> None:
    exprs = [line.strip() for block in blocks("promql") for line in block.splitlines() if line.strip()]
    assert len(exprs) >= 7
    for expr in exprs:
        url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert resp.status == 200
        except urllib.error.HTTPError as exc:
            pytest.fail(f"{expr}: {exc.code} {exc.read()[:300]!r}")


def test_sql_examples_run_on_a_migrated_database(postgres_url: str) -> None:
    migrated = subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], check=False, cwd=REPO_ROOT,
                              env=_env(COCKPIT_DATABASE_URL=postgres_url), capture_output=True, text=True, timeout=180)
    assert migrated.returncode == 0, migrated.stderr
    u = make_url(postgres_url)
    statements = []
    for block in blocks("sql"):
        if "requires pg_stat_statements" in block:
            continue  # needs shared_preload_libraries (Compose's PostgreSQL has it)
        statements += [s.strip() for s in block.replace("<COMMAND_ID>", "cmd-1").split(";") if s.strip()]
    assert len(statements) >= 8
    with psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database,
                         autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
        [index_check] = [s for s in statements if "FROM pg_indexes" in s]
        indexes = conn.execute(index_check).fetchall()
    assert [name for name, _ in indexes] == sorted([
        "idx_audit_command_id", "idx_audit_timestamp", "idx_verdicts_agent_id",
        "idx_verdicts_created_at", "idx_verdicts_final_verdict"])


def test_jq_filters_work_on_real_log_lines(cockpit_server: Callable[..., CockpitServer], tmp_path: Path) -> None:
    jq = shutil.which("jq")
    if not jq:
        need("jq", "apt-get install jq")
    server = cockpit_server()
    server.process.terminate()
    server.process.wait(20)
    # Only the JSON lines (the first-start banner is plain text by design).
    lines = [line for line in server.log.read_text().splitlines() if line.startswith("{")]
    assert any('"event": "cockpit_started"' in line for line in lines), server.log_tail()
    logs = tmp_path / "logs.jsonl"
    logs.write_text("\n".join(lines) + "\n")
    filters = [(m.group(1), m.group(2)) for line in bash_lines() for m in re.finditer(r"jq (-[rc]) '([^']+)'", line)]
    assert len(filters) >= 4
    started = '{"ts": "2025-10-17T03:00:00+00:00", "level": "INFO", "event": "command_executed", ' \
              '"command_id": "<COMMAND_ID>", "status": "FAILED", "logger": "cockpit.c2l.executor"}\n'
    for flag, program in filters:
        result = subprocess.run([jq, flag, program], check=False, input=logs.read_text() + started, capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 0, f"jq {flag} '{program}': {result.stderr}"
        if "command_executed" in program or "<COMMAND_ID>" in program:
            assert "command_executed" in result.stdout, program  # the filter selects what it says


def test_health_checker_audit_verify_and_api_keys_as_written(
    cockpit_server: Callable[..., CockpitServer], tmp_path: Path
) -> None:
    [checker] = [line for line in bash_lines() if line.startswith("COCKPIT_URL=") and "check_cockpit_health" in line]
    server = cockpit_server()
    command = checker.replace("http://cockpit.internal:8000", server.url)
    result = subprocess.run(["bash", "-c", command], check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.count(": OK") == 4, result.stdout

    env = _env(COCKPIT_DATA_DIR=str(tmp_path / "data"))
    key_lines = [line for line in bash_lines() if line.startswith("cockpit apikey ")]
    assert len(key_lines) == 4
    created_id = ""
    for line in key_lines:
        args = line.split()[1:]
        if "<KEY_ID>" in args:
            args[args.index("<KEY_ID>")] = created_id
        result = _cockpit(*args, env=env)
        assert result.returncode == 0, f"{line}: {result.stderr}"
        if args[:2] == ["apikey", "create"]:
            created_id = re.search(r"^id:\s+(\S+)", result.stdout, re.MULTILINE).group(1)  # type: ignore[union-attr]
            if "--totp" in args:
                assert "otpauth://" in result.stdout
    listed = _cockpit("apikey", "list", env=env).stdout
    assert re.search(rf"^{created_id}\s+\S+\s+revoked", listed, re.MULTILINE), listed

    assert "cockpit audit verify" in TEXT
    verify = _cockpit("audit", "verify", env=env)
    assert verify.returncode == 0 and verify.stdout.startswith("ok"), verify.stdout + verify.stderr


def test_compose_and_k8s_facts_in_the_runbook_match_the_files() -> None:
    compose = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    assert "shared_preload_libraries=pg_stat_statements" in " ".join(compose["services"]["postgres"]["command"])
    assert "${COCKPIT_PORT:-8000}" in TEXT and "${GRAFANA_PORT:-3001}" in TEXT
    deployment = yaml.safe_load((REPO_ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert "requests 250m/256Mi" in TEXT and resources["requests"] == {"cpu": "250m", "memory": "256Mi"}
    assert "limits\n500m/512Mi" in TEXT or "limits 500m/512Mi" in TEXT
    for setting in ("COCKPIT_DB_POOL_SIZE=20", "COCKPIT_DB_MAX_OVERFLOW=10", "COCKPIT_DB_POOL_TIMEOUT=30"):
        assert setting in TEXT
