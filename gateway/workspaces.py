"""Workspaces: the sandbox behind one MCP session, and the operations its tools need.

Two kinds share one small protocol. ``SandboxWorkspace`` drives the ``sandbox`` library
directly (``codeinterp mcp`` over stdio: no server needed). ``ThreadWorkspace`` goes through
the gateway's own services as a thread named after the MCP session, so its calls and files
are recorded, expire and restore like any thread's, and count against the same capacity.
A workspace starts its sandbox on first use and ends it in ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from io import BytesIO
from typing import Protocol

import sandbox

from .calls import CallService
from .container_files import ContainerFiles
from .containers import ContainerService
from .errors import GatewayError, NotFound
from .files import FileService
from .outcomes import error_of
from .records import ContainerRecord
from .revival import Restored

__all__ = ["DATA_DIR", "MAX_DOWNLOAD_BYTES", "FileEntry", "RunOutput", "SandboxWorkspace", "ThreadWorkspace",
           "Workspace", "WorkspaceError", "relative_path"]

DATA_DIR = "/mnt/data"
MAX_DOWNLOAD_BYTES = 16 << 20  # a tool result carries the bytes base64-encoded, in one JSON message


class WorkspaceError(Exception):
    """Bad input or a sandbox that cannot do it; the message is for the model and says what to do."""


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to /mnt/data
    size: int

    @property
    def sandbox_path(self) -> str:
        return f"{DATA_DIR}/{self.path}"


@dataclass(frozen=True)
class RunOutput:
    logs: str
    images: tuple[tuple[str, bytes], ...] = ()  # (MIME type, bytes), in the order they were shown
    files: tuple[FileEntry, ...] = ()  # created or changed by this run
    error: str | None = None  # execution_error, timeout, kernel_died, out_of_memory or sandbox_error
    message: str = ""


class Workspace(Protocol):
    async def run(self, code: str, timeout: float | None) -> RunOutput: ...

    async def upload(self, name: str, data: bytes) -> FileEntry: ...

    async def list_files(self) -> list[FileEntry]: ...

    async def read(self, path: str) -> bytes: ...

    async def restart(self) -> bool:
        """A fresh kernel, files kept; False when there was no sandbox yet."""

    async def close(self) -> None: ...


def relative_path(path: str) -> str:
    """``/mnt/data/a/b.csv``, ``a/b.csv`` or ``sandbox:/mnt/data/a/b.csv`` -> ``a/b.csv``."""
    path = path.strip().removeprefix("sandbox:")
    if path.startswith("/"):
        if not path.startswith(DATA_DIR + "/"):
            raise WorkspaceError(f"Only files under {DATA_DIR} can be read; got {path!r}.")
        path = path[len(DATA_DIR) + 1:]
    if not path or any(part in ("", ".", "..") for part in path.split("/")):
        raise WorkspaceError(f"{path!r} is not a file path under {DATA_DIR}; list_files() shows what is there.")
    return path


_INPUT_ERRORS = (sandbox.FileNotFound, sandbox.InvalidFileName, sandbox.FileTooLarge, sandbox.UnsafeFile)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except _INPUT_ERRORS as exc:
        raise WorkspaceError(str(exc)) from exc
    except sandbox.SandboxError as exc:
        raise WorkspaceError(f"The sandbox could not do it: {exc}") from exc
    except GatewayError as exc:
        raise WorkspaceError(str(exc)) from exc


def _images(outputs: tuple[sandbox.Output, ...]) -> tuple[tuple[str, bytes], ...]:
    found = []
    for display in (o for o in outputs if isinstance(o, sandbox.Display)):
        image = display.image
        if image is not None:
            found.append(("image/png" if image[0] == "png" else "image/jpeg", image[1]))
    return tuple(found)


@dataclass
class SandboxWorkspace:
    """A sandbox of its own through the library: one per ``codeinterp mcp`` process."""

    backend: sandbox.Backend
    limits: sandbox.Limits
    labels: Mapping[str, str] = field(default_factory=dict)
    _session: sandbox.Session | None = None
    _starting: asyncio.Lock = field(default_factory=asyncio.Lock)
    _closed: bool = False

    async def _live(self) -> sandbox.Session:
        async with self._starting:
            if self._closed:
                raise WorkspaceError("This MCP session has ended.")
            if self._session is None:
                with _translated():
                    self._session = await sandbox.Session.start(
                        self.backend, f"mcp-{secrets.token_hex(6)}", limits=self.limits,
                        labels={**self.labels, "codeinterp.mcp": "stdio"})
            return self._session

    async def run(self, code: str, timeout: float | None) -> RunOutput:
        session = await self._live()
        with _translated():
            result = await session.execute(code, timeout=timeout)
        error, message = error_of(result)
        files = tuple(FileEntry(info.path, info.size) for info in result.files)
        return RunOutput(result.logs, _images(result.outputs), files, error, message)

    async def upload(self, name: str, data: bytes) -> FileEntry:
        session = await self._live()
        with _translated():
            info = await session.write_file(name, data)
        return FileEntry(info.path, info.size)

    async def list_files(self) -> list[FileEntry]:
        if self._session is None:
            return []
        with _translated():
            return [FileEntry(info.path, info.size) for info in await self._session.list_files()]

    async def read(self, path: str) -> bytes:
        relative = relative_path(path)
        if self._session is None:
            raise WorkspaceError(f"No file {DATA_DIR}/{relative}: nothing has run in this session yet.")
        with _translated():
            return await self._session.read_file(relative, max_bytes=MAX_DOWNLOAD_BYTES)

    async def restart(self) -> bool:
        if self._session is None:
            return False
        with _translated():
            await self._session.restart()
        return True

    async def close(self) -> None:
        async with self._starting:
            self._closed = True
            session, self._session = self._session, None
        if session is not None:
            await session.close()


@dataclass
class ThreadWorkspace:
    """One MCP session on the gateway: the thread ``thread_id`` of ``owner``."""

    containers: ContainerService
    container_files: ContainerFiles
    calls: CallService
    files: FileService
    owner: str
    thread_id: str

    async def _record(self) -> ContainerRecord | None:
        record = await self.containers.store.container_for_thread(self.owner, self.thread_id)
        return None if record is None or record.status == "deleted" else record

    @contextlib.asynccontextmanager
    async def _leased(self) -> AsyncIterator[tuple[ContainerRecord, sandbox.Session, Restored | None]]:
        with _translated():
            record, session, restored = await self.containers.thread_session(self.owner, self.thread_id)
        try:
            yield record, session, restored
        finally:
            self.containers.release(record.id)

    async def run(self, code: str, timeout: float | None) -> RunOutput:
        with _translated():
            record, session, restored = await self.containers.thread_session(self.owner, self.thread_id)
            # start() owns the lease from here and releases it when the call ends.
            call = await self.calls.start(self.owner, record, session, code=code, file_ids=(), timeout=timeout,
                                          thread_id=self.thread_id, restored=restored)
        try:
            body = await self.calls.wait(call)
        except asyncio.CancelledError:
            call.stop.set()  # the client cancelled the tool call: interrupt the kernel
            raise
        logs = "".join(o["logs"] for o in body["code_interpreter"]["outputs"] if o["type"] == "logs")
        images = []
        for output in body["code_interpreter"]["outputs"]:
            if output["type"] == "image":
                stored = await self.files.get(self.owner, output["image"]["file_id"])
                data = await asyncio.to_thread(self.files.content_path(stored).read_bytes)
                images.append(("image/jpeg" if stored.filename.endswith(".jpg") else "image/png", data))
        files = tuple(FileEntry(relative_path(f["path"]), f["bytes"]) for f in body["files"])
        error = body["error"] or {}
        return RunOutput(logs, tuple(images), files, error.get("code"), error.get("message", ""))

    async def upload(self, name: str, data: bytes) -> FileEntry:
        async with self._leased() as (record, _, _):
            with _translated():
                row = await self.container_files.add_upload(self.owner, record, name, BytesIO(data))
        return FileEntry(relative_path(row.path), row.bytes)

    async def list_files(self) -> list[FileEntry]:
        record = await self._record()
        if record is None:
            return []
        with _translated():
            rows = await self.container_files.list_files(record)
        return [FileEntry(relative_path(row.path), row.bytes) for row in rows]

    async def read(self, path: str) -> bytes:
        wanted = f"{DATA_DIR}/{relative_path(path)}"
        record = await self._record()
        rows = await self.container_files.list_files(record) if record is not None else []
        row = next((r for r in rows if r.path == wanted), None)
        if record is None or row is None:
            raise WorkspaceError(f"No file {wanted}; list_files() shows what is there.")
        if row.bytes > MAX_DOWNLOAD_BYTES:
            raise WorkspaceError(f"{wanted} has {row.bytes} bytes, more than the {MAX_DOWNLOAD_BYTES} a tool result "
                                 f"carries; download it over HTTP: GET /v1/containers/{record.id}/files/{row.id}"
                                 "/content.")
        with _translated():
            source, scratch = await self.container_files.export(record, row)
        try:
            return await asyncio.to_thread(source.read_bytes)
        finally:
            if scratch:
                source.unlink(missing_ok=True)

    async def restart(self) -> bool:
        if await self._record() is None:
            return False
        async with self._leased() as (_, session, _):
            with _translated():
                await session.restart()
        return True

    async def close(self) -> None:
        record = await self._record()
        if record is not None:
            with contextlib.suppress(NotFound):
                await self.containers.delete(self.owner, record.id)
