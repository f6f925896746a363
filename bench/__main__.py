"""The benchmark harness: `.venv/bin/python -m bench [--quick] [--only S,S] [--skip S,S] [--runtimes R,R]
[--output FILE] [--results]`.

Sections (names for --only/--skip); those marked * run once per runtime in --runtimes (default
runc,runsc), side by side, the others under the first runtime only:
  warm*       1. first call on a new thread, `print(1)`, warm pool (its own server, CODEINTERP_POOL_SIZE=2)
  cold*       1. the same, cold (CODEINTERP_POOL_SIZE=0), and the sandbox library's cold start
  roundtrip*  2. `pass` round trip on a warm thread over HTTP (httpx and codeinterp's own client), the library's,
                 and raw jupyter_client's beside the kernel, interleaved in blocks, with the ratios
  throughput  3. calls per second over 8 threads at once over HTTP (httpx, codeinterp's own client), then the
                 same load on 8 library sessions and on raw jupyter_client, round by round
  flood       3. 200,000 flushed prints through the gateway against raw jupyter_client draining the
                 same cell beside the kernel, and another thread's `print(1)` meanwhile and beside
                 a flood ten times as long
  memory*     4. idle memory per sandbox
  files       5. 100 MB upload to readable at /mnt/data; 100 MB written in /mnt/data to downloaded
  llm-sandbox 6. first call and round trip of the llm-sandbox library on the same engine and base image
  imports*    7. `import pandas, matplotlib` in a sandbox that has just started

Before a runtime's sections, one sandbox is started under it: when that fails (runtime not registered,
kernel not answering), the runtime's rows say FAILED with the reason at once, instead of every sample
waiting for a timeout. --results writes bench/results.json and, generated from it, bench/RESULTS.md.

Every server runs on a free 127.0.0.1 port with a temporary data dir, and every container it or the
harness starts carries the label codeinterp.bench=<the harness's pid>; whatever is left is swept by
it at the end, also after Ctrl-C or an error, and at the start what runs that are gone left (a run
going on beside this one keeps its own). The table goes to stdout (and --output); progress to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import traceback
from collections.abc import Awaitable, Callable

from . import flood, floor, gateway_bench, llm_sandbox_bench, report
from .gateway_bench import Params
from .harness import Server, log, machine, run_cleanly, runtime_problem
from .stats import HEADER, Row

SECTIONS = ["warm", "cold", "roundtrip", "throughput", "flood", "memory", "files", "llm-sandbox", "imports"]
NUMBER = {"warm": "1", "cold": "1", "roundtrip": "2", "throughput": "3", "flood": "3", "memory": "4", "files": "5",
          "llm-sandbox": "6", "imports": "7"}
PER_RUNTIME = {"warm", "cold", "roundtrip", "memory", "imports"}
_COLD_SERVER = {"cold", "roundtrip", "throughput", "flood", "memory", "files", "imports"}


async def run(selected: list[str], p: Params, runtimes: list[str]) -> list[Row]:
    rows: list[Row] = []

    async def section(name: str, fn: Callable[[], Awaitable[list[Row]]], runtime: str) -> None:
        log(f"section {name} ({runtime}) ...")
        try:
            measured = await fn()
        except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others
            traceback.print_exc(file=sys.stderr)
            measured = [Row(NUMBER[name], name, note=f"FAILED: {type(exc).__name__}: {exc}".replace("\n", " ")[:300])]
        if name != "llm-sandbox":  # llm-sandbox makes its own containers, under Docker's default runtime
            for row in measured:
                row.runtime = runtime
        rows.extend(measured)

    for index, runtime in enumerate(runtimes):
        first = index == 0
        wanted = [s for s in selected if first or s in PER_RUNTIME]
        if not wanted:
            continue
        log(f"checking that {runtime} runs a sandbox ...")
        problem = await runtime_problem(runtime)
        if problem is not None:
            log(f"{runtime}: {problem}")
            rows.extend(Row(NUMBER[s], s, runtime=runtime, note=f"FAILED: {problem}".replace("\n", " ")[:300])
                        for s in wanted)
            continue
        env = {"CODEINTERP_RUNTIME": runtime}
        if "warm" in wanted:
            await section("warm", lambda env=env: gateway_bench.first_call_warm(p, env), runtime)  # type: ignore[misc]
        if _COLD_SERVER & set(wanted):
            async with Server(pool_size=0, env=env) as server:
                for name, fn in (("cold", gateway_bench.first_call_cold), ("roundtrip", floor.round_trip),
                                 ("throughput", floor.throughput),
                                 ("flood", lambda p, server: flood.flood(server, p.flood_lines, p.flood_rounds)),
                                 ("memory", gateway_bench.memory),
                                 ("files", gateway_bench.files), ("imports", gateway_bench.imports)):
                    if name in wanted:
                        await section(name, lambda fn=fn, server=server: fn(p, server), runtime)  # type: ignore[misc]
        if "cold" in wanted and first:
            await section("cold", lambda runtime=runtime: floor.library_first_call(p, runtime), runtime)  # type: ignore[misc]
        if "llm-sandbox" in wanted:
            await section("llm-sandbox", lambda: llm_sandbox_bench.llm_sandbox(p), "runc")
    rows.sort(key=lambda r: int(r.section))  # stable: within a section, runtimes in the order given
    return rows


def _names(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown section(s) {unknown}; choose from {SECTIONS}")
    return names


def _runtimes(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one runtime, e.g. runc,runsc")
    return names


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sample counts: a smoke run")
    parser.add_argument("--only", type=_names, default=None, metavar="S,S", help="run only these sections")
    parser.add_argument("--skip", type=_names, default=[], metavar="S,S", help="leave these sections out")
    parser.add_argument("--runtimes", type=_runtimes, default=["runc", "runsc"], metavar="R,R",
                        help="container runtimes to measure side by side (default runc,runsc); "
                             "the sections not marked * run under the first")
    parser.add_argument("--output", metavar="FILE", help="also write the report (machine + table) here")
    parser.add_argument("--results", action="store_true",
                        help=f"write {report.RESULTS_JSON} and, generated from it, {report.RESULTS_MD}")
    args = parser.parse_args()
    selected = [s for s in (args.only or SECTIONS) if s not in args.skip]
    p = Params.quick() if args.quick else Params()
    started = datetime.datetime.now().astimezone()
    measured, status = run_cleanly(lambda: run(selected, p, args.runtimes))
    rows = measured or []
    if rows:
        lines = machine(started, "bench")
        table = "\n".join([*lines, "", HEADER, *(r.markdown() for r in rows)])
        print(table)
        if args.output:
            with open(args.output, "w") as f:
                f.write(table + "\n")
        if args.results and status == 0:  # not after an interrupt: a partial run would replace a whole one
            kept = report.load().scale if report.RESULTS_JSON.exists() else None  # bench.scale's, its own run
            report.save(report.Results(machine=lines, rows=rows, scale=kept))
            log(f"wrote {report.RESULTS_JSON} and {report.RESULTS_MD}")
    if any(r.note.startswith("FAILED") for r in rows):
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
