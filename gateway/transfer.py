"""Moving a sandbox's /mnt/data into the file store at expiry, and back into a new sandbox."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import sandbox

from .files import FileService
from .records import ContainerFileRecord, ContainerRecord, new_id
from .store import Store

__all__ = ["MAX_SAVED_FILES", "FileSource", "collect_version", "keep_file", "restore_files", "save_files"]

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
        row = rows.get(info.sandbox_path)
        if info.size > files.max_bytes or (row is not None and row.file_id and row.bytes == info.size
                                           and row.mtime == info.mtime and files.blobs.path(row.file_id).is_file()):
            continue  # too large to keep, or the store holds this very version already
        if await keep_file(store, files, record, source, info, row) is not None:
            stored_count += 1
    if len(infos) <= MAX_SAVED_FILES:
        present = {info.sandbox_path for info in infos}
        await store.delete_container_files([row.id for path, row in rows.items() if path not in present])
    else:
        log.warning("not every file kept", extra={"container_id": record.id, "files": len(infos),
                                                  "kept": MAX_SAVED_FILES})
    return stored_count


async def keep_file(store: Store, files: FileService, record: ContainerRecord, source: FileSource,
                    info: sandbox.FileInfo, previous: ContainerFileRecord | None) -> ContainerFileRecord | None:
    """Copy one file of /mnt/data into the file store and point its row at the copy; None if it vanished."""
    tmp = files.blobs.scratch()
    try:
        exported = await source.export_file(info.path, tmp, max_bytes=files.max_bytes)
    except sandbox.FileError:
        tmp.unlink(missing_ok=True)
        return None  # changed under us, grew past the cap, or not a regular file any more
    stored = await files.adopt(record.owner, info.path.rsplit("/", 1)[-1], "assistants_output", tmp,
                               exported.size, exported.sha256 or "")
    row = await store.upsert_container_file(ContainerFileRecord(
        id=previous.id if previous else new_id("cfile_"), container_id=record.id, path=info.sandbox_path,
        bytes=exported.size, source=previous.source if previous else "assistant", file_id=stored.id,
        sha256=exported.sha256, created_at=previous.created_at if previous else int(time.time()),
        mtime=info.mtime))
    if previous is not None and previous.file_id not in (None, stored.id):
        await collect_version(store, files, record, previous.file_id)
    return row


async def collect_version(store: Store, files: FileService, record: ContainerRecord, file_id: str | None) -> None:
    """Delete a superseded stored version of a container file, unless a file row or a call still names it.

    A version a call reported stays: the call's ``files`` and outputs link to it. One only an expiry
    kept (so that a restore could put it back) is garbage once a newer one replaced it.
    """
    if file_id is None or await store.file_in_use(record.id, file_id):
        return
    if user_file := await store.get_file(record.owner, file_id):
        if user_file.purpose != "assistants_output":
            return  # the user uploaded it: theirs to delete
    await store.delete_file(record.owner, file_id)
    files.blobs.delete(file_id)


async def restore_files(store: Store, files: FileService, record: ContainerRecord,
                        session: sandbox.Session) -> int:
    """Put the kept files back at their paths in a new sandbox's /mnt/data; returns how many."""
    restored = 0
    for row in await store.container_files(record.id):
        if row.file_id is None or not files.blobs.path(row.file_id).is_file():
            continue
        name = row.path.removeprefix("/mnt/data/")
        with open(files.blobs.path(row.file_id), "rb") as handle:
            info = await session.write_file(name, handle, parents=True)
        # The copy's mtime is the new sandbox's: record it, or the next expiry copies it out again.
        await store.upsert_container_file(replace(row, mtime=info.mtime))
        restored += 1
    return restored
