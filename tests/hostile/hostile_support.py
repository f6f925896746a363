"""Helpers for the hostile suite's tests (a module of its own: "conftest" is ambiguous across test dirs)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.gateway.gateway_support import ServerProcess

__all__ = ["call", "logs_of", "new_container", "rss_bytes"]


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
