"""What every section shares: its own `codeinterp serve`, the label sweep, and progress lines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker
import httpx

import sandbox

__all__ = ["BENCH_LABEL", "BENCH_LABELS", "Server", "call", "log", "runtime_problem", "stop_all_servers", "sweep"]

BENCH_LABEL = "codeinterp.bench"
BENCH_LABELS = {BENCH_LABEL: "1"}
_LIVE: list[Server] = []  # servers not yet stopped, for the last-resort cleanup in __main__


def log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


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
               "CODEINTERP_CONTAINER_LABELS": '{"codeinterp.bench": "1"}',
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


def bench_containers() -> list[dict[str, Any]]:
    client = docker.from_env()
    try:
        return list(client.api.containers(all=True, filters={"label": [f"{BENCH_LABEL}=1"]}))
    finally:
        client.close()


async def sweep() -> int:
    """Remove every container labelled codeinterp.bench=1 (ours and llm-sandbox's), and the host
    work dirs (data mounts, sockets) of the codeinterp ones. Returns how many were left over."""
    leftovers = await asyncio.to_thread(bench_containers)
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
