"""The Responses API's shapes on calls (issue 13): items, stream events, citations, container auto,
cancel and background calls, against a live `codeinterp serve`, validated with the openai SDK's models."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import ServerFactory, ServerProcess, assert_openai_error, sse_events
from openai.types.beta.threads.runs import CodeInterpreterToolCall
from openai.types.responses import (
    ResponseCodeInterpreterCallCodeDeltaEvent,
    ResponseCodeInterpreterCallCodeDoneEvent,
    ResponseCodeInterpreterCallCompletedEvent,
    ResponseCodeInterpreterCallInProgressEvent,
    ResponseCodeInterpreterCallInterpretingEvent,
    ResponseCodeInterpreterToolCall,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
)
from openai.types.responses.response_output_text import AnnotationContainerFileCitation
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

pytestmark = pytest.mark.docker

PNG = b"\x89PNG\r\n\x1a\n"
EXTENSIONS = {"error", "container_id", "thread_id", "created_at", "completed_at", "files", "rich_outputs",
              "execution_count", "session_restored", "restored"}
EVENT_MODELS: dict[str, type[BaseModel]] = {
    "response.output_item.added": ResponseOutputItemAddedEvent,
    "response.code_interpreter_call.in_progress": ResponseCodeInterpreterCallInProgressEvent,
    "response.code_interpreter_call_code.delta": ResponseCodeInterpreterCallCodeDeltaEvent,
    "response.code_interpreter_call_code.done": ResponseCodeInterpreterCallCodeDoneEvent,
    "response.code_interpreter_call.interpreting": ResponseCodeInterpreterCallInterpretingEvent,
    "response.code_interpreter_call.completed": ResponseCodeInterpreterCallCompletedEvent,
    "response.output_item.done": ResponseOutputItemDoneEvent,
}
PLOT = ("import matplotlib.pyplot as plt\nprint('plotting')\nplt.plot([1, 3, 2])\nplt.show()\n"
        "open('/mnt/data/table.csv', 'w').write('a,b\\n1,2\\n')")
# Prints, then waits for /mnt/data/go before it goes on: the test decides when, not a clock.
WAIT_FOR_GO = ("import os, time\nprint('one', flush=True)\nwhile not os.path.exists('/mnt/data/go'):\n"
               "    time.sleep(0.05)\nprint('two')")
SLEEPER = ("import time\nprint('working', flush=True)\nopen('/mnt/data/partial.txt', 'w').write('p')\n"
           "time.sleep(600)\nprint('fin' + 'ished')")


@pytest.fixture
def thread(http: httpx.Client) -> Iterator[str]:
    thread_id = f"r-{uuid.uuid4().hex[:16]}"
    yield thread_id
    assert http.delete(f"/v1/threads/{thread_id}/code_interpreter").status_code in (200, 404)


def calls_path(thread_id: str) -> str:
    return f"/v1/threads/{thread_id}/code_interpreter/calls"


def post(http: httpx.Client, path: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = http.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()  # type: ignore[no-any-return]


def checked_item(item: dict[str, Any]) -> ResponseCodeInterpreterToolCall:
    model = ResponseCodeInterpreterToolCall.model_validate(item)
    assert model.id.startswith("ci_") and model.type == "code_interpreter_call"
    assert model.container_id.startswith("cntr_")
    assert set(item) >= EXTENSIONS, sorted(EXTENSIONS - set(item))
    return model


def logs_of(item: dict[str, Any]) -> str:
    return "".join(o["logs"] for o in item["outputs"] if o["type"] == "logs")


def wait_until(fetch: Callable[[], dict[str, Any]], ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll until ``ready``; the bound only keeps a broken server from hanging the suite."""
    deadline = time.monotonic() + 120
    while True:
        body = fetch()
        if ready(body):
            return body
        assert time.monotonic() < deadline, f"never ready: {body}"
        time.sleep(0.1)


# -- the item ------------------------------------------------------------------------


def test_a_call_in_the_responses_shape_validates_and_its_image_url_serves_the_png(
        http: httpx.Client, url: str, thread: str) -> None:
    item = post(http, calls_path(thread), {"input": PLOT, "format": "responses"})

    model = checked_item(item)
    assert model.status == "completed" and model.code == PLOT and item["thread_id"] == thread
    assert [o.type for o in model.outputs or []] == ["logs", "image"]
    assert logs_of(item).startswith("plotting\n")
    image = item["outputs"][1]
    assert image["url"] == f"{url}/v1/files/{image['file_id']}/content"
    served = http.get(image["url"])
    assert served.status_code == 200 and served.content.startswith(PNG)
    assert [f["path"] for f in item["files"]] == ["/mnt/data/table.csv"]
    assert item["error"] is None and item["session_restored"] is False

    # One call, two ids and two shapes: GET by either id, in either format.
    call_id = "call_" + item["id"].removeprefix("ci_")
    container = item["container_id"]
    as_run_step = http.get(f"/v1/containers/{container}/calls/{item['id']}").json()
    CodeInterpreterToolCall.model_validate(as_run_step)
    assert as_run_step["id"] == call_id
    assert as_run_step["code_interpreter"]["outputs"][1] == {"type": "image", "image": {"file_id": image["file_id"]}}
    again = http.get(f"/v1/containers/{container}/calls/{call_id}", params={"format": "responses"}).json()
    assert again == item
    assert http.get(f"{calls_path(thread)}/{item['id']}", params={"format": "responses"}).json() == item
    listed = http.get(f"/v1/containers/{container}/calls", params={"format": "responses"}).json()
    assert [c["id"] for c in listed["data"]] == [item["id"]] and listed["first_id"] == item["id"]
    for entry in listed["data"]:
        checked_item(entry)

    inline = http.get(f"/v1/containers/{container}/calls/{call_id}",
                      params={"format": "responses", "image_url": "data"}).json()
    prefix = "data:image/png;base64,"
    assert inline["outputs"][1]["url"].startswith(prefix)
    assert base64.b64decode(inline["outputs"][1]["url"][len(prefix):]) == served.content


def test_data_image_urls_on_the_call_itself(http: httpx.Client, thread: str) -> None:
    item = post(http, calls_path(thread), {"input": PLOT, "format": "responses", "image_url": "data"})
    checked_item(item)
    (image,) = [o for o in item["outputs"] if o["type"] == "image"]
    assert base64.b64decode(image["url"].split(",", 1)[1]).startswith(PNG)


def test_bad_format_and_image_url_are_400(http: httpx.Client, thread: str) -> None:
    for extra, param in (({"format": "chat"}, "format"), ({"image_url": "ftp"}, "image_url")):
        assert_openai_error(http.post(calls_path(thread), json={"input": "1", **extra}), 400, param=param)
    assert_openai_error(http.get("/v1/containers/cntr_x/calls", params={"format": "xml"}), 400, param="format")


# -- streaming -----------------------------------------------------------------------


def test_streamed_call_in_responses_events(http: httpx.Client, url: str, thread: str) -> None:
    code = "print('a', flush=True)\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()\nprint('b')"
    with http.stream("POST", calls_path(thread), json={"input": code, "stream": True,
                                                       "format": "responses"}) as response:
        assert response.status_code == 200
        events = list(sse_events(response))

    assert events[-1][:2] == (None, "[DONE]")
    payloads = [json.loads(data) for _, data, _ in events[:-1]]
    assert [name for name, _, _ in events[:-1]] == [p["type"] for p in payloads]
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    item_ids = {p["item_id"] for p in payloads}
    assert len(item_ids) == 1 and next(iter(item_ids)).startswith("ci_")
    assert {p["output_index"] for p in payloads} == {0}
    for payload in payloads:
        if payload["type"] in EVENT_MODELS:
            EVENT_MODELS[payload["type"]].model_validate(payload)

    standard = [p["type"] for p in payloads if p["type"] in EVENT_MODELS]
    assert standard == list(EVENT_MODELS), standard
    kinds = [p["type"] for p in payloads]
    interpreting, completed = (kinds.index("response.code_interpreter_call.interpreting"),
                               kinds.index("response.code_interpreter_call.completed"))
    live = payloads[interpreting + 1:completed]
    assert {p["type"] for p in live} == {"codeinterp.code_interpreter_call.logs.delta",
                                         "codeinterp.code_interpreter_call.image.added"}
    assert payloads[2]["delta"] == code and payloads[3]["code"] == code

    item = payloads[-1]["item"]
    checked_item(item)
    assert item["id"] == payloads[0]["item_id"] and item["status"] == "completed"
    logs = "".join(p["delta"] for p in live if p["type"].endswith("logs.delta"))
    assert logs == logs_of(item) == "a\nb\n"
    (image_event,) = [p for p in live if p["type"].endswith("image.added")]
    assert item["outputs"][image_event["content_index"]]["url"] == image_event["url"]
    assert image_event["url"].startswith(f"{url}/v1/files/")
    assert {p["content_index"] for p in live if p["type"].endswith("logs.delta")} == {0}


# -- citations -------------------------------------------------------------------------


def test_annotations_as_container_file_citations(http: httpx.Client, thread: str) -> None:
    call = post(http, calls_path(thread), {"input": "open('/mnt/data/units.csv', 'w').write('u\\n1\\n')"})
    (stored,) = call["files"]
    text = "See [units](sandbox:/mnt/data/units.csv) and [gone](sandbox:/mnt/data/missing.csv)."
    body = post(http, f"/v1/threads/{thread}/code_interpreter/annotations", {"text": text, "format": "responses"})

    (citation,) = body["annotations"]
    AnnotationContainerFileCitation.model_validate(citation)
    assert citation == {"type": "container_file_citation", "container_id": call["container_id"],
                        "file_id": stored["file_id"], "filename": "units.csv",
                        "start_index": text.index("sandbox:"), "end_index": text.index(")")}
    run_step = post(http, f"/v1/threads/{thread}/code_interpreter/annotations", {"text": text})
    assert [a["type"] for a in run_step["annotations"]] == ["file_path"]


# -- container: auto ---------------------------------------------------------------------


def test_container_auto_creates_then_reuses_the_threads_container(http: httpx.Client, thread: str) -> None:
    uploaded = http.post("/v1/files", files={"file": ("in.txt", b"hello")}, data={"purpose": "assistants"}).json()
    auto = {"type": "auto", "file_ids": [uploaded["id"]], "memory_limit": "4g"}
    first = post(http, calls_path(thread), {"input": "x = open('/mnt/data/in.txt').read()\nprint(x)",
                                            "container": auto})
    assert first["code_interpreter"]["outputs"] == [{"type": "logs", "logs": "hello\n"}]
    container = http.get(f"/v1/threads/{thread}/code_interpreter").json()["container"]
    assert (container["id"], container["memory_limit"]) == (first["container_id"], "4g")

    second = post(http, calls_path(thread), {"input": "print(x)", "container": {"type": "auto"}})
    assert second["container_id"] == first["container_id"]
    assert second["code_interpreter"]["outputs"] == [{"type": "logs", "logs": "hello\n"}]

    error = assert_openai_error(http.post(calls_path(thread), json={
        "input": "1", "container": {"type": "auto", "memory_limit": "1g"}}), 409, param="container.memory_limit")
    assert "4g" in error["message"]


def test_container_auto_refuses_memory_this_host_lacks(http: httpx.Client, thread: str) -> None:
    import os

    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    too_big = next((m for m in ("1g", "4g", "16g", "64g") if int(m[:-1]) << 30 > host), None)
    if too_big is None:
        pytest.skip("this host has 64 GiB of RAM or more")
    error = assert_openai_error(http.post(calls_path(thread), json={
        "input": "1", "container": {"type": "auto", "memory_limit": too_big}}), 400, param="memory_limit")
    assert too_big in error["message"] and "RAM" in error["message"]
    assert http.get(f"/v1/threads/{thread}/code_interpreter").status_code == 404, "no container was made"
    assert_openai_error(http.post("/v1/containers", json={"name": "big", "memory_limit": too_big}), 400,
                        param="memory_limit")
    assert_openai_error(http.post(calls_path(thread), json={
        "input": "1", "container": {"type": "auto", "memory_limit": "2g"}}), 400)


def test_container_by_id_on_the_thread_route(http: httpx.Client, thread: str) -> None:
    container = post(http, "/v1/containers", {"name": "explicit"})
    try:
        post(http, f"/v1/containers/{container['id']}/calls", {"input": "y = 7"})
        call = post(http, calls_path(thread), {"input": "print(y)", "container": container["id"]})
        assert call["container_id"] == container["id"] and call["thread_id"] == thread
        assert call["code_interpreter"]["outputs"] == [{"type": "logs", "logs": "7\n"}]
        assert http.get(f"/v1/threads/{thread}/code_interpreter").status_code == 404, "the thread made none"
        assert_openai_error(http.post(calls_path(thread), json={"input": "1", "container": "cntr_nope"}), 404)
        # The container route names its container in the path; a body field would be ambiguous.
        assert_openai_error(http.post(f"/v1/containers/{container['id']}/calls",
                                      json={"input": "1", "container": {"type": "auto"}}), 400)
    finally:
        http.delete(f"/v1/containers/{container['id']}")


# -- cancel ------------------------------------------------------------------------------


def test_cancel_a_background_call_keeps_logs_files_and_variables(http: httpx.Client) -> None:
    container = post(http, "/v1/containers", {"name": "cancel"})
    base = f"/v1/containers/{container['id']}/calls"
    try:
        post(http, base, {"input": "x = 41"})
        started = post(http, base, {"input": SLEEPER, "background": True, "format": "responses"})
        checked_item(started)
        assert started["status"] == "in_progress" and started["completed_at"] is None
        wait_until(lambda: http.get(f"{base}/{started['id']}", params={"format": "responses"}).json(),
                   lambda item: "working" in logs_of(item) and checked_item(item).status == "in_progress")

        cancelled = post(http, f"{base}/{started['id']}/cancel?format=responses", {})

        checked_item(cancelled)
        assert cancelled["status"] == "incomplete" and cancelled["error"]["code"] == "cancelled"
        assert "variables and files are kept" in cancelled["error"]["message"]
        assert logs_of(cancelled).startswith("working\n") and "finished" not in logs_of(cancelled)
        assert [f["path"] for f in cancelled["files"]] == ["/mnt/data/partial.txt"]
        after = post(http, base, {"input": "print(x + 1)"})
        assert after["code_interpreter"]["outputs"] == [{"type": "logs", "logs": "42\n"}]
        assert http.get(f"{base}/{started['id']}").json()["status"] == "incomplete"

        again = http.post(f"{base}/{started['id']}/cancel")
        assert_openai_error(again, 409, param="call_id")
        assert_openai_error(http.post(f"{base}/{after['id']}/cancel"), 409, param="call_id")
        assert_openai_error(http.post(f"{base}/call_{uuid.uuid4().hex[:24]}/cancel"), 404, param="call_id")
        assert_openai_error(http.post(f"/v1/containers/cntr_nope/calls/{after['id']}/cancel"), 404)
    finally:
        http.delete(f"/v1/containers/{container['id']}")


def test_cancel_on_the_thread_route_ends_a_waiting_request(http: httpx.Client, url: str, thread: str) -> None:
    post(http, calls_path(thread), {"input": "kept = 'yes'"})
    answers: list[httpx.Response] = []

    def run() -> None:
        with httpx.Client(base_url=url, timeout=120) as other:
            answers.append(other.post(calls_path(thread), json={"input": SLEEPER}))

    waiter = threading.Thread(target=run)
    waiter.start()
    try:
        running = wait_until(lambda: http.get(calls_path(thread)).json(),
                             lambda page: any(c["status"] == "in_progress" and "working" in str(c)
                                              for c in page["data"]))
        (call,) = [c for c in running["data"] if c["status"] == "in_progress"]
        CodeInterpreterToolCall.model_validate(call)
        cancelled = post(http, f"{calls_path(thread)}/{call['id']}/cancel", {})
    finally:
        waiter.join(60)
    assert cancelled["status"] == "incomplete" and cancelled["error"]["code"] == "cancelled"
    (answer,) = answers
    assert answer.status_code == 200 and answer.json() == cancelled, "the waiting request got the cancelled call"
    assert post(http, calls_path(thread), {"input": "print(kept)"})["code_interpreter"]["outputs"] == [
        {"type": "logs", "logs": "yes\n"}]
    assert_openai_error(http.post(f"/v1/threads/never-{thread}/code_interpreter/calls/{call['id']}/cancel"), 404)


# -- background ---------------------------------------------------------------------------


def test_background_call_shows_progress_then_its_result(http: httpx.Client, thread: str) -> None:
    started = post(http, calls_path(thread), {"input": WAIT_FOR_GO, "background": True})
    CodeInterpreterToolCall.model_validate(started)
    assert started["status"] == "in_progress" and started["code_interpreter"]["outputs"] == []
    one = f"{calls_path(thread)}/{started['id']}"

    partial = wait_until(lambda: http.get(one).json(), lambda c: c["code_interpreter"]["outputs"] != [])
    assert partial["status"] == "in_progress"
    assert partial["code_interpreter"]["outputs"] == [{"type": "logs", "logs": "one\n"}]
    listed = http.get(calls_path(thread)).json()["data"]
    assert listed[-1] == partial, "the list shows the running call's progress too"

    go = http.post(f"/v1/containers/{started['container_id']}/files", files={"file": ("go", b"")})
    assert go.status_code == 200, go.text
    done = wait_until(lambda: http.get(one).json(), lambda c: c["status"] != "in_progress")
    CodeInterpreterToolCall.model_validate(done)
    assert done["status"] == "completed" and done["completed_at"] is not None
    assert done["code_interpreter"]["outputs"] == [{"type": "logs", "logs": "one\ntwo\n"}]


# -- a restart never loses a background call -------------------------------------------------


def _start_background(server_url: str) -> tuple[str, str]:
    with httpx.Client(base_url=server_url, timeout=60) as http:
        started = post(http, calls_path("bg-restart"), {"input": SLEEPER, "background": True})
        one = f"/v1/containers/{started['container_id']}/calls/{started['id']}"
        wait_until(lambda: http.get(one).json(), lambda c: "working" in str(c["code_interpreter"]["outputs"]))
    return started["container_id"], started["id"]


def _stored_body(server: ServerProcess, call_id: str) -> dict[str, Any]:
    """The call's body as the server's own database holds it, SQLite or PostgreSQL."""
    url = server.env.get("CODEINTERP_DATABASE_URL")
    if url is None:
        with sqlite3.connect(server.data_dir / "codeinterp.db") as db:
            (body,) = db.execute("SELECT body FROM calls WHERE id = ?", (call_id,)).fetchone()
        return json.loads(body)  # type: ignore[no-any-return]

    async def fetch() -> Any:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as db:
                found = await db.execute(text("SELECT body FROM calls WHERE id = :id"), {"id": call_id})
                return found.scalar_one()
        finally:
            await engine.dispose()

    body = asyncio.run(fetch())  # PostgreSQL's JSON column comes back parsed
    return body if isinstance(body, dict) else json.loads(body)


@pytest.mark.parametrize("how", ["sigterm", "crash"])
def test_a_restart_marks_a_background_call_incomplete_with_its_logs(start_server: ServerFactory, tmp_path: Path,
                                                                    how: str) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir=data_dir, env={"CODEINTERP_SHUTDOWN_GRACE": "1"})
    container_id, call_id = _start_background(first.url)
    if how == "crash":
        # The partial body reaches the database while the call runs, so a crash keeps it too.
        wait_until(lambda: _stored_body(first, call_id),
                   lambda body: "working" in str(body["code_interpreter"]["outputs"]))
        first.kill()
    else:
        assert first.stop() in (0, -signal.SIGTERM)

    second = start_server(data_dir=data_dir)
    with httpx.Client(base_url=second.url, timeout=60) as http:
        call = http.get(f"/v1/containers/{container_id}/calls/{call_id}").json()
        CodeInterpreterToolCall.model_validate(call)
        assert call["status"] == "incomplete"
        assert call["error"]["code"] == "sandbox_error" and "restarted" in call["error"]["message"]
        logs = "".join(o["logs"] for o in call["code_interpreter"]["outputs"] if o["type"] == "logs")
        assert logs.startswith("working\n")
        assert_openai_error(http.post(f"/v1/containers/{container_id}/calls/{call_id}/cancel"), 409)


def test_a_streamed_background_call_runs_on_when_the_client_goes(http: httpx.Client, thread: str) -> None:
    item_id = None
    with http.stream("POST", calls_path(thread), json={"input": WAIT_FOR_GO, "stream": True, "background": True,
                                                       "format": "responses"}) as response:
        assert response.status_code == 200
        for _, data, _ in sse_events(response):
            event = json.loads(data)
            item_id = event["item_id"]
            if event["type"] == "codeinterp.code_interpreter_call.logs.delta":
                break  # hang up mid-call
    assert item_id is not None
    one = f"{calls_path(thread)}/{item_id}"
    container_id = http.get(one).json()["container_id"]
    go = http.post(f"/v1/containers/{container_id}/files", files={"file": ("go", b"")})
    assert go.status_code == 200, go.text
    done = wait_until(lambda: http.get(one, params={"format": "responses"}).json(),
                      lambda item: item["status"] != "in_progress")
    checked_item(done)
    assert done["status"] == "completed" and logs_of(done) == "one\ntwo\n"
