"""Hostile requests and output floods against a live server; the server's memory is measured throughout."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.gateway.gateway_support import ServerProcess, assert_openai_error
from tests.hostile.hostile_support import call, logs_of, new_container, rss_bytes
from tests.runtime_support import skip_under_gvisor

pytestmark = [pytest.mark.docker, pytest.mark.hostile]
RSS_GROWTH = 200 << 20  # what one flood may leave behind in the gateway, at most


def _multipart(name: bytes) -> tuple[bytes, dict[str, str]]:
    body = (b"--B\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + name +
            b"\"\r\nContent-Type: text/plain\r\n\r\nhi\r\n--B--\r\n")
    return body, {"content-type": "multipart/form-data; boundary=B"}


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "a/b", "a\\b", "a\x00b", "a\nb", "x" * 300,
                                  "a\uff0fb", "a\u2215b", "a\u2044b", "\uff0e\uff0e", "..", "\u202eexe.txt"])
def test_unsafe_upload_names_are_400(http: httpx.Client, name: str) -> None:
    body, headers = _multipart(name.encode())
    assert_openai_error(http.post("/v1/files", content=body, headers=headers), 400)
    box = new_container(http)
    body = body.split(b"--B\r\n", 2)[2]
    up = http.post(f"/v1/containers/{box}/files", content=b"--B\r\n" + body, headers=headers)
    assert_openai_error(up, 400)
    http.delete(f"/v1/containers/{box}")


def test_a_produced_name_with_quotes_and_newlines_cannot_inject_headers(http: httpx.Client) -> None:
    box = new_container(http)
    result = call(http, box, "open('/mnt/data/a\"b\\r\\nX-Injected: 1;.txt', 'w').write('x')")
    files = result["files"]
    assert len(files) == 1  # type: ignore[arg-type]
    cfile = http.get(f"/v1/containers/{box}/files").json()["data"][0]
    for url in (f"/v1/files/{files[0]['file_id']}/content",  # type: ignore[index]
                f"/v1/containers/{box}/files/{cfile['id']}/content"):
        response = http.get(url)
        assert response.status_code == 200 and response.content == b"x"
        assert "x-injected" not in response.headers
        disposition = response.headers["content-disposition"]
        assert "\r" not in disposition and "\n" not in disposition and disposition.count('"') == 2, disposition
    http.delete(f"/v1/containers/{box}")


def test_oversized_and_deeply_nested_bodies_are_4xx_and_memory_stays_bounded(
        http: httpx.Client, server: ServerProcess) -> None:
    box = new_container(http)
    before = rss_bytes(server)
    deep = b'{"input": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    deep_object = b'{"text": "x", "a": ' + b'{"a": ' * 10_000 + b"1" + b"}" * 10_001
    for path in ("/v1/containers", f"/v1/containers/{box}/calls", "/v1/threads/t/code_interpreter/calls",
                 "/v1/threads/t/code_interpreter/annotations", f"/v1/containers/{box}/files"):
        for body in (deep, deep_object):
            response = http.post(path, content=body, headers={"content-type": "application/json"})
            assert 400 <= response.status_code < 500, (path, response.status_code, response.text[:200])
    too_big = http.post("/v1/containers", content=b"{" + b" " * (8 << 20) + b"}",
                        headers={"content-type": "application/json"})
    assert_openai_error(too_big, 413)

    def chunks():
        for _ in range(64):
            yield b" " * (1 << 20)
    chunked = http.post("/v1/containers", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert rss_bytes(server) - before < RSS_GROWTH
    http.delete(f"/v1/containers/{box}")


@pytest.mark.parametrize(("code", "timeout", "statuses"), [
    ("print('x' * 10**8)", None, {"completed"}),
    ("print('x' * 10**9)", None, {"completed", "incomplete"}),  # a 1 GB string may not fit in 1 GiB
    ("while True: print('x' * 1000)", 5, {"incomplete"}),
    # 40 times the cap of 500 displays. IPython spends about 0.9 ms on each in the kernel on a slow 2-core
    # machine, so 100,000 (as this case had) measured the machine against the 60 s default deadline.
    pytest.param("from IPython.display import display\nfor i in range(20_000): display({'n': i}, raw=False)",
                 None, {"completed"}, marks=skip_under_gvisor(
                     "20,000 displays take longer than the call's deadline under the ptrace platform; "
                     "the display cap itself is tested by the collector's unit tests")),
    ("from IPython.display import display, Image\n"
     "display(Image(data=b'\\x89PNG\\r\\n\\x1a\\n' + b'\\0' * (200 << 20)))", None, {"completed", "incomplete"}),
], ids=["100MB", "1GB", "endless", "20k-displays", "200MB-png"])
def test_output_floods_are_truncated_and_gateway_memory_stays_bounded(
        http: httpx.Client, server: ServerProcess, code: str, timeout: float | None, statuses: set[str]) -> None:
    box = new_container(http, memory_limit="4g")
    before = rss_bytes(server)
    started = time.monotonic()
    result = call(http, box, code, **({"timeout": timeout} if timeout else {}))
    assert result["status"] in statuses, result["error"]
    if result["status"] == "incomplete":
        assert result["error"]["code"] in ("timeout", "out_of_memory"), result["error"]  # type: ignore[index]
    logs = logs_of(result)
    assert len(logs) <= (1 << 20) + 4096, len(logs)  # the stdout/stderr cap, plus notices
    outputs = result["code_interpreter"]["outputs"]  # type: ignore[index]
    assert sum(o["type"] == "image" for o in outputs) == 0  # the 200 MB PNG is over the 10 MiB cap
    if result["status"] == "completed":
        assert "[output truncated" in logs or "dropped" in logs, logs[-500:]
    assert len(str(result)) < 4 << 20
    assert time.monotonic() - started < 120
    assert rss_bytes(server) - before < RSS_GROWTH, (before, rss_bytes(server))
    assert call(http, box, "print(1)")["status"] == "completed"
    http.delete(f"/v1/containers/{box}")


def test_a_sparse_multi_gb_file_is_listed_not_read(http: httpx.Client, server: ServerProcess) -> None:
    box = new_container(http)
    before = rss_bytes(server)
    started = time.monotonic()
    result = call(http, box, "with open('/mnt/data/sparse.bin', 'wb') as f:\n    f.truncate(8 << 30)")
    assert time.monotonic() - started < 20
    assert result["status"] == "completed" and result["files"] == [], result  # over max_file_bytes: not stored
    listed = http.get(f"/v1/containers/{box}/files").json()["data"]
    assert [(f["path"], f["bytes"]) for f in listed] == [("/mnt/data/sparse.bin", 8 << 30)]
    assert rss_bytes(server) - before < RSS_GROWTH
    http.delete(f"/v1/containers/{box}")


def test_a_hundred_thousand_files_are_capped_in_the_report(http: httpx.Client, server: ServerProcess) -> None:
    box = new_container(http)
    before = rss_bytes(server)
    started = time.monotonic()
    result = call(http, box, "import os\nfor i in range(100_000):\n"
                             "    with open(f'/mnt/data/f{i:06d}.txt', 'w') as f:\n        f.write('x')\n"
                             "print(len(os.listdir('/mnt/data')))", timeout=300)
    assert result["status"] == "completed", result["error"]
    assert logs_of(result).startswith("100000\n")
    assert len(result["files"]) == 200  # type: ignore[arg-type]
    assert "more than 200 files changed" in logs_of(result)
    assert time.monotonic() - started < 150
    assert rss_bytes(server) - before < RSS_GROWTH
    http.delete(f"/v1/containers/{box}")
