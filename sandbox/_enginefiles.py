"""File operations of a backend whose sandboxes' /mnt/data is either a directory on this machine
(``MountedFiles``) or a volume on another Docker engine, reached through its API (``VolumeFiles``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

from ._backend import KernelHost, MountedFiles
from ._datadir import DataDir, Snapshot
from ._results import FileInfo
from ._volumefiles import VolumeFiles

__all__ = ["EngineFiles", "OrphanFiles", "RemoteOrphanFiles"]

T = TypeVar("T")


class EngineFiles(MountedFiles):
    """MountedFiles for hosts with a ``data`` dir; the archive API of their engine for the others.

    The backend provides ``_run_on(host, fn)``, which runs a blocking call on the host's engine.
    """

    _remote_files: dict[str, VolumeFiles]  # engine name -> its file operations, for engines elsewhere
    _baselines: dict[str, Snapshot]  # remote hosts: the listing that ended the last execution

    async def _run_on(self, host: KernelHost, fn: Callable[[], T]) -> T:
        raise NotImplementedError

    def _remote(self, host: KernelHost) -> VolumeFiles | None:
        return self._remote_files.get(host.engine) if host.data is None else None

    async def _on_files(self, host: KernelHost, fn: Callable[[VolumeFiles], T]) -> T:
        files = self._remote(host)
        assert files is not None
        try:
            return await self._run_on(host, lambda: fn(files))
        finally:
            self._baselines.pop(host.name, None)

    async def write_file(self, host: KernelHost, name: str, data: bytes | BinaryIO,
                         *, max_bytes: int | None = None, parents: bool = False) -> FileInfo:
        if self._remote(host) is None:
            return await super().write_file(host, name, data, max_bytes=max_bytes, parents=parents)
        return await self._on_files(host, lambda f: f.write(host.name, name, data, max_bytes=max_bytes,
                                                             parents=parents))

    async def read_file(self, host: KernelHost, path: str, *, max_bytes: int | None = None) -> bytes:
        files = self._remote(host)
        if files is None:
            return await super().read_file(host, path, max_bytes=max_bytes)
        return await self._run_on(host, lambda: files.read(host.name, path, max_bytes))

    async def export_file(self, host: KernelHost, path: str, dest: Path,
                          *, max_bytes: int | None = None) -> FileInfo:
        files = self._remote(host)
        if files is None:
            return await super().export_file(host, path, dest, max_bytes=max_bytes)
        return await self._run_on(host, lambda: files.export(host.name, path, dest, max_bytes))

    async def list_files(self, host: KernelHost) -> list[FileInfo]:
        files = self._remote(host)
        if files is None:
            return await super().list_files(host)
        snap = await self._run_on(host, lambda: files.snapshot(host.name))
        return [FileInfo(path=p, size=s.size, mtime=s.mtime_ns / 1e9) for p, s in sorted(snap.items())]

    async def delete_file(self, host: KernelHost, path: str) -> None:
        if self._remote(host) is None:
            return await super().delete_file(host, path)
        await self._on_files(host, lambda f: f.delete(host.name, path))

    async def snapshot(self, host: KernelHost) -> Snapshot:
        files = self._remote(host)
        if files is None:
            return await super().snapshot(host)
        baseline = self._baselines.get(host.name)  # the last execution's listing: no second exec
        return baseline if baseline is not None else await self._run_on(host, lambda: files.snapshot(host.name))

    async def changed_files(self, host: KernelHost, before: Snapshot, *, limit: int,
                            max_digest_bytes: int) -> tuple[list[FileInfo], bool]:
        files = self._remote(host)
        if files is None:
            return await super().changed_files(host, before, limit=limit, max_digest_bytes=max_digest_bytes)

        def changed() -> tuple[Snapshot, list[FileInfo], bool]:
            after = files.snapshot(host.name)
            new = sorted(((p, s) for p, s in after.items() if before.get(p) != s),
                         key=lambda item: (-item[1].mtime_ns, item[0]))
            shas = files.digests(host.name, [p for p, _ in new[:limit]], max_digest_bytes)
            infos = [FileInfo(path=p, size=s.size, mtime=s.mtime_ns / 1e9, sha256=shas.get(p)) for p, s in new[:limit]]
            return after, infos, len(new) > limit
        after, infos, more = await self._run_on(host, changed)
        self._baselines[host.name] = after
        return infos, more


class RemoteOrphanFiles:
    """Read access to a leftover remote container's /mnt/data (through its engine), so its files can be kept."""

    def __init__(self, backend: EngineFiles, host: KernelHost) -> None:
        self.backend, self.host = backend, host

    async def list_files(self) -> list[FileInfo]:
        return await self.backend.list_files(self.host)

    async def export_file(self, path: str, dest: Path, *, max_bytes: int | None = None) -> FileInfo:
        return await self.backend.export_file(self.host, path, dest, max_bytes=max_bytes)


class OrphanFiles:
    """Read access to a stopped local container's /mnt/data, so that its files can be kept."""

    def __init__(self, data: DataDir) -> None:
        self.data = data

    async def list_files(self) -> list[FileInfo]:
        return await asyncio.to_thread(self.data.list)

    async def export_file(self, path: str, dest: Path, *, max_bytes: int | None = None) -> FileInfo:
        return await asyncio.to_thread(self.data.export, path, dest, max_bytes=max_bytes)
