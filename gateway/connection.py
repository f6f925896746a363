"""Keep-alive HTTP/1.1 connections for the client's JSON requests: h11 over a socket, nothing more.

Why not httpx for these: its client, httpcore's pool and anyio cost 2 to 4 ms of CPU a request on a
2-core machine (bench: ``python -m bench --only roundtrip``), as much as the gateway spends serving a
``pass`` call. A run engine calls ``thread_call`` on every tool call, so ``gateway.client`` sends its
JSON requests here; streams, uploads and downloads stay on httpx, where that cost is small beside
the bytes.

``Pool`` and ``AsyncPool`` are twins over one body: ``_request_bytes`` and ``_response`` speak the
protocol through h11 with no I/O; the twins only move bytes. A connection is reused only when h11 says
the exchange ended cleanly, is dropped after ``IDLE_EXPIRY`` unused (before a server's own keep-alive
timeout closes it under a request) and when it is readable while idle (the server closed it). A
request is never sent twice: one that fails after it went out raises, as httpx does.

Errors: a failure to connect, send or read raises ``OSError`` (``TimeoutError`` past a timeout) or
``h11.ProtocolError``; ``gateway.client`` maps them to ``GatewayUnreachable`` in one place.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import h11
import httpx

__all__ = ["IDLE_EXPIRY", "AsyncPool", "Origin", "Pool", "Reply"]

IDLE_EXPIRY = 4.0  # seconds; uvicorn closes a connection idle for 5 by default
_MAX_IDLE = 16  # connections kept open for reuse; more are opened while more requests run at once
_READ = 65536


@dataclass(frozen=True)
class Origin:
    """Where the requests go, and what each one may wait."""

    scheme: str
    host: str
    port: int
    prefix: str  # the base URL's path, which every request target starts with
    timeout: float  # seconds that each send and each read may wait
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


def _request_bytes(conn: h11.Connection, origin: Origin, method: str, target: str,
                   headers: list[tuple[str, str]], body: bytes) -> bytes:
    head = [("host", origin.host_header), *headers, ("content-length", str(len(body)))]
    out = [conn.send(h11.Request(method=method, target=origin.prefix + target, headers=head)) or b""]
    if body:
        out.append(conn.send(h11.Data(data=body)) or b"")
    out.append(conn.send(h11.EndOfMessage()) or b"")
    return b"".join(out)


def _response(conn: h11.Connection) -> Generator[None, bytes, Reply]:
    """Reads one response: send it each chunk read (b"" at the end of the stream); returns the reply."""
    status, reason, chunks = 0, "", []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data((yield))
        elif isinstance(event, h11.Response):
            status, reason = event.status_code, event.reason.decode("latin-1")
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return Reply(status, reason, b"".join(chunks))
        elif isinstance(event, h11.ConnectionClosed):
            raise h11.RemoteProtocolError("the server closed the connection before its answer was whole")
        # an InformationalResponse (100 Continue) is passed over


def _reusable(conn: h11.Connection) -> bool:
    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
        conn.start_next_cycle()
        return True
    return False


class _Sync:
    def __init__(self, origin: Origin) -> None:
        self.h11 = h11.Connection(h11.CLIENT)
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
        conn = self._take()
        try:
            conn.sock.sendall(_request_bytes(conn.h11, self.origin, method, target, headers, body))
            reading = _response(conn.h11)
            next(reading)
            while True:
                reading.send(conn.sock.recv(_READ))
        except StopIteration as done:
            reply: Reply = done.value
        except BaseException:
            conn.sock.close()
            raise
        self._give(conn)
        return reply

    def _take(self) -> _Sync:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if conn.fresh():
                    return conn
                conn.sock.close()
        return _Sync(self.origin)

    def _give(self, conn: _Sync) -> None:
        if not _reusable(conn.h11):
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


class _Async:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.h11 = h11.Connection(h11.CLIENT)
        self.reader, self.writer = reader, writer
        self.idle_since = time.monotonic()

    @classmethod
    async def open(cls, origin: Origin) -> _Async:
        async with asyncio.timeout(origin.connect_timeout):
            reader, writer = await asyncio.open_connection(
                origin.host, origin.port, ssl=origin.tls, server_hostname=origin.host if origin.tls else None)
        sock: Any = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    def fresh(self) -> bool:
        # The loop has seen the server's FIN by now if one came: the connection sat idle through it.
        return (time.monotonic() - self.idle_since <= IDLE_EXPIRY and not self.reader.at_eof()
                and not self.writer.is_closing())

    def close(self) -> None:
        self.writer.close()


class AsyncPool:
    """The asyncio twin of ``Pool``: connections to one origin, for the tasks of one event loop."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self._idle: list[_Async] = []

    async def request(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> Reply:
        conn = await self._take()
        try:
            conn.writer.write(_request_bytes(conn.h11, self.origin, method, target, headers, body))
            async with asyncio.timeout(self.origin.timeout):
                await conn.writer.drain()
            reading = _response(conn.h11)
            next(reading)
            while True:
                async with asyncio.timeout(self.origin.timeout):
                    data = await conn.reader.read(_READ)
                reading.send(data)
        except StopIteration as done:
            reply: Reply = done.value
        except BaseException:  # a cancelled request leaves the connection mid-exchange: never reused
            conn.close()
            raise
        if _reusable(conn.h11) and len(self._idle) < _MAX_IDLE:
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
