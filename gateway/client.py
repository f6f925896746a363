"""A small typed client for the gateway's own routes: calls (streamed or not), annotations, the notebook.

``Client`` and ``AsyncClient`` are twins over one body, ``_Requests``: it builds
every request and reads every response, so the twins only send. Files and
containers are the OpenAI API's and are best used through the ``openai`` SDK;
the few container and file helpers here are the ones ``codeinterp run --server``
needs, so that the command line does not depend on the SDK.

The JSON requests (calls, history, annotations, the notebook, container create and
delete) go over ``gateway.connection``'s keep-alive connections, which cost about a third of
httpx's CPU a request; streams, uploads, downloads, a ``transport`` given for tests and a
base URL that a proxy setting covers go through httpx.

Errors: ``ClientError`` is the root. ``APIError`` carries the gateway's OpenAI-shaped
error (status, message, type, code, param); ``GatewayUnreachable`` wraps the transport's
errors. Both are made in one place each.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode

import httpx

from .connection import AsyncPool, Origin, Pool, ProtocolError, Reply

__all__ = ["APIError", "AsyncClient", "Client", "ClientError", "GatewayUnreachable"]

Call = dict[str, Any]


class ClientError(Exception):
    """Anything that went wrong talking to the gateway."""


class GatewayUnreachable(ClientError):
    """No HTTP answer: the server is down, or the URL is wrong."""


class APIError(ClientError):
    """The gateway answered with an error."""

    def __init__(self, status: int, message: str, type: str | None = None, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param


def _api_error(status: int, reason: str, body: bytes) -> APIError:
    """The one place an HTTP error becomes an APIError."""
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return APIError(status, body.decode("utf-8", "replace")[:500] or reason)
    return APIError(status, str(error.get("message")), error.get("type"), error.get("code"), error.get("param"))


def _unreachable(base_url: str, exc: Exception) -> GatewayUnreachable:
    """The one place a transport's failure becomes GatewayUnreachable."""
    return GatewayUnreachable(f"cannot reach {base_url}: {str(exc) or type(exc).__name__}")


def _checked(response: httpx.Response) -> httpx.Response:
    """An httpx response, or its APIError; the body must have been read."""
    if response.is_success:
        return response
    raise _api_error(response.status_code, response.reason_phrase, response.content)


_LEAN_ERRORS = (OSError, ProtocolError)  # what gateway.connection raises (timeouts are OSErrors)


class _SSE:
    """Server-Sent Events, fed one line at a time: deltas, then the completed call, then [DONE]."""

    def __init__(self) -> None:
        self.event: str | None = None
        self.data: list[str] = []

    def feed(self, line: str) -> Call | None:
        if line.startswith("event:"):
            self.event = line[6:].strip()
        elif line.startswith("data:"):
            self.data.append(line[5:].removeprefix(" "))
        elif line == "" and self.data:
            text, self.data, self.event = "\n".join(self.data), [], None
            if text != "[DONE]":
                return json.loads(text)  # type: ignore[no-any-return]
        return None


class _Requests:
    """The shared body: request building and response reading, with no I/O."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1") + "/v1"
        if api_key and not (api_key.isascii() and api_key.isprintable()):
            # Checked here, or httpx and the lean path would each fail on it in their own way.
            raise ClientError("the API key must be printable ASCII (a header cannot carry line breaks or other "
                              "characters); check CODEINTERP_API_KEY or the api_key argument")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = httpx.Timeout(timeout, connect=10.0)
        self.origin = Origin.of(self.base_url, timeout, 10.0)
        self.json_headers = [*self.headers.items(), ("content-type", "application/json"),
                             ("accept", "application/json"), ("user-agent", "codeinterp-client")]

    @staticmethod
    def target(path: str, params: dict[str, Any] | None) -> str:
        # Percent-encoded as httpx would, so an odd id reaches the gateway and gets its 4xx there.
        path = quote(path, safe="/:@!$&'()*+,;=-._~%")
        return f"{path}?{urlencode(params)}" if params else path

    @staticmethod
    def encode(body: dict[str, Any] | None) -> bytes:
        return b"" if body is None else json.dumps(body).encode()

    @staticmethod
    def parsed(reply: Reply) -> Any:
        if 200 <= reply.status < 300:
            return json.loads(reply.body) if reply.body else None
        raise _api_error(reply.status, reply.reason, reply.body)

    @staticmethod
    def call_body(code: str, file_ids: Sequence[str], timeout: float | None, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"input": code, "file_ids": list(file_ids), "stream": stream}
        if timeout is not None:
            body["timeout"] = timeout
        return body

    @staticmethod
    def container_call(container_id: str) -> str:
        return f"/containers/{container_id}/calls"

    @staticmethod
    def thread_call(thread_id: str) -> str:
        return f"/threads/{thread_id}/code_interpreter/calls"

    @staticmethod
    def notebook(container_id: str | None, thread_id: str | None) -> str:
        if (container_id is None) == (thread_id is None):
            raise ValueError("pass exactly one of container_id and thread_id")
        if container_id is not None:
            return f"/containers/{container_id}/notebook"
        return f"/threads/{thread_id}/code_interpreter/notebook"

    @staticmethod
    def create_container(name: str, file_ids: Sequence[str], memory_limit: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "file_ids": list(file_ids)}
        if memory_limit:
            body["memory_limit"] = memory_limit
        return body


class Client:
    """Blocking client. ``with Client("http://127.0.0.1:8000") as api: api.call(cid, "print(1)")``."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 timeout: float = 660.0, transport: httpx.BaseTransport | None = None) -> None:
        self._r = _Requests(base_url, api_key, timeout)
        self._http = httpx.Client(base_url=self._r.base_url, headers=self._r.headers, timeout=self._r.timeout,
                                  transport=transport)
        self._pool = Pool(self._r.origin) if self._r.origin and transport is None else None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._pool:
            self._pool.close()
        self._http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return _checked(self._http.request(method, path, **kwargs))
        except httpx.TransportError as exc:
            raise _unreachable(self._r.base_url, exc) from exc

    def _json(self, method: str, path: str, body: dict[str, Any] | None = None,
              params: dict[str, Any] | None = None) -> Any:
        if self._pool is None:
            return self._send(method, path, json=body, params=params).json()
        try:
            reply = self._pool.request(method, self._r.target(path, params), self._r.json_headers,
                                       self._r.encode(body))
        except _LEAN_ERRORS as exc:
            raise _unreachable(self._r.base_url, exc) from exc
        return self._r.parsed(reply)

    def _stream(self, path: str, body: dict[str, Any]) -> Iterator[Call]:
        sse = _SSE()
        try:
            with self._http.stream("POST", path, json=body) as response:
                if not response.is_success:
                    response.read()
                    _checked(response)
                for line in response.iter_lines():
                    if (event := sse.feed(line)) is not None:
                        yield event
        except httpx.TransportError as exc:
            raise _unreachable(self._r.base_url, exc) from exc

    # -- calls ---------------------------------------------------------------------------

    def call(self, container_id: str, code: str, *, file_ids: Sequence[str] = (),
             timeout: float | None = None) -> Call:
        """Run code in a container; the finished call object."""
        return self._json("POST", self._r.container_call(container_id),  # type: ignore[no-any-return]
                          self._r.call_body(code, file_ids, timeout, False))

    def stream_call(self, container_id: str, code: str, *, file_ids: Sequence[str] = (),
                    timeout: float | None = None) -> Iterator[Call]:
        """Deltas as they happen, then the finished call (the one dict with a ``status``)."""
        return self._stream(self._r.container_call(container_id), self._r.call_body(code, file_ids, timeout, True))

    def thread_call(self, thread_id: str, code: str, *, file_ids: Sequence[str] = (),
                    timeout: float | None = None) -> Call:
        return self._json("POST", self._r.thread_call(thread_id),  # type: ignore[no-any-return]
                          self._r.call_body(code, file_ids, timeout, False))

    def stream_thread_call(self, thread_id: str, code: str, *, file_ids: Sequence[str] = (),
                           timeout: float | None = None) -> Iterator[Call]:
        return self._stream(self._r.thread_call(thread_id), self._r.call_body(code, file_ids, timeout, True))

    def calls(self, container_id: str) -> list[Call]:
        """A container's call history, oldest first (the first 100)."""
        return list(self._json("GET", self._r.container_call(container_id), params={"limit": 100})["data"])

    def annotate(self, thread_id: str, text: str) -> dict[str, Any]:
        """``file_path`` annotations for the ``sandbox:`` links in a message."""
        path = f"/threads/{thread_id}/code_interpreter/annotations"
        return self._json("POST", path, {"text": text})  # type: ignore[no-any-return]

    def notebook(self, *, container_id: str | None = None, thread_id: str | None = None) -> dict[str, Any]:
        """The call history as an nbformat 4 notebook."""
        return self._json("GET", self._r.notebook(container_id, thread_id))  # type: ignore[no-any-return]

    # -- the container and file helpers `codeinterp run --server` needs -------------------

    def create_container(self, name: str, *, file_ids: Sequence[str] = (),
                         memory_limit: str | None = None) -> dict[str, Any]:
        return self._json("POST", "/containers",  # type: ignore[no-any-return]
                          self._r.create_container(name, file_ids, memory_limit))

    def delete_container(self, container_id: str) -> None:
        self._json("DELETE", f"/containers/{container_id}")

    def upload_container_file(self, container_id: str, path: Path) -> dict[str, Any]:
        with open(path, "rb") as handle:
            response = self._send("POST", f"/containers/{container_id}/files", files={"file": (path.name, handle)})
        return response.json()  # type: ignore[no-any-return]

    def download_file(self, file_id: str, dest: Path) -> int:
        """Stream a stored file's content to ``dest``; its size."""
        size = 0
        try:
            with self._http.stream("GET", f"/files/{file_id}/content") as response:
                if not response.is_success:
                    response.read()
                    _checked(response)
                with open(dest, "wb") as out:
                    for chunk in response.iter_bytes():
                        size += out.write(chunk)
        except httpx.TransportError as exc:
            raise _unreachable(self._r.base_url, exc) from exc
        return size


class AsyncClient:
    """The async twin of ``Client``, for the same routes."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 timeout: float = 660.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._r = _Requests(base_url, api_key, timeout)
        self._http = httpx.AsyncClient(base_url=self._r.base_url, headers=self._r.headers,
                                       timeout=self._r.timeout, transport=transport)
        self._pool = AsyncPool(self._r.origin) if self._r.origin and transport is None else None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._pool:
            await self._pool.aclose()
        await self._http.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return _checked(await self._http.request(method, path, **kwargs))
        except httpx.TransportError as exc:
            raise _unreachable(self._r.base_url, exc) from exc

    async def _json(self, method: str, path: str, body: dict[str, Any] | None = None,
                    params: dict[str, Any] | None = None) -> Any:
        if self._pool is None:
            return (await self._send(method, path, json=body, params=params)).json()
        try:
            reply = await self._pool.request(method, self._r.target(path, params), self._r.json_headers,
                                             self._r.encode(body))
        except _LEAN_ERRORS as exc:
            raise _unreachable(self._r.base_url, exc) from exc
        return self._r.parsed(reply)

    async def _stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[Call]:
        sse = _SSE()
        try:
            async with self._http.stream("POST", path, json=body) as response:
                if not response.is_success:
                    await response.aread()
                    _checked(response)
                async for line in response.aiter_lines():
                    if (event := sse.feed(line)) is not None:
                        yield event
        except httpx.TransportError as exc:
            raise _unreachable(self._r.base_url, exc) from exc

    async def call(self, container_id: str, code: str, *, file_ids: Sequence[str] = (),
                   timeout: float | None = None) -> Call:
        return await self._json("POST", self._r.container_call(container_id),  # type: ignore[no-any-return]
                                self._r.call_body(code, file_ids, timeout, False))

    def stream_call(self, container_id: str, code: str, *, file_ids: Sequence[str] = (),
                    timeout: float | None = None) -> AsyncIterator[Call]:
        return self._stream(self._r.container_call(container_id), self._r.call_body(code, file_ids, timeout, True))

    async def thread_call(self, thread_id: str, code: str, *, file_ids: Sequence[str] = (),
                          timeout: float | None = None) -> Call:
        return await self._json("POST", self._r.thread_call(thread_id),  # type: ignore[no-any-return]
                                self._r.call_body(code, file_ids, timeout, False))

    def stream_thread_call(self, thread_id: str, code: str, *, file_ids: Sequence[str] = (),
                           timeout: float | None = None) -> AsyncIterator[Call]:
        return self._stream(self._r.thread_call(thread_id), self._r.call_body(code, file_ids, timeout, True))

    async def calls(self, container_id: str) -> list[Call]:
        page = await self._json("GET", self._r.container_call(container_id), params={"limit": 100})
        return list(page["data"])

    async def annotate(self, thread_id: str, text: str) -> dict[str, Any]:
        path = f"/threads/{thread_id}/code_interpreter/annotations"
        return await self._json("POST", path, {"text": text})  # type: ignore[no-any-return]

    async def notebook(self, *, container_id: str | None = None, thread_id: str | None = None) -> dict[str, Any]:
        return await self._json("GET", self._r.notebook(container_id, thread_id))  # type: ignore[no-any-return]

    async def create_container(self, name: str, *, file_ids: Sequence[str] = (),
                               memory_limit: str | None = None) -> dict[str, Any]:
        return await self._json("POST", "/containers",  # type: ignore[no-any-return]
                                self._r.create_container(name, file_ids, memory_limit))

    async def delete_container(self, container_id: str) -> None:
        await self._json("DELETE", f"/containers/{container_id}")

