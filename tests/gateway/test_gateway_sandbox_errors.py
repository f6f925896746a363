"""A platform failure is told to the tenant in our words; Docker's own text stays in the server's log."""

from __future__ import annotations

import json

import docker
import httpx
import pytest
from gateway_support import ServerFactory, assert_openai_error

pytestmark = pytest.mark.docker

DOCKER_WORDS = ("docker", "containerd", "oci", "runtime", "no such container", "moby")


def assert_our_words(message: str, *secrets: str) -> None:
    lowered = message.lower()
    leaked = [w for w in (*DOCKER_WORDS, *(s.lower() for s in secrets)) if w in lowered]
    assert not leaked, f"{leaked} reached the tenant: {message!r}"


def log_lines(stderr: str, event: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


def test_a_refused_sandbox_start_is_503_in_our_words(start_server: ServerFactory) -> None:
    server = start_server(env={"CODEINTERP_RUNTIME": "no-such-runtime"})  # Docker refuses to start any sandbox
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for response in (http.post("/v1/containers", json={"name": "x"}),
                         http.post("/v1/threads/t/code_interpreter/calls", json={"input": "print(1)"})):
            error = assert_openai_error(response, 503)
            assert_our_words(error["message"], "no-such-runtime")
            request_id = response.headers["X-Request-Id"]
            assert request_id in error["message"]
            # The operator finds Docker's own words by the request id.
            (logged,) = [line for line in log_lines(server.stderr(), "sandbox failure")
                         if line["request_id"] == request_id]
            assert "no-such-runtime" in str(logged["detail"])


def test_a_sandbox_removed_behind_the_gateway_fails_the_call_in_our_words(start_server: ServerFactory) -> None:
    server = start_server()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        container_id = http.post("/v1/containers", json={"name": "gone"}).json()["id"]
        client = docker.from_env(timeout=30)
        try:
            (sandbox,) = client.containers.list(filters={"label": [f"codeinterp.container={container_id}",
                                                                   *server.labels]})
            docker_id = sandbox.id
            sandbox.remove(force=True)
        finally:
            client.close()

        response = http.post(f"/v1/containers/{container_id}/calls", json={"input": "print(1)"})
        assert response.status_code == 200, response.text
        call = response.json()
        assert (call["status"], call["error"]["code"]) == ("failed", "sandbox_error"), call
        assert_our_words(call["error"]["message"], docker_id[:12])
        (logged,) = [line for line in log_lines(server.stderr(), "call failed") if line["call_id"] == call["id"]]
        assert logged["container_id"] == container_id
        # For the operator: which Docker container, and what failed in the words of whoever saw it
        # (Docker's, or under runc the kernel channel's, whose socket closed as the container went).
        assert logged["docker_id"] == docker_id
        assert logged["error"] and logged["detail"]
        assert http.delete(f"/v1/containers/{container_id}").status_code == 200
