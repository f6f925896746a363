"""API keys: each key is a tenant that can neither see nor touch another's files, containers or threads."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from gateway_support import ServerFactory, ServerProcess, assert_openai_error

pytestmark = pytest.mark.docker

KEY_A, KEY_B = "key-A-0123456789", "key-B-9876543210"


@pytest.fixture(scope="module")
def server(module_servers: ServerFactory) -> ServerProcess:
    return module_servers(env={"CODEINTERP_API_KEYS": f"{KEY_A},{KEY_B}"})


def _client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture(scope="module")
def tenant_a(url: str) -> Iterator[httpx.Client]:
    with _client(url, KEY_A) as client:
        yield client


@pytest.fixture(scope="module")
def tenant_b(url: str) -> Iterator[httpx.Client]:
    with _client(url, KEY_B) as client:
        yield client


@pytest.fixture(scope="module")
def a_objects(tenant_a: httpx.Client) -> Iterator[dict[str, Any]]:
    """Tenant A's file, container (with a file in it) and thread (after one call)."""
    uploaded = tenant_a.post("/v1/files", files={"file": ("secret.csv", b"a,b\n1,2\n", "text/csv")},
                             data={"purpose": "assistants"})
    assert uploaded.status_code == 200, uploaded.text
    file = uploaded.json()
    created = tenant_a.post("/v1/containers", json={"name": "A's box", "file_ids": [file["id"]]})
    assert created.status_code == 200, created.text
    container = created.json()
    cfiles = tenant_a.get(f"/v1/containers/{container['id']}/files").json()["data"]
    call = tenant_a.post("/v1/threads/shared-thread-name/code_interpreter/calls",
                         json={"input": "secret = 'A'\nprint(secret)"})
    assert call.status_code == 200, call.text
    assert call.json()["code_interpreter"]["outputs"] == [{"type": "logs", "logs": "A\n"}]
    yield {"file": file, "container": container, "cfile": cfiles[0], "call": call.json()}
    tenant_a.delete(f"/v1/containers/{container['id']}")
    tenant_a.delete("/v1/threads/shared-thread-name/code_interpreter")


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": f"Basic {KEY_A}"},
])
def test_missing_key_is_401(url: str, headers: dict[str, str]) -> None:
    response = httpx.get(f"{url}/v1/files", headers=headers)

    error = assert_openai_error(response, 401)
    assert error["type"] == "authentication_error"
    assert "API key" in error["message"]
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("key", ["wrong", KEY_A + "x", KEY_A[:-1], KEY_A.upper()])
def test_wrong_key_is_401(url: str, key: str) -> None:
    for method, path in [("GET", "/v1/files"), ("POST", "/v1/containers"),
                         ("POST", "/v1/threads/t/code_interpreter/calls")]:
        response = httpx.request(method, f"{url}{path}", headers={"Authorization": f"Bearer {key}"},
                                 json={"name": "x", "input": "print(1)"})
        error = assert_openai_error(response, 401)
        assert error["type"] == "authentication_error"
        assert error["message"] == "Incorrect API key provided."


def test_sdk_with_a_wrong_key_gets_an_authentication_error(url: str) -> None:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0) as client, \
            pytest.raises(openai.AuthenticationError) as raised:
        client.files.list()
    assert raised.value.status_code == 401


def test_health_and_metrics_need_no_key(url: str) -> None:
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert httpx.get(f"{url}/metrics").status_code == 200


def test_owner_sees_its_own_objects(tenant_a: httpx.Client, a_objects: dict[str, Any]) -> None:
    file_id, container_id = a_objects["file"]["id"], a_objects["container"]["id"]
    assert tenant_a.get(f"/v1/files/{file_id}").status_code == 200
    assert tenant_a.get(f"/v1/files/{file_id}/content").content == b"a,b\n1,2\n"
    assert [f["id"] for f in tenant_a.get("/v1/files").json()["data"]] == [file_id]
    assert [c["id"] for c in tenant_a.get("/v1/containers").json()["data"]] == [container_id]
    assert tenant_a.get("/v1/threads/shared-thread-name/code_interpreter").status_code == 200


def test_other_tenant_gets_404_for_every_object(tenant_b: httpx.Client, a_objects: dict[str, Any]) -> None:
    file_id, container_id = a_objects["file"]["id"], a_objects["container"]["id"]
    cfile_id, call = a_objects["cfile"]["id"], a_objects["call"]
    for method, path in [
        ("GET", f"/v1/files/{file_id}"),
        ("GET", f"/v1/files/{file_id}/content"),
        ("DELETE", f"/v1/files/{file_id}"),
        ("GET", f"/v1/containers/{container_id}"),
        ("GET", f"/v1/containers/{container_id}/files"),
        ("GET", f"/v1/containers/{container_id}/files/{cfile_id}"),
        ("GET", f"/v1/containers/{container_id}/files/{cfile_id}/content"),
        ("DELETE", f"/v1/containers/{container_id}/files/{cfile_id}"),
        ("DELETE", f"/v1/containers/{container_id}"),
        ("GET", f"/v1/containers/{call['container_id']}"),
        ("GET", f"/v1/containers/{call['container_id']}/calls"),
        ("GET", f"/v1/containers/{call['container_id']}/calls/{call['id']}"),
        ("GET", "/v1/threads/shared-thread-name/code_interpreter"),
        ("DELETE", "/v1/threads/shared-thread-name/code_interpreter"),
    ]:
        error = assert_openai_error(tenant_b.request(method, path), 404)
        assert error["type"] == "invalid_request_error", (method, path)
    assert_openai_error(tenant_b.post(f"/v1/containers/{container_id}/calls", json={"input": "print(1)"}), 404)
    assert_openai_error(tenant_b.post(f"/v1/containers/{container_id}/files", json={"file_id": file_id}), 404)
    # B cannot use A's file in a container of its own either.
    assert_openai_error(tenant_b.post("/v1/containers", json={"name": "B", "file_ids": [file_id]}), 404)


def test_other_tenant_lists_are_empty(tenant_b: httpx.Client, a_objects: dict[str, Any]) -> None:
    for path in ("/v1/files", "/v1/containers"):
        page = tenant_b.get(path).json()
        assert page == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
    assert tenant_b.get("/v1/files", params={"after": a_objects["file"]["id"]}).json()["data"] == []


def test_same_thread_name_is_a_separate_sandbox_per_tenant(tenant_a: httpx.Client, tenant_b: httpx.Client,
                                                           a_objects: dict[str, Any]) -> None:
    annotated = tenant_b.post("/v1/threads/shared-thread-name/code_interpreter/annotations",
                              json={"text": "sandbox:/mnt/data/secret.csv"})
    assert annotated.status_code == 200
    assert annotated.json()["annotations"] == []
    try:
        response = tenant_b.post("/v1/threads/shared-thread-name/code_interpreter/calls",
                                 json={"input": "print('secret' in globals())"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["container_id"] != a_objects["call"]["container_id"]
        assert body["code_interpreter"]["outputs"] == [{"type": "logs", "logs": "False\n"}]
    finally:
        tenant_b.delete("/v1/threads/shared-thread-name/code_interpreter")
    # A's sandbox is untouched by B's call and B's delete.
    again = tenant_a.post("/v1/threads/shared-thread-name/code_interpreter/calls", json={"input": "print(secret)"})
    assert again.status_code == 200, again.text
    assert again.json()["container_id"] == a_objects["call"]["container_id"]
    assert again.json()["code_interpreter"]["outputs"] == [{"type": "logs", "logs": "A\n"}]


def test_other_tenant_cannot_see_or_cancel_a_running_call(tenant_a: httpx.Client, tenant_b: httpx.Client,
                                                          a_objects: dict[str, Any]) -> None:
    container_id = a_objects["container"]["id"]
    code = "import time\nprint('busy', flush=True)\ntime.sleep(600)"
    started = tenant_a.post(f"/v1/containers/{container_id}/calls", json={"input": code, "background": True})
    assert started.status_code == 200, started.text
    call_id = started.json()["id"]
    item_id = "ci_" + call_id.removeprefix("call_")
    try:
        for path in (f"/v1/containers/{container_id}/calls/{call_id}/cancel",
                     f"/v1/containers/{container_id}/calls/{item_id}/cancel",
                     f"/v1/threads/shared-thread-name/code_interpreter/calls/{call_id}/cancel"):
            assert_openai_error(tenant_b.post(path), 404)
        assert_openai_error(tenant_b.get(f"/v1/containers/{container_id}/calls/{item_id}"), 404)
        assert_openai_error(tenant_b.get("/v1/threads/shared-thread-name/code_interpreter/calls"), 404)
        assert tenant_a.get(f"/v1/containers/{container_id}/calls/{call_id}").json()["status"] == "in_progress"
    finally:
        cancelled = tenant_a.post(f"/v1/containers/{container_id}/calls/{call_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["error"]["code"] == "cancelled"
