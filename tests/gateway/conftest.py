"""Fixtures for the gateway's HTTP tests: real `codeinterp serve` subprocesses over the real Docker backend."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_support import ServerFactory, ServerProcess


@contextlib.contextmanager
def _servers(run_id: str, base: Path) -> Iterator[ServerFactory]:
    started: list[ServerProcess] = []

    def make(*, data_dir: Path | None = None, env: dict[str, str] | None = None,
             args: tuple[str, ...] = ()) -> ServerProcess:
        if data_dir is None:
            data_dir = base / f"data-{len(started)}"
        server = ServerProcess(run_id, data_dir, base, env, args)
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        leaks = []
        for server in started:
            # uvicorn re-raises the SIGTERM it handled, so a graceful stop ends with -SIGTERM.
            clean = server.stop() in (0, -signal.SIGTERM)
            left = server.sweep()
            if clean and left:
                leaks.append(f"server {server.server_id} exited cleanly but left containers {left}")
        assert not leaks, "; ".join(leaks)


@pytest.fixture(scope="module")
def module_servers(run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """``module_servers(data_dir=..., env=...)`` starts a server that lives until the module ends."""
    with _servers(run_id, tmp_path_factory.mktemp("gateway")) as make:
        yield make


@pytest.fixture
def start_server(run_id: str, tmp_path: Path) -> Iterator[ServerFactory]:
    """``start_server(data_dir=..., env=...)`` starts a server that lives until the test ends."""
    with _servers(run_id, tmp_path) as make:
        yield make


@pytest.fixture(scope="module")
def server(module_servers: ServerFactory) -> ServerProcess:
    """The module's shared server: no auth, default settings, a fresh data dir."""
    return module_servers()


@pytest.fixture(scope="module")
def url(server: ServerProcess) -> str:
    return server.url


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=httpx.Timeout(120.0, connect=10.0)) as client:
        yield client
