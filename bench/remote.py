"""First-call latency on a remote Docker engine against the local one: `.venv/bin/python -m bench.remote
[--rounds N] [--output FILE]`.

The remote engine is the second dockerd of `scripts/remote-dockerd.sh` (started here when it is not up,
and stopped again at the end): a network namespace on this machine, reached over TCP with TLS. It shares
this machine's CPUs and disk, so the difference measured is the engine's transport (TLS over a veth
instead of a unix socket) and the remote /mnt/data (a tmpfs volume, listed by an exec in the sandbox,
files through the archive API), not a network's latency. Rounds alternate between the engines so
that the machine's load falls on both alike. Per engine and round:

  first call     Session.start, then `print(1)`: what a new thread waits for without a warm pool
  round trip     `pass` on a started session (the kernel channel: a docker exec stream)
  upload 1 MB    write_file of 1 MB into /mnt/data, then read_file of it

Containers carry codeinterp.bench=<pid> and are removed at the end, on both engines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import sandbox
from bench.stats import fmt, summary

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "remote-dockerd.sh"
MEASURES = ("first call", "round trip", "upload 1 MB")


async def one_round(backend: sandbox.DockerBackend, samples: dict[str, list[float]]) -> None:
    began = time.perf_counter()
    session = await sandbox.Session.start(backend, "bench-remote")
    try:
        result = await session.execute("print(1)")
        samples["first call"].append(time.perf_counter() - began)
        assert result.stdout == "1\n", result
        for _ in range(5):
            began = time.perf_counter()
            await session.execute("pass")
            samples["round trip"].append(time.perf_counter() - began)
        payload = os.urandom(1 << 20)
        began = time.perf_counter()
        info = await session.write_file("payload.bin", payload)
        assert await session.read_file(info.path) == payload
        samples["upload 1 MB"].append(time.perf_counter() - began)
    finally:
        await session.close()


def remote_up() -> tuple[sandbox.DockerHost, bool]:
    """The remote engine, and whether this run started it."""
    was_up = subprocess.run([str(SCRIPT), "status"], capture_output=True).returncode == 0
    done = subprocess.run([str(SCRIPT), "up"], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"scripts/remote-dockerd.sh up failed:\n{done.stderr[-2000:]}")
    found = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return sandbox.DockerHost(found["DOCKER_HOST"], Path(found["DOCKER_CERT_PATH"])), not was_up


async def run(rounds: int) -> str:
    remote, started = remote_up()
    label = {"codeinterp.bench": str(os.getpid())}
    local = sandbox.DockerHost(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    backends = {name: sandbox.DockerBackend(sandbox.DockerConfig(hosts=(host,), labels=label))
                for name, host in (("local", local), ("remote (TLS)", remote))}
    samples: dict[str, dict[str, list[float]]] = {name: {m: [] for m in MEASURES} for name in backends}
    try:
        for backend in backends.values():  # one unmeasured round each: images and caches warm
            await one_round(backend, {m: [] for m in MEASURES})
        for n in range(rounds):
            for name, backend in (backends.items() if n % 2 == 0 else reversed(backends.items())):
                await one_round(backend, samples[name])
            print(f"round {n + 1}/{rounds}", file=sys.stderr)
    finally:
        for backend in backends.values():
            for container in await backend.list_labelled(**label):
                await backend.remove_container(container["Id"])
            await backend.aclose()
        if started:
            subprocess.run([str(SCRIPT), "down"], capture_output=True)
    lines = ["| measure | engine | median ms | p90 ms | min ms | max ms | n |", "|---|---|---|---|---|---|---|"]
    for measure in MEASURES:
        for name in backends:
            s = summary([x * 1000 for x in samples[name][measure]])
            lines.append(f"| {measure} | {name} | {fmt(s['median'])} | {fmt(s['p90'])} | {fmt(s['min'])} "
                         f"| {fmt(s['max'])} | {s['n']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    table = asyncio.run(run(args.rounds))
    print(table)
    if args.output:
        args.output.write_text(table)


if __name__ == "__main__":
    main()
