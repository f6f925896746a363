"""Fixtures for the hostile suite: live `codeinterp serve` processes, their RSS, and a host-side bait file.

The bait is a file on this host, outside every sandbox, whose content is unique to the run: code in
a sandbox points symlinks at its path, and no response may ever carry its content.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway.gateway_support import ServerFactory, ServerProcess, servers


@pytest.fixture(scope="module")
def module_servers(run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    with servers(run_id, tmp_path_factory.mktemp("hostile")) as make:
        yield make


@pytest.fixture(scope="module")
def server(module_servers: ServerFactory) -> ServerProcess:
    return module_servers()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=httpx.Timeout(180.0, connect=10.0)) as client:
        yield client


@pytest.fixture(scope="session")
def bait(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host file that no sandbox may ever read or write through the gateway."""
    path = tmp_path_factory.mktemp("bait") / "host-secret.txt"
    path.write_text(f"HOST-SECRET-{uuid.uuid4().hex}\n")
    return path
