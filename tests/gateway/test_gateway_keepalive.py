"""A streamed call that prints nothing for a while still sends bytes: SSE comment lines, which clients ignore."""

from __future__ import annotations

import json

import httpx
import pytest
from gateway_support import ServerFactory

from gateway.client import Client

pytestmark = pytest.mark.docker

QUIET = "import time\ntime.sleep(3)\nprint('done')"


def test_a_quiet_streamed_call_gets_keepalive_comments_that_the_client_ignores(start_server: ServerFactory) -> None:
    server = start_server(env={"CODEINTERP_SSE_KEEPALIVE": "0.5"})
    with httpx.Client(base_url=server.url, timeout=60) as http:
        container_id = http.post("/v1/containers", json={"name": "quiet"}).json()["id"]
        lines = []
        with http.stream("POST", f"/v1/containers/{container_id}/calls",
                         json={"input": QUIET, "stream": True}) as response:
            assert response.status_code == 200
            lines = list(response.iter_lines())
        completed_at = lines.index("event: code_interpreter.completed")
        comments = [line for line in lines[:completed_at] if line.startswith(":")]
        assert comments, lines  # the 3 s of silence had keep-alives in it
        assert all(line == ": keep-alive" for line in comments), comments
        call = json.loads(lines[completed_at + 1].removeprefix("data: "))
        assert call["status"] == "completed"

        with Client(server.url) as api:
            events = list(api.stream_call(container_id, QUIET))
        *deltas, last = events
        assert last["status"] == "completed" and last["code_interpreter"]["outputs"] == [
            {"type": "logs", "logs": "done\n"}]
        assert deltas and all(d["type"] == "code_interpreter" and "status" not in d for d in deltas), deltas

        # The Responses shape of the same stream is kept alive the same way.
        with http.stream("POST", f"/v1/containers/{container_id}/calls",
                         json={"input": QUIET, "stream": True, "format": "responses"}) as response:
            items = list(response.iter_lines())
        done_at = items.index("event: response.output_item.done")
        assert ": keep-alive" in items[:done_at], items
        assert json.loads(items[done_at + 1].removeprefix("data: "))["item"]["status"] == "completed"
        assert http.delete(f"/v1/containers/{container_id}").status_code == 200


def test_no_keepalive_when_turned_off(start_server: ServerFactory) -> None:
    server = start_server(env={"CODEINTERP_SSE_KEEPALIVE": "0"})
    with httpx.Client(base_url=server.url, timeout=60) as http:
        container_id = http.post("/v1/containers", json={"name": "quiet"}).json()["id"]
        with http.stream("POST", f"/v1/containers/{container_id}/calls",
                         json={"input": "import time\ntime.sleep(1.5)", "stream": True}) as response:
            lines = list(response.iter_lines())
        assert not [line for line in lines if line.startswith(":")], lines
        assert "data: [DONE]" in lines, lines
        assert http.delete(f"/v1/containers/{container_id}").status_code == 200
