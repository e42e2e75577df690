"""Server CPU per request of each kind in the runbook mix, and what the mix needs.

    python bench/bench_cpu.py [--requests 2000] [--concurrency 8] [--rate 1450] [--history 3000]
                              [--database-url ... --nats-url ... --kafka-url ...]

Starts a real ``cockpit serve`` (its own process), registers agents and fills it
with ``--history`` requests of the mix (3,000: verdicts, audit rows and commands to
read; more to see what a request costs once the tables have grown), then
sends ``--requests`` requests of one kind at a time, closed loop, ``--concurrency``
at once, exactly as ``load.py`` builds them. For each kind it reports the CPU time
the server process spent (user + system, all its threads, from ``/proc``) per
request, including the work a request leaves behind (a MUTE's execution, the
analysis of telemetry), less what the idle server spends meanwhile. Then it
weighs the kinds by the mix's shares: the CPU seconds per second that ``--rate``
requests per second of the mix would need. One process runs Python on one core at
a time (its event loop), so past about 1.0 the server sheds load whatever else is
tuned. A database or broker on the same machine spends CPU of its own, not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import MIX, MUTE_SECONDS, RAISED_LIMITS, Traffic, populate
from server import add_backend_args, backend_env, start_server

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system time of the whole process (every thread) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


async def _closed_loop(session: aiohttp.ClientSession, base: str, traffic: Traffic, endpoint: str,
                       count: int, concurrency: int) -> dict[int, int]:
    statuses: dict[int, int] = {}
    todo = iter(range(count))

    async def worker() -> None:
        for _ in todo:
            method, path, headers, body = traffic.request(endpoint)
            async with session.request(method, base + path, json=body, headers=headers) as r:
                statuses[r.status] = statuses.get(r.status, 0) + 1
                traffic.observe(endpoint, r.status, await r.read())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


async def fill_mix(session: aiohttp.ClientSession, base: str, traffic: Traffic, rnd: random.Random,
                   count: int, concurrency: int) -> None:
    """``count`` requests of the mix, drawn at random by their shares, ``concurrency``
    at a time."""
    mix = iter(rnd.choices(list(MIX), list(MIX.values()), k=count))

    async def worker() -> None:
        for endpoint in mix:
            await _closed_loop(session, base, traffic, endpoint, 1, 1)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _settled(pid: int, quiet: float = 0.02, window: float = 0.5, limit: float = 30.0) -> None:
    """Wait until the server is idle (less than ``quiet`` of a core over ``window``):
    the work a request left behind is done."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        await asyncio.sleep(window)
        if cpu_seconds(pid) - before < quiet * window:
            return


async def measure(base: str, key: str, pid: int, requests: int, concurrency: int,
                  history: int) -> dict[str, dict[str, float]]:
    rnd = random.Random(7)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        traffic = Traffic(key, await populate(session, base, key, 200), rnd, [key])
        endpoints = list(MIX)
        # ``history`` requests of the mix first, so reads have verdicts, audits and
        # commands to read (and the tables are as large as after that much traffic).
        await fill_mix(session, base, traffic, rnd, history, concurrency if history > 3000 else 1)
        await _settled(pid, limit=120.0)
        idle_from, idle_start = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(3.0)
        idle = (cpu_seconds(pid) - idle_from) / (time.monotonic() - idle_start)
        out: dict[str, dict[str, float]] = {}
        for endpoint in endpoints:
            before, started = cpu_seconds(pid), time.monotonic()
            statuses = await _closed_loop(session, base, traffic, endpoint, requests, concurrency)
            answered = time.monotonic() - started
            if endpoint.startswith("POST /commands"):
                await asyncio.sleep(MUTE_SECONDS + 2)  # its expiry (unmute) is part of a MUTE's cost
            await _settled(pid)
            spent = cpu_seconds(pid) - before - idle * (time.monotonic() - started)
            ok = sum(n for status, n in statuses.items() if status < 400)
            out[endpoint] = {"cpu_ms": 1000 * spent / requests, "rps": requests / answered,
                             "ok": ok, "requests": requests}
        out["idle"] = {"cpu_ms": 1000 * idle}
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests of each kind")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=1450, help="the mix's rate to weigh the costs at")
    parser.add_argument("--history", type=int, default=3000,
                        help="requests of the mix sent first (past 3,000, --concurrency at a time)")
    add_backend_args(parser)
    args = parser.parse_args()
    server = start_server({"COCKPIT_C2L__RATE_LIMITS": RAISED_LIMITS, **backend_env(args)})
    try:
        costs = asyncio.run(measure(server.base_url, server.key, server.process.pid, args.requests,
                                    args.concurrency, args.history))
    finally:
        server.stop()
    print(f"server CPU per request ({args.requests} of each kind, {args.concurrency} at a time, after "
          f"{args.history:,} requests of the mix; "
          f"idle server {costs['idle']['cpu_ms'] / 10:.1f} % of a core, subtracted)")
    print("| request | share of the mix | CPU ms per request | closed-loop req/s | ok | CPU s/s at the mix's rate |")
    print("|---|---|---|---|---|---|")
    need = 0.0
    for endpoint, share in MIX.items():
        c = costs[endpoint]
        part = share * args.rate * c["cpu_ms"] / 1000
        need += part
        print(f"| {endpoint} | {share:.0%} | {c['cpu_ms']:.2f} | {c['rps']:.0f} | {c['ok']}/{c['requests']} "
              f"| {part:.2f} |")
    print(f"the mix at {args.rate:g} req/s needs {need:.2f} CPU seconds per second in the server "
          f"(one event loop: about 1.0 at most); it fits up to about {args.rate / need:.0f} req/s")


if __name__ == "__main__":
    main()
