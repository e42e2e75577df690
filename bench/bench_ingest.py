"""Sustained ingestion through all three layers, and telemetry -> verdict latency on
the WebSocket, against a real ``cockpit serve`` in its own process.

    python bench/bench_ingest.py [--seconds 20] [--database-url URL] [--nats-url URL] [--kafka-url URL]

Batch mode posts 1,000-message batches from a few concurrent clients; single mode
drives one message per request with ``wrk`` (Debian package) so the client is not
the bottleneck; the latency probe measures POST -> ``verdict.created`` on ``/ws``
for fresh INCONSISTENCY situations while the batch load runs. The server's own
telemetry -> verdict histogram (``/metrics``) gives the same latency for every draft
the batch run produced, once the verdict engine has caught up with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import Server, add_backend_args, backend_env, start_server  # noqa: E402

TEXTS = [
    "I will support you in the north this turn",
    "We attack agent-{x} tomorrow, be ready",
    "status nominal, three tasks done",
    "Let's work together against agent-{x}",
    "The weather is fine, nothing to report",
    "You can count on me, friend",
]


BENIGN = ["status nominal, three tasks done", "The weather is fine, nothing to report",
          "Thanks for the update", "Queue drained, idle"]


def _batch(n: int, agents: int = 200, texts: list[str] = TEXTS) -> list[dict[str, object]]:
    out = []
    for _ in range(n):
        a, b = random.randrange(agents), random.randrange(agents)
        out.append({
            "message_id": uuid.uuid4().hex, "fleet_id": f"fleet-{a % 4}",
            "source_agent_id": f"agent-{a}", "target_agent_ids": [f"agent-{b}"],
            "content": random.choice(texts).format(x=random.randrange(agents)),
        })
    return out


async def batch_load(server: Server, seconds: float, concurrency: int = 4, size: int = 1000,
                     texts: list[str] = TEXTS) -> dict[str, float]:
    headers = {"X-API-Key": server.key}
    payloads = [json.dumps({"messages": _batch(size, texts=texts)}) for _ in range(concurrency * 4)]
    sent = 0
    errors = 0
    refused = 0
    deadline = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient, k: int) -> None:
        nonlocal sent, errors, refused
        i = k
        while time.perf_counter() < deadline:
            # A fresh set of ids each round so every message is new work.
            body = payloads[i % len(payloads)].replace('"message_id": "', f'"message_id": "{i}-')
            i += concurrency
            while True:
                r = await client.post("/telemetry", content=body,
                                      headers={**headers, "content-type": "application/json"})
                if r.status_code != 503 or time.perf_counter() >= deadline:
                    break
                # Analysis is behind (or the server sheds load): retry as agents do.
                refused += 1
                await asyncio.sleep(float(r.headers.get("retry-after", "1")))
            if r.status_code == 202:
                sent += size
            elif r.status_code != 503:
                errors += 1

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        before = await _analysed(client, headers)
        await asyncio.gather(*(worker(client, k) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
        # Accepted is not analysed: wait until Layers 2-3 have caught up with the backlog.
        while await _analysed(client, headers) < before + sent:
            await asyncio.sleep(0.1)
        analysed_after = time.perf_counter() - started
    return {"messages": sent, "seconds": elapsed, "rate": sent / elapsed, "errors": errors, "refused": refused,
            "analysed_seconds": analysed_after, "analysed_rate": sent / analysed_after}


async def _analysed(client: httpx.AsyncClient, headers: dict[str, str]) -> float:
    """Messages the narrative filter has run through Layers 2-3 so far (from /metrics)."""
    text = (await client.get("/metrics", headers=headers)).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("narrative_filter_requests_total"))


_LAG = "verdict_engine_telemetry_to_verdict_seconds_bucket"


async def _lag_buckets(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[float, float]:
    """The server's telemetry -> verdict histogram (every draft's verdict): upper
    bound in seconds -> cumulative count."""
    text = (await client.get("/metrics", headers=headers)).text
    out = {}
    for line in text.splitlines():
        if line.startswith(_LAG):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            out[float(bound)] = float(line.rsplit(" ", 1)[1])
    return out


def _lag_summary(before: dict[float, float], after: dict[float, float]) -> str:
    """p50/p95 of the histogram's growth, interpolated within buckets."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if not total:
        return "no verdict written"

    def quantile(q: float) -> str:
        lower, below = 0.0, 0.0
        for bound, count in zip(bounds, counts, strict=True):
            if count >= q * total:
                if bound == float("inf"):
                    return f"> {lower * 1000:,.0f} ms"
                share = (q * total - below) / max(count - below, 1e-9)
                return f"{(lower + share * (bound - lower)) * 1000:,.0f} ms"
            lower, below = bound, count
        return "?"

    over = total - counts[bounds.index(5.0)]
    return f"p50 {quantile(0.5)}, p95 {quantile(0.95)}, {over / total:.1%} over 5 s ({total:,.0f} drafts)"


async def _buckets(server: Server) -> dict[float, float]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        return await _lag_buckets(client, {"X-API-Key": server.key})


async def verdict_lag(server: Server, before: dict[float, float]) -> str:
    """Once the verdict engine has caught up (its histogram stops growing for 2 s)."""
    headers = {"X-API-Key": server.key}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        last, still = -1.0, 0
        while still < 20:
            buckets = await _lag_buckets(client, headers)
            count = buckets.get(float("inf"), 0.0)
            still = still + 1 if count == last else 0
            last = count
            await asyncio.sleep(0.1)
    return _lag_summary(before, buckets)


async def _post(client: httpx.AsyncClient, item: dict[str, object], headers: dict[str, str]) -> int:
    """POST one message, retrying after a 503 as an agent would; how many 503s it got."""
    refused = 0
    while (r := await client.post("/telemetry", json=item, headers=headers)).status_code == 503:
        refused += 1
        await asyncio.sleep(float(r.headers.get("retry-after", "1")))
    r.raise_for_status()
    return refused


async def latency_probe(server: Server, probes: int, interval: float) -> tuple[list[float], int]:
    """POST a betrayal (promise, then attack) and time the verdict on the WebSocket,
    from the attack's first attempt (a 503 and its retry count in the latency); also
    how many of the probes' requests were answered 503."""
    headers = {"X-API-Key": server.key}
    latencies: list[float] = []
    refused = 0
    ws_url = server.base_url.replace("http", "ws") + f"/ws?api_key={server.key}&category=INCONSISTENCY"
    async with websockets.connect(ws_url, max_size=None) as ws, httpx.AsyncClient(base_url=server.base_url) as client:
        run = uuid.uuid4().hex[:6]  # fresh situations: each probe must create a verdict
        for n in range(probes):
            a, b = f"probe-{run}-{n}-a", f"probe-{run}-{n}-b"
            promise = {"message_id": uuid.uuid4().hex, "fleet_id": "probes", "source_agent_id": a,
                       "target_agent_ids": [b], "content": f"I will support you {b}, count on me"}
            refused += await _post(client, promise, headers)
            attack = {"message_id": uuid.uuid4().hex, "fleet_id": "probes", "source_agent_id": a,
                      "kind": "action", "action": {"type": "attack", "target": b}}
            t0 = time.perf_counter()
            refused += await _post(client, attack, headers)
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if msg["type"] == "verdict.created" and msg["data"]["agents_involved"] == [a]:
                    latencies.append((time.perf_counter() - t0) * 1000)
                    break
            await asyncio.sleep(interval)
    return latencies, refused


def wrk_single(base_url: str, key: str, seconds: int, connections: int = 32) -> str:
    """``wrk``'s report of ``seconds`` of single-message ``POST /telemetry``, every
    message new."""
    if not shutil.which("wrk"):
        return "wrk not installed (apt-get install wrk)"
    script = Path(tempfile.mkdtemp()) / "post.lua"
    script.write_text(f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "{key}"
-- Every wrk thread has its own Lua state, with the same unseeded random sequence:
-- the thread's number (given by setup) keeps the message ids of the threads apart.
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
request = function()
  n = n + 1
  local body = string.format('{{"message_id":"w%d-%d-%d-%d","source_agent_id":"agent-%d","target_agent_ids":["agent-%d"],"content":"status nominal, three tasks done"}}', tid, math.random(1, 1000000000), n, os.time(), n % 200, (n + 7) % 200)
  return wrk.format(nil, "/telemetry", nil, body)
end
""")
    return subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), base_url],
        capture_output=True, text=True, check=True,
    ).stdout


def single_load(server: Server, seconds: int, connections: int = 32) -> str:
    analysed = _analysed_now(server)
    out = wrk_single(server.base_url, server.key, seconds, connections)
    if " requests in " not in out:
        return out
    # Every request carries a new message: check that each went through Layers 2-3 (a
    # duplicate would be acknowledged without analysis, and flatter the rate).
    requests = int(next(line for line in out.splitlines() if " requests in " in line).split()[0])
    deadline = time.monotonic() + 30
    while (done := _analysed_now(server) - analysed) < requests and time.monotonic() < deadline:
        time.sleep(0.2)
    return out + f"{done:,.0f} of the {requests:,} messages analysed through Layers 2-3\n"


def _analysed_now(server: Server) -> float:
    async def read() -> float:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            return await _analysed(client, {"X-API-Key": server.key})

    return asyncio.run(read())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--probes", type=int, default=200)
    add_backend_args(parser)
    args = parser.parse_args()
    server = start_server(backend_env(args))
    try:
        idle = asyncio.run(latency_probe(server, args.probes // 2, 0.01))
        before = asyncio.run(_buckets(server))
        result = asyncio.run(batch_load(server, args.seconds))
        lag = asyncio.run(verdict_lag(server, before))
        print(f"batch ingestion: {result['rate']:,.0f} msg/s accepted ({result['messages']:,} messages in "
              f"{result['seconds']:.1f}s, {result['errors']} errors, {result['refused']} answers 503 retried); "
              f"{result['analysed_rate']:,.0f} msg/s "
              f"analysed through Layers 2-3 (the last one {result['analysed_seconds']:.1f}s after the start)")
        print(f"telemetry -> verdict in the server, every draft of the batch run: {lag}")

        async def loaded() -> tuple[dict[str, float], tuple[list[float], int]]:
            # Benign background traffic: every layer runs, but the probes' verdicts are
            # the only ones on the stream, so the WebSocket carries just what is timed.
            load = asyncio.create_task(batch_load(server, args.seconds / 2, concurrency=2, texts=BENIGN))
            probes = await latency_probe(server, args.probes // 2, 0.02)
            return await load, probes

        _, busy = asyncio.run(loaded())
        for name, (values, refused) in (("idle", idle), ("under batch load", busy)):
            q = statistics.quantiles(values, n=100)
            print(f"telemetry -> verdict on /ws ({name}, {len(values)} probes): "
                  f"p50 {q[49]:.1f} ms, p95 {q[94]:.1f} ms, p99 {q[98]:.1f} ms ({refused} answers 503 retried)")
        print("single-message requests (wrk):")
        print(single_load(server, int(args.seconds)))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
