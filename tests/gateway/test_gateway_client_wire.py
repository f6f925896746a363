"""gateway.client's JSON requests over gateway.connection, against a real HTTP/1.1 server on loopback.

The server is a plain socket server scripted per test, so that each test can give the client what a
real gateway or proxy sometimes gives (a closed idle connection, a chunked answer, a cut-off body, no
answer at all) and count the connections and requests it saw. `tests/cli/test_cli_server.py` drives
the same client against a real `codeinterp serve`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

import gateway.connection
from gateway.client import APIError, AsyncClient, Client, ClientError, GatewayUnreachable


@dataclass
class Seen:
    connection: int
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


def ok(payload: object, *extra: str) -> bytes:
    data = json.dumps(payload).encode()
    head = ["HTTP/1.1 200 OK", "content-type: application/json", f"content-length: {len(data)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


# What the server does with a request: bytes to send (then read the next request), or those bytes
# and then close the connection, or a number of seconds to wait before the bytes.
Script = Callable[[Seen], "bytes | tuple[bytes, str] | tuple[float, bytes]"]


@dataclass
class Server:
    script: Script
    tls: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    closed: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https://localhost' if self.tls else 'http://127.0.0.1'}:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock, self.connections), daemon=True).start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        try:
            if self.tls:
                sock = self.tls.wrap_socket(sock, server_side=True)
            stream = sock.makefile("rb")
            while True:
                line = stream.readline()
                if not line:
                    return
                method, target, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (header := stream.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                seen = Seen(number, method, target, headers, stream.read(int(headers.get("content-length", 0))))
                self.seen.append(seen)
                answer = self.script(seen)
                if isinstance(answer, tuple) and isinstance(answer[0], float):
                    time.sleep(answer[0])
                    answer = answer[1]
                if isinstance(answer, tuple):
                    sock.sendall(answer[0])
                    return
                assert isinstance(answer, bytes)
                sock.sendall(answer)
        except OSError:
            return
        finally:
            sock.close()
            self.closed.set()

    def close(self) -> None:
        self._stop = True
        self.listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(script: Script, tls: ssl.SSLContext | None = None) -> Server:
        made.append(Server(script, tls))
        return made[-1]

    yield make
    for server in made:
        server.close()


def call_answer(seen: Seen) -> bytes:
    return ok({"id": "ci_1", "echo": json.loads(seen.body or b"null"), "target": seen.target, "data": []})


def test_json_requests_share_one_keepalive_connection_and_carry_the_key(serve: Callable[..., Server]) -> None:
    server = serve(call_answer)
    with Client(server.url + "/prefix", api_key="k1") as api:
        first = api.thread_call("thread_a", "print(1)", timeout=5)
        api.calls("cntr_1")
        api.annotate("thread_a", "see sandbox:/mnt/data/x.csv")
    assert first["echo"] == {"input": "print(1)", "file_ids": [], "stream": False, "timeout": 5}
    assert [(s.method, s.target) for s in server.seen] == [
        ("POST", "/prefix/v1/threads/thread_a/code_interpreter/calls"),
        ("GET", "/prefix/v1/containers/cntr_1/calls?limit=100"),
        ("POST", "/prefix/v1/threads/thread_a/code_interpreter/annotations")]
    assert {s.connection for s in server.seen} == {1} and server.connections == 1
    assert all(s.headers["authorization"] == "Bearer k1" for s in server.seen)
    assert server.seen[0].headers["content-type"] == "application/json"
    assert server.seen[0].headers["host"] == f"127.0.0.1:{server.port}"


def test_an_id_with_odd_characters_is_percent_encoded_as_httpx_would(serve: Callable[..., Server]) -> None:
    server = serve(call_answer)
    with Client(server.url) as api:
        api.thread_call("a thread/ü?#", "1")
    expected = httpx.URL(f"{server.url}/v1/threads/a thread/ü%3F%23/code_interpreter/calls").raw_path.decode()
    assert server.seen[0].target == expected == "/v1/threads/a%20thread/%C3%BC%3F%23/code_interpreter/calls"


def test_a_connection_the_server_closed_while_idle_is_not_sent_on(serve: Callable[..., Server]) -> None:
    # As uvicorn does past its keep-alive timeout: the answer carries no "connection: close", then the
    # server closes. The next request must go on a new connection, not fail on the dead one.
    server = serve(lambda seen: (call_answer(seen), "close"))
    with Client(server.url) as api:
        api.thread_call("t", "1")
        assert server.closed.wait(5)
        time.sleep(0.05)  # the FIN reaches the client's socket
        assert api.thread_call("t", "2")["echo"]["input"] == "2"
    assert server.connections == 2 and len(server.seen) == 2


async def test_the_async_twin_also_leaves_a_closed_connection(serve: Callable[..., Server]) -> None:
    server = serve(lambda seen: (call_answer(seen), "close"))
    async with AsyncClient(server.url) as api:
        await api.thread_call("t", "1")
        assert await asyncio.to_thread(server.closed.wait, 5)
        await asyncio.sleep(0.05)
        assert (await api.thread_call("t", "2"))["echo"]["input"] == "2"
    assert server.connections == 2


def test_a_connection_idle_past_the_expiry_is_replaced(serve: Callable[..., Server],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.connection, "IDLE_EXPIRY", 0.05)
    server = serve(call_answer)
    with Client(server.url) as api:
        api.thread_call("t", "1")
        api.thread_call("t", "2")
        time.sleep(0.1)
        api.thread_call("t", "3")
    assert [s.connection for s in server.seen] == [1, 1, 2]


def test_chunked_answers_after_100_continue_and_connection_close_are_read_whole(
        serve: Callable[..., Server]) -> None:
    body = json.dumps({"id": "ci_2", "logs": "x" * 70_000}).encode()
    chunked = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
               b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
               + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:50_000], body[50_000:]))
               + b"0\r\n\r\n")
    server = serve(lambda seen: chunked)
    with Client(server.url) as api:
        assert api.thread_call("t", "1") == {"id": "ci_2", "logs": "x" * 70_000}
        assert api.thread_call("t", "2")["id"] == "ci_2"
    assert server.connections == 2  # "connection: close" is honoured


def test_gateway_errors_are_api_errors_with_their_fields(serve: Callable[..., Server]) -> None:
    error = json.dumps({"error": {"message": "No such container", "type": "invalid_request_error",
                                  "param": "container_id", "code": "not_found"}}).encode()
    answers = iter([b"HTTP/1.1 404 Not Found\r\ncontent-length: %d\r\n\r\n%s" % (len(error), error),
                    b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 11\r\n\r\n<html>x</a>"])
    server = serve(lambda seen: next(answers))
    with Client(server.url) as api:
        with pytest.raises(APIError) as missing:
            api.call("cntr_gone", "1")
        with pytest.raises(APIError) as proxy:
            api.call("cntr_2", "1")
    assert (missing.value.status, missing.value.code, missing.value.param) == (404, "not_found", "container_id")
    assert missing.value.message == "No such container"
    assert (proxy.value.status, proxy.value.message) == (502, "<html>x</a>")
    assert server.connections == 1  # an error answer leaves the connection usable


def test_an_answer_cut_short_is_unreachable_and_never_sent_twice(serve: Callable[..., Server]) -> None:
    server = serve(lambda seen: (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"id\":", "close"))
    with Client(server.url) as api, pytest.raises(GatewayUnreachable, match="cannot reach"):
        api.thread_call("t", "x = 1")
    assert len(server.seen) == 1


def test_no_answer_within_the_timeout_is_unreachable_and_the_next_call_gets_its_own_answer(
        serve: Callable[..., Server]) -> None:
    server = serve(lambda seen: (1.0, call_answer(seen)) if seen.body and b"slow" in seen.body else call_answer(seen))
    with Client(server.url, timeout=0.3) as api:
        with pytest.raises(GatewayUnreachable, match="timed out"):
            api.thread_call("t", "slow")
        assert api.thread_call("t", "fast")["echo"]["input"] == "fast"
    assert server.connections == 2


async def test_a_cancelled_async_call_leaves_its_connection_to_nobody(serve: Callable[..., Server]) -> None:
    # Were the cancelled call's connection reused, the next call would read the slow call's answer.
    server = serve(lambda seen: (0.5, call_answer(seen)) if b"slow" in seen.body else call_answer(seen))
    async with AsyncClient(server.url) as api:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(api.thread_call("t", "slow"), 0.1)
        assert (await api.thread_call("t", "fast"))["echo"]["input"] == "fast"
        await asyncio.sleep(0.6)
        assert (await api.thread_call("t", "again"))["echo"]["input"] == "again"
    assert server.connections == 2


async def test_concurrent_async_calls_each_get_a_connection_then_reuse_them(serve: Callable[..., Server]) -> None:
    server = serve(lambda seen: (0.2, call_answer(seen)))
    async with AsyncClient(server.url) as api:
        answers = await asyncio.gather(*(api.thread_call(f"t{i}", str(i)) for i in range(4)))
        assert [a["echo"]["input"] for a in answers] == ["0", "1", "2", "3"]
        for i in range(4):
            await api.thread_call("t", str(i))
    assert server.connections == 4 and len(server.seen) == 8


def test_https_with_the_ca_that_ssl_cert_file_names(serve: Callable[..., Server], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = serve(call_answer, tls=context)
    with Client(server.url) as api, pytest.raises(GatewayUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
        api.thread_call("t", "1")  # not in the store httpx would use either
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with Client(server.url) as api:
        assert api.thread_call("t", "1")["echo"]["input"] == "1"
    assert server.seen[-1].headers["host"] == f"localhost:{server.port}"


def test_a_proxy_setting_sends_the_json_requests_through_httpx_to_the_proxy(
        serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = serve(call_answer)
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    with Client("http://gateway.invalid:8000") as api:
        assert api.thread_call("t", "1")["echo"]["input"] == "1"
    assert proxy.seen[0].target == "http://gateway.invalid:8000/v1/threads/t/code_interpreter/calls"


def test_a_transport_given_for_tests_carries_the_json_requests() -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={"id": "ci_3"})

    with Client("http://127.0.0.1:9", transport=httpx.MockTransport(handler)) as api:
        assert api.thread_call("t", "1") == {"id": "ci_3"}
    assert [str(r.url) for r in requests] == ["http://127.0.0.1:9/v1/threads/t/code_interpreter/calls"]


def test_a_body_that_runs_to_the_end_of_the_stream_is_read_whole_and_its_connection_dropped(
        serve: Callable[..., Server]) -> None:
    body = json.dumps({"id": "ci_3", "logs": "y" * 5000}).encode()
    server = serve(lambda seen: (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + body, "close"))
    with Client(server.url) as api:
        assert api.thread_call("t", "1") == {"id": "ci_3", "logs": "y" * 5000}
        assert api.thread_call("t", "2")["id"] == "ci_3"
    assert server.connections == 2


def test_bytes_after_the_answer_leave_the_connection_unused(serve: Callable[..., Server]) -> None:
    # A server that sends more than it was asked for is out of step: the next answer would be this one's.
    server = serve(lambda seen: call_answer(seen) + ok({"id": "stray"}))
    with Client(server.url) as api:
        assert api.thread_call("t", "a")["echo"]["input"] == "a"
        assert api.thread_call("t", "b")["echo"]["input"] == "b"
    assert server.connections == 2


def test_an_answer_that_is_not_http_is_unreachable(serve: Callable[..., Server]) -> None:
    server = serve(lambda seen: (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "close"))
    with Client(server.url) as api, pytest.raises(GatewayUnreachable, match=r"not HTTP/1\.1"):
        api.thread_call("t", "1")


def test_an_api_key_a_header_cannot_carry_is_refused_before_anything_is_sent(serve: Callable[..., Server]) -> None:
    server = serve(call_answer)
    for key in ("sk-1\r\nx-injected: 1", "sk-ключ"):
        with pytest.raises(ClientError, match="printable ASCII"):
            Client(server.url, api_key=key)
        with pytest.raises(ClientError, match="printable ASCII"):
            AsyncClient(server.url, api_key=key)
    assert server.connections == 0


def test_a_line_break_in_a_request_header_never_reaches_the_wire() -> None:
    origin = gateway.connection.Origin("http", "127.0.0.1", 80, "", 1.0, 1.0, None)
    with pytest.raises(gateway.connection.ProtocolError, match="line break"):
        gateway.connection.Pool(origin).request("GET", "/v1/x", [("x-id", "1\r\nx-injected: 1")])
