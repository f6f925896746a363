"""Moving a sandbox's /mnt/data into the file store at expiry, and back into a new sandbox."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Protocol

import sandbox

from .files import FileService
from .store import ContainerFileRecord, ContainerRecord, Store, new_id

__all__ = ["MAX_SAVED_FILES", "FileSource", "restore_files", "save_files"]

log = logging.getLogger("codeinterp.gateway")
MAX_SAVED_FILES = 1000  # a sandbox that made 100,000 files keeps the newest thousand


class FileSource(Protocol):
    """Where files come from: a live session, or a stopped container's data dir."""

    async def list_files(self) -> list[sandbox.FileInfo]: ...

    async def export_file(self, path: str, dest: Path, *, max_bytes: int | None = None) -> sandbox.FileInfo: ...


async def save_files(store: Store, files: FileService, record: ContainerRecord, source: FileSource) -> int:
    """Store every file in /mnt/data that the store does not hold already; returns how many were stored."""
    rows = {row.path: row for row in await store.container_files(record.id)}
    infos = sorted(await source.list_files(), key=lambda i: -i.mtime)
    kept = infos[:MAX_SAVED_FILES]
    stored_count = 0
    for info in kept:
        if info.size > files.max_bytes:
            continue
        row = rows.get(info.sandbox_path)
        tmp = files.blobs.scratch()
        try:
            exported = await source.export_file(info.path, tmp, max_bytes=files.max_bytes)
        except sandbox.FileError:
            tmp.unlink(missing_ok=True)
            continue  # changed under us, or not a regular file any more
        if row is not None and row.file_id and row.sha256 == exported.sha256 \
                and files.blobs.path(row.file_id).is_file():
            tmp.unlink(missing_ok=True)
            continue
        stored = await files.adopt(record.owner, info.path.rsplit("/", 1)[-1], "assistants_output", tmp,
                                   exported.size, exported.sha256 or "")
        await store.upsert_container_file(ContainerFileRecord(
            id=row.id if row else new_id("cfile_"), container_id=record.id, path=info.sandbox_path,
            bytes=exported.size, source=row.source if row else "assistant", file_id=stored.id,
            sha256=exported.sha256, created_at=row.created_at if row else int(time.time())))
        stored_count += 1
    if len(infos) <= MAX_SAVED_FILES:
        present = {info.sandbox_path for info in infos}
        await store.delete_container_files([row.id for path, row in rows.items() if path not in present])
    else:
        log.warning("not every file kept", extra={"container_id": record.id, "files": len(infos),
                                                  "kept": MAX_SAVED_FILES})
    return stored_count


async def restore_files(store: Store, files: FileService, record: ContainerRecord,
                        session: sandbox.Session) -> int:
    """Put the kept files back at their paths in a new sandbox's /mnt/data; returns how many."""
    restored = 0
    for row in await store.container_files(record.id):
        if row.file_id is None or not files.blobs.path(row.file_id).is_file():
            continue
        name = row.path.removeprefix("/mnt/data/")
        with open(files.blobs.path(row.file_id), "rb") as handle:
            await session.write_file(name, handle, parents=True)
        restored += 1
    return restored
