"""What an idle server spends, fresh and after a history of traffic.

    python bench/bench_idle.py [--history 100000] [--wait 30] [--window 30]
                               [--profile OUT.raw] [--database-url ... --nats-url ... --kafka-url ...]

Starts a real ``cockpit serve`` (its own process), registers agents and measures the
CPU time (user + system, all threads, from ``/proc``) it spends over ``--window``
seconds with no requests. Then it sends ``--history`` requests of the runbook mix
(8 at a time, as ``bench_cpu.py --history`` does), waits ``--wait`` seconds for the
work they leave behind (mutes expiring, analysis, verdict batches) and measures the
idle server again. Background work that grows with what the server has seen (fleets,
agents, stored rows) shows as the difference. ``--profile`` records the second
window with py-spy (raw format, idle threads included) for a look at what runs.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import _settled, cpu_seconds, fill_mix
from load import RAISED_LIMITS, Traffic, populate
from server import add_backend_args, backend_env, start_server


async def idle_share(pid: int, window: float) -> float:
    """The share of one core the process spends over ``window`` seconds."""
    before, started = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(window)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


async def measure(base: str, key: str, pid: int, history: int, wait: float, window: float,
                  profile: str | None) -> tuple[float, float, float]:
    rnd = random.Random(7)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        traffic = Traffic(key, await populate(session, base, key, 200), rnd, [key])
        await _settled(pid, limit=120.0)
        fresh = await idle_share(pid, window)
        started = time.monotonic()
        await fill_mix(session, base, traffic, rnd, history, 8)
        filled = time.monotonic() - started
        await asyncio.sleep(wait)
        spy = None
        if profile:
            spy = await asyncio.create_subprocess_exec(
                "py-spy", "record", "--idle", "-r", "200", "-f", "raw", "-o", profile, "-d", str(int(window)),
                "-p", str(pid), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        after = await idle_share(pid, window)
        if spy is not None:
            await spy.wait()
        return fresh, after, filled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", type=int, default=100_000, help="requests of the mix in between")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds between the history and the measure")
    parser.add_argument("--window", type=float, default=30.0, help="seconds each idle measure lasts")
    parser.add_argument("--profile", help="py-spy raw profile of the second measure")
    add_backend_args(parser)
    args = parser.parse_args()
    server = start_server({"COCKPIT_C2L__RATE_LIMITS": RAISED_LIMITS, **backend_env(args)})
    try:
        fresh, after, filled = asyncio.run(measure(server.base_url, server.key, server.process.pid, args.history,
                                                   args.wait, args.window, args.profile))
    finally:
        server.stop()
    print(f"idle server, {args.window:g} s each: fresh {100 * fresh:.1f} % of a core; after {args.history:,} "
          f"requests of the mix ({filled:.0f} s) and {args.wait:g} s: {100 * after:.1f} %")


if __name__ == "__main__":
    main()
