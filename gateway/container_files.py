"""The files in a container's /mnt/data: placed from the file store, listed, read, and deleted.

While the container's sandbox runs, these read the sandbox itself; once it has expired
(or hibernated), they answer from what was kept in the file store.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import sandbox

from .errors import NotFound
from .files import FileService
from .records import ContainerFileRecord, ContainerRecord, FileRecord, new_id
from .store import Store
from .transfer import collect_version

if TYPE_CHECKING:  # containers.py places the files a new container starts with, through place()
    from .containers import ContainerService

__all__ = ["ContainerFiles", "place"]


async def place(store: Store, files: FileService, container_id: str, session: sandbox.Session,
                stored: FileRecord) -> ContainerFileRecord:
    """Copy a stored file into the sandbox's /mnt/data and record it there as the user's."""
    with open(files.content_path(stored), "rb") as handle:
        info = await session.write_file(stored.filename, handle)
    return await store.upsert_container_file(ContainerFileRecord(
        id=new_id("cfile_"), container_id=container_id, path=info.sandbox_path, bytes=info.size,
        source="user", file_id=stored.id, sha256=info.sha256, created_at=int(time.time()), mtime=info.mtime))


class ContainerFiles:
    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers
        self.store, self.files = containers.store, containers.files

    async def add_stored_file(self, owner: str, record: ContainerRecord, file_id: str) -> ContainerFileRecord:
        stored = await self.files.get(owner, file_id)
        async with self.containers.leased(record) as session:
            return await place(self.store, self.files, record.id, session, stored)

    async def add_upload(self, owner: str, record: ContainerRecord, filename: str,
                         source: BinaryIO) -> ContainerFileRecord:
        async with self.containers.leased(record) as session:
            stored = await self.files.store_file(owner, filename, "user_data", source)
            return await place(self.store, self.files, record.id, session, stored)

    async def place_missing(self, owner: str, record: ContainerRecord, session: sandbox.Session,
                            file_ids: Sequence[str]) -> None:
        """Place the given stored files unless this container already has them."""
        if not file_ids:
            return
        stored = await self.containers.check_file_ids(owner, file_ids)
        present = {row.file_id for row in await self.store.container_files(record.id) if row.source == "user"}
        for file_record in stored:
            if file_record.id not in present:
                await place(self.store, self.files, record.id, session, file_record)

    async def list_files(self, record: ContainerRecord) -> list[ContainerFileRecord]:
        """What is in /mnt/data now; files the code wrote are recorded as source "assistant"."""
        if not self.containers.is_live(record.id):
            return await self.store.container_files(record.id)  # expired: what was kept
        async with self.containers.leased(record) as session:
            current = {info.sandbox_path: info.size for info in await session.list_files()}
            result, forgotten = await self.store.sync_container_files(record.id, current)
        for file_id in forgotten:  # the code changed the file: that stored copy is superseded
            await collect_version(self.store, self.files, record, file_id)
        return sorted(result, key=lambda r: (r.created_at, r.path))

    async def get_file(self, record: ContainerRecord, cfile_id: str) -> ContainerFileRecord:
        for row in await self.list_files(record):
            if row.id == cfile_id:
                return row
        raise NotFound(f"No such Container File object: {cfile_id}", param="file_id")

    async def export(self, record: ContainerRecord, row: ContainerFileRecord) -> tuple[Path, bool]:
        """A host path with the file's bytes, and whether it is a scratch copy to delete after use."""
        if self.containers.is_live(record.id):
            tmp = self.files.blobs.scratch()
            async with self.containers.leased(record) as session:
                await session.export_file(row.path, tmp)
            return tmp, True
        if row.file_id is not None:
            return self.files.blobs.path(row.file_id), False
        raise NotFound(f"The content of {row.id} was not kept.", param="file_id")

    async def delete_file(self, record: ContainerRecord, row: ContainerFileRecord) -> None:
        async with self.containers.leased(record) as session:
            await session.delete_file(row.path)
        await self.store.delete_container_files([row.id])
