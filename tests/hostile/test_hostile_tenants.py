"""Tenants: key B can never read, list, call, annotate or delete key A's objects, on any /v1 route.

The table below must name every /v1 route of the live OpenAPI schema: a new route fails the
coverage test until it has a row here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.gateway.gateway_support import ServerFactory, ServerProcess
from tests.hostile.hostile_support import call, logs_of

pytestmark = [pytest.mark.docker, pytest.mark.hostile]
KEY_A, KEY_B = "tenant-A-key-000000", "tenant-B-key-111111"
THREAD = "shared-thread"

# (method, path template, JSON body or None, what B must get): "404", "empty" (a list with no data),
# "own" (B's own, separate object: a call that cannot see A's variables, annotations with no files), or
# "own-list" (B's own thread's calls: a list that names nothing of A's).
TABLE: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("GET", "/v1/files", None, "empty"),
    ("POST", "/v1/files", None, "own"),
    ("GET", "/v1/files/{file}", None, "404"),
    ("DELETE", "/v1/files/{file}", None, "404"),
    ("GET", "/v1/files/{file}/content", None, "404"),
    ("GET", "/v1/containers", None, "empty"),
    ("POST", "/v1/containers", {"name": "b", "file_ids": ["{file}"]}, "404"),
    ("GET", "/v1/containers/{box}", None, "404"),
    ("DELETE", "/v1/containers/{box}", None, "404"),
    ("GET", "/v1/containers/{box}/files", None, "404"),
    ("POST", "/v1/containers/{box}/files", {"file_id": "{file}"}, "404"),
    ("GET", "/v1/containers/{box}/files/{cfile}", None, "404"),
    ("DELETE", "/v1/containers/{box}/files/{cfile}", None, "404"),
    ("GET", "/v1/containers/{box}/files/{cfile}/content", None, "404"),
    ("GET", "/v1/containers/{box}/calls", None, "404"),
    ("POST", "/v1/containers/{box}/calls", {"input": "print(secret)"}, "404"),
    ("GET", "/v1/containers/{box}/calls/{call}", None, "404"),
    ("POST", "/v1/containers/{box}/calls/{call}/cancel", None, "404"),
    ("GET", "/v1/containers/{box}/notebook", None, "404"),
    ("POST", "/v1/threads/{thread}/code_interpreter/calls", {"input": "print('secret' in globals())"}, "own"),
    ("GET", "/v1/threads/{thread}/code_interpreter/calls", None, "own-list"),
    ("GET", "/v1/threads/{thread}/code_interpreter/calls/{call}", None, "404"),
    ("POST", "/v1/threads/{thread}/code_interpreter/calls/{call}/cancel", None, "404"),
    ("GET", "/v1/threads/{thread}/code_interpreter", None, "own"),
    ("GET", "/v1/threads/{thread}/code_interpreter/notebook", None, "own"),
    ("DELETE", "/v1/threads/{thread}/code_interpreter", None, "own"),
    ("POST", "/v1/threads/{thread}/code_interpreter/annotations",
     {"text": "[x](sandbox:/mnt/data/secret.csv)"}, "own"),
]


@pytest.fixture(scope="module")
def server(module_servers: ServerFactory) -> ServerProcess:
    return module_servers(env={"CODEINTERP_API_KEYS": f"{KEY_A},{KEY_B}"})


def _client(server: ServerProcess, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture(scope="module")
def clients(server: ServerProcess) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with _client(server, KEY_A) as a, _client(server, KEY_B) as b:
        yield a, b


@pytest.fixture(scope="module")
def a_ids(clients: tuple[httpx.Client, httpx.Client]) -> dict[str, str]:
    a, _ = clients
    file = a.post("/v1/files", files={"file": ("secret.csv", b"x,y\n", "text/csv")}, data={"purpose": "assistants"})
    box = a.post("/v1/containers", json={"name": "A", "file_ids": [file.json()["id"]]}).json()["id"]
    made = call(a, box, "secret = 'A'\nopen('/mnt/data/out.txt', 'w').write('A')")
    cfile = next(f["id"] for f in a.get(f"/v1/containers/{box}/files").json()["data"]
                 if f["path"] == "/mnt/data/out.txt")
    thread_call = a.post(f"/v1/threads/{THREAD}/code_interpreter/calls",
                         json={"input": "secret = 'A'\nopen('/mnt/data/secret.csv', 'w').write('A')"})
    assert thread_call.status_code == 200, thread_call.text
    return {"file": file.json()["id"], "box": box, "cfile": cfile, "call": str(made["id"]), "thread": THREAD,
            "thread_box": thread_call.json()["container_id"]}


def test_the_table_covers_every_v1_route(clients: tuple[httpx.Client, httpx.Client]) -> None:
    schema = clients[0].get("/openapi.json").json()
    routes = {(m.upper(), p) for p, ops in schema["paths"].items() if p.startswith("/v1/") for m in ops}
    named = {(m, p.replace("{file}", "{file_id}").replace("{box}", "{container_id}").replace("{cfile}", "{file_id}")
              .replace("{call}", "{call_id}").replace("{thread}", "{thread_id}")) for m, p, _, _ in TABLE}
    assert routes == named, {"missing": routes - named, "stale": named - routes}


@pytest.mark.parametrize(("method", "template", "body", "expect"), TABLE, ids=[f"{m} {p}" for m, p, _, _ in TABLE])
def test_key_b_never_reaches_key_a_s_objects(clients: tuple[httpx.Client, httpx.Client], a_ids: dict[str, str],
                                             method: str, template: str, body: dict[str, Any] | None,
                                             expect: str) -> None:
    a, b = clients
    path = template.format(**a_ids)
    payload = None if body is None else {k: ([x.format(**a_ids) for x in v] if isinstance(v, list) else
                                             v.format(**a_ids) if isinstance(v, str) else v) for k, v in body.items()}
    if expect in ("own", "own-list") and template.startswith("/v1/threads/") and method != "POST":
        # B has a thread of the same name, so that these must answer 200 with B's, never 404 or A's.
        made = b.post(f"/v1/threads/{THREAD}/code_interpreter/calls", json={"input": "pass"})
        assert made.status_code == 200 and made.json()["container_id"] != a_ids["thread_box"], made.text
    if template == "/v1/files" and method == "POST":
        response = b.post(path, files={"file": ("secret.csv", b"b\n", "text/csv")}, data={"purpose": "assistants"})
    else:
        response = b.request(method, path, json=payload)
    text = response.text
    if expect != "404":  # a 404 may echo the id it was asked for; anything else names none of A's
        assert "'A'" not in text and a_ids["thread_box"] not in text and a_ids["box"] not in text, text
    if expect == "404":
        assert response.status_code == 404, (response.status_code, text)
    elif expect == "own-list":
        calls = response.json()["data"] if response.status_code == 200 else None
        assert calls and all(c["container_id"] != a_ids["thread_box"] for c in calls), text
    elif expect == "empty":
        assert response.status_code == 200 and response.json()["data"] == [], text
    elif "calls" in template:
        assert response.status_code == 200 and logs_of(response.json()) == "False\n", text  # a separate sandbox
    elif "annotations" in template:
        assert response.status_code == 200 and response.json()["annotations"] == [], text
    elif template == "/v1/files":
        assert response.status_code == 200 and response.json()["id"] != a_ids["file"]
    else:  # B's own thread (made just above): its sandbox, notebook or deletion, never A's
        assert response.status_code == 200, text
    # A still has all of it, untouched.
    assert a.get(f"/v1/files/{a_ids['file']}").status_code == 200
    assert a.get(f"/v1/containers/{a_ids['box']}/files/{a_ids['cfile']}/content").content == b"A"
    assert logs_of(call(a, a_ids["box"], "print(secret)")) == "A\n"
    own = a.post(f"/v1/threads/{THREAD}/code_interpreter/calls", json={"input": "print(secret)"})
    assert logs_of(own.json()) == "A\n"
