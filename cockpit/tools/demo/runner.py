"""``cockpit demo``: Cockpit on the embedded default, in this process, with a fleet
of simulated agents (OS processes or containers) playing a scenario.

Order of events: check the options (and the Docker engine), start Cockpit
(bootstrap + uvicorn), create the operator key (printed, and written to
``<data-dir>/operator.key``, mode 0600) and a registration key for the agents,
write the plan, start the fleet, run the operator's timed commands, print each
new verdict, and on SIGINT/SIGTERM (or after ``--duration``) stop every agent,
verify none survives, then stop Cockpit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from cockpit.tools.demo.docker_fleet import DemoDockerError, DockerFleet
from cockpit.tools.demo.fleet import ProcessFleet
from cockpit.tools.demo.scenario import Plan, ScenarioError, build_plan, load_scenario
from cockpit.tools.demo.summary import collect, fleet_verdicts
from cockpit.tools.demo.timeline import operator_steps

__all__ = ["DemoOptions", "run_demo"]

_FINAL = frozenset({"COMPLETED", "FAILED", "TIMEOUT"})
#: seconds between launching the fleet and scenario second 0 (agents start, register);
#: doubled for containers
WARMUP_SECONDS = 3.0


@dataclass
class DemoOptions:
    """``cockpit demo``'s options (see ``add_parser``)."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path | None = None
    agents: int | None = None
    scenario: str = "fleet"
    runtime: str = "process"
    docker_host: str | None = None
    image: str = "cockpit:latest"
    docker_network: str = "host"
    headless: bool = False
    duration: float | None = None


def say(text: str = "") -> None:
    print(text, flush=True)


class DemoError(RuntimeError):
    """A problem the user can fix; printed as one line, exit code 2."""


def _check_port(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise DemoError(f"cannot listen on {host}:{port} ({exc.strerror}); pass --port") from None


def _run_suffix(data_dir: Path) -> str:
    """"" on a fresh data dir; "-r2", "-r3"... when it is reused (agent ids are unique)."""
    marker = data_dir / "demo-runs"
    runs = int(marker.read_text() or 0) if marker.is_file() else 0
    marker.write_text(str(runs + 1))
    return "" if runs == 0 else f"-r{runs + 1}"


def run_demo(options: DemoOptions) -> int:
    """Run the demo until a signal or ``--duration``; the process exit code."""
    from cockpit.bootstrap import StartupError

    try:
        return asyncio.run(_Demo(options).run())
    except (DemoError, ScenarioError, DemoDockerError, StartupError) as exc:
        print(f"cockpit demo: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:  # before the demo's own handlers were installed
        return 130


class _Demo:
    def __init__(self, options: DemoOptions) -> None:
        self.o = options
        self.stop = asyncio.Event()
        self.seen: set[str] = set()  # verdict and command ids already printed

    async def run(self) -> int:
        o = self.o
        scenario = load_scenario(o.scenario)
        if o.duration is not None and o.duration <= 0:
            raise DemoError("--duration must be > 0 seconds")
        if o.headless and o.duration is None:
            raise DemoError("--headless needs --duration SECONDS")
        data_dir = o.data_dir or Path(tempfile.mkdtemp(prefix="cockpit-demo-"))
        data_dir.mkdir(parents=True, exist_ok=True)
        docker: DockerFleet | None = None
        docker_host = o.docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        build_plan(scenario, agents=o.agents)  # validates --agents before anything starts
        _check_port(o.host, o.port)
        url = f"http://{o.host}:{o.port}"
        suffix = _run_suffix(data_dir)
        plan = build_plan(scenario, agents=o.agents, fleet_id=f"demo{suffix}", suffix=suffix)
        if o.runtime == "docker":
            docker = DockerFleet(plan, url, docker_host, o.image, f"{os.getpid()}{suffix}",
                                 o.docker_network, pycache=data_dir / "pycache",
                                 log_dir=data_dir / "agents")
            await asyncio.to_thread(docker.check)

        from cockpit.bootstrap import bootstrap
        from cockpit.platform.auth import Role
        from cockpit.settings import load_settings

        # Always the embedded default, whatever COCKPIT_DATABASE_URL & co. say in this shell.
        settings = load_settings(data_dir=data_dir, database_url=None, nats_url=None, kafka_url=None)
        settings = settings.model_copy(update={
            "gateway": settings.gateway.model_copy(update={"host": o.host, "port": o.port}),
            "c2l": settings.c2l.model_copy(update={"docker_url": docker_host if docker else settings.c2l.docker_url}),
        })
        _log_to_file(data_dir / "cockpit.log")
        cockpit = bootstrap(settings)
        await cockpit.start()
        server, server_task = await _serve(cockpit, o.host, o.port)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # the demo's own API calls
        fleet: ProcessFleet | DockerFleet | None = None
        registrar: Any = None
        try:
            key = cockpit.first_operator_key or (await cockpit.api_keys.create("demo-operator", Role.CHIEF_ARCHITECT))[0]
            key_file = data_dir / "operator.key"
            key_file.touch(mode=0o600)
            key_file.chmod(0o600)
            key_file.write_text(key + "\n")
            # The agents' registration key (POST /agents needs an operator role); each agent
            # switches to its own token at once, and the key is revoked when the demo ends.
            registration, registrar = await cockpit.api_keys.create(f"demo-agents{suffix}", Role.SOVEREIGN_OPERATOR)
            # Scenario second 0 comes once every agent had time to start and register.
            plan = replace(plan, start_at=time.time() + WARMUP_SECONDS * (2 if docker else 1))
            plan_path = data_dir / "demo-plan.json"
            plan_path.write_text(plan.to_json())
            self._banner(plan, url, key, data_dir)
            messages_before = await cockpit.filter.store.count()
            self._install_signals()
            async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=30) as api:
                if docker is not None:
                    fleet = docker
                    docker.plan = plan
                    tokens = {a["id"]: await _register_container(cockpit, plan, a, docker.container(a["id"]))
                              for a in plan.agents}  # parents first, as the plan lists them
                    await asyncio.to_thread(docker.launch, tokens)
                else:
                    fleet = ProcessFleet(plan_path, url, registration, data_dir / "agents", plan.roots())
                    fleet.launch()
                tasks = [asyncio.create_task(self._director(api, plan)),
                         asyncio.create_task(self._watch(api, plan, fleet))]
                try:
                    await asyncio.wait_for(self.stop.wait(), o.duration)
                except TimeoutError:
                    pass
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                say("\nstopping the fleet...")
                report = await asyncio.to_thread(fleet.stop)
                fleet = None
                say(f"  {report.line()}")
                await asyncio.sleep(1.0)  # the last telemetry reaches the verdicts
                for _ in range(3):
                    await cockpit.bus.drain()
                summary = await collect(api, plan, await cockpit.filter.store.count() - messages_before)
            say("\nsummary")
            for line in summary.lines(plan):
                say(f"  {line}")
            code = 0 if (summary.ok or not o.headless) and not report.survivors else 1
        finally:
            if fleet is not None:  # an error on the way: never leave agents behind
                await asyncio.to_thread(fleet.stop)
            if registrar is not None:
                await cockpit.api_keys.revoke(registrar.id)
            server.should_exit = True
            await server_task
            await cockpit.stop()
        say("Cockpit stopped.")
        return code

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)

    def _banner(self, plan: Plan, url: str, key: str, data_dir: Path) -> None:
        say(f"\n  Cockpit demo: scenario {plan.scenario!r}, {len(plan.agents)} agents "
            f"({self.o.runtime}), fleet {plan.fleet_id}")
        if plan.description:
            say(f"  {plan.description}")
        say(f"\n  Dashboard:     {url}/")
        say(f"  Operator key:  {key}")
        say(f"  (also in {data_dir / 'operator.key'}; data and logs in {data_dir})")
        tree = {a["id"]: a.get("parent") for a in plan.agents}
        roots = [a for a, p in tree.items() if not p]
        parents = sorted({p for p in tree.values() if p})
        say(f"  Spawn tree:    {len(roots)} roots; parents with children: {', '.join(parents) or 'none'}")
        if self.o.headless:
            say(f"\n  Headless for {self.o.duration:g}s.\n")
        else:
            say("\n  Sign in with the key, watch the verdicts arrive, act on an agent. "
                "Ctrl-C stops everything.\n")

    async def _director(self, api: httpx.AsyncClient, plan: Plan) -> None:
        """The scenario's timed operator commands, issued over the API."""
        for step in operator_steps(plan):
            await asyncio.sleep(max(0.0, plan.start_at + float(step["at"]) - time.time()))
            body: dict[str, Any] = {"command_type": step["command"], "target_agents": step["targets"],
                                    "parameters": step.get("parameters") or {},
                                    "reason": step.get("reason") or f"scenario {plan.scenario}"}
            r = await api.post("/commands", json=body)
            status = "issued" if r.status_code < 400 else f"refused: {r.text[:120]}"
            say(f"  [{time.time() - plan.start_at:5.1f}s] scenario operator: {step['command']} "
                f"{', '.join(step['targets'])} {status}")

    async def _watch(self, api: httpx.AsyncClient, plan: Plan, fleet: Any) -> None:
        """Print each new verdict and finished command; keep the fleet's process
        table (and its zombies) in order."""
        ids = {a["id"] for a in plan.agents}
        while True:
            await asyncio.to_thread(fleet.watch)
            clock = f"[{time.time() - plan.start_at:5.1f}s]"
            try:
                for v in sorted(await fleet_verdicts(api, plan), key=lambda v: v["created_at"]):
                    if v["id"] not in self.seen:
                        self.seen.add(v["id"])
                        say(f"  {clock} verdict: {v['severity']:<8} {v['category']:<13} {v['title']}")
                r = await api.get("/commands", params={"limit": 50})
                for c in reversed(r.json()["items"] if r.status_code == 200 else []):
                    if c["command_id"] in self.seen or c["status"] not in _FINAL or not set(c["target_agents"]) & ids:
                        continue
                    self.seen.add(c["command_id"])
                    cascade = f" (cascade: {', '.join(c['cascade_terminated'])})" if c["cascade_terminated"] else ""
                    say(f"  {clock} command: {c['command_type']} {', '.join(c['target_agents'])} "
                        f"-> {c['status']}{cascade} [{c['operator']}]")
            except (httpx.HTTPError, KeyError, ValueError):
                pass  # a busy moment; the next round catches up
            await asyncio.sleep(1.0)


async def _register_container(cockpit: Any, plan: Plan, agent: dict[str, Any], container: str) -> str:
    """Register a container agent (the container cannot know its own name); its token."""
    spec = {"agent_id": agent["id"], "name": agent["name"], "fleet_id": plan.fleet_id,
            "runtime": {"kind": "docker", "container": container}}
    if agent.get("parent"):
        spec["parent_id"] = agent["parent"]
    return str((await cockpit.c2l.register_agent(spec))["token"])


def _log_to_file(path: Path) -> None:
    """Cockpit's JSON logs go to a file; the terminal shows the demo's own lines."""
    from loguru import logger

    from cockpit.platform.logging import configure_logging

    configure_logging("INFO", json=True)
    logger.remove()
    logger.add(str(path), level="INFO", serialize=True, enqueue=False)
    logger.add(sys.stderr, level="ERROR", format="{time:HH:mm:ss} {level} {message}")


async def _serve(cockpit: Any, host: str, port: int) -> tuple[Any, asyncio.Task[None]]:
    import uvicorn

    from cockpit.gateway.app import create_app

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Any:  # the demo handles SIGINT/SIGTERM itself
            yield

    config = uvicorn.Config(create_app(cockpit, manage_lifecycle=False), host=host, port=port,
                            log_config=None, access_log=False, lifespan="on",
                            ws_ping_interval=None, timeout_graceful_shutdown=5)
    server = Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await cockpit.stop()
            raise DemoError(f"the HTTP server did not start on {host}:{port}")
        await asyncio.sleep(0.02)
    return server, task
