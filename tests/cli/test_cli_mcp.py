"""`codeinterp mcp` over stdio, driven by the official MCP SDK's client, with no gateway running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid

import pytest
from cli_support import CODEINTERP, RUN_LABEL
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.gateway.gateway_support import labelled_containers
from tests.gateway.mcp_support import exercise, ok, texts

pytestmark = [pytest.mark.docker, pytest.mark.slow]
MARK = "codeinterp.test-mcp"
MESSAGES = [
    {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
     "params": {"name": "run_python", "arguments": {"code": "print('up')"}}},
]


def _params(run_id: str, mark: str, *args: str) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEINTERP_")}
    env["CODEINTERP_CONTAINER_LABELS"] = json.dumps({RUN_LABEL: run_id, MARK: mark})
    return StdioServerParameters(command=str(CODEINTERP), args=["mcp", *args], env=env)


async def test_stdio_session_does_everything_and_removes_its_sandbox(run_id: str) -> None:
    mark = uuid.uuid4().hex
    async with stdio_client(_params(run_id, mark, "--timeout", "45")) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        assert labelled_containers(f"{MARK}={mark}") == []  # nothing starts before the first tool call
        await exercise(session, timeout="45")
        assert len(labelled_containers(f"{MARK}={mark}")) == 1  # one sandbox for the whole session
    assert labelled_containers(f"{MARK}={mark}") == []  # the session ended: its sandbox is gone


async def test_stdio_timeout_is_a_tool_error_and_keeps_state(run_id: str) -> None:
    async with stdio_client(_params(run_id, uuid.uuid4().hex)) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        await ok(session, "run_python", code="y = 7")
        slow = await session.call_tool("run_python", {"code": "import time; time.sleep(30)", "timeout": 1})
        assert slow.is_error and "timeout" in texts(slow)
        assert texts(await ok(session, "run_python", code="print(y)")).strip() == "7"


def test_sigterm_removes_the_sandbox(run_id: str) -> None:
    """A desktop agent may end its servers with SIGTERM while the session is open."""
    mark = uuid.uuid4().hex
    params = _params(run_id, mark)
    with subprocess.Popen([params.command, *params.args], env=params.env, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            for message in MESSAGES:
                proc.stdin.write(json.dumps(message) + "\n")
            proc.stdin.flush()
            answers = [json.loads(proc.stdout.readline()) for _ in range(2)]
            assert answers[1]["result"]["content"][0]["text"] == "up\n", answers
            assert len(labelled_containers(f"{MARK}={mark}")) == 1
            proc.send_signal(signal.SIGTERM)  # stdin stays open: the client never closed the session
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert labelled_containers(f"{MARK}={mark}") == []
