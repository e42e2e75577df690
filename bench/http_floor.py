"""The HTTP floor under ``bench_ingest.py``'s single-message load: the same ``wrk``
requests against a bare Litestar + uvicorn app in its own process (one guard, the body
read, a 202 with a small JSON answer; no parsing, storage or analysis).

    python bench/http_floor.py [--seconds 20]

What Cockpit's ``POST /telemetry`` costs above this is its own work; on a machine
where this floor is N requests/s, no single-process server built on the same stack
answers more.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import wrk_single  # noqa: E402
from server import free_port, wait_healthy  # noqa: E402

APP = '''
import sys
import uvicorn
from litestar import Litestar, Request, get, post
from litestar.exceptions import NotAuthorizedException


async def guard(connection, _handler):
    if not connection.headers.get("x-api-key"):
        raise NotAuthorizedException("missing key")


@post("/telemetry", guards=[guard], status_code=202)
async def telemetry(request: Request) -> dict:
    await request.body()
    return {"accepted": 1, "duplicates": 0}


@get("/health")
async def health() -> dict:
    return {"status": "ok"}


uvicorn.run(Litestar([telemetry, health]), host="127.0.0.1", port=int(sys.argv[1]),
            log_config=None, access_log=False)
'''


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", APP, str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(process, base_url)
        print("bare Litestar + uvicorn, the same single-message requests (wrk):")
        print(wrk_single(base_url, "any", args.seconds))
    finally:
        process.terminate()
        process.wait(10)


if __name__ == "__main__":
    main()
