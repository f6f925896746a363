"""Test doubles for code built on this library: a backend with no containers and no kernel.

In the manner of httpx's ``MockTransport``: the real ``Session`` runs over ``FakeBackend``,
so code above it (a service that keeps sessions, counts them, expires them) is tested
without Docker, in milliseconds, and its races can be staged exactly::

    backend = FakeBackend()
    backend.start_gate.hold()                      # every start now waits here
    starting = asyncio.create_task(start_session(backend, "s1"))
    await backend.start_gate.arrived()             # ... and this one has got there
    backend.start_gate.release()
    session = await starting
    assert backend.running == {session.host.name: session.host}

Files are real: each host's /mnt/data is a directory under a temporary root, with the same
checks as the real backends. Code is not run: ``execute`` hands it to the backend's
``on_execute`` handler, which returns the outputs the execution should have.

``start_session`` stands in for ``Session.start`` (same arguments), since a real start waits
for a kernel to answer.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO, cast

from ._backend import Backend, KernelHost, Limits, MountedFiles, SessionSpec
from ._datadir import DataDir
from ._kernel import Collector, KernelClient, Turn
from ._results import Display, ExecutionError, FileInfo, KernelExit, Notice, Output, Stream
from ._session import Session

__all__ = ["FakeBackend", "Gate", "start_session"]

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
        host = KernelHost(session_id=spec.session_id, name=name, connection_info={}, data=data)
        self.running[name] = host
        return host

    async def stop(self, host: KernelHost) -> None:
        await self.stop_gate.pass_through()
        self._cancel_jobs(host)
        if self.running.pop(host.name, None) is not None:
            self.stopped.append(host.name)
            shutil.rmtree(host.data.path, ignore_errors=True)

    async def interrupt(self, host: KernelHost) -> None:
        self.interrupted.append(host.name)
        self._cancel_jobs(host)

    async def restart(self, host: KernelHost) -> None:
        self._cancel_jobs(host)

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


class _StandInKernel:
    """What ``Session`` asks of a kernel connection, answered by the fake backend's jobs."""

    def __init__(self, backend: FakeBackend, host: KernelHost) -> None:
        self._backend, self._host = backend, host
        self._jobs: dict[str, asyncio.Task[Sequence[Output]]] = {}

    def submit(self, code: str) -> str:
        msg_id = uuid.uuid4().hex
        self._jobs[msg_id] = self._backend._submit(self._host, code)
        return msg_id

    async def follow(self, msg_id: str, collector: Collector, deadline: float,
                     alive: Callable[[], Awaitable[bool]], stop: asyncio.Event | None) -> Turn:
        job = self._jobs[msg_id]
        stopped = asyncio.ensure_future(stop.wait()) if stop is not None else None
        try:
            await asyncio.wait({job} | ({stopped} if stopped else set()),
                               timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if stopped is not None:
                stopped.cancel()
        if not job.done():
            return Turn(idle=False)
        del self._jobs[msg_id]
        if not job.cancelled():  # an interrupted job ends idle with nothing more to say
            for output in job.result():
                _feed(collector, output)
        return Turn(idle=True)

    async def wait_ready(self, timeout: float, alive: Callable[[], Awaitable[bool]]) -> None:
        return None

    def reconnect(self) -> None:
        return None

    def close(self) -> None:
        for job in self._jobs.values():
            job.cancel()
        self._jobs.clear()


def _feed(collector: Collector, output: Output) -> None:
    if isinstance(output, Stream):
        collector.stream(output.name, output.text)
    elif isinstance(output, Display):
        collector.display(output.data, output.metadata, output.is_result)
    elif isinstance(output, ExecutionError):
        collector.error({"ename": output.name, "evalue": output.value, "traceback": list(output.traceback)})
    elif isinstance(output, Notice):
        collector.notice(output.text)


async def start_session(backend: Backend, session_id: str, *, limits: Limits | None = None,
                        labels: dict[str, str] | None = None, env: dict[str, str] | None = None,
                        files: Iterable[tuple[str, bytes | BinaryIO]] = ()) -> Session:
    """``Session.start`` for a ``FakeBackend``: a real session, with a stand-in for its kernel."""
    if not isinstance(backend, FakeBackend):
        raise TypeError("start_session needs a FakeBackend; use Session.start for a real backend")
    limits = limits or Limits()
    host = await backend.start(SessionSpec(session_id=session_id, limits=limits, labels=labels or {},
                                           env=env or {}))
    try:
        session = Session(backend, host, cast(KernelClient, _StandInKernel(backend, host)), limits)
        for name, data in files:
            await session.write_file(name, data)
    except BaseException:
        await asyncio.shield(backend.stop(host))
        raise
    return session
