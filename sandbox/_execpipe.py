"""The kernel channel's byte stream to a Docker engine: a hijacked ``docker exec`` attach, over a unix
socket or TCP with TLS. docker-py has no async attach, so the HTTP upgrade is done here by hand."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct

from ._channel import READ_CHUNK
from ._errors import ConfigError, KernelStartError

__all__ = ["ExecPipe", "exec_output"]

log = logging.getLogger("codeinterp.sandbox")


class ExecPipe:
    """The hijacked HTTP stream of a started ``docker exec``: stdin out, stdout back.

    Docker multiplexes a non-TTY exec's stdout and stderr into frames with an
    8-byte header; stdout is the channel, stderr is the relay's complaints, logged.
    """

    _HEADER = struct.Struct(">BxxxI")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._buffer = bytearray()

    @classmethod
    async def open(cls, endpoint: str, exec_id: str, tls: ssl.SSLContext | None = None) -> ExecPipe:
        if endpoint.startswith("unix://"):
            reader, writer = await asyncio.open_unix_connection(endpoint[len("unix://"):], limit=1 << 20)
        elif endpoint.startswith(("tcp://", "http://", "https://")):
            host, _, port = endpoint.split("://", 1)[1].rstrip("/").rpartition(":")
            # Over TLS the upgraded stream stays inside the TLS session: the frames are read the same way.
            reader, writer = await asyncio.open_connection(host.strip("[]"), int(port), limit=1 << 20, ssl=tls,
                                                           server_hostname=host.strip("[]") if tls else None)
        else:
            raise ConfigError(f"cannot reach Docker at {endpoint!r}; use unix:// or tcp://")
        try:
            writer.write(_request(exec_id))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except BaseException:  # cut short, cancelled or timed out: the connection goes with it
            writer.close()
            raise
        status = head.split(b" ", 2)[1] if head.startswith(b"HTTP/") else b""
        if status not in (b"101", b"200"):
            writer.close()
            raise KernelStartError(f"Docker refused to attach to the kernel relay (HTTP {status.decode()})")
        return cls(reader, writer)

    async def receive(self) -> bytes:
        while True:
            out = bytearray()
            buffer, pos = self._buffer, 0
            while len(buffer) - pos >= 8:
                kind, size = self._HEADER.unpack_from(buffer, pos)
                if len(buffer) - pos - 8 < size:
                    break
                payload = buffer[pos + 8:pos + 8 + size]
                if kind == 2:
                    log.warning("kernel relay: %s", bytes(payload).decode(errors="replace").rstrip())
                else:
                    out += payload
                pos += 8 + size
            del buffer[:pos]
            if out:
                return bytes(out)
            data = await self._reader.read(READ_CHUNK)
            if not data:
                return b""
            buffer += data

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


def _request(exec_id: str) -> bytes:
    body = b'{"Detach": false, "Tty": false}'
    return (b"POST /exec/%s/start HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
            b"Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: %d\r\n\r\n%s"
            % (exec_id.encode(), len(body), body))


def exec_output(endpoint: str, exec_id: str, tls: ssl.SSLContext | None, *, limit: int,
                timeout: float) -> tuple[bytes, bytes]:
    """Start a created exec and collect its stdout (at most ``limit`` bytes) and stderr (4 KiB) until it ends.

    Blocking; by hand like ``ExecPipe``, because docker-py's streamed exec output keeps its socket
    open after the end, and its whole-output read has no cap.
    """
    if endpoint.startswith("unix://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(endpoint[len("unix://"):])
    else:
        host, _, port = endpoint.split("://", 1)[1].rstrip("/").rpartition(":")
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=host.strip("[]"))
    with sock:
        sock.sendall(_request(exec_id))
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer:
            data = sock.recv(READ_CHUNK)
            if not data or len(buffer) > 65536:
                raise KernelStartError("Docker closed an exec stream before answering")
            buffer += data
        head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        if head.split(b" ", 2)[1:2] not in ([b"101"], [b"200"]):
            raise KernelStartError(f"Docker refused to start an exec ({head.splitlines()[0].decode(errors='replace')})")
        buffer = bytearray(rest)
        out, err = bytearray(), bytearray()
        while True:
            while len(buffer) >= 8:
                kind, size = ExecPipe._HEADER.unpack_from(buffer)
                if len(buffer) < 8 + size:
                    break
                if kind == 1:
                    out += buffer[8:8 + size]
                elif len(err) < 4096:
                    err += buffer[8:8 + size]
                del buffer[:8 + size]
                if len(out) > limit:
                    raise OverflowError(f"more than {limit} bytes of output")
            data = sock.recv(READ_CHUNK)
            if not data:
                return bytes(out), bytes(err)
            buffer += data
