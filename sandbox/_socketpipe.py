"""The kernel channel's byte stream to a runc container on this machine: a Unix socket, not Docker's exec stream.

Through ``docker exec`` every record goes relay -> containerd-shim -> dockerd -> us, each hop a process
that wakes and copies: about 1.3 ms of CPU and 0.9 ms of latency per ``pass`` on a 2-core host. Here
the host listens on a socket in a directory that only it writes and that is mounted read-only into
the container; the relay, started with ``docker exec`` as before (``_inside/dial.py``), connects to it
and carries the same records straight across. The exec stays attached for the relay's stderr, which
is logged, and its end.

Only the relay may hold the channel: a connection is taken when its peer's pid is the exec's, any
other (code in the sandbox that reached the socket first) is closed. The listener lives only while
the relay connects, then the socket file goes.

gVisor keeps the exec stream (its sandbox does not reach host sockets without extra flags, and a
checkpoint cannot hold a host connection), and so does a remote engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from ._channel import READ_CHUNK
from ._errors import KernelStartError
from ._execpipe import ExecPipe

__all__ = ["CHANNEL_DIR", "SOCKET_NAME", "ChannelListener", "SocketPipe"]

log = logging.getLogger("codeinterp.sandbox")

CHANNEL_DIR = "channel"  # in a sandbox's work dir, beside data/: where we listen, mounted read-only
SOCKET_NAME = "relay.sock"
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


class SocketPipe:
    """A connected Unix socket to the relay; ``exec_stream`` is the relay's exec, read for stderr."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, exec_stream: ExecPipe) -> None:
        self._reader, self._writer, self._exec = reader, writer, exec_stream
        self._stderr = asyncio.ensure_future(_drain(exec_stream))

    async def receive(self) -> bytes:
        return await self._reader.read(READ_CHUNK)

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def aclose(self) -> None:
        self._writer.close()  # the relay reads the end of its stdin and exits
        self._stderr.cancel()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        with contextlib.suppress(BaseException):
            await self._stderr
        await self._exec.aclose()


async def _drain(stream: ExecPipe) -> None:
    # ExecPipe logs what the relay writes to stderr as it reads; nothing comes on its stdout.
    with contextlib.suppress(Exception):
        while await stream.receive():
            pass


class ChannelListener:
    """The host's listening socket in ``directory`` (bound through a descriptor of it: a deep work root
    would pass the 108-byte limit of a socket path)."""

    def __init__(self, directory: Path) -> None:
        try:
            self._dir = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise KernelStartError(f"cannot listen for the kernel relay in {directory} ({exc}); "
                                   "the sandbox's work dir is gone: start a new session") from exc
        self._path = f"/proc/self/fd/{self._dir}/{SOCKET_NAME}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)  # a relay's socket left by a crash
            self._sock.bind(self._path)
            # The container's user connects; the directory is read-only to it and private on the host.
            os.chmod(self._path, 0o666)
            self._sock.listen(4)
            self._sock.setblocking(False)
        except OSError as exc:
            self.close()
            raise KernelStartError(f"cannot listen for the kernel relay in {directory} ({exc})") from exc
        except BaseException:
            self.close()
            raise

    @classmethod
    def open_in(cls, directory: Path | None) -> ChannelListener | None:
        """A listener in ``directory``; None when there is none (gVisor, a remote engine, an older sandbox)."""
        return cls(directory) if directory is not None and directory.is_dir() else None

    async def accept(self, exec_stream: ExecPipe, exec_pid: Callable[[], Awaitable[int]],
                     timeout: float) -> SocketPipe:
        """The relay's connection, as a pipe; KernelStartError if it exits or does not connect in time."""
        loop = asyncio.get_running_loop()
        ended = asyncio.ensure_future(_drain(exec_stream))
        try:
            async with asyncio.timeout(timeout):
                while True:
                    accepting = asyncio.ensure_future(loop.sock_accept(self._sock))
                    try:
                        await asyncio.wait((accepting, ended), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        accepting.cancel()
                    if not accepting.done() or accepting.cancelled():
                        raise KernelStartError("the kernel relay exited before it connected (its stderr is "
                                               "in the log); check that the kernel image runs")
                    conn, _ = accepting.result()
                    pid = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                           _PEERCRED.size))[0]
                    relay = await exec_pid()
                    while not relay:
                        # Docker says 0 until it has recorded the exec's pid, which can come after the
                        # relay has connected (nearly always, right after the attach).
                        await asyncio.sleep(0.01)
                        relay = await exec_pid()
                    if pid == relay:
                        break
                    log.warning("closed a kernel channel connection from pid %d, not the relay's (%d)", pid, relay)
                    conn.close()
        except TimeoutError:
            raise KernelStartError(f"the kernel relay did not connect within {timeout:g} s; "
                                   "check that the kernel image runs") from None
        finally:
            ended.cancel()
            with contextlib.suppress(BaseException):
                await ended
        conn.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=conn, limit=1 << 20)
        return SocketPipe(reader, writer, exec_stream)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._path)
        self._sock.close()
        os.close(self._dir)
