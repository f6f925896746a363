"""Several gateways on one PostgreSQL: `.venv/bin/python -m bench.scale [--gateways 1,2,3] [--threads N]
[--calls N] [--rounds N] [--output FILE] [--results]`.

For each gateway count n: a fresh database in a throwaway PostgreSQL cluster (scripts/postgres.sh, under
/tmp, destroyed at the end) and a fresh shared file store; n `codeinterp serve` processes on free loopback
ports with that database URL and file store, data dirs, node names and advertised URLs of their own, and
the warm pool off. Thread i's first call (`print(1)`, not counted) goes to gateway i mod n, which starts
its sandbox and so holds it. Then, round after round, every thread makes its `pass` calls at once, over a
keep-alive httpx client per thread and gateway:
  pinned  each request to the gateway holding the thread's sandbox;
  any     each request to a gateway picked at random, which forwards it to the holder when that is another
          (with one gateway the two are the same, so only pinned runs).
One uncounted warm-up round of each, then --rounds counted ones, the two loads alternating which goes
first. A round gives calls/s (its calls / its wall time), the p50, p90, p99 and max latency of its calls,
the gateways' CPU time per call, and the share of its calls that were forwarded. Every call is checked:
completed, its execution count one more than the thread's last (one kernel, no restore).

Everything here (gateways, PostgreSQL, sandboxes and this load generator) shares one machine's cores:
more gateways add no CPU. The figures show that any gateway serves any thread, and what forwarding costs.
The table goes to stdout (and --output); --results writes it into bench/results.json and RESULTS.md,
replacing only their Scale section. Containers carry codeinterp.bench=<this pid> and are swept at the end,
also after Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from . import report
from .gateway_bench import HTTP_TIMEOUT, new_thread
from .harness import Server, call, log, machine, run_cleanly
from .report import Scale, ScaleRound, ScaleRun
from .stats import percentile

__all__ = ["main", "measure"]

POSTGRES = Path(__file__).resolve().parents[1] / "scripts" / "postgres.sh"
_TICK = os.sysconf("SC_CLK_TCK")


def _postgres(pg_dir: Path, *args: str) -> str:
    """scripts/postgres.sh with its cluster in ``pg_dir``; what it prints (a URL for start and createdb)."""
    done = subprocess.run([str(POSTGRES), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CODEINTERP_PG_DIR": str(pg_dir)})
    if done.returncode != 0:
        raise RuntimeError(f"scripts/postgres.sh {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


def _cpu_seconds(servers: Sequence[Server]) -> float:
    """User + system CPU time of the gateway processes, together."""
    total = 0
    for server in servers:
        assert server.proc is not None
        fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return total / _TICK


class _Thread:
    """One thread of the load: its holder, a client per gateway, and the execution count it expects next."""

    def __init__(self, index: int, servers: Sequence[Server]) -> None:
        self.id = new_thread("scale")
        self.owner = index % len(servers)
        self.clients = [httpx.AsyncClient(base_url=s.url, timeout=HTTP_TIMEOUT) for s in servers]
        self.count = 0

    async def warm(self) -> None:
        body = await call(self.clients[self.owner], self.id, "print(1)")
        self.count = int(body["execution_count"])

    async def one(self, gateway: int) -> float:
        began = time.perf_counter()
        body = await call(self.clients[gateway], self.id, "pass")
        elapsed = time.perf_counter() - began
        if body.get("session_restored") or body.get("execution_count") != self.count + 1:
            raise RuntimeError(f"thread {self.id}: execution count {body.get('execution_count')} after "
                               f"{self.count}, session_restored {body.get('session_restored')}: the call did not "
                               "run on the thread's one kernel")
        self.count += 1
        return elapsed

    async def aclose(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            await self.clients[self.owner].delete(f"/v1/threads/{self.id}/code_interpreter")
        for client in self.clients:
            await client.aclose()


async def _round(threads: Sequence[_Thread], servers: Sequence[Server], calls: int, mode: str,
                 rng: random.Random) -> ScaleRound:
    latencies: list[float] = []
    forwarded = 0

    async def client(thread: _Thread) -> None:
        nonlocal forwarded
        for _ in range(calls):
            gateway = thread.owner if mode == "pinned" else rng.randrange(len(servers))
            forwarded += gateway != thread.owner
            latencies.append(await thread.one(gateway))

    cpu = _cpu_seconds(servers)
    began = time.perf_counter()
    await asyncio.gather(*(client(t) for t in threads))
    wall = time.perf_counter() - began
    cpu = _cpu_seconds(servers) - cpu
    n = len(latencies)
    return ScaleRound(rate=n / wall, p50=percentile(latencies, 0.5), p90=percentile(latencies, 0.9),
                      p99=percentile(latencies, 0.99), max=max(latencies), cpu=cpu / n, forwarded=forwarded / n)


async def measure(gateways: int, pg_dir: Path, *, threads: int, calls: int, rounds: int) -> list[ScaleRun]:
    """The pinned (and, with more than one gateway, any-gateway) runs on ``gateways`` fresh gateways."""
    name = f"scale_{gateways}"
    _postgres(pg_dir, "dropdb", name)
    url = _postgres(pg_dir, "createdb", name)
    store = Path(tempfile.mkdtemp(prefix="codeinterp-bench-scale-files-"))
    modes = ["pinned", "any"] if gateways > 1 else ["pinned"]
    figures: dict[str, list[ScaleRound]] = {mode: [] for mode in modes}
    rng = random.Random(gateways)
    try:
        async with contextlib.AsyncExitStack() as stack:
            servers = []
            for i in range(gateways):
                server = Server(pool_size=0, env={"CODEINTERP_DATABASE_URL": url, "CODEINTERP_FILE_STORE": str(store),
                                                  "CODEINTERP_NODE_NAME": f"bench-scale-{i}"})
                server.extra_env["CODEINTERP_ADVERTISE_URL"] = server.url  # its port is picked when it is made
                servers.append(await stack.enter_async_context(server))
            load = [_Thread(i, servers) for i in range(threads)]
            for thread in load:
                stack.push_async_callback(thread.aclose)
            for thread in load:  # one at a time: each starts a sandbox
                await thread.warm()
            for round_no in range(rounds + 1):  # round 0 warms up
                for mode in modes if round_no % 2 else modes[::-1]:
                    got = await _round(load, servers, calls, mode, rng)
                    if round_no > 0:
                        figures[mode].append(got)
                        log(f"{gateways} gateway(s), {mode}, round {round_no}/{rounds}: {got.rate:.0f} calls/s, "
                            f"p99 {got.p99 * 1000:.1f} ms")
    finally:
        shutil.rmtree(store, ignore_errors=True)
        with contextlib.suppress(RuntimeError):
            _postgres(pg_dir, "dropdb", name)
    return [ScaleRun(gateways, mode, figures[mode]) for mode in modes]


def _counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"gateway counts are whole numbers, e.g. 1,2,3: {exc}") from exc
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("name at least one gateway count, each 1 or more, e.g. 1,2,3")
    return counts


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


async def _run(args: argparse.Namespace, pg_dir: Path) -> list[ScaleRun]:
    log(f"PostgreSQL: {_postgres(pg_dir, 'start')}")
    runs: list[ScaleRun] = []
    for gateways in args.gateways:
        log(f"{gateways} gateway(s) ...")
        runs += await measure(gateways, pg_dir, threads=args.threads, calls=args.calls, rounds=args.rounds)
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateways", type=_counts, default=[1, 2, 3], metavar="N,N",
                        help="gateway counts, one after another (default 1,2,3)")
    parser.add_argument("--threads", type=_positive, default=8, help="threads calling at once (default 8)")
    parser.add_argument("--calls", type=_positive, default=25, help="`pass` calls per thread per round (default 25)")
    parser.add_argument("--rounds", type=_positive, default=5, help="counted rounds per load (default 5)")
    parser.add_argument("--output", type=Path, metavar="FILE", help="also write the section here")
    parser.add_argument("--results", action="store_true",
                        help=f"write the Scale section of {report.RESULTS_JSON} and {report.RESULTS_MD}")
    args = parser.parse_args(argv)
    started = datetime.datetime.now().astimezone()
    pg_dir = Path(f"/tmp/codeinterp-pg-bench-scale-{os.getpid()}")  # not 0700: the server runs as postgres
    try:
        runs, status = run_cleanly(lambda: _run(args, pg_dir))
    finally:  # after the gateways have stopped
        try:
            _postgres(pg_dir, "destroy")
        except RuntimeError as exc:
            log(f"{exc}; remove {pg_dir} by hand")
    if runs is None:
        return status
    scale = Scale(machine=machine(started, "bench.scale"), cpus=os.cpu_count() or 0, threads=args.threads,
                  calls=args.calls, runs=runs)
    text = "\n".join(report.render_scale(scale)) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)
    if args.results:
        results = report.load()
        results.scale = scale
        report.save(results)
        log(f"wrote the Scale section of {report.RESULTS_JSON} and {report.RESULTS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
