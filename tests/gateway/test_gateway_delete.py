"""Deleting a container while a call runs in it: the call ends `incomplete` with `container_deleted` and its
partial logs, the sandbox goes, its capacity slot comes back, and a deleted thread's sandbox never returns.

Each case runs a few times in a loop, so that a race between the delete and the call shows.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from gateway_support import ServerFactory, ServerProcess, labelled_containers, sse_events
from gateway_support import wait_for as support_wait_for

pytestmark = pytest.mark.docker

ROUNDS = 3
# Prints, then says so with a file (the test's signal that the print happened), then runs for long.
PRINTS_THEN_SLEEPS = ("print('started', flush=True)\n"
                      "open('/mnt/data/started', 'w').close()\n"
                      "import time\ntime.sleep(120)")
DELETED_CODE = "container_deleted"


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    return support_wait_for(predicate, what, timeout, interval=0.05)  # a delete races a call: look often


def sessions(http: httpx.Client) -> float:
    """The gateway's live sandboxes, as /metrics reports them."""
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("codeinterp_sessions "):
            return float(line.split()[1])
    pytest.fail("/metrics has no codeinterp_sessions")


def logs(body: dict[str, Any]) -> str:
    return "".join(o["logs"] for o in body["code_interpreter"]["outputs"] if o["type"] == "logs")


def leftover(server: ServerProcess, container_id: str) -> list[str]:
    return [c.name for c in labelled_containers(f"codeinterp.container={container_id}", *server.labels)]


class Background:
    """One request in a thread of its own; ``result()`` is its response."""

    def __init__(self, send: Callable[[], httpx.Response]) -> None:
        self._response: list[httpx.Response] = []
        self._error: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(send,))
        self._thread.start()

    def _run(self, send: Callable[[], httpx.Response]) -> None:
        try:
            self._response.append(send())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self._error.append(exc)

    def result(self, timeout: float = 120) -> httpx.Response:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the request did not end"
        if self._error:
            raise self._error[0]
        return self._response[0]


@pytest.fixture
def baseline(http: httpx.Client) -> Iterator[float]:
    """Live sandboxes before the test; after it the count must be back there."""
    before = sessions(http)
    yield before
    assert sessions(http) == before, "a deleted container still holds a capacity slot"


def thread_record(http: httpx.Client, thread: str) -> dict[str, Any] | None:
    response = http.get(f"/v1/threads/{thread}/code_interpreter")
    return response.json()["container"] if response.status_code == 200 else None  # type: ignore[no-any-return]


def started(http: httpx.Client, container_id: str) -> bool:
    files = http.get(f"/v1/containers/{container_id}/files").json()["data"]
    return any(f["path"] == "/mnt/data/started" for f in files)


def assert_deleted_mid_call(body: dict[str, Any]) -> None:
    assert body["status"] == "incomplete", body
    assert body["error"]["code"] == DELETED_CODE, body
    assert logs(body).startswith("started\n"), body  # the partial logs are kept
    assert body["files"] == []


@pytest.mark.parametrize("route", ["container", "thread"])
def test_delete_during_a_running_call(http: httpx.Client, server: ServerProcess, baseline: float,
                                      route: str) -> None:
    for _ in range(ROUNDS):
        if route == "container":
            container_id = http.post("/v1/containers", json={"name": "doomed"}).json()["id"]
            call = Background(lambda cid=container_id: http.post(f"/v1/containers/{cid}/calls",
                                                                 json={"input": PRINTS_THEN_SLEEPS}))
            delete = f"/v1/containers/{container_id}"
        else:
            thread = f"doomed-{uuid.uuid4().hex[:8]}"
            call = Background(lambda t=thread: http.post(f"/v1/threads/{t}/code_interpreter/calls",
                                                         json={"input": PRINTS_THEN_SLEEPS}))
            container_id = wait_for(lambda t=thread: thread_record(http, t), "the thread's sandbox")["id"]
            delete = f"/v1/threads/{thread}/code_interpreter"
        wait_for(lambda cid=container_id: started(http, cid), "the call to print")

        deleted = http.delete(delete)
        response = call.result()

        assert deleted.status_code == 200, deleted.text
        assert response.status_code == 200, response.text
        assert_deleted_mid_call(response.json())
        assert http.get(f"/v1/containers/{container_id}").status_code == 404
        assert leftover(server, container_id) == []


def test_delete_during_a_streamed_call_ends_the_stream_with_the_call(http: httpx.Client, server: ServerProcess,
                                                                      baseline: float) -> None:
    for _ in range(ROUNDS):
        container_id = http.post("/v1/containers", json={"name": "doomed"}).json()["id"]
        body = {"input": PRINTS_THEN_SLEEPS, "stream": True}
        with http.stream("POST", f"/v1/containers/{container_id}/calls", json=body) as response:
            events = sse_events(response)
            for name, data, _ in events:
                assert name == "code_interpreter.delta", (name, data)
                if "started" in data:
                    break
            deleter = Background(lambda cid=container_id: http.delete(f"/v1/containers/{cid}"))
            rest = [(name, data) for name, data, _ in events]
        assert deleter.result().status_code == 200
        assert rest[-1] == (None, "[DONE]")
        (completed,) = [data for name, data in rest if name == "code_interpreter.completed"]
        call = json.loads(completed)
        assert call["status"] == "incomplete" and call["error"]["code"] == DELETED_CODE, call
        assert leftover(server, container_id) == []


def test_delete_during_a_threads_first_call(http: httpx.Client, server: ServerProcess, baseline: float) -> None:
    """The delete lands while the first call is still making the thread's sandbox, or just after."""
    upload = http.post("/v1/files", files={"file": ("in.txt", b"x" * 100_000)}, data={"purpose": "assistants"})
    file_id = upload.json()["id"]
    for _ in range(ROUNDS + 1):
        thread = f"first-{uuid.uuid4().hex[:8]}"
        call = Background(lambda t=thread: http.post(f"/v1/threads/{t}/code_interpreter/calls",
                                                     json={"input": PRINTS_THEN_SLEEPS, "file_ids": [file_id]}))
        # As soon as the record exists: the sandbox may still be starting or getting its files.
        container_id = wait_for(lambda t=thread: thread_record(http, t), "the thread's record")["id"]
        deleted = http.delete(f"/v1/threads/{thread}/code_interpreter")
        response = call.result()

        assert deleted.status_code == 200, deleted.text
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["container_id"], body["status"]) == (container_id, "incomplete"), body
        assert body["error"]["code"] == DELETED_CODE, body
        # The logs depend on where the interrupt lands (before the code, in it, or in the kernel's own
        # pre-run hook); the running-call tests above check them.
        assert http.get(f"/v1/threads/{thread}/code_interpreter").status_code == 404
        assert leftover(server, container_id) == []


def test_a_deleted_thread_never_comes_back(start_server: ServerFactory) -> None:
    """A delete racing the call that restores an expired thread: either order is fine, a zombie is not."""
    server = start_server(env={"CODEINTERP_THREAD_EXPIRY_MINUTES": "0.01", "CODEINTERP_EXPIRY_INTERVAL": "0.2"})
    with httpx.Client(base_url=server.url, timeout=120) as http:
        for round_ in range(ROUNDS + 1):
            thread = f"zombie-{round_}"
            first = http.post(f"/v1/threads/{thread}/code_interpreter/calls", json={"input": "x = 1"}).json()
            old = first["container_id"]
            wait_for(lambda t=thread: (thread_record(http, t) or {}).get("status") == "expired",
                     "the thread to expire")
            assert sessions(http) == 0

            restore = Background(lambda t=thread: http.post(f"/v1/threads/{t}/code_interpreter/calls",
                                                            json={"input": "print(1)"}))
            time.sleep(0.05 * round_)  # vary where the delete lands in the restore; not a synchronisation
            deleted = http.delete(f"/v1/threads/{thread}/code_interpreter")
            response = restore.result()
            assert deleted.status_code == 200, deleted.text
            assert response.status_code == 200, response.text
            body = response.json()
            if body["container_id"] == old:  # restored first, then deleted under it
                assert body["status"] in ("completed", "incomplete"), body
                if body["status"] == "incomplete":
                    assert body["error"]["code"] == DELETED_CODE, body
            else:  # deleted first: the call made the thread a new sandbox
                assert body["status"] == "completed", body
                assert http.delete(f"/v1/threads/{thread}/code_interpreter").status_code == 200
            assert leftover(server, old) == []
            assert sessions(http) == 0, "a deleted thread's sandbox is still live"
        assert [c.name for c in labelled_containers(*server.labels)] == []
