"""What survives a restart of `codeinterp serve` on the same data dir: files, call history, and nothing else."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from gateway_support import ServerFactory, labelled_containers, sse_events

pytestmark = pytest.mark.docker


def clean_stop(server_stop_code: int | None) -> bool:
    return server_stop_code in (0, -signal.SIGTERM)


def test_uploaded_files_survive_a_restart(start_server: ServerFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir=data_dir)
    payloads = {f"blob-{i}.bin": os.urandom(1000 + 517 * i) for i in range(3)}
    with httpx.Client(base_url=first.url, timeout=60) as http:
        uploaded = {}
        for name, data in payloads.items():
            response = http.post("/v1/files", files={"file": (name, data)}, data={"purpose": "assistants"})
            assert response.status_code == 200, response.text
            uploaded[response.json()["id"]] = response.json()
    assert clean_stop(first.stop())

    second = start_server(data_dir=data_dir)
    with httpx.Client(base_url=second.url, timeout=60) as http:
        listed = http.get("/v1/files", params={"order": "asc"}).json()
        assert [f["id"] for f in listed["data"]] == list(uploaded)
        assert {f["id"]: f for f in listed["data"]} == uploaded
        for file_id, meta in uploaded.items():
            assert http.get(f"/v1/files/{file_id}").json() == meta
            content = http.get(f"/v1/files/{file_id}/content")
            assert content.status_code == 200
            assert content.content == payloads[meta["filename"]]
        # The store takes new files after the restart, next to the old ones.
        added = http.post("/v1/files", files={"file": ("new.txt", b"new")}, data={"purpose": "assistants"})
        assert added.status_code == 200
        assert len(http.get("/v1/files").json()["data"]) == 4


def test_call_history_survives_a_restart(start_server: ServerFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir=data_dir)
    with httpx.Client(base_url=first.url, timeout=60) as http:
        calls = []
        for code in ("x = 1", "open('/mnt/data/out.txt', 'w').write('kept\\n')", "print(x + 1)"):
            response = http.post("/v1/threads/keep/code_interpreter/calls", json={"input": code})
            assert response.status_code == 200, response.text
            calls.append(response.json())
        container_id = calls[0]["container_id"]
        (written,) = calls[1]["files"]
        assert labelled_containers(f"codeinterp.container={container_id}", *first.labels)
    assert clean_stop(first.stop())
    assert labelled_containers(*first.labels) == [], "a clean stop removes the server's sandboxes"

    second = start_server(data_dir=data_dir)
    with httpx.Client(base_url=second.url, timeout=60) as http:
        listed = http.get(f"/v1/containers/{container_id}/calls")
        assert listed.status_code == 200, listed.text
        assert listed.json()["data"] == calls
        for call in calls:
            one = http.get(f"/v1/containers/{container_id}/calls/{call['id']}")
            assert one.status_code == 200
            assert one.json() == call
        assert http.get(f"/v1/files/{written['file_id']}/content").content == b"kept\n"

        # The sandbox did not survive, but its files did: the thread's next call restores them in a
        # new sandbox under the same container id, and says that variables were reset.
        thread = http.get("/v1/threads/keep/code_interpreter").json()
        assert thread["container"]["id"] == container_id
        assert thread["container"]["status"] == "expired"
        fresh = http.post("/v1/threads/keep/code_interpreter/calls",
                          json={"input": "print('x' in globals(), open('/mnt/data/out.txt').read())"})
        assert fresh.status_code == 200, fresh.text
        body = fresh.json()
        assert (body["status"], body["container_id"], body["session_restored"]) == ("completed", container_id, True)
        (logs,) = body["code_interpreter"]["outputs"]
        first_line, rest = logs["logs"].split("\n", 1)
        assert "variables were reset" in first_line and "/mnt/data" in first_line
        assert rest == "False kept\n\n"
        assert http.get("/v1/threads/keep/code_interpreter").json()["container"]["status"] == "running"


def test_a_thread_keeps_one_history_across_a_restart(start_server: ServerFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir=data_dir)
    with httpx.Client(base_url=first.url, timeout=60) as http:
        old = http.post("/v1/threads/moves-on/code_interpreter/calls", json={"input": "print('old')"}).json()
    assert clean_stop(first.stop())
    second = start_server(data_dir=data_dir)
    with httpx.Client(base_url=second.url, timeout=60) as http:
        new = http.post("/v1/threads/moves-on/code_interpreter/calls", json={"input": "print('new')"}).json()
        assert new["container_id"] == old["container_id"]
        assert old["session_restored"] is False and new["session_restored"] is True

        listed = http.get(f"/v1/containers/{old['container_id']}/calls")

        assert listed.status_code == 200, listed.text
        assert listed.json()["data"] == [old, new]


def test_a_crash_mid_call_is_recovered_on_the_next_start(start_server: ServerFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir=data_dir)
    code = "import time\nfor i in range(60):\n    print(i, flush=True)\n    time.sleep(1)"
    with httpx.Client(base_url=first.url, timeout=60) as http, http.stream(
            "POST", "/v1/threads/crash/code_interpreter/calls", json={"input": code, "stream": True}) as response:
        assert response.status_code == 200
        call_id = None
        for _, data, _ in sse_events(response):
            delta = json.loads(data)
            call_id = call_id or delta.get("id")
            if delta["code_interpreter"].get("outputs"):
                first.kill()
                break
    assert call_id is not None
    orphans = labelled_containers(*first.labels)
    assert len(orphans) == 1, "the killed server's sandbox is still there"

    second = start_server(data_dir=data_dir)

    assert labelled_containers(*first.labels) == [], "the next start removes sandboxes left by a crash"
    with httpx.Client(base_url=second.url, timeout=60) as http:
        thread = http.get("/v1/threads/crash/code_interpreter").json()
        container_id = thread["container"]["id"]
        assert thread["container"]["status"] != "running"
        (call,) = http.get(f"/v1/containers/{container_id}/calls").json()["data"]
        assert call["id"] == call_id
        assert call["status"] == "incomplete"
        assert call["error"]["code"] == "sandbox_error"
        assert "restart" in call["error"]["message"]


def test_a_crash_mid_call_that_is_not_streamed_is_recovered_too(start_server: ServerFactory, tmp_path: Path) -> None:
    # A call that is not streamed is written once when it ends, unless it runs longer than a moment:
    # then it is recorded in progress, so a crash still leaves its row.
    data_dir = tmp_path / "data"
    first = start_server(data_dir=data_dir)
    with httpx.Client(base_url=first.url, timeout=60) as http:
        quick = http.post("/v1/threads/quiet/code_interpreter/calls", json={"input": "print(0)"}).json()
        calls = f"/v1/containers/{quick['container_id']}/calls"
        assert [c["status"] for c in http.get(calls).json()["data"]] == ["completed"]
        caller = threading.Thread(target=lambda: _post_ignoring_the_crash(
            first.url, "/v1/threads/quiet/code_interpreter/calls", {"input": "import time; time.sleep(60)"}))
        caller.start()
        deadline = time.monotonic() + 30
        while len(listed := http.get(calls).json()["data"]) < 2:
            assert time.monotonic() < deadline, "the running call was never recorded"
            time.sleep(0.1)
        assert listed[1]["status"] == "in_progress"
        first.kill()
        caller.join(30)

    second = start_server(data_dir=data_dir)

    with httpx.Client(base_url=second.url, timeout=60) as http:
        recovered = http.get(calls).json()["data"]
        assert [c["status"] for c in recovered] == ["completed", "incomplete"]
        assert recovered[1]["id"] == listed[1]["id"]
        assert "restart" in recovered[1]["error"]["message"]


def _post_ignoring_the_crash(url: str, path: str, body: dict[str, str]) -> None:
    with contextlib.suppress(httpx.TransportError):
        httpx.post(url + path, json=body, timeout=90)
