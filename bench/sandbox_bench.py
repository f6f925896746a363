"""Sandbox-level figures: cold session start to first result, and the execute round trip.

Run: .venv/bin/python -m bench.sandbox_bench [--starts 10] [--round-trips 300]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import sandbox

from .stats import HEADER, row


async def main(starts: int, round_trips: int) -> None:
    backend = sandbox.DockerBackend(sandbox.DockerConfig(labels={"codeinterp.bench": "1"}))
    cold: list[float] = []
    for i in range(starts):
        began = time.perf_counter()
        session = await sandbox.Session.start(backend, f"bench-{i}")
        try:
            result = await session.execute("print(1)")
            cold.append(time.perf_counter() - began)
            assert result.stdout == "1\n", result
        finally:
            await session.close()
    session = await sandbox.Session.start(backend, "bench-rt")
    try:
        trips: list[float] = []
        for _ in range(20):
            await session.execute("pass")  # warm up
        for _ in range(round_trips):
            began = time.perf_counter()
            await session.execute("pass")
            trips.append(time.perf_counter() - began)
    finally:
        await session.close()
        await backend.aclose()
    print(HEADER)
    print(row("cold session start to first result (print(1))", cold))
    print(row("execute round trip of `pass`", trips))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--round-trips", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.starts, args.round_trips))
