"""What every section shares: its own `codeinterp serve`, the label sweep, and progress lines."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import docker
import httpx

import sandbox

__all__ = ["BENCH_LABEL", "BENCH_LABELS", "Server", "call", "log", "machine",
           "run_cleanly", "runtime_problem", "stop_all_servers", "sweep"]

# Its value is the pid of the harness process that made the container, so that runs going on at once
# (other checkouts' too, which sweep "codeinterp.bench=1") leave each other's containers alone.
BENCH_LABEL = "codeinterp.bench"
BENCH_LABELS = {BENCH_LABEL: str(os.getpid())}
T = TypeVar("T")
_LIVE: list[Server] = []  # servers not yet stopped, for the last-resort cleanup in __main__


def log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def machine(started: datetime.datetime, module: str) -> list[str]:
    """The lines that say where and when a run was made; ``module`` is what ran (`python -m <module>`)."""
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
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    return [
        f"- date: {started:%Y-%m-%d %H:%M:%S %Z} (start), {datetime.datetime.now().astimezone():%H:%M:%S} (end); "
        f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- machine: {os.cpu_count()} CPUs (nproc {sh('nproc')}), {memory} memory, {platform.platform()}",
        f"- engine: {engine}; kernel image {sandbox.default_image()}",
        f"- python {platform.python_version()}; checkout {sh('git', 'rev-parse', '--short', 'HEAD')}"
        f"{' (with uncommitted changes)' if sh('git', 'status', '--porcelain', '--untracked-files=no') else ''}",
        f"- command: `{shlex.join([python, '-m', module, *sys.argv[1:]])}`",
    ]


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_cleanly(work: Callable[[], Coroutine[Any, Any, T]]) -> tuple[T | None, int]:
    """``work()`` in an event loop, and its result with an exit status: 0, or 130 after Ctrl-C or SIGTERM
    (then no result). Before it, what runs that are gone left is swept; after it, even on an error, every
    server still up is stopped and this run's containers are swept."""
    signal.signal(signal.SIGTERM, _terminate)  # unwinds like Ctrl-C, through the finally below
    try:
        left = asyncio.run(sweep())
        if left:
            log(f"removed {left} container(s) left by an earlier run that is gone")
        return asyncio.run(work()), 0
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return None, 130
    finally:
        stop_all_servers()
        left = asyncio.run(sweep(mine_only=True))
        if left:
            log(f"swept {left} container(s) of this run")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A `codeinterp serve` subprocess on a free loopback port with a temporary data dir."""

    def __init__(self, *, pool_size: int, env: Mapping[str, str] | None = None) -> None:
        self.pool_size = pool_size
        self.extra_env = dict(env or {})
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = Path(tempfile.mkdtemp(prefix="codeinterp-bench-"))
        self.proc: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> Server:
        env = {**os.environ, "CODEINTERP_DATA_DIR": str(self.data),
               "CODEINTERP_CONTAINER_LABELS": json.dumps(BENCH_LABELS),
               "CODEINTERP_POOL_SIZE": str(self.pool_size), "CODEINTERP_SHUTDOWN_GRACE": "10",
               **self.extra_env}
        with (self.data / "server.log").open("wb") as out:
            # Its own session: a Ctrl-C reaches the harness only, which then stops the server in order.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--port", str(self.port), "--data-dir",
                 str(self.data), "--log-level", "WARNING"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _LIVE.append(self)
        try:
            await self._wait_up()
        except BaseException:
            self.stop()
            raise
        log(f"server on {self.url} (pool size {self.pool_size})")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    async def _wait_up(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 90
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"codeinterp serve exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"codeinterp serve did not answer /healthz in 90 s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.data / "server.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (the server saves and removes its sandboxes), SIGKILL after a grace, then the data dir."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                log(f"server {self.url} ignored SIGTERM for 60 s; killing it")
                self.proc.kill()
                self.proc.wait(10)
        if self in _LIVE:
            _LIVE.remove(self)
        shutil.rmtree(self.data, ignore_errors=True)

    async def pool_ready(self, http: httpx.AsyncClient, timeout: float = 120.0) -> bool | None:
        """Wait until the warm pool is full. True when /healthz said so, None when it reports no pool
        (then this just sleeps 2 s), False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pool = (await http.get("/healthz")).json().get("pool")
            if not isinstance(pool, dict) or "ready" not in pool:
                await asyncio.sleep(2)
                return None
            if pool["ready"] >= pool.get("size", self.pool_size):
                return True
            await asyncio.sleep(0.05)
        return False


async def runtime_problem(runtime: str) -> str | None:
    """None when ``runtime`` runs a sandbox here; otherwise why not, found within about a minute.

    Checked before a runtime's sections, so that a runtime that cannot work (not registered, or its
    kernels never answer) fails its rows at once instead of making every sample wait for a timeout.
    """
    try:
        check = await asyncio.to_thread(lambda: sandbox.check_runtime(runtime, sandbox.docker_runtimes()))
    except sandbox.SandboxError as exc:
        return str(exc)
    if not check.ok:
        return f"{check.problem}; fix: {check.fix}"
    backend = sandbox.DockerBackend(sandbox.DockerConfig(labels=BENCH_LABELS, runtime=runtime))
    try:
        session = await asyncio.wait_for(sandbox.Session.start(backend, f"bench-probe-{runtime}"), 90)
        try:
            result = await asyncio.wait_for(session.execute("print(1)", timeout=30), 60)
        finally:
            await session.close()
    except (sandbox.SandboxError, TimeoutError) as exc:
        return f"{runtime} cannot run a sandbox here: {type(exc).__name__}: {exc}"
    finally:
        await backend.aclose()
    if result.stdout != "1\n":
        return f"{runtime}: print(1) gave {result.stdout!r} {result.error!r}"
    return None


def stop_all_servers() -> None:
    for server in list(_LIVE):
        server.stop()


async def call(http: httpx.AsyncClient, thread: str, code: str, **extra: Any) -> dict[str, Any]:
    """One code-interpreter call on a thread; raises unless it completed."""
    response = await http.post(f"/v1/threads/{thread}/code_interpreter/calls", json={"input": code, **extra})
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    if body.get("status") != "completed" or body.get("error"):
        raise RuntimeError(f"call {code!r} on {thread} did not complete: {body.get('status')} {body.get('error')}")
    return body


def logs_of(body: Mapping[str, Any]) -> str:
    return "".join(o.get("logs", "") for o in body["code_interpreter"]["outputs"] if o.get("type") == "logs")


def bench_containers(*, mine_only: bool = True) -> list[dict[str, Any]]:
    """Containers of this harness process, or of every bench run."""
    labels = [f"{BENCH_LABEL}={os.getpid()}" if mine_only else BENCH_LABEL]
    client = docker.from_env()
    try:
        return list(client.api.containers(all=True, filters={"label": labels}))
    finally:
        client.close()


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


async def sweep(*, mine_only: bool = False) -> int:
    """Remove the containers of this harness process (``mine_only``) or of any harness process that
    is gone (ours and llm-sandbox's), and the host work dirs (data mounts, sockets) of the codeinterp
    ones. Another run going on beside this one keeps its containers. Returns how many were removed."""
    me = str(os.getpid())
    leftovers = [c for c in await asyncio.to_thread(bench_containers)
                 if (pid := (c.get("Labels") or {}).get(BENCH_LABEL, "")).isdigit() and pid != "1"
                 and (pid == me if mine_only else pid == me or not _alive(pid))]
    if not leftovers:
        return 0
    backend = sandbox.DockerBackend(sandbox.DockerConfig(labels=BENCH_LABELS))
    try:
        for container in leftovers:
            with contextlib.suppress(Exception):
                await backend.remove_container(container["Id"])
            with contextlib.suppress(Exception):
                await backend.remove_workdir(container)
    finally:
        await backend.aclose()
    return len(leftovers)
