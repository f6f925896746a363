"""/mcp: the tool server over streamable HTTP on a real `codeinterp serve`, through the official SDK's client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import httpx2
import pytest
from gateway_support import ServerFactory, ServerProcess, assert_openai_error, labelled_containers
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_support import exercise, ok, texts

pytestmark = [pytest.mark.docker, pytest.mark.slow]
KEYS = {"CODEINTERP_API_KEYS": "key-a,key-b"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.fixture(scope="module")
def keyed(module_servers: ServerFactory) -> ServerProcess:
    return module_servers(env=KEYS)


@asynccontextmanager
async def mcp_session(server: ServerProcess, key: str | None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as client, \
            streamable_http_client(f"{server.url}/mcp", http_client=client) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


def sandboxes(server: ServerProcess) -> list[object]:
    return labelled_containers(*server.labels)


async def test_http_session_does_everything_and_ends_its_sandbox(keyed: ServerProcess) -> None:
    async with mcp_session(keyed, "key-a") as session:
        await exercise(session, timeout="60")
        assert len(sandboxes(keyed)) == 1
    # The client's DELETE ended the session, and the gateway removed its sandbox.
    assert sandboxes(keyed) == []


async def test_each_session_has_its_own_sandbox(keyed: ServerProcess) -> None:
    async with mcp_session(keyed, "key-a") as first, mcp_session(keyed, "key-a") as second:
        await ok(first, "run_python", code="secret = 'first'")
        missing = await second.call_tool("run_python", {"code": "print(secret)"})
        assert missing.is_error and "NameError" in texts(missing)
        assert len(sandboxes(keyed)) == 2
    assert sandboxes(keyed) == []


def test_a_wrong_or_missing_key_is_refused(keyed: ServerProcess) -> None:
    for headers in ({"Authorization": "Bearer wrong"}, {}):
        response = httpx.post(f"{keyed.url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **headers})
        assert_openai_error(response, 401)
    assert sandboxes(keyed) == []


def test_another_key_cannot_use_a_session(keyed: ServerProcess) -> None:
    with httpx.Client(base_url=keyed.url, headers=MCP_HEADERS, timeout=30) as http:
        opened = http.post("/mcp", json=INITIALIZE, headers={"Authorization": "Bearer key-a"})
        assert opened.status_code == 200, opened.text
        session_id = opened.headers["mcp-session-id"]
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        as_b = {"Authorization": "Bearer key-b", "mcp-session-id": session_id}
        stolen = http.post("/mcp", json=listing, headers=as_b)
        assert stolen.status_code == 404
        ended = http.delete("/mcp", headers=as_b)
        assert ended.status_code == 404
        assert http.delete("/mcp", headers={"Authorization": "Bearer key-a", "mcp-session-id": session_id}
                           ).status_code == 200


async def test_without_keys_loopback_callers_are_served(server: ServerProcess) -> None:
    async with mcp_session(server, None) as session:
        assert texts(await ok(session, "run_python", code="print(6 * 7)")).strip() == "42"
    # A page that reached the loopback server through DNS rebinding carries a foreign Host; refused.
    rebound = httpx.post(f"{server.url}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "host": "evil.example"})
    assert rebound.status_code == 421


async def test_a_vanished_client_s_sandbox_expires(start_server: ServerFactory) -> None:
    server = start_server(env={"CODEINTERP_THREAD_EXPIRY_MINUTES": "0.05", "CODEINTERP_EXPIRY_INTERVAL": "0.2"})
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=300)) as client, \
            streamable_http_client(f"{server.url}/mcp", http_client=client, terminate_on_close=False) as (r, w), \
            ClientSession(r, w) as session:
        await session.initialize()
        await ok(session, "run_python", code="print(1)")
        assert len(sandboxes(server)) == 1
    # No DELETE: the client just went away. Idle expiry removes the sandbox all the same.
    deadline = time.monotonic() + 60
    while sandboxes(server) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert sandboxes(server) == []
