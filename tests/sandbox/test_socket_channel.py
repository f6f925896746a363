"""The kernel channel over a Unix socket for a local runc sandbox (sandbox/_socketpipe.py).

The listener is tested with real sockets and a real second process: only the expected pid gets the
channel. The Docker cases check, from inside a real sandbox, that the relay's stdin is that socket,
that the sandbox cannot write where the socket lives, and that the socket file is gone once the relay
holds the channel; and that under gVisor the relay keeps Docker's exec stream.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest

from sandbox import DockerBackend, DockerConfig, KernelStartError, Outcome
from sandbox._execpipe import ExecPipe
from sandbox._socketpipe import SOCKET_NAME, ChannelListener
from tests.runtime_support import UNDER_GVISOR

_CONNECT_AND_ECHO = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b"from the relay")
s.recv(1)
"""


class _Stream:
    """An exec stream that says nothing until ``end`` (then its end)."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()

    async def receive(self) -> bytes:
        await self.ended.wait()
        return b""

    async def aclose(self) -> None:
        self.ended.set()


def _deep(tmp_path: Path) -> Path:
    # Longer than a socket path may be (108 bytes): the listener binds through a descriptor.
    directory = tmp_path / ("d" * 60) / ("e" * 60)
    directory.mkdir(parents=True)
    return directory


async def test_only_the_expected_pid_gets_the_channel(tmp_path):
    directory = _deep(tmp_path)
    listener = ChannelListener(directory)
    path = str(directory / SOCKET_NAME)
    assert len(path) > 108
    # This process connects first: its pid is not the relay's, so it is turned away.
    fd = os.open(directory, os.O_RDONLY)
    reader, writer = await asyncio.open_unix_connection(f"/proc/self/fd/{fd}/{SOCKET_NAME}")
    relay = subprocess.Popen([sys.executable, "-c", _CONNECT_AND_ECHO, f"/proc/self/cwd/{SOCKET_NAME}"],
                             cwd=directory)
    try:

        answers = iter([0, 0])  # Docker knows an exec's pid only a moment after it started

        async def relay_pid() -> int:
            return next(answers, relay.pid)

        stream = _Stream()
        pipe = await listener.accept(cast(ExecPipe, stream), relay_pid, timeout=30)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # the impostor's connection was closed
        assert await asyncio.wait_for(pipe.receive(), 10) == b"from the relay"
        await pipe.aclose()
        assert stream.ended.is_set()  # closing the pipe closes the relay's exec too
    finally:
        writer.close()
        os.close(fd)
        listener.close()
        relay.kill()
        relay.wait()
    assert not (directory / SOCKET_NAME).exists()


async def test_a_relay_that_exits_before_connecting_is_a_start_error(tmp_path):
    listener = ChannelListener(tmp_path)
    stream = _Stream()
    stream.ended.set()

    async def pid() -> int:
        return -1

    try:
        with pytest.raises(KernelStartError, match="exited before it connected"):
            await listener.accept(cast(ExecPipe, stream), pid, timeout=30)
    finally:
        listener.close()


async def test_a_relay_that_never_connects_times_out_as_a_start_error(tmp_path):
    listener = ChannelListener(tmp_path)

    async def pid() -> int:
        return -1

    try:
        with pytest.raises(KernelStartError, match=r"did not connect within 0\.2 s"):
            await listener.accept(cast(ExecPipe, _Stream()), pid, timeout=0.2)
    finally:
        listener.close()


_RELAY_STDIN = """
import os
relays = [p for p in os.listdir("/proc") if p.isdigit()
          and b"Carry a kernel's ZeroMQ" in open(f"/proc/{p}/cmdline", "rb").read()]
print(len(relays), os.readlink(f"/proc/{relays[0]}/fd/0").split(":")[0])
try:
    open("/run/codeinterp-channel/x", "w")
except OSError as exc:
    print(type(exc).__name__)
print(os.listdir("/run/codeinterp-channel") if os.path.isdir("/run/codeinterp-channel") else "no channel dir")
"""


@pytest.mark.docker
async def test_the_relay_holds_a_socket_the_sandbox_cannot_touch(make_session):
    session = await make_session()
    result = await session.execute(_RELAY_STDIN)
    assert result.outcome is Outcome.OK, result
    lines = result.stdout.splitlines()
    if UNDER_GVISOR:
        assert lines[0] == "1 host"  # Docker's exec stream, a host descriptor the sentry passes on
        assert lines[2] == "no channel dir"
    else:
        assert lines == ["1 socket", "OSError", "[]"]


@pytest.mark.docker
async def test_the_channel_survives_a_kernel_restart(make_session):
    session = await make_session()
    assert (await session.execute("x = 1")).outcome is Outcome.OK
    await session.restart()
    result = await session.execute(_RELAY_STDIN)
    assert result.outcome is Outcome.OK, result
    # The old relay went with its channel: one relay, on a fresh connection.
    assert result.stdout.splitlines()[0] == ("1 host" if UNDER_GVISOR else "1 socket")


class _Info:
    def __init__(self, default: str) -> None:
        self.default, self.asked = default, 0

    def info(self) -> dict[str, str]:
        self.asked += 1
        return {"DefaultRuntime": self.default}


@pytest.mark.parametrize(("runtime", "default", "socket_channel"), [
    (None, "runc", True), (None, "runsc", False), ("runc", "runsc", True), ("runsc", "runc", False),
    ("kata", "runc", False),
])
async def test_the_socket_channel_is_for_runc_whether_named_or_the_engines_default(
        runtime: str | None, default: str, socket_channel: bool) -> None:
    # An engine whose default runtime is gVisor must keep the exec stream: its sandboxes cannot reach a
    # host socket. The engine's answer is asked once, and only when no runtime is named.
    backend = DockerBackend(DockerConfig(runtime=runtime))
    try:
        (engine,) = backend.engines
        answers = _Info(default)
        engine._client = answers  # type: ignore[assignment]  # `docker info` is all this asks of it
        assert await backend._socket_channel(engine) is socket_channel
        assert await backend._socket_channel(engine) is socket_channel
        assert answers.asked == (0 if runtime else 1)
    finally:
        engine._client = None
        await backend.aclose()


def test_no_directory_is_no_listener_and_a_vanished_one_is_a_start_error(tmp_path: Path) -> None:
    assert ChannelListener.open_in(None) is None
    assert ChannelListener.open_in(tmp_path / "never-made") is None
    with pytest.raises(KernelStartError, match="work dir is gone"):
        ChannelListener(tmp_path / "never-made")
