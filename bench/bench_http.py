"""Requests/s through core.http (limits off) next to bare httpx with the same client settings.

    .venv/bin/python bench/bench_http.py [--requests 20000] [--concurrency 8] [--rounds 5]

The upstream is a minimal keep-alive HTTP/1.1 server in its own process (asyncio, a fixed 1 KB JSON
body), so the server is not the bottleneck that would hide the client's overhead. Both clients send
the same GETs with the same timeout, headers and connection pool; rounds alternate between them so
a noisy neighbour slows both alike. Overhead = 1 - core.http rate / bare rate (target: under 15 %).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inlet.core.connector import IntegrationContext
from inlet.core.http import HttpClient, HttpSettings
from inlet.core.ratelimit import RateLimitSettings

BODY = (
    b'{"resourceType":"Bundle","type":"searchset","entry":['
    + b",".join(b'{"resource":{"resourceType":"Observation","id":"%d","status":"final"}}' % i for i in range(14))
    + b"]}"
)


def serve(port: int) -> None:
    """A tiny HTTP/1.1 server: every GET gets the same JSON body, connections kept alive."""
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)) + BODY

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_bare(base: str, n: int, concurrency: int) -> tuple[float, float]:
    # Exactly the client HttpClient builds (default pool limits), minus inlet's own work.
    async with httpx.AsyncClient(
        base_url=base, timeout=30.0, headers={"User-Agent": "inlet/0.1"}, follow_redirects=False
    ) as client:

        async def worker(count: int) -> None:
            for _ in range(count):
                async with client.stream("GET", "/Observation", params={"_count": "14"}) as resp:
                    await resp.aread()
                    assert resp.status_code == 200

        return await _timed(worker, n, concurrency)


async def _timed(worker: Any, n: int, concurrency: int) -> tuple[float, float]:
    """(requests/s, client CPU µs per request): the CPU figure shows overhead even if the server saturates."""
    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    done = n // concurrency * concurrency
    return done / (time.perf_counter() - began), (time.process_time() - cpu) / done * 1e6


async def run_inlet(base: str, n: int, concurrency: int) -> tuple[float, float]:
    settings = HttpSettings(base_url=base, rate_limit=RateLimitSettings(max_concurrency=concurrency))
    async with HttpClient(settings, IntegrationContext("bench", "http")) as http:

        async def worker(count: int) -> None:
            for _ in range(count):
                body, _ = await http.get("/Observation", {"_count": "14"})
                assert body

        return await _timed(worker, n, concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(port,), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{port}/fhir"
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        asyncio.run(run_bare(base, 2000, args.concurrency))  # warm-up
        asyncio.run(run_inlet(base, 2000, args.concurrency))
        bare_runs, inlet_runs = [], []
        for _ in range(args.rounds):
            bare_runs.append(asyncio.run(run_bare(base, args.requests, args.concurrency)))
            inlet_runs.append(asyncio.run(run_inlet(base, args.requests, args.concurrency)))
    finally:
        server.terminate()
        server.join(5)
    bare, inlet = [r for r, _ in bare_runs], [r for r, _ in inlet_runs]
    b, i = max(bare), max(inlet)
    b_cpu, i_cpu = min(c for _, c in bare_runs), min(c for _, c in inlet_runs)
    print(
        f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, httpx {httpx.__version__}"
    )
    print(f"{args.requests} GETs per round, concurrency {args.concurrency}, best of {args.rounds} rounds")
    print(f"bare httpx      : {b:10,.0f} requests/s  (rounds: {', '.join(f'{x:,.0f}' for x in bare)})")
    print(f"core.http       : {i:10,.0f} requests/s  (rounds: {', '.join(f'{x:,.0f}' for x in inlet)})")
    print(f"overhead        : {1 - i / b:10.1%}  (target < 15 %)")
    print(f"client CPU      : bare {b_cpu:.0f} µs/request, core.http {i_cpu:.0f} µs/request (+{i_cpu / b_cpu - 1:.1%})")


if __name__ == "__main__":
    main()
