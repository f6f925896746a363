"""The gateway against its floors: the sandbox library in this process, and raw jupyter_client beside
the kernel, inside its container (over the kernel's own ipc sockets: no channel, relay, Docker or HTTP).

Round trip and throughput interleave them in one run (block by block, round by round), so that the
machine's noise falls on all of them alike, and report the gateway's ratios to its floors.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

import docker
import httpx

import sandbox
from gateway.client import AsyncClient

from .gateway_bench import HTTP_TIMEOUT, Params, new_thread
from .harness import BENCH_LABELS, Server, call
from .stats import Row

__all__ = ["library_first_call", "round_trip", "throughput"]

_BLOCKS = 10  # round trips are taken in this many blocks per leg, the legs' order rotating


def _backend(runtime: str | None) -> sandbox.DockerBackend:
    return sandbox.DockerBackend(sandbox.DockerConfig(labels=BENCH_LABELS, runtime=runtime))


def _runtime_of(server: Server) -> str | None:
    """The runtime the server's sandboxes use, so the library's run under the same."""
    return server.extra_env.get("CODEINTERP_RUNTIME") or None


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


# Runs inside the sandbox, beside the kernel. argv: warmup, n, and a wall-clock time to begin at (0:
# at once), so that clients in several containers run their timed calls together. Prints the timed
# samples and the wall-clock span of the timed calls.
_RAW_FLOOR = """
import json, sys, time
from jupyter_client import BlockingKernelClient
client = BlockingKernelClient()
client.load_connection_file("/run/kernel/connection.json")
client.start_channels()
client.wait_for_ready(timeout=30)
warmup, n, begin_at = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
def one():
    msg_id = client.execute("pass")
    while True:
        msg = client.get_iopub_msg(timeout=30)
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):
            break
    while client.get_shell_msg(timeout=30)["parent_header"].get("msg_id") != msg_id:
        pass
for _ in range(warmup):
    one()
time.sleep(max(0.0, begin_at - time.time()))
samples, start = [], time.time()
for _ in range(n):
    began = time.perf_counter()
    one()
    samples.append(time.perf_counter() - began)
client.stop_channels()
print(json.dumps({"samples": samples, "start": start, "end": time.time()}))
"""


@dataclass(frozen=True)
class _RawRun:
    samples: list[float]
    start: float  # wall clock, in the container (the host's clock)
    end: float


def _raw_floor(container: str, warmup: int, n: int, begin_at: float = 0.0) -> _RawRun:
    client = docker.from_env(timeout=120)
    try:
        exit_code, out = client.containers.get(container).exec_run(
            ["/opt/venv/bin/python", "-c", _RAW_FLOOR, str(warmup), str(n), str(begin_at)], user="1000:1000",
            demux=True)
    finally:
        client.close()
    if exit_code != 0:
        raise RuntimeError(f"the raw floor failed in the sandbox (exit {exit_code}): {out!r}")
    stdout, _ = cast(tuple[bytes | None, bytes | None], out)
    result = json.loads(stdout or b"null")
    return _RawRun([float(x) for x in result["samples"]], float(result["start"]), float(result["end"]))


async def _timed(fn: Callable[[], Awaitable[object]]) -> float:
    began = time.perf_counter()
    await fn()
    return time.perf_counter() - began


def _ratio(name: str, num: list[float], den: list[float], *, percent: bool, target: str) -> Row:
    """Paired ratios (block by block, or round by round) as the row's figures; the ratio of the
    medians of all samples in its note."""
    ratios = [a / b for a, b in zip(num, den, strict=True) if b > 0]
    scale = 100.0 if percent else 1.0
    return Row("3" if percent else "2", name, ratios, unit="%" if percent else "x", scale=scale,
               note=target)


def _of_medians(num: list[float], den: list[float], percent: bool) -> str:
    value = statistics.median(num) / statistics.median(den) * (100 if percent else 1)
    return f"ratio of the medians of all samples {value:.0f} %" if percent else \
        f"ratio of the medians of all samples {value:.2f}"


async def _ours(api: AsyncClient, thread: str, code: str) -> None:
    body = await api.thread_call(thread, code)
    if body.get("status") != "completed" or body.get("error"):
        raise RuntimeError(f"call {code!r} on {thread} did not complete: {body.get('status')} {body.get('error')}")


async def round_trip(p: Params, server: Server) -> list[Row]:
    """`pass` on a warm thread over HTTP (httpx, and codeinterp's own client), through Session.execute,
    and through raw jupyter_client beside the kernel: in blocks, each leg in turn, the order rotating."""
    thread = new_thread("rt")
    backend = _backend(_runtime_of(server))
    legs = ("httpx", "ours", "lib", "raw")
    samples: dict[str, list[float]] = {leg: [] for leg in legs}
    medians: dict[str, list[float]] = {leg: [] for leg in legs}  # per block
    cpu: dict[str, list[float]] = {"httpx": [], "ours": []}  # this process's CPU per call, per block
    per_block = max(1, p.round_trips // _BLOCKS)
    ours = AsyncClient(server.url, timeout=300)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=HTTP_TIMEOUT) as http:
            await call(http, thread, "print(1)")
            session = await sandbox.Session.start(backend, "bench-floor")
            try:
                async def timed_calls(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
                    return [await _timed(fn) for _ in range(n)]

                async def leg(name: str, n: int, warmup: int) -> list[float]:
                    if name == "raw":
                        return (await asyncio.to_thread(_raw_floor, session.host.name, warmup, n)).samples
                    fn: Callable[[], Awaitable[object]] = {
                        "httpx": lambda: call(http, thread, "pass"),
                        "ours": lambda: _ours(ours, thread, "pass"),
                        "lib": lambda: session.execute("pass")}[name]
                    await timed_calls(fn, warmup)
                    return await timed_calls(fn, n)

                for name in legs:
                    await leg(name, 0, p.warmup)
                for block in range(_BLOCKS):
                    for i in range(len(legs)):
                        name = legs[(block + i) % len(legs)]
                        used = time.process_time()
                        got = await leg(name, per_block, 3)
                        if name in cpu:  # the client is all this process does meanwhile
                            cpu[name].append((time.process_time() - used) / (per_block + 3))
                        samples[name].extend(got)
                        medians[name].append(statistics.median(got))
            finally:
                await session.close()
            await http.delete(f"/v1/threads/{thread}/code_interpreter")
    finally:
        await ours.aclose()
        await backend.aclose()
    return [Row("2", "call round trip of `pass` on a warm thread, HTTP (httpx client)", samples["httpx"]),
            Row("2", "call round trip of `pass` on a warm thread, HTTP (gateway.client.AsyncClient)", samples["ours"],
                note="codeinterp's own client: keep-alive connections parsed by httptools (gateway/connection.py)"),
            Row("2", "client CPU per call (user + system, the bench process), httpx", cpu["httpx"],
                note="per block; the process does nothing else meanwhile"),
            Row("2", "client CPU per call (user + system, the bench process), gateway.client", cpu["ours"]),
            Row("2", "sandbox library: Session.execute(`pass`) on a warm session, no HTTP", samples["lib"]),
            Row("2", "floor: raw jupyter_client execute(`pass`) + iopub idle + reply, beside the kernel",
                samples["raw"]),
            _ratio("HTTP (httpx) round trip / raw floor, block medians", medians["httpx"], medians["raw"],
                   percent=False, target=f"target <= 1.5; {_of_medians(samples['httpx'], samples['raw'], False)}"),
            _ratio("HTTP (gateway.client) round trip / raw floor, block medians", medians["ours"], medians["raw"],
                   percent=False, target=f"target <= 1.5; {_of_medians(samples['ours'], samples['raw'], False)}"),
            _ratio("HTTP (httpx) round trip / library, block medians", medians["httpx"], medians["lib"],
                   percent=False, target=_of_medians(samples["httpx"], samples["lib"], False))]


async def throughput(p: Params, server: Server) -> list[Row]:
    """Calls per second over ``clients`` threads at once: through the gateway (httpx clients, then
    codeinterp's own), then the same load on as many library sessions in this process, then raw
    jupyter_client beside those kernels; round by round."""
    calls_per_round = p.clients * p.calls_per_client
    threads = [new_thread("tp") for _ in range(p.clients)]
    backend = _backend(_runtime_of(server))
    sessions: list[sandbox.Session] = []
    clients = [httpx.AsyncClient(base_url=server.url, timeout=HTTP_TIMEOUT) for _ in threads]
    ours = [AsyncClient(server.url, timeout=300) for _ in threads]
    rates: dict[str, list[float]] = {"http": [], "ours": [], "lib": [], "raw": []}
    latencies: list[float] = []
    execs = ThreadPoolExecutor(p.clients, thread_name_prefix="bench-raw")

    async def http_round() -> float:
        async def client(http: httpx.AsyncClient, thread: str) -> None:
            for _ in range(p.calls_per_client):
                latencies.append(await _timed(lambda: call(http, thread, "pass")))

        return await _timed(lambda: asyncio.gather(*(client(h, t) for h, t in zip(clients, threads, strict=True))))

    async def ours_round() -> float:
        async def client(api: AsyncClient, thread: str) -> None:
            for _ in range(p.calls_per_client):
                await _ours(api, thread, "pass")

        return await _timed(lambda: asyncio.gather(*(client(a, t) for a, t in zip(ours, threads, strict=True))))

    async def lib_round() -> float:
        async def client(session: sandbox.Session) -> None:
            for _ in range(p.calls_per_client):
                await session.execute("pass")

        return await _timed(lambda: asyncio.gather(*(client(s) for s in sessions)))

    async def raw_round() -> float:
        # Each container's client waits for a common start, so that all run their calls together.
        loop = asyncio.get_running_loop()
        begin_at = time.time() + 3.0
        spans = await asyncio.gather(*(loop.run_in_executor(execs, _raw_floor, s.host.name, 3, p.calls_per_client,
                                                            begin_at) for s in sessions))
        return max(run.end for run in spans) - min(run.start for run in spans)

    try:
        for http, thread in zip(clients, threads, strict=True):
            await call(http, thread, "print(1)")  # the threads exist before any round
        sessions = list(await asyncio.gather(*(sandbox.Session.start(backend, f"bench-tp-{i}")
                                               for i in range(p.clients))))
        for round_no in range(p.rounds + 1):  # round 0 warms up
            for name, leg in (("http", http_round), ("ours", ours_round), ("lib", lib_round), ("raw", raw_round)):
                elapsed = await leg()
                if round_no > 0:
                    rates[name].append(calls_per_round / elapsed)
            if round_no == 0:
                latencies.clear()
        for http, thread in zip(clients, threads, strict=True):
            await http.delete(f"/v1/threads/{thread}/code_interpreter")
    finally:
        for http in clients:
            await http.aclose()
        for api in ours:
            await api.aclose()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        await backend.aclose()
        execs.shutdown()
    per = f"{p.clients} at once x {p.calls_per_client} `pass` calls per round"
    return [Row("3", f"calls per second, HTTP (httpx clients): {p.clients} threads, {per}", rates["http"],
                unit="calls/s", scale=1.0),
            Row("3", "latency of one `pass` call under that load, HTTP (httpx)", latencies),
            Row("3", f"calls per second, HTTP (gateway.client.AsyncClient): {p.clients} threads, {per}", rates["ours"],
                unit="calls/s", scale=1.0),
            Row("3", f"sandbox library: calls per second, {p.clients} sessions in one process, {per}",
                rates["lib"], unit="calls/s", scale=1.0),
            Row("3", f"floor: raw jupyter_client calls per second beside those kernels, {per}", rates["raw"],
                unit="calls/s", scale=1.0),
            _ratio("HTTP (httpx) calls per second / library's, paired rounds", rates["http"], rates["lib"],
                   percent=True, target=f"target >= 80 %; {_of_medians(rates['http'], rates['lib'], True)}"),
            _ratio("HTTP (gateway.client) calls per second / library's, paired rounds", rates["ours"], rates["lib"],
                   percent=True, target=f"target >= 80 %; {_of_medians(rates['ours'], rates['lib'], True)}")]
