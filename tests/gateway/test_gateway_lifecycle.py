"""Lifecycle at scale: the warm pool, idle expiry that keeps files, capacity, and crash recovery."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import ServerFactory, ServerProcess, assert_openai_error, labelled_containers, thread_call
from gateway_support import wait_for as support_wait_for

pytestmark = pytest.mark.docker

HOSTNAME = "import socket; print(socket.gethostname())"


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    return support_wait_for(predicate, what, timeout)


call = thread_call


def logs(body: dict[str, Any]) -> str:
    return "".join(o["logs"] for o in body["code_interpreter"]["outputs"] if o["type"] == "logs")


def running_call(http: httpx.Client, container_id: str) -> bool:
    """Whether a call of the container is under way: it then holds the container's sandbox."""
    calls = http.get(f"/v1/containers/{container_id}/calls").json()["data"]
    return any(c["status"] == "in_progress" for c in calls)


def pooled(server: ServerProcess) -> list[Any]:
    return [c for c in labelled_containers("codeinterp.pooled=1", *server.labels) if c.status == "running"]


def test_a_pooled_sandbox_serves_one_thread_and_is_replaced(start_server: ServerFactory) -> None:
    server = start_server(env={"CODEINTERP_POOL_SIZE": "1", "CODEINTERP_POOL_PAUSE": "0"})
    with httpx.Client(base_url=server.url, timeout=60) as http:
        (warm,) = wait_for(lambda: pooled(server) if http.get("/healthz").json()["pool"]["ready"] == 1 else [],
                           "the pool to fill")
        first = call(http, "pooled-a", HOSTNAME)
        # Docker names a container's host after its id: the thread runs in the pooled container.
        assert logs(first) == f"{warm.id[:12]}\n"
        wait_for(lambda: http.get("/healthz").json()["pool"] == {"ready": 1, "size": 1}, "the pool to refill")
        (refill,) = [c for c in pooled(server) if c.id != warm.id]

        second = call(http, "pooled-b", HOSTNAME)
        assert logs(second) == f"{refill.id[:12]}\n"  # never the first thread's sandbox again
        assert call(http, "pooled-a", "print('still mine')")["container_id"] == first["container_id"]


def test_idle_expiry_keeps_files_and_the_next_call_restores_them(start_server: ServerFactory) -> None:
    server = start_server(env={"CODEINTERP_THREAD_EXPIRY_MINUTES": "0.05", "CODEINTERP_EXPIRY_INTERVAL": "0.5"})
    with httpx.Client(base_url=server.url, timeout=60) as http:
        made = call(http, "idle", "x = 1\nimport os\nos.makedirs('/mnt/data/sub', exist_ok=True)\n"
                                  "open('/mnt/data/a.csv', 'w').write('a,b\\n1,2\\n')\n"
                                  "open('/mnt/data/sub/b.txt', 'w').write('nested')")
        container_id = made["container_id"]
        wait_for(lambda: http.get("/v1/threads/idle/code_interpreter").json()["container"]["status"] == "expired",
                 "the idle thread to expire")
        assert labelled_containers(f"codeinterp.container={container_id}", *server.labels) == []

        kept = http.get(f"/v1/containers/{container_id}/files").json()["data"]
        by_path = {f["path"]: f for f in kept}
        assert set(by_path) == {"/mnt/data/a.csv", "/mnt/data/sub/b.txt"}
        content = http.get(f"/v1/containers/{container_id}/files/{by_path['/mnt/data/a.csv']['id']}/content")
        assert content.content == b"a,b\n1,2\n"

        resumed = call(http, "idle", "print('x' in globals(), open('/mnt/data/a.csv').read().split()[1],"
                                     " open('/mnt/data/sub/b.txt').read())")
        assert (resumed["container_id"], resumed["session_restored"]) == (container_id, True)
        first_line, rest = logs(resumed).split("\n", 1)
        assert "variables were reset" in first_line
        assert rest == "False 1,2 nested\n"
        assert call(http, "idle", "print(2)")["session_restored"] is False


def test_at_capacity_an_idle_sandbox_is_evicted_with_its_files_kept(start_server: ServerFactory) -> None:
    server = start_server(env={"CODEINTERP_MAX_SANDBOXES": "1"})
    with httpx.Client(base_url=server.url, timeout=60) as http:
        old = http.post("/v1/containers", json={"name": "old"}).json()
        written = http.post(f"/v1/containers/{old['id']}/calls",
                            json={"input": "open('/mnt/data/r.txt', 'w').write('report')"}).json()
        assert written["status"] == "completed"

        new = http.post("/v1/containers", json={"name": "new"})
        assert new.status_code == 200, new.text
        assert http.get(f"/v1/containers/{old['id']}").json()["status"] == "expired"
        # Addressed by id, an expired container refuses calls as OpenAI's does, but keeps its files.
        refused = http.post(f"/v1/containers/{old['id']}/calls", json={"input": "print(1)"})
        assert_openai_error(refused, 409, param="container_id")
        (kept,) = http.get(f"/v1/containers/{old['id']}/files").json()["data"]
        assert kept["path"] == "/mnt/data/r.txt"
        assert http.get(f"/v1/containers/{old['id']}/files/{kept['id']}/content").content == b"report"


def test_when_every_sandbox_is_busy_a_new_one_gets_429_and_no_hang(start_server: ServerFactory) -> None:
    server = start_server(env={"CODEINTERP_MAX_SANDBOXES": "1", "CODEINTERP_CAPACITY_WAIT": "1"})
    with httpx.Client(base_url=server.url, timeout=60) as http:
        busy = call(http, "busy", "print(0)")["container_id"]
        done: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: done.update(call(http, "busy", "import time; time.sleep(8)")))
        worker.start()
        try:
            wait_for(lambda: running_call(http, busy), "the long call to hold the only sandbox")
            began = time.monotonic()
            refused = http.post("/v1/threads/other/code_interpreter/calls", json={"input": "print(1)"})
            waited = time.monotonic() - began
            assert_openai_error(refused, 429)
            assert int(refused.headers["Retry-After"]) > 0
            assert waited < 6, f"the 429 took {waited:.1f} s; capacity_wait is 1 s"
        finally:
            worker.join(30)
        assert done["status"] == "completed"
        assert call(http, "other", "print(1)")["status"] == "completed"  # the idle one is evicted now


def test_kill_9_and_restart_leaves_no_orphan_and_loses_no_file(start_server: ServerFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir=data_dir)
    with httpx.Client(base_url=first.url, timeout=60) as http:
        upload = http.post("/v1/files", files={"file": ("in.csv", b"n\n1\n")}, data={"purpose": "assistants"}).json()
        container = http.post("/v1/containers", json={"name": "c", "file_ids": [upload["id"]]}).json()
        made = http.post(f"/v1/containers/{container['id']}/calls",
                         json={"input": "open('/mnt/data/out.txt', 'w').write('made')"}).json()
        assert made["status"] == "completed"
        # Written after the last call ended: only the crash recovery can keep this one.
        thread = call(http, "crashy", "import threading, time\n"
                                      "threading.Timer(0.5, lambda: open('/mnt/data/late.txt', 'w')"
                                      ".write('late')).start()")
        wait_for(lambda: any(f["path"] == "/mnt/data/late.txt" and f["bytes"] == 4 for f in http.get(
            f"/v1/containers/{thread['container_id']}/files").json()["data"]), "the late file to be written")
    first.kill()
    assert labelled_containers(*first.labels), "the crash left the sandboxes behind, as a crash does"

    second = start_server(data_dir=data_dir)
    assert labelled_containers(*first.labels) == [], "the restart removed every orphan"
    with httpx.Client(base_url=second.url, timeout=60) as http:
        assert http.get(f"/v1/files/{upload['id']}/content").content == b"n\n1\n"
        files = {f["path"]: f for f in http.get(f"/v1/containers/{container['id']}/files").json()["data"]}
        assert set(files) == {"/mnt/data/in.csv", "/mnt/data/out.txt"}
        out = http.get(f"/v1/containers/{container['id']}/files/{files['/mnt/data/out.txt']['id']}/content")
        assert out.content == b"made"
        resumed = call(http, "crashy", "print(open('/mnt/data/late.txt').read())")
        assert resumed["container_id"] == thread["container_id"]
        assert logs(resumed).endswith("late\n")


def test_sigterm_lets_a_running_call_finish_and_keeps_files(start_server: ServerFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir=data_dir)
    done: dict[str, Any] = {}
    with httpx.Client(base_url=first.url, timeout=60) as http:
        graceful = call(http, "graceful", "print(0)")["container_id"]
        code = "import time\ntime.sleep(3)\nopen('/mnt/data/done.txt', 'w').write('finished')\nprint('ok')"
        worker = threading.Thread(target=lambda: done.update(call(http, "graceful", code)))
        worker.start()
        wait_for(lambda: running_call(http, graceful), "the call to be running")  # SIGTERM must find it
        assert first.proc is not None
        first.proc.send_signal(signal.SIGTERM)
        worker.join(30)
    assert done["status"] == "completed" and logs(done) == "ok\n"
    assert first.stop() in (0, -signal.SIGTERM)
    assert labelled_containers(*first.labels) == [], "shutdown removed the sandboxes"

    second = start_server(data_dir=data_dir)
    with httpx.Client(base_url=second.url, timeout=60) as http:
        resumed = call(http, "graceful", "print(open('/mnt/data/done.txt').read())")
        assert resumed["session_restored"] is True
        assert logs(resumed).endswith("finished\n")
