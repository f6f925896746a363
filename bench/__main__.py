"""The benchmark harness: `.venv/bin/python -m bench [--quick] [--only S,S] [--skip S,S] [--output FILE]`.

Sections (names for --only/--skip):
  warm        1. first call on a new thread, `print(1)`, warm pool (its own server, CODEINTERP_POOL_SIZE=2)
  cold        1. the same, cold (CODEINTERP_POOL_SIZE=0), and the sandbox library's cold start
  roundtrip   2. `pass` round trip on a warm thread over HTTP, the library's, and raw jupyter_client's
  throughput  3. calls per second over 8 threads at once
  memory      4. idle memory per sandbox
  files       5. 100 MB upload to readable at /mnt/data; 100 MB written in /mnt/data to downloaded
  llm-sandbox 6. first call and round trip of the llm-sandbox library on the same engine and base image

Every server runs on a free 127.0.0.1 port with a temporary data dir, and every container it or the
harness starts carries the label codeinterp.bench=1; whatever is left is swept by that label at the
end, also after Ctrl-C or an error. The table goes to stdout (and --output); progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import shlex
import signal
import subprocess
import sys
import traceback
from collections.abc import Awaitable, Callable
from types import FrameType

import docker

from . import floor, gateway_bench, llm_sandbox_bench
from .gateway_bench import Params
from .harness import Server, log, stop_all_servers, sweep
from .stats import HEADER, Row

SECTIONS = ["warm", "cold", "roundtrip", "throughput", "memory", "files", "llm-sandbox"]
NUMBER = {"warm": "1", "cold": "1", "roundtrip": "2", "throughput": "3", "memory": "4", "files": "5",
          "llm-sandbox": "6"}
_COLD_SERVER = {"cold", "roundtrip", "throughput", "memory", "files"}


def machine(started: datetime.datetime) -> list[str]:
    def sh(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=10).stdout.strip()
        except OSError:
            return "?"

    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        memory = f"{kb / (1 << 20):.1f} GiB"
    except (OSError, ValueError, IndexError):
        memory = "?"
    try:
        client = docker.from_env()
        info = client.version()
        client.close()
        engine = f"Docker {info.get('Version')} (API {info.get('ApiVersion')})"
    except docker.errors.DockerException as exc:
        engine = f"Docker unreachable: {exc}"
    import sandbox

    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    return [
        f"- date: {started:%Y-%m-%d %H:%M:%S %Z} (start), {datetime.datetime.now().astimezone():%H:%M:%S} (end); "
        f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- machine: {os.cpu_count()} CPUs (nproc {sh('nproc')}), {memory} memory, {platform.platform()}",
        f"- engine: {engine}; kernel image {sandbox.default_image()}",
        f"- python {platform.python_version()}; checkout {sh('git', 'rev-parse', '--short', 'HEAD')}"
        f"{' (with uncommitted changes)' if sh('git', 'status', '--porcelain', '--untracked-files=no') else ''}",
        f"- command: `{shlex.join([python, '-m', 'bench', *sys.argv[1:]])}`",
    ]


async def run(selected: list[str], p: Params) -> list[Row]:
    rows: list[Row] = []

    async def section(name: str, fn: Callable[[], Awaitable[list[Row]]]) -> None:
        log(f"section {name} ...")
        try:
            rows.extend(await fn())
        except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others
            traceback.print_exc(file=sys.stderr)
            rows.append(Row(NUMBER[name], name,
                            note=f"FAILED: {type(exc).__name__}: {exc}".replace("\n", " ")[:300]))

    if "warm" in selected:
        await section("warm", lambda: gateway_bench.first_call_warm(p))
    if _COLD_SERVER & set(selected):
        async with Server(pool_size=0) as server:
            for name, fn in (("cold", gateway_bench.first_call_cold), ("roundtrip", gateway_bench.round_trip),
                             ("throughput", gateway_bench.throughput), ("memory", gateway_bench.memory),
                             ("files", gateway_bench.files)):
                if name in selected:
                    await section(name, lambda fn=fn: fn(p, server))  # type: ignore[misc]
    if "cold" in selected:
        await section("cold", lambda: floor.library_first_call(p))
    if "roundtrip" in selected:
        await section("roundtrip", lambda: floor.library_round_trip(p))
    if "llm-sandbox" in selected:
        await section("llm-sandbox", lambda: llm_sandbox_bench.llm_sandbox(p))
    rows.sort(key=lambda r: r.section)  # stable: the order within a section stays
    return rows


def _names(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown section(s) {unknown}; choose from {SECTIONS}")
    return names


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sample counts: a smoke run")
    parser.add_argument("--only", type=_names, default=None, metavar="S,S", help="run only these sections")
    parser.add_argument("--skip", type=_names, default=[], metavar="S,S", help="leave these sections out")
    parser.add_argument("--output", metavar="FILE", help="also write the report (machine + table) here")
    args = parser.parse_args()
    selected = [s for s in (args.only or SECTIONS) if s not in args.skip]
    p = Params.quick() if args.quick else Params()
    signal.signal(signal.SIGTERM, _terminate)
    rows: list[Row] = []
    status = 0
    started = datetime.datetime.now().astimezone()
    try:
        left = asyncio.run(sweep())
        if left:
            log(f"removed {left} container(s) labelled codeinterp.bench=1 left by an earlier run")
        rows = asyncio.run(run(selected, p))
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        status = 130
    finally:
        stop_all_servers()
        left = asyncio.run(sweep())
        if left:
            log(f"swept {left} container(s) labelled codeinterp.bench=1")
    if rows:
        report = "\n".join([*machine(started), "", HEADER, *(r.markdown() for r in rows)])
        print(report)
        if args.output:
            with open(args.output, "w") as f:
                f.write(report + "\n")
    if any(r.note.startswith("FAILED") for r in rows):
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
