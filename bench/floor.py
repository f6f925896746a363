"""The figures under the gateway: the sandbox library, and a raw jupyter_client execute (the floor)."""

from __future__ import annotations

import time
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient

import sandbox

from .gateway_bench import Params
from .harness import BENCH_LABELS
from .stats import Row

__all__ = ["library_first_call", "library_round_trip"]


def _backend() -> sandbox.DockerBackend:
    return sandbox.DockerBackend(sandbox.DockerConfig(labels=BENCH_LABELS))


async def library_first_call(p: Params) -> list[Row]:
    backend = _backend()
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


async def _raw_execute(client: AsyncKernelClient, code: str) -> None:
    msg_id = client.execute(code)
    while True:
        msg: dict[str, Any] = await client.get_iopub_msg(timeout=30)
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):
            return


async def library_round_trip(p: Params) -> list[Row]:
    backend = _backend()
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
            client = AsyncKernelClient()
            client.load_connection_info(dict(session.host.connection_info))  # type: ignore[arg-type]
            client.start_channels()
            try:
                await client.wait_for_ready(timeout=30)
                for n in range(p.warmup + p.round_trips):
                    began = time.perf_counter()
                    await _raw_execute(client, "pass")
                    if n >= p.warmup:
                        raw.append(time.perf_counter() - began)
                    await client.get_shell_msg(timeout=30)  # the execute_reply, outside the timing
            finally:
                client.stop_channels()
        finally:
            await session.close()
    finally:
        await backend.aclose()
    return [Row("2", "sandbox library: Session.execute(`pass`) on a warm session, no HTTP", lib),
            Row("2", "floor: raw jupyter_client execute(`pass`) + iopub idle, same kernel", raw)]
