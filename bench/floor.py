"""The figures under the gateway: the sandbox library, and a raw jupyter_client execute (the floor)."""

from __future__ import annotations

import asyncio
import json
import time

import docker

import sandbox

from .gateway_bench import Params
from .harness import BENCH_LABELS
from .stats import Row

__all__ = ["library_first_call", "library_round_trip"]


def _backend(runtime: str | None) -> sandbox.DockerBackend:
    return sandbox.DockerBackend(sandbox.DockerConfig(labels=BENCH_LABELS, runtime=runtime))


async def library_first_call(p: Params, runtime: str | None = None) -> list[Row]:
    backend = _backend(runtime)
    samples: list[float] = []
    try:
        for i in range(p.first_calls):
            began = time.perf_counter()
            session = await sandbox.Session.start(backend, f"bench-lib-{i}")
            try:
                result = await session.execute("print(1)")
                samples.append(time.perf_counter() - began)
                if result.stdout != "1\n":
                    raise RuntimeError(f"print(1) gave {result!r}")
            finally:
                await session.close()
    finally:
        await backend.aclose()
    return [Row("1", "sandbox library: Session.start + execute(`print(1)`), no HTTP, no pool", samples)]


# Runs inside the sandbox, beside the kernel: jupyter_client over the kernel's own ipc sockets, with no
# channel, relay, Docker or HTTP in between. That is the kernel's own floor.
_RAW_FLOOR = """
import json, sys, time
from jupyter_client import BlockingKernelClient
client = BlockingKernelClient()
client.load_connection_file("/run/kernel/connection.json")
client.start_channels()
client.wait_for_ready(timeout=30)
warmup, n = int(sys.argv[1]), int(sys.argv[2])
samples = []
for i in range(warmup + n):
    began = time.perf_counter()
    msg_id = client.execute("pass")
    while True:
        msg = client.get_iopub_msg(timeout=30)
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):
            break
    if i >= warmup:
        samples.append(time.perf_counter() - began)
    client.get_shell_msg(timeout=30)
client.stop_channels()
print(json.dumps(samples))
"""


def _raw_floor(container: str, warmup: int, n: int) -> list[float]:
    client = docker.from_env(timeout=120)
    try:
        exit_code, out = client.containers.get(container).exec_run(
            ["/opt/venv/bin/python", "-c", _RAW_FLOOR, str(warmup), str(n)], user="1000:1000", demux=True)
    finally:
        client.close()
    if exit_code != 0:
        raise RuntimeError(f"the raw floor failed in the sandbox: {out[1]!r}")
    samples: list[float] = json.loads(out[0])
    return samples


async def library_round_trip(p: Params, runtime: str | None = None) -> list[Row]:
    backend = _backend(runtime)
    lib: list[float] = []
    raw: list[float] = []
    try:
        session = await sandbox.Session.start(backend, "bench-floor")
        try:
            for n in range(p.warmup + p.round_trips):
                began = time.perf_counter()
                await session.execute("pass")
                if n >= p.warmup:
                    lib.append(time.perf_counter() - began)
            raw = await asyncio.to_thread(_raw_floor, session.host.name, p.warmup, p.round_trips)
        finally:
            await session.close()
    finally:
        await backend.aclose()
    return [Row("2", "sandbox library: Session.execute(`pass`) on a warm session, no HTTP", lib),
            Row("2", "floor: raw jupyter_client execute(`pass`) + iopub idle, beside the kernel", raw)]
