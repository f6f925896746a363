"""Hibernation under gVisor: `.venv/bin/python -m bench.hibernate [--rounds N] [--hold N] [--output FILE]`.

For a fresh kernel and for one holding pandas plus a ~50 MB DataFrame, in one run:
checkpoint time and size, restore-to-first-result (`print(x)` on a hibernated session:
restore, reconnect, execute), and what a hibernated sandbox costs the host (RAM of every
process left for its container, disk of its checkpoint, /mnt/data image and Docker files).
How many this machine holds is extrapolated from those per-sandbox costs; --hold N measures N asleep at once.
Containers carry codeinterp.bench=1 and are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import sandbox

DATAFRAME = ("import numpy as np, pandas as pd\n"
             "df = pd.DataFrame(np.random.default_rng(1).random((820_000, 8)), columns=list('abcdefgh'))\n"
             "x = round(float(df['c'].mean()), 6)\nprint(df.memory_usage().sum() >> 20, 'MiB')")
FRESH = "x = 1"
CASES = {"fresh kernel": FRESH, "pandas + 50 MB DataFrame": DATAFRAME}


def host_rss(container_id: str) -> int:
    """Bytes of RSS of every host process whose command line names the container."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if container_id.encode() in (proc / "cmdline").read_bytes():
                for line in (proc / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def disk_bytes(path: Path) -> int:
    """Allocated bytes under ``path`` (sparse files count what they use)."""
    out = subprocess.run(["du", "-sb", "--apparent-size", str(path)], capture_output=True, text=True)
    used = subprocess.run(["du", "-sB1", str(path)], capture_output=True, text=True)
    return int(used.stdout.split()[0]) if used.returncode == 0 else int(out.stdout.split()[0] or 0)


def workdir_bytes(session: sandbox.Session) -> int:
    """Disk of the sandbox's work dir (its /mnt/data image) on this machine; 0 on another engine."""
    data = session.host.data
    return disk_bytes(data.path.parent) if data is not None else 0


async def one(backend: sandbox.DockerBackend, setup: str) -> dict[str, float]:
    session = await sandbox.Session.start(backend, "bench-hibernate")
    try:
        result = await session.execute(setup, timeout=300)
        assert result.outcome is sandbox.Outcome.OK, result
        live_rss = host_rss(session.host.name)
        started = time.monotonic()
        size = await session.hibernate()
        checkpoint_s = time.monotonic() - started
        await asyncio.sleep(1)
        asleep_rss = host_rss(session.host.name)
        docker_dir = Path("/var/lib/docker/containers") / session.host.name
        disk = disk_bytes(docker_dir) + workdir_bytes(session)
        started = time.monotonic()
        result = await session.execute("print(x)")
        restore_s = time.monotonic() - started
        assert result.outcome is sandbox.Outcome.OK and result.stdout.strip(), result
        return {"checkpoint_s": checkpoint_s, "checkpoint_bytes": size, "restore_s": restore_s,
                "live_rss": live_rss, "asleep_rss": asleep_rss, "disk": disk}
    finally:
        await session.close()


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


async def hold(backend: sandbox.DockerBackend, n: int) -> list[str]:
    """Hibernate ``n`` fresh sandboxes, all asleep at once; what they cost together, then wake a few."""
    before, sessions, started = mem_available(), [], time.monotonic()
    try:
        stopped = ""
        for i in range(n):
            try:
                session = await sandbox.Session.start(backend, f"bench-hold-{i}")
                sessions.append(session)
                result = await session.execute(f"token = {i} * 7919")
                assert result.outcome is sandbox.Outcome.OK, result
                await session.hibernate()
            except (sandbox.SandboxError, AssertionError) as exc:  # how far it got is the figure
                stopped = f" Stopped at {i}: sandbox {i + 1} failed: {type(exc).__name__}: {exc}"[:400]
                print(f"hold:{stopped}", file=sys.stderr)
                break
            if (i + 1) % 25 == 0:
                print(f"hold: {i + 1}/{n} hibernated", file=sys.stderr)
        asleep = [s for s in sessions if s.hibernated]
        n = len(asleep)
        sessions_awake = [s for s in sessions if not s.hibernated]
        elapsed = time.monotonic() - started
        if not n:
            return [f"\nno sandbox hibernated.{stopped}"]
        await asyncio.sleep(5)
        after = mem_available()
        rss = sum(host_rss(s.host.name) for s in asleep)
        disk = sum(disk_bytes(Path("/var/lib/docker/containers") / s.host.name) + workdir_bytes(s) for s in asleep)
        woken = 0
        for index in range(0, n, max(1, n // 5)):  # a few, spread over the sleepers, keep their memory
            result = await asleep[index].execute("print(token)")
            woken += int(result.outcome is sandbox.Outcome.OK and result.stdout.strip() == str(index * 7919))
        mib = 1 << 20
        return [f"\n{n} fresh sandboxes hibernated at once (measured; {elapsed:.0f} s to start and hibernate them "
                f"one after another): host RAM of their processes {rss / mib:.1f} MiB in all; MemAvailable "
                f"{(before - after) / mib:.0f} MiB lower than before the first started (page cache included); "
                f"disk {disk / mib:.0f} MiB in all ({disk / n / mib:.1f} MiB each); {woken} of "
                f"{len(range(0, n, max(1, n // 5)))} woken afterwards had their variable"
                f"{f'; {len(sessions_awake)} left awake' if sessions_awake else ''}.{stopped}"]
    finally:
        for session in sessions:
            with contextlib.suppress(sandbox.SandboxError):
                await session.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hold", type=int, default=0, metavar="N",
                        help="also hibernate N fresh sandboxes at once and report what they cost together")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    backend = sandbox.DockerBackend(sandbox.DockerConfig(runtime="runsc", labels={"codeinterp.bench": "1"},
                                                         work_root=Path("/tmp/codeinterp-bench-hib")))
    rows: dict[str, list[dict[str, float]]] = {}
    failures: dict[str, int] = {}
    held: list[str] = []
    try:
        if args.hold:
            held = await hold(backend, args.hold)
        for name, setup in CASES.items():
            rows[name] = []
            for i in range(args.rounds):
                print(f"{name}: round {i + 1}/{args.rounds}", file=sys.stderr)
                try:
                    rows[name].append(await one(backend, setup))
                except sandbox.SandboxError as exc:  # counted in the table, not hidden
                    failures[name] = failures.get(name, 0) + 1
                    print(f"{name}: round {i + 1} failed: {exc}", file=sys.stderr)
    finally:
        for container in await backend.list_labelled(**{"codeinterp.bench": "1"}):
            with contextlib.suppress(sandbox.SandboxError):  # one being removed already
                await backend.remove_container(container["Id"])
                await backend.remove_workdir(container)
        await backend.aclose()

    mib = 1 << 20
    lines = [f"runsc {subprocess.run(['runsc', '--version'], capture_output=True, text=True).stdout.split()[2]}, "
             f"{args.rounds} rounds per case, {os.cpu_count()} cores", "",
             "| case | checkpoint p50 (s) | checkpoint size p50 (MiB) | restore to first result p50 / max (s) "
             "| host RAM live / hibernated (MiB) | disk hibernated (MiB) | rounds ok / failed |",
             "|---|---|---|---|---|---|---|"]
    for name, runs in rows.items():
        def p50(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[key] for r in runs)
        lines.append(f"| {name} | {p50('checkpoint_s'):.2f} | {p50('checkpoint_bytes') / mib:.1f} | "
                     f"{p50('restore_s'):.2f} / {max(r['restore_s'] for r in runs):.2f} | "
                     f"{p50('live_rss') / mib:.0f} / {p50('asleep_rss') / mib:.1f} | {p50('disk') / mib:.1f} | "
                     f"{len(runs)} / {failures.get(name, 0)} |")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    free_disk = shutil.disk_usage("/var/lib/docker").free
    for name, runs in rows.items():
        disk = statistics.median(r["disk"] for r in runs)
        ram = statistics.median(r["asleep_rss"] for r in runs)
        by_disk = int(free_disk // disk) if disk else 0
        by_ram = int(memory // ram) if ram else None
        lines.append(f"\n{name}: extrapolated, not measured: {by_disk} hibernated sandboxes fit the "
                     f"{free_disk / (1 << 30):.0f} GiB free under /var/lib/docker at {disk / mib:.1f} MiB each; "
                     + (f"{by_ram} fit {memory / (1 << 30):.0f} GiB of RAM at {ram / mib:.1f} MiB each."
                        if by_ram else "a hibernated sandbox left no host process, so RAM does not bound it."))
    text = "\n".join([*lines, *held]) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    asyncio.run(main())
