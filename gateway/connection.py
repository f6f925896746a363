"""Keep-alive HTTP/1.1 connections for the client's JSON requests: httptools over a socket, nothing more.

Why not httpx for these: its client, httpcore's pool and anyio cost 2 to 4 ms of CPU a request on a
2-core machine (bench: ``python -m bench --only roundtrip``), as much as the gateway spends serving a
``pass`` call. A run engine calls ``thread_call`` on every tool call, so ``gateway.client`` sends its
JSON requests here; streams, uploads and downloads stay on httpx, where that cost is small beside
the bytes. The response parser is llhttp (httptools, which uvicorn serves with): h11, pure Python,
took 0.14 ms of CPU an exchange here, httptools 0.003.

``Pool`` and ``AsyncPool`` are twins over one body: ``_request_bytes`` and ``_Exchange`` speak the
protocol with no I/O; the twins only move bytes. A connection is reused only when the exchange
ended cleanly and the server keeps it alive, is dropped after ``IDLE_EXPIRY`` unused (before a
server's own keep-alive timeout closes it under a request) and when it is readable while idle (the
server closed it). A request is never sent twice: one that fails after it went out raises, as httpx
does.

Errors: a failure to connect, send or read raises ``OSError`` (``TimeoutError`` past a timeout) or
``ProtocolError``; ``gateway.client`` maps them to ``GatewayUnreachable`` in one place.
"""

from __future__ import annotations

import asyncio
import re
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import httptools
import httpx

__all__ = ["IDLE_EXPIRY", "AsyncPool", "Origin", "Pool", "ProtocolError", "Reply"]

IDLE_EXPIRY = 4.0  # seconds; uvicorn closes a connection idle for 5 by default
_MAX_IDLE = 16  # connections kept open for reuse; more are opened while more requests run at once
_READ = 65536
_BREAKS = re.compile("[\r\n\0]")  # none may be in a request line or header


@dataclass(frozen=True)
class Origin:
    """Where the requests go, and what each one may wait."""

    scheme: str
    host: str
    port: int
    prefix: str  # the base URL's path, which every request target starts with
    timeout: float  # seconds a request may wait for the server's next bytes
    connect_timeout: float
    tls: ssl.SSLContext | None

    @classmethod
    def of(cls, base_url: str, timeout: float, connect_timeout: float) -> Origin | None:
        """The origin of ``base_url``; None where httpx must carry the request (a proxy applies to it)."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        proxies = getproxies()
        if (proxies.get(parts.scheme) or proxies.get("all")) and not proxy_bypass(parts.hostname):
            return None
        tls = None
        if parts.scheme == "https":
            tls = httpx.create_ssl_context()  # the store httpx uses for the other requests (SSL_CERT_FILE too)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"), timeout, connect_timeout, tls)

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True)
class Reply:
    """A whole response."""

    status: int
    reason: str
    body: bytes


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 we can read, or a request would not be."""


def _request_bytes(origin: Origin, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"{method} {origin.prefix}{target} HTTP/1.1", f"host: {origin.host_header}",
             *(f"{name}: {value}" for name, value in headers), f"content-length: {len(body)}"]
    if _BREAKS.search("".join(lines)):
        raise ProtocolError("a request line or header holds a line break or NUL; check the API key and base URL")
    try:
        return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body
    except UnicodeEncodeError:
        raise ProtocolError("a header holds a character outside Latin-1, which HTTP/1.1 cannot carry; "
                            "check the API key") from None


class _Exchange:
    """Reads one response: ``feed`` it each chunk read (b"" at the end of the stream) until it returns the reply."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._reason = b""
        self._chunks: list[bytes] = []
        self._headers_done = self._delimited = False
        self.reply: Reply | None = None
        self.keep_alive = False  # once the reply is whole: whether the connection may carry another

    # httptools' callbacks
    def on_message_begin(self) -> None:
        if self.reply is not None:  # more came than the answer: the connection's state is unknown
            self.keep_alive = False

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self._delimited = True

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self.reply is not None:
            return
        status = self._parser.get_status_code()
        if status < 200:  # 100 Continue and the like: the answer follows
            self._reason, self._chunks, self._headers_done, self._delimited = b"", [], False, False
            return
        self.keep_alive = self._parser.should_keep_alive()
        self.reply = Reply(status, self._reason.decode("latin-1"), b"".join(self._chunks))

    def feed(self, data: bytes) -> Reply | None:
        if not data:
            if self._headers_done and not self._delimited:  # a body that runs to the end of the stream
                self.keep_alive = False
                return Reply(self._parser.get_status_code(), self._reason.decode("latin-1"), b"".join(self._chunks))
            raise ProtocolError("the server closed the connection before its answer was whole")
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise ProtocolError(f"the server's answer is not HTTP/1.1: {exc}") from None
        return self.reply


class _Sync:
    def __init__(self, origin: Origin) -> None:
        raw = socket.create_connection((origin.host, origin.port), timeout=origin.connect_timeout)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock: socket.socket = (origin.tls.wrap_socket(raw, server_hostname=origin.host)
                                        if origin.tls else raw)
        except BaseException:
            raw.close()
            raise
        self.sock.settimeout(origin.timeout)
        self.idle_since = time.monotonic()

    def fresh(self) -> bool:
        if time.monotonic() - self.idle_since > IDLE_EXPIRY:
            return False
        readable, _, _ = select.select([self.sock], [], [], 0)
        return not readable  # an idle connection with something to read was closed by the server


class Pool:
    """Blocking keep-alive connections to one origin; safe to share between threads."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self._idle: list[_Sync] = []
        self._lock = threading.Lock()

    def request(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> Reply:
        data = _request_bytes(self.origin, method, target, headers, body)
        conn, exchange = self._take(), _Exchange()
        try:
            conn.sock.sendall(data)
            while (reply := exchange.feed(conn.sock.recv(_READ))) is None:
                pass
        except BaseException:
            conn.sock.close()
            raise
        self._give(conn, exchange.keep_alive)
        return reply

    def _take(self) -> _Sync:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if conn.fresh():
                    return conn
                conn.sock.close()
        return _Sync(self.origin)

    def _give(self, conn: _Sync, keep_alive: bool) -> None:
        if not keep_alive:
            conn.sock.close()
            return
        conn.idle_since = time.monotonic()
        with self._lock:
            if len(self._idle) < _MAX_IDLE:
                self._idle.append(conn)
                return
        conn.sock.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.sock.close()


class _Async(asyncio.Protocol):
    """One connection, as a protocol: its bytes go straight to the exchange under way, with no stream
    objects and one timer a request. Over asyncio's streams (a reader, a writer, a timeout for the drain
    and one for each read) a ``pass`` call cost the client 0.35 ms of CPU here, now 0.29 to 0.33."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.idle_since = time.monotonic()
        self.closed = False  # by either side, or left in a state nobody may reuse
        self._exchange: _Exchange | None = None
        self._waiter: asyncio.Future[Reply] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._heard = 0.0  # the loop's time when the server's last bytes came, or the request went

    @classmethod
    async def open(cls, origin: Origin) -> _Async:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(origin.connect_timeout):
            _, conn = await loop.create_connection(
                lambda: cls(origin), origin.host, origin.port, ssl=origin.tls,
                server_hostname=origin.host if origin.tls else None)
        return conn

    # asyncio's callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock: Any = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._exchange is None or self._waiter is None or self._waiter.done():
            self._drop()  # bytes nobody asked for: the connection's state is unknown
            return
        self._heard = asyncio.get_running_loop().time()  # a wait ends with each byte: the timer sees it
        try:
            reply = self._exchange.feed(data)
        except ProtocolError as exc:
            self._fail(exc)
            return
        if reply is not None:
            self._done(reply)

    def eof_received(self) -> bool:
        self.closed = True
        if self._exchange is not None and self._waiter is not None and not self._waiter.done():
            try:
                reply = self._exchange.feed(b"")  # a body delimited by the end of the stream
            except ProtocolError as exc:
                self._fail(exc)
            else:
                if reply is not None:
                    self._done(reply)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ProtocolError("the server closed the connection before its answer was whole"))

    async def exchange(self, data: bytes) -> tuple[Reply, bool]:
        """Send ``data`` and wait for the whole reply; with it, whether the connection may carry another."""
        assert self.transport is not None
        self._exchange, self._waiter = _Exchange(), asyncio.get_running_loop().create_future()
        try:
            self.transport.write(data)
            loop = asyncio.get_running_loop()
            self._heard = loop.time()
            self._timer = loop.call_at(self._heard + self.origin.timeout, self._check_timeout)
            reply = await self._waiter
        except BaseException:  # cancelled or failed mid-exchange: the connection is never reused
            self._drop()
            raise
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        return reply, self._exchange.keep_alive and not self.closed

    def fresh(self) -> bool:
        # The loop has seen the server's FIN by now if one came: the connection sat idle through it.
        return (time.monotonic() - self.idle_since <= IDLE_EXPIRY and not self.closed
                and self.transport is not None and not self.transport.is_closing())

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _check_timeout(self) -> None:
        # One timer a request, moved on when bytes came meanwhile: cheaper than one per chunk.
        due = self._heard + self.origin.timeout
        if due > asyncio.get_running_loop().time():
            self._timer = asyncio.get_running_loop().call_at(due, self._check_timeout)
            return
        self._timer = None
        self._fail(TimeoutError(f"no answer within {self.origin.timeout} s"))
        self._drop()

    def _drop(self) -> None:
        # Not close(): that waits for unsent bytes to go, which a server that stopped reading never takes.
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _done(self, reply: Reply) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(reply)

    def _fail(self, exc: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)


class AsyncPool:
    """The asyncio twin of ``Pool``: connections to one origin, for the tasks of one event loop."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self._idle: list[_Async] = []

    async def request(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> Reply:
        data = _request_bytes(self.origin, method, target, headers, body)
        conn = await self._take()
        reply, reusable = await conn.exchange(data)
        if reusable and len(self._idle) < _MAX_IDLE:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        return reply

    async def _take(self) -> _Async:
        while self._idle:
            conn = self._idle.pop()
            if conn.fresh():
                return conn
            conn.close()
        return await _Async.open(self.origin)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
