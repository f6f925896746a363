"""Code-interpreter calls over HTTP (issue 4): a live `codeinterp serve` over real Docker sandboxes."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gateway_support import assert_openai_error, labelled_containers, sse_events
from openai.types.beta.threads.runs import CodeInterpreterToolCall, CodeInterpreterToolCallDelta

pytestmark = pytest.mark.docker

CALL_FIELDS = {"id", "type", "code_interpreter", "status", "error", "container_id", "thread_id", "created_at",
               "completed_at", "files"}
CONTAINER_FIELDS = {"id", "object", "created_at", "status", "expires_after", "last_active_at", "memory_limit",
                    "name"}
TIMED_OUT = re.compile(r"Execution timed out after (?P<seconds>[0-9.]+) s and was interrupted; "
                       r"variables are kept\.\n?\Z")


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture
def thread(http: httpx.Client) -> Iterator[str]:
    """A fresh thread id; its sandbox (if any) is ended when the test is over."""
    thread_id = f"t-{uuid.uuid4().hex[:16]}"
    yield thread_id
    response = http.delete(f"/v1/threads/{thread_id}/code_interpreter")
    assert response.status_code in (200, 404), response.text


def calls_path(thread_id: str) -> str:
    return f"/v1/threads/{thread_id}/code_interpreter/calls"


def checked_call(body: dict[str, Any], *, code: str | None = None, thread_id: str | None = None) -> dict[str, Any]:
    """Assert the call body is an Assistants tool call with codeinterp's added fields; return it."""
    CodeInterpreterToolCall.model_validate(body)
    assert set(body) >= CALL_FIELDS, sorted(CALL_FIELDS - set(body))
    assert body["id"].startswith("call_")
    assert body["type"] == "code_interpreter"
    assert body["status"] in ("completed", "incomplete", "failed")
    assert body["container_id"].startswith("cntr_")
    assert isinstance(body["created_at"], int)
    assert isinstance(body["completed_at"], int) and body["completed_at"] >= body["created_at"]
    assert isinstance(body["files"], list)
    if code is not None:
        assert body["code_interpreter"]["input"] == code
    if thread_id is not None:
        assert body["thread_id"] == thread_id
    return body


def run(http: httpx.Client, thread_id: str, code: str, **extra: Any) -> dict[str, Any]:
    response = http.post(calls_path(thread_id), json={"input": code, **extra})
    assert response.status_code == 200, response.text
    return checked_call(response.json(), code=code, thread_id=thread_id)


def logs_of(body: dict[str, Any]) -> str:
    return "".join(o["logs"] for o in body["code_interpreter"]["outputs"] if o["type"] == "logs")


def write_bytes_code(path: str, data: bytes) -> str:
    return f"with open({path!r}, 'wb') as f:\n    f.write({data!r})\n"


def random_csv(rows: int = 20) -> bytes:
    lines = ["id,value,label"] + [f"{i},{secrets.randbelow(10**6)},{secrets.token_hex(4)}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


# -- state, shape ------------------------------------------------------------------------


def test_state_persists_across_calls_on_one_thread(http: httpx.Client, thread: str) -> None:
    first = run(http, thread, "x = 5")
    second = run(http, thread, "print(x * 2)")

    assert first["status"] == "completed" and first["error"] is None
    assert first["code_interpreter"]["outputs"] == []
    assert second["status"] == "completed" and second["error"] is None
    assert second["code_interpreter"]["outputs"] == [{"type": "logs", "logs": "10\n"}]
    assert second["container_id"] == first["container_id"]
    assert second["id"] != first["id"]
    assert second["files"] == []


def test_cell_value_is_reported_in_logs(http: httpx.Client, thread: str) -> None:
    body = run(http, thread, "6 * 7")

    assert body["status"] == "completed"
    assert body["code_interpreter"]["outputs"] == [{"type": "logs", "logs": "42\n"}]


def test_pandas_analysis_of_an_uploaded_csv(http: httpx.Client, thread: str) -> None:
    rows = [("north", 12, 2.5), ("south", 7, 4.0), ("north", 30, 1.25), ("east", 5, 10.0), ("south", 1, 3.5)]
    csv = "region,units,price\n" + "".join(f"{r},{u},{p}\n" for r, u, p in rows)
    upload = http.post("/v1/files", files={"file": ("sales.csv", csv.encode(), "text/csv")},
                       data={"purpose": "assistants"})
    assert upload.status_code == 200, upload.text
    file_id = upload.json()["id"]
    code = ("import pandas as pd\n"
            "df = pd.read_csv('/mnt/data/sales.csv')\n"
            "print(len(df), int(df['units'].sum()))\n"
            "print(df.groupby('region')['units'].sum().sort_index().to_dict())\n"
            "print(round(float((df['units'] * df['price']).sum()), 2))\n")

    body = run(http, thread, code, file_ids=[file_id])

    by_region: dict[str, int] = {}
    for region, units, _ in rows:
        by_region[region] = by_region.get(region, 0) + units
    revenue = round(sum(u * p for _, u, p in rows), 2)
    assert body["status"] == "completed", body
    assert logs_of(body) == (f"{len(rows)} {sum(u for _, u, _ in rows)}\n"
                             f"{dict(sorted(by_region.items()))}\n"
                             f"{revenue}\n")
    # The placed input is listed among the container's files as the user's.
    listed = http.get(f"/v1/containers/{body['container_id']}/files")
    assert listed.status_code == 200, listed.text
    user_files = [f for f in listed.json()["data"] if f["source"] == "user"]
    assert [(f["path"], f["bytes"]) for f in user_files] == [("/mnt/data/sales.csv", len(csv.encode()))]


def test_matplotlib_chart_comes_back_as_a_png_file(http: httpx.Client, thread: str) -> None:
    code = ("import matplotlib.pyplot as plt\n"
            "plt.plot([1, 2, 3], [4, 1, 9])\n"
            "plt.title('chart')\n"
            "plt.show()\n")

    body = run(http, thread, code)

    assert body["status"] == "completed", body
    images = [o for o in body["code_interpreter"]["outputs"] if o["type"] == "image"]
    assert len(images) == 1, body["code_interpreter"]["outputs"]
    file_id = images[0]["image"]["file_id"]
    assert file_id.startswith("file-")
    content = http.get(f"/v1/files/{file_id}/content")
    assert content.status_code == 200
    assert content.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert content.headers["content-type"] == "image/png"
    meta = http.get(f"/v1/files/{file_id}").json()
    assert meta["purpose"] == "assistants_output"
    assert meta["bytes"] == len(content.content)


def test_written_csv_comes_back_and_a_rewrite_is_a_new_file(http: httpx.Client, thread: str) -> None:
    first_bytes, second_bytes = random_csv(10), random_csv(30)

    first = run(http, thread, write_bytes_code("/mnt/data/x.csv", first_bytes))
    assert first["status"] == "completed", first
    assert len(first["files"]) == 1
    entry = first["files"][0]
    assert entry == {"file_id": entry["file_id"], "path": "/mnt/data/x.csv", "text": "sandbox:/mnt/data/x.csv",
                     "bytes": len(first_bytes)}
    first_id = entry["file_id"]
    download = http.get(f"/v1/files/{first_id}/content")
    assert download.status_code == 200
    assert download.content == first_bytes
    meta = http.get(f"/v1/files/{first_id}").json()
    assert (meta["filename"], meta["purpose"], meta["bytes"]) == ("x.csv", "assistants_output", len(first_bytes))

    second = run(http, thread, write_bytes_code("/mnt/data/x.csv", second_bytes))
    assert second["status"] == "completed", second
    assert [(f["path"], f["bytes"]) for f in second["files"]] == [("/mnt/data/x.csv", len(second_bytes))]
    second_id = second["files"][0]["file_id"]
    assert second_id != first_id
    assert http.get(f"/v1/files/{second_id}/content").content == second_bytes
    # The earlier version stays downloadable under its own id.
    assert http.get(f"/v1/files/{first_id}/content").content == first_bytes

    text = "Here: sandbox:/mnt/data/x.csv"
    annotated = http.post(f"/v1/threads/{thread}/code_interpreter/annotations", json={"text": text})
    assert annotated.status_code == 200, annotated.text
    assert [a["file_path"]["file_id"] for a in annotated.json()["annotations"]] == [second_id]

    # A call that writes nothing reports no files.
    assert run(http, thread, "print('nothing')")["files"] == []


# -- errors and time limits ------------------------------------------------------------------


def test_exception_completes_with_the_traceback_in_logs(http: httpx.Client, thread: str) -> None:
    body = run(http, thread, "def f():\n    return 1 / 0\nf()")

    assert body["status"] == "completed"
    assert body["error"]["code"] == "execution_error"
    assert "ZeroDivisionError" in body["error"]["message"]
    logs = logs_of(body)
    assert "ZeroDivisionError" in logs
    assert "division by zero" in logs
    assert "return 1 / 0" in logs
    assert "\x1b" not in logs
    # The kernel is fine afterwards.
    assert logs_of(run(http, thread, "print('still here')")) == "still here\n"


def test_infinite_loop_times_out_and_the_thread_keeps_working(http: httpx.Client, thread: str) -> None:
    run(http, thread, "kept = 7")
    started = time.monotonic()
    response = http.post(calls_path(thread), json={"input": "while True:\n    pass", "timeout": 3})
    elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    body = checked_call(response.json(), thread_id=thread)
    assert elapsed < 3 + 15
    assert body["status"] == "incomplete"
    assert body["error"]["code"] == "timeout"
    notice = TIMED_OUT.search(logs_of(body))
    assert notice, logs_of(body)
    assert notice.group("seconds") == "3"  # the limit that was asked for, not the budget left
    after = run(http, thread, "print(kept)")
    assert after["status"] == "completed"
    assert logs_of(after) == "7\n"


# -- concurrency ----------------------------------------------------------------------------------

TIMED_SLEEP = "import time\n_start = time.time()\ntime.sleep(2)\nprint(repr(_start), repr(time.time()))"


def _interval(body: dict[str, Any]) -> tuple[float, float]:
    assert body["status"] == "completed", body
    start, end = (float(v) for v in logs_of(body).split())
    return start, end


def test_threads_run_in_parallel_and_one_thread_serialises(http: httpx.Client, url: str) -> None:
    threads = [f"t-{uuid.uuid4().hex[:16]}" for _ in range(2)]
    try:
        for thread_id in threads:  # warm up: both sandboxes exist before the timed calls
            run(http, thread_id, "pass")

        async def fire() -> list[dict[str, Any]]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                responses = await asyncio.gather(
                    client.post(calls_path(threads[0]), json={"input": TIMED_SLEEP}),
                    client.post(calls_path(threads[0]), json={"input": TIMED_SLEEP}),
                    client.post(calls_path(threads[1]), json={"input": TIMED_SLEEP}))
            for response in responses:
                assert response.status_code == 200, response.text
            return [r.json() for r in responses]

        a1, a2, b1 = asyncio.run(fire())
    finally:
        for thread_id in threads:
            http.delete(f"/v1/threads/{thread_id}/code_interpreter")

    (a1s, a1e), (a2s, a2e), (b1s, b1e) = _interval(a1), _interval(a2), _interval(b1)
    assert a1["container_id"] == a2["container_id"] != b1["container_id"]
    # One thread: the second call starts only after the first has ended (kernel clock).
    assert a1e <= a2s or a2e <= a1s, ((a1s, a1e), (a2s, a2e))
    # Two threads: thread B's call overlaps thread A's first call.
    a_first = min((a1s, a1e), (a2s, a2e))
    assert b1s < a_first[1] and a_first[0] < b1e, (a_first, (b1s, b1e))


def test_concurrent_first_calls_on_a_new_thread_make_one_container(http: httpx.Client, url: str,
                                                                    thread: str) -> None:
    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return list(await asyncio.gather(*(
                client.post(calls_path(thread), json={"input": f"print({i})"}) for i in range(3))))

    responses = asyncio.run(fire())

    bodies = [r.json() for r in responses]
    assert [r.status_code for r in responses] == [200, 200, 200], bodies
    assert sorted(logs_of(b) for b in bodies) == ["0\n", "1\n", "2\n"]
    container_ids = {b["container_id"] for b in bodies}
    assert len(container_ids) == 1, container_ids
    (container_id,) = container_ids
    assert len(labelled_containers(f"codeinterp.container={container_id}")) == 1
    info = http.get(f"/v1/threads/{thread}/code_interpreter").json()
    assert info["container"]["id"] == container_id


# -- streaming -----------------------------------------------------------------------------------


def test_streamed_call_sends_deltas_then_the_call_then_done(http: httpx.Client, thread: str) -> None:
    code = "print('a', flush=True); import time; time.sleep(2); print('b')"
    events: list[tuple[str | None, str, float]] = []
    with http.stream("POST", calls_path(thread), json={"input": code, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response))

    names = [name for name, _, _ in events]
    assert names[-2:] == ["code_interpreter.completed", None], names
    assert events[-1][1] == "[DONE]"
    assert set(names[:-2]) == {"code_interpreter.delta"}, names
    deltas = [(json.loads(data), at) for _, data, at in events[:-2]]
    for delta, _ in deltas:
        CodeInterpreterToolCallDelta.model_validate(delta)
        assert delta["index"] == 0 and delta["type"] == "code_interpreter"
    completed = checked_call(json.loads(events[-2][1]), code=code, thread_id=thread)
    completed_at = events[-2][2]

    first = deltas[0][0]
    assert first["id"] == completed["id"]
    assert first["code_interpreter"]["input"] == code
    logs_by_index: dict[int, str] = {}
    for delta, _ in deltas[1:]:
        for output in delta["code_interpreter"]["outputs"]:
            assert output["type"] == "logs"
            logs_by_index[output["index"]] = logs_by_index.get(output["index"], "") + output["logs"]
    assert logs_by_index == {0: "a\nb\n"}
    a_at = next(at for delta, at in deltas if "a" in "".join(
        o.get("logs", "") for o in (delta["code_interpreter"] or {}).get("outputs") or []))
    assert completed_at - a_at >= 1.0, "the first log line was not streamed before the run ended"
    assert completed["status"] == "completed"
    assert completed["code_interpreter"]["outputs"] == [{"type": "logs", "logs": "a\nb\n"}]


def test_client_disconnect_mid_stream_frees_the_thread(http: httpx.Client, thread: str) -> None:
    code = "import time\nfor i in range(60):\n    print(i, flush=True)\n    time.sleep(1)"
    call_id = None
    with http.stream("POST", calls_path(thread), json={"input": code, "stream": True}) as response:
        assert response.status_code == 200
        for name, data, _ in sse_events(response):
            assert name == "code_interpreter.delta"
            delta = json.loads(data)
            call_id = call_id or delta.get("id")
            if delta["code_interpreter"].get("outputs"):
                break  # the code is running: hang up now
    assert call_id is not None

    started = time.monotonic()
    free = run(http, thread, "print('free')")
    assert time.monotonic() - started < 20
    assert free["status"] == "completed"
    assert logs_of(free) == "free\n"

    history = http.get(f"/v1/containers/{free['container_id']}/calls")
    assert history.status_code == 200, history.text
    calls = history.json()["data"]
    assert [c["id"] for c in calls] == [call_id, free["id"]]
    assert calls[0]["status"] == "incomplete"
    assert calls[0]["error"] is not None
    assert logs_of(calls[0]).startswith("0\n")
    assert "59\n" not in logs_of(calls[0])


# -- annotations, history, lifecycle -----------------------------------------------------------


def test_annotations_map_sandbox_links_to_file_ids(http: httpx.Client, thread: str) -> None:
    report = b"name,score\nada,3\n"
    body = run(http, thread, write_bytes_code("/mnt/data/report.csv", report))
    (written,) = body["files"]
    assert written["path"] == "/mnt/data/report.csv"
    text = "Download it [here](sandbox:/mnt/data/report.csv) or sandbox:/mnt/data/unknown.csv"

    response = http.post(f"/v1/threads/{thread}/code_interpreter/annotations", json={"text": text})

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["text"] == text
    (annotation,) = result["annotations"]
    assert annotation["type"] == "file_path"
    assert annotation["text"] == "sandbox:/mnt/data/report.csv"
    assert text[annotation["start_index"]:annotation["end_index"]] == annotation["text"]
    assert annotation["file_path"] == {"file_id": written["file_id"]}
    assert http.get(f"/v1/files/{written['file_id']}/content").content == report


def test_annotations_for_a_thread_without_a_sandbox_are_empty(http: httpx.Client, thread: str) -> None:
    response = http.post(f"/v1/threads/{thread}/code_interpreter/annotations",
                         json={"text": "see sandbox:/mnt/data/report.csv"})

    assert response.status_code == 200, response.text
    assert response.json()["annotations"] == []


def test_call_history_is_listed_oldest_first(http: httpx.Client, thread: str) -> None:
    bodies = [run(http, thread, f"print({i})") for i in range(3)]
    container_id = bodies[0]["container_id"]

    listed = http.get(f"/v1/containers/{container_id}/calls")
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert page["object"] == "list"
    assert [c["id"] for c in page["data"]] == [b["id"] for b in bodies]
    assert page["data"] == bodies
    assert (page["first_id"], page["last_id"], page["has_more"]) == (bodies[0]["id"], bodies[-1]["id"], False)
    for call in page["data"]:
        checked_call(call, thread_id=thread)

    limited = http.get(f"/v1/containers/{container_id}/calls", params={"limit": 2}).json()
    assert [c["id"] for c in limited["data"]] == [b["id"] for b in bodies[:2]]
    assert limited["has_more"] is True
    rest = http.get(f"/v1/containers/{container_id}/calls",
                    params={"limit": 2, "after": limited["last_id"]}).json()
    assert [c["id"] for c in rest["data"]] == [bodies[2]["id"]]
    assert rest["has_more"] is False

    one = http.get(f"/v1/containers/{container_id}/calls/{bodies[1]['id']}")
    assert one.status_code == 200
    assert one.json() == bodies[1]
    assert_openai_error(http.get(f"/v1/containers/{container_id}/calls/call_doesnotexist"), 404)


def test_calls_on_a_container_made_with_the_containers_api(http: httpx.Client) -> None:
    upload = http.post("/v1/files", files={"file": ("nums.txt", b"1\n2\n3\n", "text/plain")},
                       data={"purpose": "assistants"})
    assert upload.status_code == 200, upload.text
    created = http.post("/v1/containers", json={"name": "calls", "file_ids": [upload.json()["id"]]})
    assert created.status_code == 200, created.text
    container_id = created.json()["id"]
    try:
        response = http.post(f"/v1/containers/{container_id}/calls",
                             json={"input": "print(sum(int(l) for l in open('/mnt/data/nums.txt')))"})
        assert response.status_code == 200, response.text
        body = checked_call(response.json())
        assert body["container_id"] == container_id
        assert body["thread_id"] is None
        assert logs_of(body) == "6\n"
        assert [c["id"] for c in http.get(f"/v1/containers/{container_id}/calls").json()["data"]] == [body["id"]]
    finally:
        assert http.delete(f"/v1/containers/{container_id}").status_code == 200
    gone = http.post(f"/v1/containers/{container_id}/calls", json={"input": "print(1)"})
    assert_openai_error(gone, 404)


def test_thread_sandbox_can_be_inspected_and_ended(http: httpx.Client, thread: str) -> None:
    body = run(http, thread, "print('hi')")
    container_id = body["container_id"]

    info = http.get(f"/v1/threads/{thread}/code_interpreter")
    assert info.status_code == 200, info.text
    assert set(info.json()) == {"thread_id", "container"}
    assert info.json()["thread_id"] == thread
    container = info.json()["container"]
    assert set(container) == CONTAINER_FIELDS
    assert container["id"] == container_id
    assert container["object"] == "container"
    assert container["status"] == "running"
    assert container["expires_after"]["anchor"] == "last_active_at"
    assert len(labelled_containers(f"codeinterp.container={container_id}")) == 1

    ended = http.delete(f"/v1/threads/{thread}/code_interpreter")
    assert ended.status_code == 200, ended.text
    assert ended.json()["deleted"] is True
    assert ended.json()["thread_id"] == thread
    assert labelled_containers(f"codeinterp.container={container_id}") == []
    assert_openai_error(http.get(f"/v1/threads/{thread}/code_interpreter"), 404, param="thread_id")
    assert_openai_error(http.delete(f"/v1/threads/{thread}/code_interpreter"), 404, param="thread_id")

    # The thread id is free again: the next call gets a fresh sandbox, without the old state.
    again = run(http, thread, "print('x' in globals())")
    assert again["container_id"] != container_id
    assert logs_of(again) == "False\n"


@pytest.mark.parametrize("thread_id", ["bad!id", "x" * 129, "bad.id"])
def test_invalid_thread_ids_are_rejected(http: httpx.Client, thread_id: str) -> None:
    base = f"/v1/threads/{thread_id}/code_interpreter"
    assert_openai_error(http.post(f"{base}/calls", json={"input": "print(1)"}), 400, param="thread_id")
    assert_openai_error(http.get(base), 400, param="thread_id")
    assert_openai_error(http.delete(base), 400, param="thread_id")
    assert_openai_error(http.post(f"{base}/annotations", json={"text": "x"}), 400, param="thread_id")


def test_longest_valid_thread_id_is_accepted(http: httpx.Client) -> None:
    assert_openai_error(http.get(f"/v1/threads/{'x' * 128}/code_interpreter"), 404, param="thread_id")


@pytest.mark.parametrize(("payload", "status"), [
    ({"input": ""}, 400),
    ({"input": "   \n\t"}, 400),
    ({}, 400),
    ({"input": "1", "bogus": 1}, 400),
    ({"input": "1", "timeout": 0}, 400),
    ({"input": 5}, 400),
    ({"input": "1", "file_ids": [f"file-{i}" for i in range(21)]}, 400),
    ({"input": "1", "file_ids": ["file-doesnotexist"]}, 404),
])
def test_bad_call_requests_are_rejected_without_a_sandbox(http: httpx.Client, thread: str,
                                                          payload: dict[str, Any], status: int) -> None:
    response = http.post(calls_path(thread), json=payload)

    assert_openai_error(response, status)
    # Nothing was started for a request that was refused.
    assert_openai_error(http.get(f"/v1/threads/{thread}/code_interpreter"), 404)
