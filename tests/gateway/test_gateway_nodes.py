"""Two `codeinterp serve` processes on one PostgreSQL database and one file store.

Any gateway accepts any request: a thread's calls are forwarded to the gateway that holds its sandbox
(so they run on one kernel, in order), a thread whose gateway was killed is restored elsewhere from
its stored files, and a gateway's startup recovery touches only what it owned.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import PostgresCluster, ServerFactory, ServerProcess, labelled_containers, sse_events

pytestmark = [pytest.mark.docker, pytest.mark.slow]

Gateway = Callable[[str], ServerProcess]


@pytest.fixture
def gateway(start_server: ServerFactory, postgres: PostgresCluster, tmp_path: Path) -> Gateway:
    """``gateway("a")`` starts node "a" (again, after a kill: same data dir) on the shared database and files."""
    database = f"n_{uuid.uuid4().hex[:16]}"
    url = postgres.database(database)
    files = tmp_path / "shared-files"

    def start(node: str) -> ServerProcess:
        return start_server(data_dir=tmp_path / f"data-{node}", env={
            "CODEINTERP_DATABASE_URL": url, "CODEINTERP_FILE_STORE": str(files), "CODEINTERP_NODE_NAME": node,
            "CODEINTERP_HEARTBEAT_INTERVAL": "1"})
    return start


def call(server: ServerProcess, thread: str, code: str, **extra: Any) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/v1/threads/{thread}/code_interpreter/calls",
                          json={"input": code, **extra}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def logs(body: dict[str, Any]) -> str:
    return "".join(o.get("logs", "") for o in body["code_interpreter"]["outputs"] if o["type"] == "logs")


def thread_containers(*servers: ServerProcess) -> list[Any]:
    return [c for s in servers for c in labelled_containers(*s.labels) if "codeinterp.container" in c.labels]


def test_first_calls_on_one_thread_through_both_gateways_make_one_sandbox(gateway: Gateway) -> None:
    a, b = gateway("a"), gateway("b")
    # Each call counts itself on the kernel: one kernel, calls in turn, means the counts are 1..n.
    code = "n = globals().get('n', 0) + 1\nprint(n)"
    for round_ in range(3):
        thread = f"race-{round_}"
        barrier = threading.Barrier(4)

        def first(server: ServerProcess, thread: str = thread, barrier: threading.Barrier = barrier) -> Any:
            barrier.wait()
            return call(server, thread, code)

        with ThreadPoolExecutor(4) as pool:
            bodies = list(pool.map(first, [a, b, a, b]))
        assert {body["status"] for body in bodies} == {"completed"}
        assert len({body["container_id"] for body in bodies}) == 1
        assert sorted(int(logs(body)) for body in bodies) == [1, 2, 3, 4]
        assert not any(body["session_restored"] for body in bodies)
    assert len(thread_containers(a, b)) == 3  # one sandbox per thread, none left over from a lost race


def _in_progress(server: ServerProcess, thread: str) -> str:
    """Start a call on the thread that runs until stopped (streamed, in a daemon thread); its id once it runs."""
    code = "import time\nprint('started', flush=True)\ntime.sleep(3600)"
    found: list[str] = []
    ready = threading.Event()

    def run() -> None:
        try:
            with httpx.stream("POST", f"{server.url}/v1/threads/{thread}/code_interpreter/calls",
                              json={"input": code, "stream": True}, timeout=120) as response:
                for _, data, _ in sse_events(response):
                    if data == "[DONE]":
                        break
                    delta = json.loads(data)
                    if delta.get("id") and not found:
                        found.append(delta["id"])
                    if "started" in data:
                        ready.set()
        except httpx.TransportError:
            pass  # the gateway was killed under it
        finally:
            ready.set()

    threading.Thread(target=run, daemon=True).start()
    assert ready.wait(60) and found, "the long call did not start"
    return found[0]


def _call_status(server: ServerProcess, thread: str, call_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/v1/threads/{thread}/code_interpreter/calls/{call_id}", timeout=60)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_a_killed_gateway_loses_no_file_and_its_recovery_touches_only_its_own(gateway: Gateway) -> None:
    a, b = gateway("a"), gateway("b")
    upload = httpx.post(f"{a.url}/v1/files", files={"file": ("in.txt", b"uploaded\n")},
                        data={"purpose": "assistants"}, timeout=60).json()
    kept = call(a, "moves", "x = 41\nopen('/mnt/data/kept.txt', 'w').write('kept\\n')", file_ids=[upload["id"]])
    (written,) = [f for f in kept["files"] if f["path"] == "/mnt/data/kept.txt"]
    stuck = _in_progress(a, "stuck")  # in flight on a when it dies
    other = _in_progress(b, "other")  # in flight on b all along
    a.kill()

    # b takes over a's thread: a new sandbox with the stored files, variables reset.
    moved = call(b, "moves", "print('x' in globals(), open('/mnt/data/kept.txt').read(), "
                             "open('/mnt/data/in.txt').read())\ny = 7")
    assert (moved["status"], moved["container_id"], moved["session_restored"]) == (
        "completed", kept["container_id"], True)
    assert logs(moved).endswith("False kept\n uploaded\n\n")

    # a comes back: its recovery ends its own call in flight and leaves b's alone.
    a = gateway("a")
    stuck_body = _call_status(b, "stuck", stuck)
    assert stuck_body["status"] == "incomplete", stuck_body
    assert stuck_body["error"]["message"] == "gateway restarted"
    assert _call_status(a, "other", other)["status"] == "in_progress"
    # The thread b took over stays b's: through a, the call is forwarded to b's kernel.
    again = call(a, "moves", "print(y)")
    assert (again["session_restored"], logs(again)) == (False, "7\n")
    # No stored file was lost, and both gateways serve them from the shared store.
    for server in (a, b):
        assert httpx.get(f"{server.url}/v1/files/{upload['id']}/content", timeout=60).content == b"uploaded\n"
        content = httpx.get(f"{server.url}/v1/files/{written['file_id']}/content", timeout=60)
        assert content.content == b"kept\n"
    # b's call ran on through all this; cancelling it through a reaches it on b.
    cancelled = httpx.post(f"{a.url}/v1/threads/other/code_interpreter/calls/{other}/cancel", timeout=60)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "incomplete" and logs(cancelled.json()).startswith("started\n")
    assert _call_status(b, "other", other)["status"] == "incomplete"
