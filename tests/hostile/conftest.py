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


def rss_bytes(server: ServerProcess) -> int:
    """The resident set size of the server process, from /proc."""
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc status")


def new_container(http: httpx.Client, **body: object) -> str:
    created = http.post("/v1/containers", json={"name": "hostile", **body})
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


def call(http: httpx.Client, container_id: str, code: str, **body: object) -> dict[str, object]:
    response = http.post(f"/v1/containers/{container_id}/calls", json={"input": code, **body})
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def logs_of(result: dict[str, object]) -> str:
    outputs = result["code_interpreter"]["outputs"]  # type: ignore[index]
    return "".join(o["logs"] for o in outputs if o["type"] == "logs")  # type: ignore[union-attr]
