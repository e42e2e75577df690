"""Command -> confirmation latency against a real ``cockpit serve`` in its own process.

    python bench/bench_commands.py [--mutes 200] [--terminates 30] [--docker-host unix://...]

MUTE targets registered external agents; TERMINATE targets real OS processes that
honour SIGTERM (and, with ``--docker-host``, real busybox containers that trap TERM).
Latency is POST /commands -> ``command.confirmed`` on ``/ws``; each TERMINATE is also
checked with the OS (the process is gone) or the engine (the container is removed).
The per-operator rate limits are raised for the run (COCKPIT_C2L__RATE_LIMITS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import Server, backend_env, start_server  # noqa: E402

AGENT = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n" \
        "print('ready', flush=True)\nwhile True: time.sleep(0.05)\n"


async def _confirm(server: Server, ws: websockets.ClientConnection, client: httpx.AsyncClient,
                   body: dict[str, object]) -> tuple[float, dict[str, object]]:
    t0 = time.perf_counter()
    r = await client.post("/commands", json=body, headers={"X-API-Key": server.key})
    r.raise_for_status()
    command_id = r.json()["command_id"]
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if event["type"] == "command.confirmed" and event["data"]["command_id"] == command_id:
            return (time.perf_counter() - t0) * 1000, event["data"]


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] == "Z"
    except FileNotFoundError:
        return True


async def run(server: Server, mutes: int, terminates: int, docker_host: str | None) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"MUTE": [], "TERMINATE process": [], "TERMINATE container": []}
    ws_url = server.base_url.replace("http", "ws") + f"/ws?api_key={server.key}"
    async with websockets.connect(ws_url) as ws, httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        headers = {"X-API-Key": server.key}
        for i in range(mutes):
            agent = f"mute-{i}"
            await client.post("/agents", json={"agent_id": agent, "name": agent}, headers=headers)
            ms, data = await _confirm(server, ws, client, {"command_type": "MUTE", "target_agents": [agent],
                                                           "parameters": {"duration_seconds": 60}})
            assert data["status"] == "COMPLETED", data
            results["MUTE"].append(ms)
        for i in range(terminates):
            proc = subprocess.Popen([sys.executable, "-c", AGENT], stdout=subprocess.PIPE)
            assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
            agent = f"proc-{i}"
            await client.post("/agents", json={"agent_id": agent, "name": agent,
                                               "runtime": {"kind": "process", "pid": proc.pid}}, headers=headers)
            ms, data = await _confirm(server, ws, client, {"command_type": "TERMINATE", "target_agents": [agent]})
            assert data["status"] == "COMPLETED" and _gone(proc.pid), data
            proc.wait(5)
            results["TERMINATE process"].append(ms)
        if docker_host:
            import docker

            engine = docker.DockerClient(base_url=docker_host)
            for i in range(min(terminates, 20)):
                name = f"bench-{uuid.uuid4().hex[:8]}"
                engine.containers.run("cockpit-test/busybox:latest", ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"],
                                      name=name, detach=True, network="none")
                agent = f"box-{i}"
                await client.post("/agents", json={"agent_id": agent, "name": agent,
                                                   "runtime": {"kind": "docker", "container": name}}, headers=headers)
                ms, data = await _confirm(server, ws, client, {"command_type": "TERMINATE", "target_agents": [agent]})
                assert data["status"] == "COMPLETED", data
                assert name not in {c.name for c in engine.containers.list(all=True)}
                results["TERMINATE container"].append(ms)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mutes", type=int, default=200)
    parser.add_argument("--terminates", type=int, default=30)
    parser.add_argument("--docker-host")
    parser.add_argument("--database-url")
    parser.add_argument("--nats-url")
    args = parser.parse_args()
    env = {"COCKPIT_C2L__RATE_LIMITS": json.dumps({"MUTE": "100000/minute", "ISOLATE": "100000/minute",
                                                   "TERMINATE": "100000/minute"})}
    if args.docker_host:
        env["COCKPIT_C2L__DOCKER_URL"] = args.docker_host
    server = start_server(env | backend_env(args))
    try:
        results = asyncio.run(run(server, args.mutes, args.terminates, args.docker_host))
    finally:
        server.stop()
    for name, values in results.items():
        if len(values) >= 2:
            q = statistics.quantiles(values, n=100)
            print(f"{name:<20} n={len(values):<4} p50 {q[49]:7.1f} ms  p95 {q[94]:7.1f} ms  "
                  f"p99 {q[98]:7.1f} ms  max {max(values):7.1f} ms")


if __name__ == "__main__":
    main()
