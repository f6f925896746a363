"""Sections 1, 4, 5 and 7: the gateway over real HTTP (each against its own `codeinterp serve`)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx

from .harness import Server, bench_containers, call, logs_of
from .stats import Row

__all__ = ["HTTP_TIMEOUT", "Params", "files", "first_call_cold", "first_call_warm", "imports", "memory", "new_thread"]

MB = 1 << 20
HTTP_TIMEOUT = httpx.Timeout(300, connect=10)


@dataclass
class Params:
    first_calls: int = 10
    round_trips: int = 200
    warmup: int = 20
    clients: int = 8
    calls_per_client: int = 25
    rounds: int = 9  # of the throughput legs: a 2-core VM's figures drift 10-30 % from one to the next
    idle_sandboxes: int = 4
    file_mb: int = 100
    file_samples: int = 3
    llm_first_calls: int = 5
    llm_round_trips: int = 50
    imports: int = 5
    flood_lines: int = 200_000
    flood_rounds: int = 3

    @classmethod
    def quick(cls) -> Params:
        return cls(first_calls=3, round_trips=30, warmup=5, calls_per_client=5, rounds=2, idle_sandboxes=2,
                   file_samples=1, llm_first_calls=2, llm_round_trips=10, imports=2,
                   flood_lines=20_000, flood_rounds=1)


def new_thread(kind: str) -> str:
    return f"bench-{kind}-{uuid.uuid4().hex[:10]}"


async def _first_calls(server: Server, n: int, *, warm: bool) -> tuple[list[float], str]:
    samples: list[float] = []
    unknown = timeouts = 0
    async with httpx.AsyncClient(base_url=server.url, timeout=HTTP_TIMEOUT) as http:
        for _ in range(n):
            if warm:
                ready = await server.pool_ready(http)
                unknown += ready is None
                timeouts += ready is False
            else:
                await asyncio.sleep(0.5)  # let the last delete settle
            thread = new_thread("first")
            began = time.perf_counter()
            body = await call(http, thread, "print(1)")
            samples.append(time.perf_counter() - began)
            if logs_of(body) != "1\n":
                raise RuntimeError(f"print(1) gave {body['code_interpreter']['outputs']!r}")
            (await http.delete(f"/v1/threads/{thread}/code_interpreter")).raise_for_status()
    note = ""
    if warm:
        note = "pool refilled before each sample" if not (unknown or timeouts) else (
            f"/healthz reported no pool state for {unknown} samples (slept 2 s instead); "
            f"pool not full after 120 s for {timeouts}")
    return samples, note


async def first_call_warm(p: Params, env: dict[str, str] | None = None) -> list[Row]:
    async with Server(pool_size=2, env=env) as server:
        samples, note = await _first_calls(server, p.first_calls, warm=True)
    return [Row("1", "first call on a new thread, `print(1)`, warm pool (size 2), HTTP", samples,
                note=note)]


async def first_call_cold(p: Params, server: Server) -> list[Row]:
    samples, _ = await _first_calls(server, p.first_calls, warm=False)
    return [Row("1", "first call on a new thread, `print(1)`, cold (pool size 0), HTTP", samples)]


async def imports(p: Params, server: Server) -> list[Row]:
    """The data-science imports a model's first cell makes, in a sandbox that has just started."""
    samples: list[float] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=HTTP_TIMEOUT) as http:
        for _ in range(p.imports):
            thread = new_thread("imp")
            await call(http, thread, "print(1)")  # the sandbox is up; its start is not timed
            began = time.perf_counter()
            await call(http, thread, "import pandas, matplotlib")
            samples.append(time.perf_counter() - began)
            (await http.delete(f"/v1/threads/{thread}/code_interpreter")).raise_for_status()
    return [Row("7", "call of `import pandas, matplotlib` in a new sandbox (after `print(1)`), HTTP", samples)]


def _memory(container_ids: list[str]) -> tuple[list[float], list[float]]:
    client = docker.from_env()
    working: list[float] = []
    usage: list[float] = []
    try:
        for cid in container_ids:
            stats: dict[str, Any] = client.containers.get(cid).stats(stream=False)  # type: ignore[assignment]
            mem = stats["memory_stats"]
            inner = mem.get("stats", {})
            # What `docker stats` shows: usage less the inactive page cache (cgroup v1 and v2 names).
            inactive = inner.get("total_inactive_file", inner.get("inactive_file", 0))
            usage.append(float(mem["usage"]))
            working.append(float(mem["usage"] - inactive))
    finally:
        client.close()
    return working, usage


async def memory(p: Params, server: Server) -> list[Row]:
    before = {c["Id"] for c in await asyncio.to_thread(bench_containers)}
    threads = [new_thread("mem") for _ in range(p.idle_sandboxes)]
    async with httpx.AsyncClient(base_url=server.url, timeout=HTTP_TIMEOUT) as http:
        for thread in threads:
            await call(http, thread, "print(1)")
        new = [c["Id"] for c in await asyncio.to_thread(bench_containers) if c["Id"] not in before]
        await asyncio.sleep(3)  # idle
        working, usage = await asyncio.to_thread(_memory, new)
        for thread in threads:
            await http.delete(f"/v1/threads/{thread}/code_interpreter")
    return [Row("4", "idle memory per sandbox after `print(1)` (docker stats: usage - inactive file)", working,
                unit="MiB", scale=1 / MB),
            Row("4", "idle memory per sandbox after `print(1)` (cgroup memory usage)", usage,
                unit="MiB", scale=1 / MB)]


async def files(p: Params, server: Server) -> list[Row]:
    size = p.file_mb * MB
    up_total: list[float] = []
    up_post: list[float] = []
    down_total: list[float] = []
    down_call: list[float] = []
    down_get: list[float] = []
    with tempfile.TemporaryDirectory(prefix="codeinterp-bench-") as tmp:
        source = Path(tmp) / "payload.bin"
        with source.open("wb") as out:
            for _ in range(p.file_mb):
                out.write(os.urandom(MB))
        async with httpx.AsyncClient(base_url=server.url, timeout=HTTP_TIMEOUT) as http:
            created = await http.post("/v1/containers", json={"name": "bench-files"})
            created.raise_for_status()
            cid = created.json()["id"]
            calls = f"/v1/containers/{cid}/calls"

            async def run(code: str) -> dict[str, Any]:
                response = await http.post(calls, json={"input": code})
                response.raise_for_status()
                body: dict[str, Any] = response.json()
                if body.get("status") != "completed" or body.get("error"):
                    raise RuntimeError(f"call failed: {body.get('error')}")
                return body

            await run("import os")
            for i in range(p.file_samples):
                name = f"up-{i}.bin"
                began = time.perf_counter()
                with source.open("rb") as fh:
                    uploaded = await http.post("/v1/files", files={"file": (name, fh, "application/octet-stream")},
                                               data={"purpose": "assistants"})
                uploaded.raise_for_status()
                posted = time.perf_counter()
                file_id = uploaded.json()["id"]
                placed = await http.post(f"/v1/containers/{cid}/files", json={"file_id": file_id})
                placed.raise_for_status()
                path = placed.json()["path"]
                body = await run(f"print(os.path.getsize({path!r}))")
                up_total.append(time.perf_counter() - began)
                up_post.append(posted - began)
                if logs_of(body).strip() != str(size):
                    raise RuntimeError(f"{path} has size {logs_of(body)!r}, not {size}")
                await run(f"os.remove({path!r})")
                await http.delete(f"/v1/files/{file_id}")

            await run(f"_bench_payload = os.urandom({size})")
            for i in range(p.file_samples):
                path = f"/mnt/data/down-{i}.bin"
                began = time.perf_counter()
                body = await run(f"with open({path!r}, 'wb') as f: f.write(_bench_payload)")
                produced = [f for f in body["files"] if f["path"] == path]
                if not produced:
                    raise RuntimeError(f"the call did not report {path}: {body['files']!r}")
                stored = time.perf_counter()
                received = 0
                async with http.stream("GET", f"/v1/files/{produced[0]['file_id']}/content") as response:
                    response.raise_for_status()
                    async for chunk in response.aiter_bytes(1 << 20):
                        received += len(chunk)
                done = time.perf_counter()
                if received != size:
                    raise RuntimeError(f"downloaded {received} bytes of {size}")
                down_total.append(done - began)
                down_call.append(stored - began)
                down_get.append(done - stored)
                await run(f"os.remove({path!r})")
                await http.delete(f"/v1/files/{produced[0]['file_id']}")
            await http.delete(f"/v1/containers/{cid}")
    mb = f"{p.file_mb} MB"
    return [
        Row("5", f"{mb} upload to readable at /mnt/data (POST /v1/files + POST container file + getsize call)",
            up_total),
        Row("5", f"  of which POST /v1/files of {mb}", up_post),
        Row("5", f"{mb} written in /mnt/data by a call to downloaded (call + GET /v1/files/{{id}}/content)",
            down_total),
        Row("5", "  of which the call that writes it (the gateway stores it before answering)", down_call),
        Row("5", f"  of which GET content of {mb}", down_get),
    ]
