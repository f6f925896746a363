"""bench/RESULTS.md, generated whole from a run's figures (bench/results.json), so that its words cannot
disagree with its table: every figure in the prose is read from the rows.

    .venv/bin/python -m bench --results        # measure, then write both files
    .venv/bin/python -m bench.scale --results  # measure 1, 2, 3 gateways; replace only the scale section
    .venv/bin/python -m bench.report           # rewrite RESULTS.md from results.json (no measuring)
    .venv/bin/python -m bench.report --check   # exit 1 when RESULTS.md is not what results.json gives
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .stats import HEADER, Row, fmt

__all__ = ["RESULTS_JSON", "RESULTS_MD", "Results", "Scale", "ScaleRound", "ScaleRun", "load", "render",
           "render_scale", "save"]

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"
WARM_TARGET_MS = 100.0  # issue 5

WARM = "first call on a new thread, `print(1)`, warm pool"
COLD = "first call on a new thread, `print(1)`, cold"
LIB_COLD = "sandbox library: Session.start + execute(`print(1)`)"
TRIP = "call round trip of `pass` on a warm thread, HTTP"
LIB_TRIP = "sandbox library: Session.execute(`pass`)"
FLOOR = "floor: raw jupyter_client"
RATE = "calls per second"
MEMORY = "idle memory per sandbox after `print(1)` (docker stats"
MEMORY_RAW = "idle memory per sandbox after `print(1)` (cgroup"
IMPORTS = "call of `import pandas, matplotlib`"
LLM_PLAIN = "llm-sandbox SandboxSession"
LLM_IPY = "llm-sandbox InteractiveSandboxSession"
OPEN, RUN = "open + run(`print(1)`)", "run(`pass`)"
# The measures compared across runtimes: (label, section, row name prefix).
COMPARED = [("first call, warm pool, HTTP", "1", WARM, "warm"), ("first call, cold, HTTP", "1", COLD, "cold"),
            ("`pass` round trip, HTTP", "2", TRIP, "roundtrip"),
            ("`import pandas, matplotlib` in a new sandbox", "7", IMPORTS, "imports"),
            ("idle memory per sandbox", "4", MEMORY, "memory")]


@dataclass
class ScaleRound:
    """One counted round of one load on several gateways (bench.scale); seconds, except ``rate``."""

    rate: float  # calls per second: the round's calls / its wall time
    p50: float  # latency of one call, end to end at the client
    p90: float
    p99: float
    max: float
    cpu: float  # CPU time (user + system) of all the gateway processes together, per call
    forwarded: float  # share of the round's calls sent to a gateway that does not hold the thread


@dataclass
class ScaleRun:
    gateways: int
    mode: str  # "pinned": to the gateway holding the thread's sandbox; "any": to a gateway picked at random
    rounds: list[ScaleRound]


@dataclass
class Scale:
    """A bench.scale run: made apart from the main run, so it keeps its own machine lines."""

    machine: list[str]
    cpus: int
    threads: int
    calls: int  # per thread per round
    runs: list[ScaleRun]


MODES = {"pinned": "the thread's own gateway", "any": "any gateway (random; forwarded to the holder)"}


@dataclass
class Results:
    machine: list[str]
    rows: list[Row]
    scale: Scale | None = None

    def runtimes(self) -> list[str]:
        seen: list[str] = []
        for row in self.rows:
            if row.runtime not in seen and not row.name.startswith("llm-sandbox"):
                seen.append(row.runtime)
        return seen

    def find(self, section: str, prefix: str, runtime: str = "runc", *, fallback: str = "") -> Row | None:
        """The row of ``section`` whose name starts with ``prefix`` (or is ``fallback``, a failed section)."""
        for row in self.rows:
            if row.section == section and row.runtime == runtime and (
                    row.name.startswith(prefix) or (fallback and row.name == fallback)):
                return row
        return None

    def median(self, section: str, prefix: str, runtime: str = "runc", *, runs: bool = False) -> float | None:
        """The median of the row found; for llm-sandbox, ``runs`` picks its run row over its open row."""
        for row in self.rows:
            if row.section == section and row.runtime == runtime and row.name.startswith(prefix) and (
                    not runs or row.name.endswith(f"{RUN} on an open session")):
                return row.median
        return None


def load(path: Path = RESULTS_JSON) -> Results:
    data = json.loads(path.read_text())
    scale = None
    if "scale" in data:
        s = data["scale"]
        scale = Scale(machine=list(s["machine"]), cpus=s["cpus"], threads=s["threads"], calls=s["calls"],
                      runs=[ScaleRun(run["gateways"], run["mode"], [ScaleRound(**x) for x in run["rounds"]])
                            for run in s["runs"]])
    return Results(machine=list(data["machine"]), rows=[Row(**r) for r in data["rows"]], scale=scale)


def save(results: Results, json_path: Path = RESULTS_JSON, md_path: Path = RESULTS_MD) -> None:
    data: dict[str, object] = {"machine": results.machine, "rows": [asdict(r) for r in results.rows]}
    if results.scale is not None:
        data["scale"] = asdict(results.scale)
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    md_path.write_text(render(results))


def _ms(value: float | None) -> str:
    if value is None:
        return "(not measured)"
    return f"{fmt(value / 1000)} s" if value >= 1000 else f"{fmt(value)} ms"


def _mib(value: float | None) -> str:
    return "(not measured)" if value is None else f"{fmt(value)} MiB"


def _shown(value: float) -> float:
    """The figure as the table shows it, so that sums and ratios in the prose agree with the table."""
    return float(fmt(value))


def _times(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or _shown(a) == 0 else f"{_shown(b) / _shown(a):.2f}x"


def _runtime_table(r: Results) -> list[str]:
    runtimes = r.runtimes()
    if len(runtimes) < 2:
        return [f"This run measured one runtime ({', '.join(runtimes) or 'none'}); "
                "`--runtimes runc,runsc` puts two side by side."]
    base, other = runtimes[0], runtimes[1]
    lines = [f"| measure (median) | {base} | {other} | {other} ÷ {base} |", "|---|---|---|---|"]
    failures: dict[str, str] = {}
    for label, section, prefix, key in COMPARED:
        cells = []
        for runtime in (base, other):
            row = r.find(section, prefix, runtime, fallback=key)
            if row is None:
                cells.append("not run")
            elif row.median is None:
                cells.append("FAILED" if row.note.startswith("FAILED") else "no samples")
                failures.setdefault(runtime, row.note)
            else:
                cells.append(f"{fmt(row.median)} {row.unit}")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | "
                     f"{_times(r.median(section, prefix, base), r.median(section, prefix, other))} |")
    for runtime, note in failures.items():
        lines += ["", f"{runtime} could not be measured in this run: {note}"]
    return lines


def _gvisor_prose(r: Results) -> str:
    if "runsc" not in r.runtimes():
        return "- gVisor (runsc) was not measured in this run."
    pairs = {key: (r.median(section, prefix, "runc"), r.median(section, prefix, "runsc"))
             for _, section, prefix, key in COMPARED}
    if all(b is None for _, b in pairs.values()):
        row = r.find("1", COLD, "runsc", fallback="cold") or r.find("1", WARM, "runsc", fallback="warm")
        why = f": {row.note}" if row is not None and row.note else ""
        return f"- gVisor (runsc) could not run a sandbox in this run{why}"
    parts = []
    for key, what in (("cold", "a cold first call takes"), ("warm", "a warm first call"),
                      ("roundtrip", "a `pass` round trip"), ("imports", "`import pandas, matplotlib`")):
        runc, runsc = pairs[key]
        parts.append(f"{what} {_ms(runsc)} against {_ms(runc)} under runc ({_times(runc, runsc)})")
    runc, runsc = pairs["memory"]
    parts.append(f"an idle sandbox uses {_mib(runsc)} against {_mib(runc)} ({_times(runc, runsc)})")
    return "- Under gVisor (runsc, ptrace platform) " + "; ".join(parts) + "."


def _reading(r: Results) -> list[str]:
    warm, cold = r.median("1", WARM), r.median("1", COLD)
    trip, lib_trip, floor = r.median("2", TRIP), r.median("2", LIB_TRIP), r.median("2", FLOOR)
    lines = [f"- The warm pool takes the first call from {_ms(cold)} (cold) to {_ms(warm)} over HTTP"
             + ("." if warm is None else f", {'within' if warm <= WARM_TARGET_MS else 'over'} the "
                f"{WARM_TARGET_MS:.0f} ms target.")]
    if trip is not None and lib_trip is not None:
        under = "" if floor is None else (
            f" (the floor, a raw jupyter_client execute beside the kernel, inside the sandbox, is {_ms(floor)})")
        lines.append(f"- HTTP adds {fmt(_shown(trip) - _shown(lib_trip))} ms to a `pass` round trip over the library's "
                     f"{_ms(lib_trip)}{under}: the gateway's share is HTTP, JSON and recording the call in the "
                     "store; the library's already includes the `/mnt/data` snapshot.")
    plain_open, plain_run = r.median("6", f"{LLM_PLAIN}"), r.median("6", f"{LLM_PLAIN}", runs=True)
    ipy_open, ipy_run = r.median("6", f"{LLM_IPY}"), r.median("6", f"{LLM_IPY}", runs=True)
    if plain_open is not None and cold is not None:
        than = "faster than" if plain_open < cold else "slower than"
        lines.append(f"- llm-sandbox's plain mode opens and runs `print(1)` in {_ms(plain_open)}, {than} our "
                     f"cold first call over HTTP ({_ms(cold)}; it starts no kernel, mounts no quota and locks "
                     f"down less), but keeps no state, and each run costs {_ms(plain_run)}; its stateful mode "
                     f"costs {_ms(ipy_open)} to open and {_ms(ipy_run)} a run.")
    lines.append(_gvisor_prose(r))
    return lines


def _memory_agreement(r: Results) -> str:
    working, raw = r.median("4", MEMORY), r.median("4", MEMORY_RAW)
    if working is None or raw is None:
        return "Not measured in this run."
    if abs(raw - working) <= 0.01 * raw:
        return "They agree here (no inactive file cache in an idle sandbox)."
    return f"They differ by {fmt(_shown(raw) - _shown(working))} MiB here: the inactive file cache."


def _target(r: Results) -> str:
    warm = r.median("1", WARM)
    if warm is None:
        return "not measured in this run"
    return f"{'met' if warm <= WARM_TARGET_MS else 'NOT met'} ({_ms(warm)} here)"


def _spread(values: Sequence[float], scale: float = 1.0) -> str:
    """The median over rounds, and the smallest and largest round in brackets."""
    ordered = sorted(v * scale for v in values)
    if len(ordered) == 1:
        return fmt(ordered[0])
    return f"{fmt(statistics.median(ordered))} [{fmt(ordered[0])}, {fmt(ordered[-1])}]"


def _scale_median(run: ScaleRun, key: str) -> float:
    return float(statistics.median(getattr(x, key) for x in run.rounds))


def _scale_reading(s: Scale) -> list[str]:
    """One line per gateway count: any gateway against pinned, and against one gateway."""
    runs = {(run.gateways, run.mode): run for run in s.runs}
    lines = []
    for (n, mode), run in runs.items():
        pinned = runs.get((n, "pinned"))
        if mode != "any" or pinned is None:
            continue
        rate, base = _scale_median(run, "rate"), _scale_median(pinned, "rate")
        lines.append(
            f"- {n} gateways: with requests sent to any gateway ({fmt(_scale_median(run, 'forwarded') * 100)} % "
            f"forwarded) {fmt(rate)} calls/s against {fmt(base)} pinned ({_times(base, rate)}); p99 "
            f"{_ms(_scale_median(run, 'p99') * 1000)} against {_ms(_scale_median(pinned, 'p99') * 1000)}; the gateways "
            f"spend {_ms(_scale_median(run, 'cpu') * 1000)} of CPU per call against "
            f"{_ms(_scale_median(pinned, 'cpu') * 1000)} pinned.")
    one = runs.get((1, "pinned"))
    for (n, mode), run in runs.items():
        if one is not None and n > 1 and mode == "pinned":
            base, rate = _scale_median(one, "rate"), _scale_median(run, "rate")
            lines.append(f"- {n} gateways, pinned: {fmt(rate)} calls/s, {_times(base, rate)} of one gateway's "
                         f"{fmt(base)}.")
    return lines


def render_scale(s: Scale | None) -> list[str]:
    """The scale section: the table of bench.scale's run, with what it can and cannot show."""
    if s is None:
        return ["Not measured in this results.json: `.venv/bin/python -m bench.scale --results` measures 1, 2 and 3",
                "gateways on one PostgreSQL and writes this section, keeping the rows above."]
    rounds = max((len(run.rounds) for run in s.runs), default=0)
    plural = "round" if rounds == 1 else "rounds"
    table = ["| gateways | requests go to | calls/s | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) "
             "| gateway CPU per call (ms) | forwarded |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in s.runs:
        x = run.rounds
        table.append(
            f"| {run.gateways} | {MODES.get(run.mode, run.mode)} | {_spread([r.rate for r in x])} | "
            + " | ".join(_spread([getattr(r, key) for r in x], 1000) for key in ("p50", "p90", "p99", "max", "cpu"))
            + f" | {fmt(_scale_median(run, 'forwarded') * 100)} % |")
    return [
        *s.machine,
        "",
        f"{s.threads} threads, each with a keep-alive httpx client of its own, make {s.calls} `pass` calls per round",
        "on their own thread, all at once. The threads' sandboxes are spread over the gateways (thread i on gateway",
        "i mod n). **Pinned**: each request goes to the gateway holding its thread's sandbox. **Any gateway**:",
        "each goes to a gateway picked at random, which forwards it to the holder when that is another (README,",
        "\"Several gateways on one database\"). Every call is checked: completed, on its thread's one kernel",
        "(execution counts in sequence, no restore). Each gateway count has a fresh database and file store.",
        f"Each figure is the median over {rounds} {plural}, with the lowest and highest round in brackets; a",
        "round's latencies are all its calls, end to end at the client.",
        "",
        "**Read with care.** The gateways, PostgreSQL, every sandbox and the load generator share this machine's",
        f"{s.cpus} cores, so gateways here bring no CPU of their own. One gateway is one Python process (one",
        "event loop) and uses about one core; a second process can use what is left of the other, which is",
        "all that more pinned gateways gain here. What the table shows is that any gateway serves any thread,",
        "and what a forwarded hop costs; on separate machines each gateway would bring its own cores.",
        "",
        *table,
        "",
        *_scale_reading(s),
    ]


def render(r: Results) -> str:
    table = [HEADER, *(row.markdown() for row in r.rows)]
    return "\n".join([
        "# Benchmark results",
        "",
        "<!-- Generated by bench/report.py from bench/results.json; do not edit by hand. -->",
        "",
        "Run with one command, from the repository root (Docker running, kernel image built; runsc registered",
        "for the gVisor column: `scripts/runsc-up.sh`):",
        "",
        "```sh",
        ".venv/bin/python -m bench --results           # everything, runc and runsc; writes this file",
        ".venv/bin/python -m bench --quick             # smoke run: small sample counts",
        ".venv/bin/python -m bench --only warm,cold    # sections: warm cold roundtrip throughput flood memory "
        "files llm-sandbox imports",
        ".venv/bin/python -m bench --runtimes runc     # one runtime only",
        ".venv/bin/python -m bench.report              # rewrite this file from bench/results.json",
        ".venv/bin/python -m bench.scale --results     # 1, 2, 3 gateways on one PostgreSQL: the Scale section",
        "```",
        "",
        "The harness starts its own `codeinterp serve` subprocesses (free 127.0.0.1 ports, temporary data dirs,",
        "`CODEINTERP_CONTAINER_LABELS='{\"codeinterp.bench\": \"1\"}'`, `CODEINTERP_RUNTIME` set to the runtime",
        "measured): for each runtime one with `CODEINTERP_POOL_SIZE=2` for the warm first call, then one with",
        "`CODEINTERP_POOL_SIZE=0` for everything else over HTTP. Sections 1, 2, 4 and 7 run under every runtime",
        "named in `--runtimes` (default `runc,runsc`), the others (and the library and floor rows) under the",
        "first only. Before a runtime's sections one sandbox is started under it; when that fails, its rows say",
        "`FAILED: ...` at once. It stops the servers with SIGTERM and sweeps every container labelled",
        "`codeinterp.bench=1` at the start and the end, also after Ctrl-C, SIGTERM or an error. A failing",
        "section prints `FAILED: ...` in its row, the others still run, and the exit status is 1.",
        "",
        "**Noise.** The machine lines below give the load average at the end of the run; on a 2-core machine",
        "a test suite running beside the bench moves the figures by tens of percent.",
        "",
        "## Latest run",
        "",
        *r.machine,
        "",
        *table,
        "",
        "## Runtimes side by side",
        "",
        *_runtime_table(r),
        "",
        "## Reading the figures",
        "",
        *_reading(r),
        "",
        "## Scale: several gateways on one PostgreSQL",
        "",
        *render_scale(r.scale),
        "",
        "## What each row measures",
        "",
        "1. **First call on a new thread**: `POST /v1/threads/{new id}/code_interpreter/calls` with `print(1)`,",
        "   timed end to end by the client (checked: logs are `1\\n`), then the thread is deleted (not timed). Warm:",
        "   before each sample the harness polls `GET /healthz` until `pool.ready == pool.size`. Cold: a server with",
        "   the pool off. The library row is `sandbox.Session.start` + `execute(\"print(1)\")` in-process, no HTTP.",
        f"   **Target (issue 5): warm median ≤ {WARM_TARGET_MS:.0f} ms: {_target(r)}.**",
        "2. **Round trip of `pass`** on a warm thread over HTTP (after 20 warm-up calls), with two clients: httpx's",
        "   `AsyncClient`, and codeinterp's own `gateway.client.AsyncClient`, whose JSON requests skip httpx",
        "   (`gateway/connection.py`); the difference between the two rows is the client's own cost. Beside them",
        "   the sandbox library's `Session.execute(\"pass\")`, and the floor: a raw",
        "   `jupyter_client.BlockingKernelClient` run inside the sandbox (`docker exec`) over the kernel's own ipc",
        "   sockets, with no channel, relay, Docker or HTTP in between, timed from `execute()` to the `status: idle`",
        "   message on iopub for that request.",
        "3. **Calls per second**: 8 threads are created first (one `print(1)` each); then each round, 8 concurrent",
        "   HTTP clients make 25 `pass` calls each on their own thread; calls/s = 200 / round wall time. One warm-up",
        "   round, then 9 counted, each leg in turn within a round (HTTP with httpx, HTTP with gateway.client, the",
        "   library, raw jupyter_client), so that a ratio pairs legs run seconds apart on this noisy machine. The",
        "   second row is the latency of every single call in the counted rounds.",
        "   **Flood** (issue 14, item 3): one call runs `for i in range(200_000): print(i, flush=True)` on a warm",
        "   thread, timed over HTTP to the finished call; its logs are checked to hold every line in order up to",
        "   the 1 MiB cap, then the truncation notice (the note says what each round held). The floor is a raw",
        "   `jupyter_client` run inside the same sandbox draining the same cell (every iopub message until idle).",
        "   Meanwhile another thread calls `print(1)` every 0.05 s: the third row is how long each of those took.",
        "   Right after each, a `sandbox.Session` in the bench process runs the same `print(1)` on a sandbox of",
        "   its own: the fourth row, the floor for the third, with no gateway in its path. Flushes that follow",
        "   one another within 10 ms travel as one message (`sandbox/_inside/launcher.py`), so the flood is over",
        "   in about a second; the last two rows repeat the neighbour and its floor beside one sustained flood",
        "   ten times as long, for a tail worth the name. The neighbour calls through `gateway.client`; the notes of",
        "   its rows say how many of the gateway's own event-loop wake-ups (due every 50 ms, read from",
        "   `codeinterp_event_loop_lag_seconds` on /metrics before and after) came over 100 ms late: a stall",
        "   the gateway caused shows there, one the machine caused does not.",
        "4. **Idle memory**: 4 new threads each run `print(1)`; 3 s later `container.stats(stream=False)` of each of",
        "   their containers. \"docker stats\" is `usage - total_inactive_file` (what `docker stats` shows); the other",
        f"   row is the raw cgroup usage. {_memory_agreement(r)} Under runsc the cgroup holds gVisor's own kernel",
        "   (the sentry) as well as the code.",
        "5. **100 MB in**: `POST /v1/files` (multipart, 100 MiB of random bytes),",
        "   `POST /v1/containers/{id}/files` with `{\"file_id\"}`, then a call printing `os.path.getsize` of the",
        "   path returned (checked). **100 MB out**: a call writes 100 MiB (prepared in the kernel beforehand, not",
        "   timed) to `/mnt/data`; the call returns",
        "   it in `files[]` (the gateway stores it before answering); then `GET /v1/files/{id}/content` is read to the",
        "   last byte (checked). Each file is removed after its sample.",
        "6. **llm-sandbox** (from PyPI, in the `dev` extra), on the same Docker engine under Docker's default",
        "   runtime. First call: a new session object, `open()`, `run(\"print(1)\")`, timed together; round trip:",
        "   `run(\"pass\")` on an open session. Both of its Python modes are measured: `SandboxSession` runs each",
        "   snippet as a new `python file.py` process (no state kept between runs), `InteractiveSandboxSession`",
        "   keeps an IPython runtime (state kept, the mode comparable to ours).",
        "7. **Imports**: on a new thread, after a `print(1)` call (the sandbox's start is not timed), the call",
        "   `import pandas, matplotlib`, end to end over HTTP: what a model's first data cell pays.",
        "",
        "## What llm-sandbox needed here",
        "",
        "No container registry is reachable, so its default images (`ghcr.io/vndee/sandbox-python-*`) cannot be",
        "pulled. It runs on **our kernel image** (`sandbox.default_image()`) through a one-layer derived image that",
        "the harness builds locally (`codeinterp-bench-llm-sandbox:<base image id>`, labelled `codeinterp.bench=1`,",
        "kept between runs as a build cache; `docker rmi` it freely). What llm-sandbox expects of an image, and the",
        "adaptation:",
        "",
        "- A container that idles: it creates the container with a tty and the image's own command, then does",
        "  everything with `docker exec`. Ours starts a kernel that needs a connection file, so the derived image",
        "  runs `tini -- sleep infinity` (not a shell: `docker stop` would wait 10 s on a PID-1 shell at every close).",
        "- `python` on PATH (it runs `python <file>`): ours has `python3` and `/opt/venv/bin/python`; the derived",
        "  image puts `/opt/venv/bin` first on PATH.",
        "- root: it writes `/sandbox` and runs as root by default (ours runs as uid 1000).",
        "- `InteractiveSandboxSession` uses `<workdir>/.sandbox-venv/bin/python` and pip-installs `ipython` there at",
        "  every open: the derived image symlinks `/sandbox/.sandbox-venv` to `/opt/venv`, which already has",
        "  IPython, so that install is a no-op with no network.",
        "- Its default environment setup (in every new container: `python -m venv`, then `pip install --upgrade",
        "  pip` from PyPI) needs the network from inside the container; with `network_mode: none` (set, as for",
        "  ours) pip retries for seconds, so it is turned off with `skip_environment_setup=True`, which",
        "  llm-sandbox documents for images with their packages pre-installed.",
        "- Runtime configs passed: `labels={\"codeinterp.bench\": \"1\"}` (so the sweep finds its containers) and",
        "  `network_mode=\"none\"`; `keep_template=True` (the image is never removed by it).",
        "",
        "So the comparison is on the same base image, same engine, but not the same lockdown: llm-sandbox's",
        "containers run as root, with a writable root filesystem, all default capabilities, no pids limit, and",
        "(plain mode) no memory limit; ours are read-only, non-root, capability-less, with a loop-mounted quota on",
        "`/mnt/data`. Its round trip is dominated by `docker exec` plus, in interactive mode, polling for a result",
        "file every 0.1 s through further `docker exec`s.",
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that RESULTS.md is up to date")
    args = parser.parse_args(argv)
    text = render(load())
    if args.check:
        if RESULTS_MD.read_text() != text:
            print(f"{RESULTS_MD} is not what {RESULTS_JSON} gives; run `python -m bench.report`", file=sys.stderr)
            return 1
        return 0
    RESULTS_MD.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
