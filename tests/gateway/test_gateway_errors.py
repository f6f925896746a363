"""Bad input gets a 4xx in OpenAI's error shape, never a 500; an unsafe `serve` refuses to start."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from gateway_support import CODEINTERP, REPO, ServerFactory, ServerProcess, assert_openai_error, free_port

pytestmark = pytest.mark.docker

MAX_UPLOAD = 1000


@pytest.fixture(scope="module")
def server(module_servers: ServerFactory) -> ServerProcess:
    """This module's server takes uploads of at most MAX_UPLOAD bytes."""
    return module_servers(env={"CODEINTERP_MAX_UPLOAD_BYTES": str(MAX_UPLOAD)})


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="not-checked", max_retries=0, timeout=60) as sdk:
        yield sdk


def server_errors(http: httpx.Client) -> float:
    """How many requests the server has answered with a 5xx, by its own metrics."""
    lines = http.get("/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith("codeinterp_requests_total{") and 'status="5' in line)


@pytest.fixture(autouse=True)
def no_500(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that talks to the module's server: none of its requests may have got a 5xx."""
    if "http" not in request.fixturenames and "client" not in request.fixturenames:
        yield
        return
    http: httpx.Client = request.getfixturevalue("http")
    before = server_errors(http)
    yield
    assert server_errors(http) == before, "a request of this test got a 5xx (see the server's stderr)"


def upload(http: httpx.Client, name: str = "ok.csv", data: bytes = b"a,b\n1,2\n",
           purpose: str | None = "assistants") -> httpx.Response:
    return http.post("/v1/files", files={"file": (name, data, "text/csv")},
                     data={} if purpose is None else {"purpose": purpose})


def multipart(parts: list[tuple[bytes, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A hand-made multipart body: (Content-Disposition value, content) per part; raw bytes, no escaping."""
    body = b""
    for disposition, content in parts:
        body += b"--BOUNDARY\r\nContent-Disposition: " + disposition + b"\r\n\r\n" + content + b"\r\n"
    return body + b"--BOUNDARY--\r\n", {"content-type": "multipart/form-data; boundary=BOUNDARY"}


# -- unknown ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/files/file-doesnotexist"),
    ("GET", "/v1/files/file-doesnotexist/content"),
    ("DELETE", "/v1/files/file-doesnotexist"),
    ("GET", "/v1/containers/cntr_doesnotexist"),
    ("DELETE", "/v1/containers/cntr_doesnotexist"),
    ("GET", "/v1/containers/cntr_doesnotexist/files"),
    ("GET", "/v1/containers/cntr_doesnotexist/calls"),
    ("GET", "/v1/threads/never-used/code_interpreter"),
    ("GET", "/v1/no-such-route"),
])
def test_unknown_ids_are_404(http: httpx.Client, method: str, path: str) -> None:
    error = assert_openai_error(http.request(method, path), 404)
    assert error["type"] == "invalid_request_error"


def test_unknown_file_id_message_names_it(http: httpx.Client, client: openai.OpenAI) -> None:
    error = assert_openai_error(http.get("/v1/files/file-doesnotexist"), 404, param="file_id")
    assert "file-doesnotexist" in error["message"]
    with pytest.raises(openai.NotFoundError) as raised:
        client.files.retrieve("file-doesnotexist")
    assert "file-doesnotexist" in raised.value.message


def test_container_with_an_unknown_file_id_is_404(http: httpx.Client) -> None:
    assert_openai_error(http.post("/v1/containers", json={"name": "x", "file_ids": ["file-doesnotexist"]}), 404)
    assert http.get("/v1/containers").json()["data"] == []


# -- uploads ------------------------------------------------------------------------------------


def test_upload_at_the_limit_is_accepted(http: httpx.Client) -> None:
    response = upload(http, data=b"x" * MAX_UPLOAD)

    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == MAX_UPLOAD


def test_oversized_upload_is_413(http: httpx.Client, client: openai.OpenAI) -> None:
    before = http.get("/v1/files").json()["data"]

    error = assert_openai_error(upload(http, data=os.urandom(5 * MAX_UPLOAD)), 413)

    assert str(MAX_UPLOAD) in error["message"]
    with pytest.raises(openai.APIStatusError) as raised:
        client.files.create(file=("big.bin", os.urandom(5 * MAX_UPLOAD)), purpose="assistants")
    assert raised.value.status_code == 413
    assert http.get("/v1/files").json()["data"] == before


def test_body_far_over_the_limit_is_refused_before_it_is_read(http: httpx.Client) -> None:
    assert_openai_error(upload(http, data=b"\0" * (2 << 20)), 413)
    assert_openai_error(http.post("/v1/containers", content=b"[" * (5 << 20),
                                  headers={"content-type": "application/json"}), 413)


@pytest.mark.parametrize("purpose", ["bogus", "", "ASSISTANTS"])
def test_bad_purpose_is_400(http: httpx.Client, purpose: str) -> None:
    assert_openai_error(upload(http, purpose=purpose), 400, param="purpose")


def test_missing_purpose_is_400(http: httpx.Client) -> None:
    assert_openai_error(upload(http, purpose=None), 400, param="purpose")


def test_missing_file_is_400(http: httpx.Client) -> None:
    assert_openai_error(http.post("/v1/files", data={"purpose": "assistants"}), 400, param="file")
    assert_openai_error(http.post("/v1/files", files={"document": ("x.csv", b"1")},
                                  data={"purpose": "assistants"}), 400, param="file")


def test_upload_that_is_not_multipart_is_400(http: httpx.Client) -> None:
    assert_openai_error(http.post("/v1/files", json={"purpose": "assistants", "file": "x"}), 400)


@pytest.mark.parametrize("name", ["../x.csv", "a/b.csv", "..\\x.csv", "..", "/etc/passwd"])
def test_file_names_with_paths_are_400(http: httpx.Client, name: str) -> None:
    assert_openai_error(upload(http, name=name), 400, param="file")


@pytest.mark.parametrize("name", [b"a\nb.csv", b"a\rb.csv", b"a\tb.csv", b"a\x00b.csv"])
def test_file_names_with_control_characters_are_400(http: httpx.Client, name: bytes) -> None:
    # httpx would percent-encode control characters in a filename, so the part is written by hand.
    body, headers = multipart([
        (b'form-data; name="purpose"', b"assistants"),
        (b'form-data; name="file"; filename="' + name + b'"', b"1,2\n"),
    ])
    before = http.get("/v1/files").json()["data"]

    response = http.post("/v1/files", content=body, headers=headers)

    assert 400 <= response.status_code < 500, response.text
    assert_openai_error(response, 400)
    assert http.get("/v1/files").json()["data"] == before


# -- JSON bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"name": "x",}', b"\xff\xfe"])
def test_malformed_json_is_400(http: httpx.Client, body: bytes) -> None:
    response = http.post("/v1/containers", content=body, headers={"content-type": "application/json"})

    error = assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"
    if body:
        assert error["message"] == "The request body is not valid JSON."
        assert error["param"] is None


@pytest.mark.parametrize(("body", "content_type", "empty"), [
    (b"[1, 2]", "application/json", False), (b'{"name": "x"}', "text/plain", False),
    (b"", "application/json", True)])
def test_a_body_that_is_not_a_json_object_is_told_what_to_send(http: httpx.Client, body: bytes,
                                                              content_type: str, empty: bool) -> None:
    response = http.post("/v1/containers", content=body, headers={"content-type": content_type})

    error = assert_openai_error(response, 400)
    expected = "The request body must be a JSON object, sent with Content-Type: application/json"
    assert error["message"] == expected + ("; it is empty." if empty else "."), error
    assert error["param"] is None


@pytest.mark.parametrize(("payload", "param"), [
    ({"name": "x", "memory_limit": "3g"}, "memory_limit"),
    ({"name": "x", "file_ids": [f"file-{i}" for i in range(21)]}, "file_ids"),
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x", "expires_after": {"anchor": "created_at", "minutes": 5}}, "expires_after.anchor"),
    ({"name": "x", "expires_after": {"anchor": "last_active_at", "minutes": 0}}, "expires_after.minutes"),
    ({"name": "x", "unknown": True}, "unknown"),
    ({"name": "x", "file_ids": "file-1"}, "file_ids"),
])
def test_bad_container_requests_are_400(http: httpx.Client, payload: dict[str, object], param: str) -> None:
    assert_openai_error(http.post("/v1/containers", json=payload), 400, param=param)
    assert http.get("/v1/containers").json()["data"] == []


def test_sdk_sees_bad_requests_as_bad_request_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.containers.create(name="x", memory_limit="3g")  # type: ignore[arg-type]
    assert raised.value.param == "memory_limit"
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.csv", b"1"), purpose="bogus")  # type: ignore[arg-type]


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 101}, {"limit": "many"}, {"order": "sideways"}])
def test_bad_list_parameters_are_400(http: httpx.Client, query: dict[str, object]) -> None:
    assert_openai_error(http.get("/v1/containers", params=query), 400)




# -- refusing to start ---------------------------------------------------------------------------------


def test_serve_on_a_public_address_without_keys_refuses(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEINTERP_")}

    result = subprocess.run(
        [str(CODEINTERP), "serve", "--host", "0.0.0.0", "--port", str(port), "--data-dir", str(data_dir)],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert "API keys" in result.stderr
    assert "CODEINTERP_API_KEYS" in result.stderr
    assert not data_dir.exists()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_serve_on_a_public_address_with_keys_is_allowed(start_server: ServerFactory) -> None:
    server = start_server(env={"CODEINTERP_API_KEYS": "k1"}, args=("--host", "0.0.0.0"))

    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert_openai_error(httpx.get(f"{server.url}/v1/files"), 401)
    response = httpx.get(f"{server.url}/v1/files", headers={"Authorization": "Bearer k1"})
    assert response.status_code == 200
    assert response.json()["data"] == []
