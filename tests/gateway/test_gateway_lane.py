"""The thread-call lane (gateway/routes/lane.py) against FastAPI's own route for the same path.

The whole gateway runs in this process over sandbox.testing.FakeBackend and real SQLite, through
httpx's ASGI transport: no Docker. Each request is sent twice, to the app as it is and to the app with the
lane taken out; the answers must be the same, and the lane must have served the well-formed ones itself.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

import sandbox
from gateway.composition import Gateway
from gateway.routes.lane import ThreadCallLane
from gateway.settings import Settings
from sandbox.testing import FakeBackend

KEY = "sk-lane-test"
AUTH = {"authorization": f"Bearer {KEY}"}
CALLS = "/v1/threads/{}/code_interpreter/calls"


async def _printed(code: str) -> Sequence[sandbox.Output]:
    return [sandbox.Stream("stdout", f"ran {code}\n")]


@contextlib.asynccontextmanager
async def _gateway(tmp_path: Path, *, lane: bool) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path, api_keys=[KEY], pool_size=0, sse_keepalive=0)
    gateway = Gateway(settings, backend=FakeBackend(_printed, root=tmp_path / "hosts"))
    app = gateway.app()
    if not lane:
        app.router.routes[:] = [r for r in app.router.routes if not isinstance(r, ThreadCallLane)]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield http


def _lane(app: FastAPI) -> ThreadCallLane:
    (lane,) = [r for r in app.router.routes if isinstance(r, ThreadCallLane)]
    return lane


def _comparable(body: Any) -> Any:
    """An answer without what differs between two runs of the same call: ids and times."""
    if isinstance(body, dict):
        return {k: "<varies>" if k in {"id", "created_at", "completed_at", "container_id", "request id"}
                else _comparable(v) for k, v in body.items()}
    if isinstance(body, list):
        return [_comparable(v) for v in body]
    return body


# (thread id, headers beyond auth, body): each one, sent to both apps, must get the same answer.
REQUESTS: list[tuple[str, dict[str, str], bytes]] = [
    ("t1", {"content-type": "application/json"}, b'{"input": "print(1)"}'),
    ("t1", {"content-type": "application/json; charset=utf-8"}, b'{"input": "x = 2", "timeout": 5}'),
    ("t1", {"content-type": "application/json"}, b'{"input": "   "}'),
    ("t1", {"content-type": "application/json"}, b'{"input": 3}'),
    ("t1", {"content-type": "application/json"}, b'{"code": "print(1)"}'),
    ("t1", {"content-type": "application/json"}, b'{"input": "1", "timeout": -1}'),
    ("t1", {"content-type": "application/json"}, b'{"input": "1", "format": "xml"}'),
    ("t1", {"content-type": "application/json"}, b'{"input": "1", "container": "cntr_nope"}'),
    ("t1", {"content-type": "application/json"}, b'{"input": "1", "file_ids": ["file-nope"]}'),
    ("t1", {"content-type": "application/json"}, b'{"input": "1",}'),
    ("t1", {"content-type": "application/json"}, b"[1, 2]"),
    ("t1", {"content-type": "application/json"}, b""),
    ("t1", {"content-type": "application/json"}, b"\xff\xfe"),
    ("t1", {"content-type": "text/plain"}, b'{"input": "print(1)"}'),
    ("t1", {}, b'{"input": "print(1)"}'),
    ("t1", {"content-type": "application/json", "authorization": "Bearer wrong"}, b'{"input": "1"}'),
    ("t.1", {"content-type": "application/json"}, b'{"input": "print(1)"}'),
    ("t" * 129, {"content-type": "application/json"}, b'{"input": "print(1)"}'),
    ("t1%0A", {"content-type": "application/json"}, b'{"input": "print(1)"}'),
    ("t1", {"content-type": "application/json"}, b'{"input": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
    ("t2", {"content-type": "application/vnd.codeinterp+json"}, b'{"input": "print(3)"}'),
]


async def _answers(http: httpx.AsyncClient) -> list[tuple[int, Any]]:
    answers = []
    for thread, headers, body in REQUESTS:
        response = await http.post(CALLS.format(thread), content=body, headers={**AUTH, **headers})
        answers.append((response.status_code, _comparable(response.json())))
    return answers


async def test_the_lane_answers_every_request_as_fastapis_route_does(tmp_path: Path) -> None:
    async with _gateway(tmp_path / "with", lane=True) as http:
        with_lane = await _answers(http)
    async with _gateway(tmp_path / "without", lane=False) as http:
        without_lane = await _answers(http)

    for request, got, expected in zip(REQUESTS, with_lane, without_lane, strict=True):
        assert got == expected, request
    statuses = [status for status, _ in with_lane]
    assert statuses[:2] == [200, 200] and statuses[-1] == 200, statuses  # the cases are live
    assert all(s >= 400 for s in statuses[2:-1]), statuses
    assert with_lane[0][1]["code_interpreter"]["outputs"] == [{"type": "logs", "logs": "ran print(1)\n"}]
    # A body that is not an object (a list, nothing, text/plain, no content type) is told what to send.
    for index in (10, 11, 13, 14):
        assert with_lane[index][1]["error"]["message"].startswith("The request body must be a JSON object, sent "
                                                                  "with Content-Type: application/json")



async def test_the_lane_serves_well_formed_calls_and_declines_the_rest(tmp_path: Path) -> None:
    declined: list[bytes] = []
    async with _gateway(tmp_path, lane=True) as http:
        app = http._transport.app  # type: ignore[attr-defined]
        lane = _lane(app)
        router = lane.router

        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            declined.append(scope["path"].encode())
            await router(scope, receive, send)

        lane.router = counted
        ok = await http.post(CALLS.format("t1"), json={"input": "print(1)"}, headers=AUTH)
        again = await http.post(CALLS.format("t1"), json={"input": "print(2)", "stream": True}, headers=AUTH)
        bad = await http.post(CALLS.format("t1"), json={"input": 1}, headers=AUTH)

    assert ok.status_code == 200 and ok.json()["status"] == "completed"
    assert again.status_code == 200 and "code_interpreter.completed" in again.text
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"
    assert declined == [CALLS.format("t1").encode()]  # the bad one only


async def test_a_declined_call_keeps_its_body_for_fastapis_route(tmp_path: Path) -> None:
    # FastAPI takes any */*+json body as JSON; the lane takes application/json only, and declines this one.
    async with _gateway(tmp_path, lane=True) as http:
        response = await http.post(CALLS.format("t1"), content=json.dumps({"input": "print(7)"}),
                                   headers={**AUTH, "content-type": "application/vnd.codeinterp+json"})
    assert response.status_code == 200, response.text
    assert response.json()["code_interpreter"]["outputs"] == [{"type": "logs", "logs": "ran print(7)\n"}]


pytestmark = pytest.mark.timeout(60)


async def test_the_lanes_requests_are_counted_under_their_route(tmp_path: Path) -> None:
    # Starlette's router names no route in the scope, FastAPI's does: the lane must name itself, or
    # the hottest route's requests and latencies are filed under "unmatched".
    async with _gateway(tmp_path, lane=True) as http:
        assert (await http.post(CALLS.format("t1"), json={"input": "print(1)"}, headers=AUTH)).status_code == 200
        assert (await http.post(CALLS.format("t1"), json={"input": 1}, headers=AUTH)).status_code == 400
        text = (await http.get("/metrics")).text
    route = 'route="/v1/threads/{thread_id}/code_interpreter/calls"'
    assert f'codeinterp_requests_total{{method="POST",{route},status="200"}} 1.0' in text
    assert f'codeinterp_requests_total{{method="POST",{route},status="400"}} 1.0' in text
    assert f'codeinterp_request_seconds_count{{{route}}} 2.0' in text
    assert "unmatched" not in text
