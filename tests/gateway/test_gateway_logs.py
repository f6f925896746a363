"""The server's log: one JSON line per request, and a call answered by its request ends on that line."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from gateway_support import ServerFactory, ServerProcess

pytestmark = pytest.mark.docker


def _lines(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def _settled(server: ServerProcess, call_id: str, event: str) -> list[dict[str, object]]:
    """The lines of ``event`` that name ``call_id``, once the server has written its request lines."""
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in _lines(server.stderr())
                 if line.get("call_id") == call_id and line.get("event") == event]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_a_call_its_request_answers_ends_on_the_request_line_with_no_line_of_its_own(
        start_server: ServerFactory) -> None:
    server = start_server()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        # The run engine's route (served by the lane) and the container route (served by FastAPI).
        thread_call = http.post("/v1/threads/logged/code_interpreter/calls", json={"input": "print(1)"}).json()
        container_id = http.post("/v1/containers", json={"name": "logged"}).json()["id"]
        container_call = http.post(f"/v1/containers/{container_id}/calls",
                                   json={"input": "_ = open('/mnt/data/a.txt', 'w').write('a')"}).json()
    for call, route, files in ((thread_call, "/v1/threads/{thread_id}/code_interpreter/calls", 0),
                               (container_call, "/v1/containers/{container_id}/calls", 1)):
        (line,) = _settled(server, call["id"], "request")
        assert (line["route"], line["status"], line["call_status"]) == (route, 200, "completed"), line
        assert (line["container_id"], line["files"], line["outputs"]) == (call["container_id"], files, 1 - files), line
        assert isinstance(line["call_duration_ms"], int) and isinstance(line["duration_ms"], float), line
        assert not [x for x in _lines(server.stderr()) if x.get("event") == "call finished"
                    and x.get("call_id") == call["id"]], "a second line for a call its request answered"


def test_a_background_call_outlives_its_request_and_logs_its_own_end(start_server: ServerFactory) -> None:
    server = start_server()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        started = http.post("/v1/threads/bg/code_interpreter/calls",
                            json={"input": "import time; time.sleep(0.5); print(2)", "background": True}).json()
        assert started["status"] == "in_progress", started
        deadline = time.monotonic() + 30
        while http.get(f"/v1/threads/bg/code_interpreter/calls/{started['id']}").json()["status"] == "in_progress":
            assert time.monotonic() < deadline, "the background call never ended"
            time.sleep(0.1)
    (own,) = _settled(server, started["id"], "call finished")
    assert (own["status"], own["outputs"], own["files"]) == ("completed", 1, 0), own
    requests = [line for line in _lines(server.stderr()) if line.get("event") == "request"
                and line.get("route") == "/v1/threads/{thread_id}/code_interpreter/calls"]
    assert requests and not [line for line in requests if "call_id" in line], \
        "the request line of a background call claims an end it returned before"
