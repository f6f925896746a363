"""A session: one kernel host bound to one thread or container id."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from ._backend import Backend, Hibernation, KernelHost, Limits, SessionSpec
from ._errors import HibernationError, HibernationUnsupported, KernelStartError, SessionClosed
from ._kernel import Collector, KernelClient, OutputSink
from ._results import ExecutionResult, FileInfo, KernelExit, Notice, Outcome

__all__ = ["Session"]


class Session:
    """Executes code in one kernel, one execution at a time, with files in /mnt/data.

    Create it with ``await Session.start(backend, session_id)``; close it with
    ``await session.close()`` or ``async with``.
    """

    def __init__(self, backend: Backend, host: KernelHost, kernel: KernelClient, limits: Limits) -> None:
        self.backend = backend
        self.host = host
        self.limits = limits
        self._kernel = kernel
        self._lock = asyncio.Lock()
        self._closed = False
        self._hibernated = False
        self.started_at = time.time()
        self.last_active = time.time()

    @classmethod
    async def start(
        cls,
        backend: Backend,
        session_id: str,
        *,
        limits: Limits | None = None,
        labels: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        files: Iterable[tuple[str, bytes | BinaryIO]] = (),
    ) -> Session:
        limits = limits or Limits()
        spec = SessionSpec(session_id=session_id, limits=limits, labels=labels or {}, env=env or {})
        host = await backend.start(spec)
        kernel = KernelClient(lambda: backend.connect(host), host.key)
        try:
            session = cls(backend, host, kernel, limits)
            await kernel.open()
            await kernel.wait_ready(limits.start_timeout, session._alive)
            for name, data in files:
                await session.write_file(name, data)
        except BaseException as exc:
            await asyncio.shield(kernel.close())
            await asyncio.shield(backend.stop(host))
            if isinstance(exc, KernelStartError):
                raise KernelStartError(
                    f"{exc}; check that the kernel image runs (`codeinterp doctor`)") from exc
            raise
        return session

    @classmethod
    async def attach(cls, backend: Backend, name: str, *, limits: Limits | None = None) -> Session:
        """A hibernated host left by an earlier process, as a session; its next execute wakes it."""
        hibernation = _hibernation(backend)
        host = await hibernation.adopt(name)
        session = cls(backend, host, KernelClient(lambda: backend.connect(host), host.key), limits or Limits())
        session._hibernated = True
        return session

    @property
    def id(self) -> str:
        return self.host.session_id

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def hibernated(self) -> bool:
        return self._hibernated

    @property
    def can_hibernate(self) -> bool:
        return isinstance(self.backend, Hibernation) and self.backend.can_hibernate

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _check(self) -> None:
        if self._closed:
            raise SessionClosed(f"session {self.id} was closed; start a new one")
        self.last_active = time.time()

    async def _alive(self) -> bool:
        return await self.backend.poll(self.host) is None

    # -- execution ----------------------------------------------------------

    async def execute(self, code: str, *, timeout: float | None = None, on_output: OutputSink | None = None,
                      stop: asyncio.Event | None = None) -> ExecutionResult:
        """Run ``code``; errors in it are data in the result, never raised.

        Executions queue behind one another; ``timeout`` bounds the wait for a
        turn as well as the run. Setting ``stop``, or cancelling the caller,
        interrupts the kernel and leaves the session idle for the next one.
        """
        self._check()
        timeout = timeout or self.limits.timeout
        stop = stop or asyncio.Event()
        task = asyncio.ensure_future(self._queued(code, timeout, on_output, stop))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            stop.set()
            raise

    async def _queued(self, code: str, timeout: float, sink: OutputSink | None,
                      stop: asyncio.Event) -> ExecutionResult:
        waited = time.monotonic()
        if not await self._turn(timeout, stop):
            if stop.is_set():  # cancelled while it waited for its turn: never submitted
                return ExecutionResult(outcome=Outcome.CANCELLED, duration=time.monotonic() - waited)
            notice = Notice(f"Execution did not start within {timeout:g} s: the sandbox was busy with "
                            "another execution. Try again.")
            if sink is not None:
                sink(notice)
            return ExecutionResult(outcome=Outcome.TIMEOUT, outputs=(notice,),
                                   duration=time.monotonic() - waited)
        try:
            if stop.is_set():  # cancelled while it waited for its turn: never submit it
                return ExecutionResult(outcome=Outcome.CANCELLED, duration=time.monotonic() - waited)
            await self._wake()
            return await self._execute(code, timeout, waited + timeout, sink, stop)
        finally:
            self._lock.release()

    async def _turn(self, timeout: float, stop: asyncio.Event) -> bool:
        """Take the lock within ``timeout``; give up at once when ``stop`` is set. True if taken."""
        acquiring = asyncio.ensure_future(self._lock.acquire())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((acquiring, stopping), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            if acquiring.done() and not acquiring.cancelled():
                self._lock.release()
            raise
        finally:
            stopping.cancel()
            if not acquiring.done():
                acquiring.cancel()
                await asyncio.wait((acquiring,))  # let the cancel land, or see that it won first
        if acquiring.cancelled():
            return False
        taken = acquiring.result()  # it may have won just as we gave up: then the lock is ours
        if stop.is_set():
            self._lock.release()
            return False
        return taken

    async def _execute(self, code: str, timeout: float, deadline: float, sink: OutputSink | None,
                       stop: asyncio.Event) -> ExecutionResult:
        self._check()
        started = time.monotonic()
        before = await self.backend.snapshot(self.host)
        collector = Collector(self.limits, sink)
        for inside, outside in self.host.code_paths.items():
            code = code.replace(inside, outside)
        msg_id = await self._kernel.submit(code, collector)
        turn = await self._kernel.follow(msg_id, deadline, self._alive, stop)
        restarted, exit_info = False, None
        if turn.idle:
            outcome = Outcome.ERROR if collector.has_error else Outcome.OK
        elif turn.dead:
            exit_info = await self._exit_info()
            outcome = Outcome.OUT_OF_MEMORY if exit_info.oom_killed else Outcome.KERNEL_DIED
            await self._restart()
            restarted = True
            what = "ran out of memory" if exit_info.oom_killed else f"died ({exit_info.reason})"
            collector.notice(f"The Python kernel {what} and was restarted: variables were lost, "
                             "files in /mnt/data are kept.")
        else:
            outcome = Outcome.CANCELLED if stop.is_set() else Outcome.TIMEOUT
            restarted = await self._interrupt(msg_id, collector)
            if outcome is Outcome.TIMEOUT:
                tail = ("it did not stop, so the kernel was restarted: variables were lost, files in "
                        "/mnt/data are kept." if restarted else "variables are kept.")
                collector.notice(f"Execution timed out after {timeout:g} s and was interrupted; {tail}")
        files, truncated = await self.backend.changed_files(
            self.host, before, limit=self.limits.max_reported_files,
            max_digest_bytes=self.limits.max_file_bytes)
        if truncated:
            collector.notice(f"[more than {self.limits.max_reported_files} files changed in /mnt/data; "
                             "only the newest are listed]")
        self.last_active = time.time()
        return ExecutionResult(
            outcome=outcome, outputs=tuple(collector.outputs), execution_count=collector.execution_count,
            duration=time.monotonic() - started, files=tuple(files), files_truncated=truncated,
            kernel_restarted=restarted, exit=exit_info)

    async def _exit_info(self) -> KernelExit:
        """Why the kernel ended. The channel closes as the kernel dies, a moment before the
        backend reports the exit: give it that moment."""
        for _ in range(20):
            exit_info = await self.backend.poll(self.host)
            if exit_info is not None:
                return exit_info
            await asyncio.sleep(0.1)
        return KernelExit(exit_code=None)

    async def _interrupt(self, msg_id: str, collector: Collector) -> bool:
        """Interrupt; restart if the kernel is not idle within the grace period. True if restarted."""
        await self.backend.interrupt(self.host)
        turn = await self._kernel.follow(msg_id, time.monotonic() + self.limits.interrupt_grace,
                                         self._alive, None)
        if turn.idle:
            return False
        await self._restart()
        return True

    async def _restart(self) -> None:
        await self.backend.restart(self.host)
        await self._kernel.reconnect()
        await self._kernel.wait_ready(self.limits.start_timeout, self._alive)

    async def restart(self) -> None:
        """A fresh kernel: Python state lost, /mnt/data kept."""
        self._check()
        async with self._lock:
            await self._restart()

    # -- hibernation -----------------------------------------------------------

    async def hibernate(self) -> int:
        """Checkpoint the whole kernel to disk and stop it: no RAM, no process; the next execute
        (or ``wake``) restores every variable. Returns the checkpoint's bytes (0 if unmeasured).

        HibernationUnsupported when the backend's runtime cannot (only gVisor's can); then nothing
        changed. HibernationError when the checkpoint failed: if the kernel still runs the session
        goes on as before, else its memory is lost (``close`` it; /mnt/data is kept).
        """
        if self._closed:
            raise SessionClosed(f"session {self.id} was closed; start a new one")
        hibernation = _hibernation(self.backend)
        async with self._lock:
            if self._hibernated:
                return await hibernation.checkpoint_bytes(self.host)
            # The relay must be gone first: one caught in the checkpoint cannot be restored.
            await self._kernel.close()
            try:
                size = await hibernation.hibernate(self.host)
            except BaseException:
                if await self._alive():
                    await self._kernel.open()
                raise
            self._hibernated = True
            return size

    async def wake(self) -> None:
        """Restore a hibernated kernel, memory intact; HibernationError when it cannot be."""
        if self._closed:
            raise SessionClosed(f"session {self.id} was closed; start a new one")
        async with self._lock:
            await self._wake()

    async def _wake(self) -> None:
        if not self._hibernated:
            return
        await _hibernation(self.backend).wake(self.host)
        try:
            await self._kernel.reconnect()
            await self._kernel.wait_ready(self.limits.start_timeout, self._alive, setup=False)
        except KernelStartError as exc:
            raise HibernationError(f"the restored kernel did not answer: {exc}") from exc
        finally:
            self._hibernated = False  # running again, or broken: either way no longer a checkpoint
        self.last_active = time.time()

    # -- files ---------------------------------------------------------------

    async def write_file(self, name: str, data: bytes | BinaryIO, *,
                         max_bytes: int | None = None, parents: bool = False) -> FileInfo:
        """Place a file at /mnt/data/<safe name>; a clashing name gets a numbered suffix.

        With ``parents`` the name may be a relative path (``reports/q1.csv``) whose directories are made.
        """
        self._check()
        return await self.backend.write_file(self.host, name, data, max_bytes=max_bytes, parents=parents)

    async def read_file(self, path: str, *, max_bytes: int | None = None) -> bytes:
        self._check()
        return await self.backend.read_file(self.host, path, max_bytes=max_bytes)

    async def export_file(self, path: str, dest: Path, *, max_bytes: int | None = None) -> FileInfo:
        """Copy a file out of /mnt/data to ``dest`` on this host, without reading it whole."""
        self._check()
        return await self.backend.export_file(self.host, path, dest, max_bytes=max_bytes)

    async def list_files(self) -> list[FileInfo]:
        self._check()
        return await self.backend.list_files(self.host)

    async def delete_file(self, path: str) -> None:
        self._check()
        await self.backend.delete_file(self.host, path)

    # -- end -------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the kernel host and remove it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._kernel.close()
        finally:
            await self.backend.stop(self.host)


def _hibernation(backend: Backend) -> Hibernation:
    if not isinstance(backend, Hibernation) or not backend.can_hibernate:
        raise HibernationUnsupported(f"{type(backend).__name__} cannot hibernate a session here; "
                                     "DockerBackend with runtime='runsc' (gVisor) can")
    return backend
