"""Test doubles for code built on this library: a backend with no containers and no kernel.

In the manner of httpx's ``MockTransport``: the real ``Session`` runs over ``FakeBackend``,
so code above it (a service that keeps sessions, counts them, expires them) is tested
without Docker, in milliseconds, and its races can be staged exactly::

    backend = FakeBackend()
    backend.start_gate.hold()                      # every start now waits here
    starting = asyncio.create_task(Session.start(backend, "s1"))
    await backend.start_gate.arrived()             # ... and this one has got there
    backend.start_gate.release()
    session = await starting
    assert backend.running == {session.host.name: session.host}

Files are real: each host's /mnt/data is a directory under a temporary root, with the same
checks as the real backends. Code is not run: the backend's ``connect`` gives the session a
fake kernel that speaks the real kernel channel (signed Jupyter messages in relay records), and
hands each execution's code to ``on_execute``, which returns the outputs it should have.
So ``Session.start`` itself runs over it, channel and collector included.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from ._backend import KernelHost, MountedFiles, SessionSpec
from ._channel import CHANNELS, DELIM, HELLO, Pipe, decode_frames, encode_record, sign
from ._datadir import DataDir
from ._errors import KernelStartError
from ._results import Display, ExecutionError, FileInfo, KernelExit, Notice, Output, Stream

__all__ = ["FakeBackend", "Gate"]

Executor = Callable[[str], Awaitable[Sequence[Output]]]


async def _nothing(code: str) -> Sequence[Output]:
    return ()


class Gate:
    """Where one kind of backend operation passes. Open by default; a test can hold it, make it fail,
    and wait until operations have reached it."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._changed = asyncio.Condition()
        self.error: BaseException | None = None
        self.arrivals = 0  # operations that reached the gate
        self.passed = 0  # operations that went through it without failing

    def hold(self) -> None:
        """Operations that arrive from now on wait until ``release``."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def fail_with(self, error: BaseException | None) -> None:
        """Operations that pass from now on raise ``error`` (None: succeed again)."""
        self.error = error

    async def arrived(self, count: int = 1) -> None:
        """Return once ``count`` operations in all have reached the gate."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.arrivals >= count)

    async def pass_through(self) -> None:
        async with self._changed:
            self.arrivals += 1
            self._changed.notify_all()
        await self._open.wait()
        if self.error is not None:
            raise self.error
        self.passed += 1


class FakeBackend(MountedFiles):
    """A ``Backend`` whose hosts are directories and whose executions are answered by ``on_execute``.

    What happened stays inspectable: ``started`` (every spec asked for), ``running`` (hosts by name),
    ``stopped`` (host names, in order) and ``executed`` (host name and code, in order).
    """

    def __init__(self, on_execute: Executor = _nothing, *, root: Path | None = None) -> None:
        self.on_execute = on_execute
        self.start_gate, self.stop_gate, self.execute_gate, self.write_gate = Gate(), Gate(), Gate(), Gate()
        self.started: list[SessionSpec] = []
        self.running: dict[str, KernelHost] = {}
        self.stopped: list[str] = []
        self.executed: list[tuple[str, str]] = []
        self.interrupted: list[str] = []
        self._root, self._own_root = root, root is None
        self._jobs: dict[str, set[asyncio.Task[Sequence[Output]]]] = {}

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="codeinterp-fake-"))
        return self._root

    async def start(self, spec: SessionSpec) -> KernelHost:
        self.started.append(spec)
        await self.start_gate.pass_through()
        name = f"fake-{uuid.uuid4().hex[:12]}"
        data = DataDir(self.root / name)
        data.create()
        host = KernelHost(session_id=spec.session_id, name=name, key=secrets.token_hex(16), data=data)
        self.running[name] = host
        return host

    async def stop(self, host: KernelHost) -> None:
        await self.stop_gate.pass_through()
        self._cancel_jobs(host)
        if self.running.pop(host.name, None) is not None:
            self.stopped.append(host.name)
            shutil.rmtree(host.mounted.path, ignore_errors=True)

    async def interrupt(self, host: KernelHost) -> None:
        self.interrupted.append(host.name)
        self._cancel_jobs(host)

    async def restart(self, host: KernelHost) -> None:
        self._cancel_jobs(host)

    async def connect(self, host: KernelHost) -> Pipe:
        if host.name not in self.running:
            raise KernelStartError(f"fake host {host.name} is not running")
        return _FakeKernel(self, host)

    async def poll(self, host: KernelHost) -> KernelExit | None:
        return None if host.name in self.running else KernelExit(exit_code=None)

    async def write_file(self, host: KernelHost, name: str, data: bytes | BinaryIO,
                         *, max_bytes: int | None = None, parents: bool = False) -> FileInfo:
        await self.write_gate.pass_through()
        return await super().write_file(host, name, data, max_bytes=max_bytes, parents=parents)

    async def aclose(self) -> None:
        for host in list(self.running.values()):
            self._cancel_jobs(host)
        self.running.clear()
        if self._own_root and self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    # -- executions, for the stand-in kernel ---------------------------------------

    def _submit(self, host: KernelHost, code: str) -> asyncio.Task[Sequence[Output]]:
        self.executed.append((host.name, code))

        async def run() -> Sequence[Output]:
            await self.execute_gate.pass_through()
            return await self.on_execute(code)

        job = asyncio.ensure_future(run())
        jobs = self._jobs.setdefault(host.name, set())
        jobs.add(job)
        job.add_done_callback(jobs.discard)
        return job

    def _cancel_jobs(self, host: KernelHost) -> None:
        for job in self._jobs.pop(host.name, set()):
            job.cancel()


class _FakeKernel:
    """A ``Pipe`` whose far end is a kernel made of ``FakeBackend.on_execute``.

    It answers as ipykernel does: a kernel_info reply with a status on iopub; for an execution,
    busy, execute_input, the outputs, idle, and the execute_reply. An interrupted execution
    (its job cancelled) goes idle with nothing more to say.
    """

    def __init__(self, backend: FakeBackend, host: KernelHost) -> None:
        self._backend, self._host, self._key = backend, host, host.key.encode()
        self._out: asyncio.Queue[bytes] = asyncio.Queue()
        self._out.put_nowait(encode_record(HELLO, [b'{"relay": 1}']))
        self._pending = bytearray()
        self._count = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def receive(self) -> bytes:
        return await self._out.get()

    async def send(self, data: bytes) -> None:
        self._pending += data
        while len(self._pending) >= 4:
            size = int.from_bytes(self._pending[:4], "big")
            if len(self._pending) < 4 + size:
                return
            channel, frames = decode_frames(bytes(self._pending[4:4 + size]))
            del self._pending[:4 + size]
            start = frames.index(DELIM) + 1
            header, content = json.loads(frames[start + 1]), json.loads(frames[start + 4])
            self._answer(CHANNELS[channel], header, content)

    def _publish(self, channel: str, msg_type: str, parent: dict[str, Any], content: dict[str, Any]) -> None:
        header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": "fake", "username": "fake",
                  "date": "", "version": "5.3"}
        parts = [json.dumps(header).encode(), json.dumps(parent).encode(), b"{}", json.dumps(content).encode()]
        self._out.put_nowait(encode_record(CHANNELS.index(channel), [DELIM, sign(self._key, *parts), *parts]))

    def _answer(self, channel: str, header: dict[str, Any], content: dict[str, Any]) -> None:
        kind = header["msg_type"]
        if kind == "kernel_info_request":
            self._publish("iopub", "status", header, {"execution_state": "busy"})
            self._publish(channel, "kernel_info_reply", header, {"status": "ok"})
            self._publish("iopub", "status", header, {"execution_state": "idle"})
        elif kind == "execute_request" and content.get("silent"):
            self._publish(channel, "execute_reply", header, {"status": "ok"})
        elif kind == "execute_request":
            task = asyncio.ensure_future(self._execute(header, str(content.get("code", ""))))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _execute(self, parent: dict[str, Any], code: str) -> None:
        self._count += 1
        self._publish("iopub", "status", parent, {"execution_state": "busy"})
        self._publish("iopub", "execute_input", parent, {"code": code, "execution_count": self._count})
        job = self._backend._submit(self._host, code)
        await asyncio.wait({job})
        outputs = () if job.cancelled() else job.result()  # a cancelled job: interrupted
        for output in outputs:
            self._emit(parent, output)
        self._publish("iopub", "status", parent, {"execution_state": "idle"})
        self._publish("shell", "execute_reply", parent, {"status": "ok", "execution_count": self._count})

    def _emit(self, parent: dict[str, Any], output: Output) -> None:
        if isinstance(output, Stream):
            self._publish("iopub", "stream", parent, {"name": output.name, "text": output.text})
        elif isinstance(output, Display):
            kind = "execute_result" if output.is_result else "display_data"
            self._publish("iopub", kind, parent, {"data": dict(output.data), "metadata": dict(output.metadata)})
        elif isinstance(output, ExecutionError):
            self._publish("iopub", "error", parent, {"ename": output.name, "evalue": output.value,
                                                    "traceback": list(output.traceback)})
        elif isinstance(output, Notice):
            self._publish("iopub", "stream", parent, {"name": "stderr", "text": output.text})

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._out.put_nowait(b"")
