"""Capacity by measured memory: a sandbox that really fills the host's memory leaves room for no more.

Each test reads the host's free memory, gives the server a reserve that leaves about 1 GiB for
sandboxes, then has one sandbox write 3 GiB of real pages; the next admission must evict it when it
is idle (its files kept) and refuse with a 429 while it is busy.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from gateway_support import ServerFactory, ServerProcess, assert_openai_error, sse_events

pytestmark = [pytest.mark.docker, pytest.mark.slow]

GIB = 1 << 30
HOG = 3 * GIB
# Every page written, so that the kernel really hands it out (b"\0" * n or bytearray(n) may not).
FILL = f"hog = b'x' * {HOG}\nprint('filled', flush=True)"


def mem_available() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemAvailable in /proc/meminfo")


def tight_server(start_server: ServerFactory, **env: str) -> tuple[ServerProcess, int]:
    """A server whose reserve leaves about 1 GiB of today's free memory to sandboxes; and that reserve."""
    free = mem_available()
    if free < HOG + 3 * GIB:
        pytest.skip(f"needs {(HOG + 3 * GIB) >> 30} GiB of free memory; the host has {free >> 20} MiB")
    reserve = free - GIB
    server = start_server(env={"CODEINTERP_MEMORY_RESERVE": str(reserve), "CODEINTERP_SANDBOX_MEMORY": "64m",
                               "CODEINTERP_CAPACITY_WAIT": "2", "CODEINTERP_CPU_PRESSURE_LIMIT": "0", **env})
    return server, reserve


def new_hog(http: httpx.Client) -> tuple[str, str]:
    """A container with room for 3 GiB and a file in /mnt/data; its id and calls URL."""
    hog = http.post("/v1/containers", json={"name": "hog", "memory_limit": "4g"})
    assert hog.status_code == 200, hog.text
    calls = f"/v1/containers/{hog.json()['id']}/calls"
    wrote = http.post(calls, json={"input": "open('/mnt/data/kept.txt', 'w').write('kept')"}).json()
    assert wrote["status"] == "completed", wrote
    return hog.json()["id"], calls


def thread_call(http: httpx.Client, thread: str) -> httpx.Response:
    return http.post(f"/v1/threads/{thread}/code_interpreter/calls", json={"input": "print(1)"})


def assert_expired_with_files_kept(http: httpx.Client, container_id: str) -> None:
    assert http.get(f"/v1/containers/{container_id}").json()["status"] == "expired"
    (kept,) = http.get(f"/v1/containers/{container_id}/files").json()["data"]
    assert kept["path"] == "/mnt/data/kept.txt"
    assert http.get(f"/v1/containers/{container_id}/files/{kept['id']}/content").content == b"kept"


def test_a_new_sandbox_gets_429_while_the_memory_is_held_by_a_busy_one_and_evicts_it_once_idle(
        start_server: ServerFactory) -> None:
    server, reserve = tight_server(start_server, CODEINTERP_MEMORY_CHECK_INTERVAL="3600")  # admission alone
    with httpx.Client(base_url=server.url, timeout=120) as http:
        assert thread_call(http, "early").status_code == 200, "room for a sandbox before the memory is taken"
        hog_id, calls = new_hog(http)
        ended: dict[str, Any] = {}
        with http.stream("POST", calls, json={"input": FILL + "\nimport time\ntime.sleep(10)",
                                              "stream": True}) as running:
            events = sse_events(running)
            for _, data, _ in events:
                outputs = json.loads(data)["code_interpreter"]["outputs"]
                if any("filled" in o.get("logs", "") for o in outputs):
                    break
            assert mem_available() < reserve, "the hog's pages are real: free memory is under the reserve"

            refused = thread_call(http, "newcomer")

            error = assert_openai_error(refused, 429)
            assert "memory" in error["message"], error
            assert int(refused.headers["Retry-After"]) > 0
            for name, data, _ in events:
                if name == "code_interpreter.completed":
                    ended = json.loads(data)
        assert ended.get("status") == "completed", ended
        # The thread's idle sandbox went first (least recently used) and did not free enough.
        assert http.get("/v1/threads/early/code_interpreter").json()["container"]["status"] == "expired"

        admitted = thread_call(http, "newcomer")  # the hog is idle now, still holding 3 GiB

        assert admitted.status_code == 200, admitted.text
        assert_expired_with_files_kept(http, hog_id)
        assert mem_available() > reserve


def test_an_idle_sandbox_expires_by_itself_when_memory_runs_low(start_server: ServerFactory) -> None:
    server, reserve = tight_server(start_server, CODEINTERP_MEMORY_CHECK_INTERVAL="0.5")
    with httpx.Client(base_url=server.url, timeout=120) as http:
        hog_id, calls = new_hog(http)
        filled = http.post(calls, json={"input": FILL}).json()
        assert filled["status"] == "completed", filled

        deadline = time.monotonic() + 30
        while http.get(f"/v1/containers/{hog_id}").json()["status"] != "expired":
            assert time.monotonic() < deadline, "the idle hog was not expired within 30 s"
            time.sleep(0.2)

        assert_expired_with_files_kept(http, hog_id)
        assert mem_available() > reserve
