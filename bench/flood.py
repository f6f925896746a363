"""Many small prints: `.venv/bin/python -m bench.flood [--lines N] [--rounds R] [--runtime R] [--output FILE]`.

Issue 14's item 3, measured in one run on one gateway:
- a cell printing N lines with ``flush=True`` (default 200,000) through the gateway over HTTP: time to the
  finished call, and whether what the logs hold is a contiguous prefix with a truncation notice past the
  1 MiB cap (every line below the cap arrives);
- the same cell drained by a raw jupyter_client beside the kernel, inside the same sandbox: the floor;
- `print(1)` on another thread, every 0.05 s while the flood runs: how long the neighbour waits;
- its floor: the same `print(1)` on a sandbox of the library in this process, taken right after each
  HTTP one, beside the same flood. Nothing of the gateway is in its path, only the machine's contention
  (2 cores shared by the flooding kernel, dockerd relaying its output, and the gateway reading it);
- the neighbour and its floor again beside one sustained flood of 10 N lines: a flood of N is over in
  about a second now that flushes close together travel as one message, too short to sample a tail;
- the gateway's own event loop meanwhile (`codeinterp_event_loop_lag_seconds` from /metrics, before
  and after): how many of its wake-ups came over 100 ms late, which tells a stall of the gateway from
  the machine's.
The neighbour calls through `gateway.client.AsyncClient`, codeinterp's own client.
Containers carry codeinterp.bench=1 and are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, cast

import docker
import httpx
from prometheus_client.parser import text_string_to_metric_families

import sandbox
from gateway.client import AsyncClient

from .harness import BENCH_LABELS, Server, log, sweep
from .stats import HEADER, Row

FLOOD = "for i in range({n}):\n    print(i, flush=True)"
PROBE_EVERY = 0.05  # seconds between the neighbour's calls
SUSTAINED = 10  # the sustained flood's lines, in floods
RAW = """
import json, sys, time
from jupyter_client import BlockingKernelClient
client = BlockingKernelClient()
client.load_connection_file("/run/kernel/connection.json")
client.start_channels()
client.wait_for_ready(timeout=30)
began, lines = time.perf_counter(), 0
msg_id = client.execute(sys.argv[1])
while True:
    msg = client.get_iopub_msg(timeout=600)
    if msg["parent_header"].get("msg_id") != msg_id:
        continue
    if msg["msg_type"] == "stream":
        lines += msg["content"]["text"].count("\\n")
    if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
        break
print(json.dumps([time.perf_counter() - began, lines]))
"""


def raw_drain(container_id: str, code: str) -> tuple[float, int]:
    client = docker.from_env(timeout=900)
    try:
        found = client.containers.list(filters={"label": f"codeinterp.container={container_id}"})
        exit_code, (out, err) = found[0].exec_run(["/opt/venv/bin/python", "-c", RAW, code], user="1000:1000",
                                                  demux=True)
    finally:
        client.close()
    if exit_code != 0:
        raise RuntimeError(f"raw drain failed: {err!r}")
    seconds, lines = json.loads(cast(bytes, out))  # demux=True: (stdout, stderr)
    return float(seconds), int(lines)


def contiguous_prefix(logs: str) -> int:
    """How many lines from 0 on arrived in order (the rest is cut at the cap, never skipped)."""
    count = 0
    for line in logs.splitlines():
        if line != str(count):
            break
        count += 1
    return count


async def neighbour(api: AsyncClient, session: sandbox.Session, done: asyncio.Event, samples: list[float],
                    floor: list[float]) -> None:
    while not done.is_set():
        began = time.perf_counter()
        answer = await api.thread_call("bench-neighbour", "print(1)")
        if answer["status"] != "completed":
            raise RuntimeError(f"the neighbour's print(1) ended {answer['status']}")
        samples.append(time.perf_counter() - began)
        began = time.perf_counter()
        result = await session.execute("print(1)")
        if result.outcome is not sandbox.Outcome.OK:
            raise RuntimeError(f"the library neighbour's print(1) ended {result.outcome}")
        floor.append(time.perf_counter() - began)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), PROBE_EVERY)


async def flood(server: Server, lines: int, rounds: int) -> list[Row]:
    """Issue 14's item 3 on a running gateway: the flood through it, the raw floor, the neighbour's waits."""
    code = FLOOD.format(n=lines)
    gateway: list[float] = []
    raw: list[float] = []
    stalls: list[float] = []
    library_stalls: list[float] = []
    notes: list[str] = []
    runtime = server.extra_env.get("CODEINTERP_RUNTIME") or None
    backend = sandbox.DockerBackend(sandbox.DockerConfig(labels=BENCH_LABELS, runtime=runtime))
    async with httpx.AsyncClient(base_url=server.url, timeout=900) as http, AsyncClient(server.url) as api, \
            await sandbox.Session.start(backend, "bench-flood-neighbour") as session:
        await session.execute("pass")
        for thread in ("bench-flood", "bench-neighbour"):
            (await http.post(f"/v1/threads/{thread}/code_interpreter/calls", json={"input": "pass"})
             ).raise_for_status()
        box = (await http.get("/v1/threads/bench-flood/code_interpreter")).json()["container"]["id"]
        lag_before = await _loop_lag(http)
        for n in range(rounds):
            seconds, body = await _beside(http, api, session, code, stalls, library_stalls)
            gateway.append(seconds)
            logs = "".join(o["logs"] for o in body["code_interpreter"]["outputs"] if o["type"] == "logs")
            truncated = "[output truncated" in logs
            notes.append(f"{body['status']}, {contiguous_prefix(logs)} lines in order from 0"
                         f"{' then the truncation notice' if truncated else ''}")
            log(f"flood round {n + 1}: {notes[-1]}")
            seconds, drained = await asyncio.to_thread(raw_drain, box, code)
            raw.append(seconds)
            log(f"flood round {n + 1}: gateway {gateway[-1]:.1f} s, raw {seconds:.1f} s ({drained} lines)")
        lag_rounds = _late(lag_before, await _loop_lag(http))
        sustained_stalls: list[float] = []
        sustained_floor: list[float] = []
        lag_before = await _loop_lag(http)
        took, body = await _beside(http, api, session, FLOOD.format(n=lines * SUSTAINED), sustained_stalls,
                                   sustained_floor)
        lag_sustained = _late(lag_before, await _loop_lag(http))
        log(f"sustained flood of {lines * SUSTAINED:,} lines: {body['status']} in {took:.1f} s")
    ratios = ", ".join(f"{g / r:.2f}" for g, r in zip(gateway, raw, strict=True))
    return [Row("3", f"{lines:,} flushed prints, through the gateway (HTTP) until the call is done",
                gateway, unit="s", scale=1, note=f"gateway / raw per round: {ratios} (target ≤ 2); "
                                                 + "; ".join(sorted(set(notes)))),
            Row("3", "floor: raw jupyter_client draining the same cell beside the kernel", raw, unit="s", scale=1),
            Row("3", "another thread's `print(1)` while the flood runs (one every 0.05 s), HTTP", stalls,
                note=f"target: no stall over 100 ms; {_over(stalls, 0.1)}; {lag_rounds}"),
            Row("3", "floor: `print(1)` through the sandbox library in the bench process, beside the same flood",
                library_stalls, note=f"no gateway in its path: the machine's contention; {_over(library_stalls, 0.1)}"),
            Row("3", f"another thread's `print(1)` beside one sustained flood of {lines * SUSTAINED:,} flushed prints, "
                     "HTTP", sustained_stalls,
                note=f"the flood took {took:.1f} s ({body['status']}); {_over(sustained_stalls, 0.1)}; "
                     f"{lag_sustained}"),
            Row("3", "floor: `print(1)` through the sandbox library beside the sustained flood", sustained_floor,
                note=_over(sustained_floor, 0.1))]


async def _beside(http: httpx.AsyncClient, api: AsyncClient, session: sandbox.Session, code: str,
                  stalls: list[float], floor: list[float]) -> tuple[float, dict[str, Any]]:
    """Run ``code`` on the flood thread with the neighbour calling beside it: its time and body."""
    done = asyncio.Event()
    beside = asyncio.create_task(neighbour(api, session, done, stalls, floor))
    try:
        began = time.perf_counter()
        response = await http.post("/v1/threads/bench-flood/code_interpreter/calls",
                                   json={"input": code, "timeout": 600})
        seconds = time.perf_counter() - began
    finally:
        done.set()
        await beside
    response.raise_for_status()
    return seconds, cast(dict[str, Any], response.json())


async def _loop_lag(http: httpx.AsyncClient) -> tuple[float, float]:
    """The gateway's loop-lag histogram now: wake-ups timed, and those up to 100 ms late."""
    text = (await http.get("/metrics")).text
    count = within = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "codeinterp_event_loop_lag_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_bucket") and float(sample.labels["le"]) == 0.1:
                within = sample.value
    return count, within


def _late(before: tuple[float, float], after: tuple[float, float]) -> str:
    count, within = after[0] - before[0], after[1] - before[1]
    return f"the gateway's event loop: {count - within:.0f} of {count:.0f} wake-ups over 100 ms late"


def _over(samples: list[float], limit: float) -> str:
    return f"{sum(s > limit for s in samples)} of {len(samples)} over {limit * 1000:.0f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runtime", default="")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    env = {"CODEINTERP_RUNTIME": args.runtime} if args.runtime else {}
    try:
        async with Server(pool_size=0, env=env) as server:
            rows = await flood(server, args.lines, args.rounds)
    finally:
        await sweep()
    for r in rows:
        r.runtime = args.runtime or "runc"
    text = "\n".join([HEADER, *(r.markdown() for r in rows)])
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
