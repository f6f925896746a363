"""Containers: each one a record in the store and, while running, a live sandbox session."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import sandbox

from .errors import BadRequest, Conflict, NotFound
from .files import FileService
from .store import ContainerFileRecord, ContainerRecord, FileRecord, Page, Store, new_id

__all__ = ["MEMORY_LIMITS", "ContainerService", "SandboxDefaults"]

log = logging.getLogger("codeinterp.gateway")
MEMORY_LIMITS = ("1g", "4g", "16g", "64g")


@dataclass(frozen=True)
class SandboxDefaults:
    limits: sandbox.Limits
    labels: Mapping[str, str]
    max_file_ids: int
    thread_expiry_minutes: int


class ContainerService:
    def __init__(self, store: Store, files: FileService, backend: sandbox.Backend,
                 defaults: SandboxDefaults) -> None:
        self.store, self.files, self.backend, self.defaults = store, files, backend, defaults
        self._live: dict[str, sandbox.Session] = {}
        self._thread_locks: dict[tuple[str, str], asyncio.Lock] = {}

    @property
    def live_count(self) -> int:
        return len(self._live)

    # -- lifecycle ---------------------------------------------------------------

    async def create(self, owner: str, *, name: str, file_ids: Sequence[str] = (), expires_minutes: int = 20,
                     memory_limit: str = "1g", thread_id: str | None = None) -> ContainerRecord:
        if memory_limit not in MEMORY_LIMITS:
            raise BadRequest(f"Invalid memory_limit {memory_limit!r}; use one of {', '.join(MEMORY_LIMITS)}.",
                             param="memory_limit")
        stored = await self.check_file_ids(owner, file_ids)
        container_id = new_id("cntr_")
        limits = replace(self.defaults.limits, memory=memory_limit)
        session = await sandbox.Session.start(
            self.backend, container_id, limits=limits,
            labels={**self.defaults.labels, "codeinterp.container": container_id})
        now = time.time()
        record = ContainerRecord(id=container_id, owner=owner, name=name, thread_id=thread_id, status="running",
                                 created_at=int(now), last_active_at=now, expires_minutes=expires_minutes,
                                 memory_limit=memory_limit, docker_id=session.host.name)
        try:
            await self.store.add_container(record)
        except BaseException:
            await session.close()
            raise
        self._live[container_id] = session
        for file_record in stored:
            await self._place(container_id, session, file_record.id, file_record.filename)
        log.info("container created", extra={"container_id": container_id, "files": len(stored)})
        return record

    async def check_file_ids(self, owner: str, file_ids: Sequence[str]) -> list[FileRecord]:
        """The stored files, or BadRequest for too many and NotFound for one that is not the owner's."""
        if len(file_ids) > self.defaults.max_file_ids:
            raise BadRequest(f"At most {self.defaults.max_file_ids} file_ids are allowed; got {len(file_ids)}.",
                             param="file_ids")
        return [await self.files.get(owner, file_id) for file_id in dict.fromkeys(file_ids)]

    async def get(self, owner: str, container_id: str) -> ContainerRecord:
        record = await self.store.get_container(owner, container_id)
        if record is None:
            raise NotFound(f"No such Container object: {container_id}", param="container_id")
        return record

    async def touch(self, record: ContainerRecord) -> ContainerRecord:
        now = time.time()
        await self.store.update_container(record.id, last_active_at=now)
        return replace(record, last_active_at=now)

    def session_of(self, record: ContainerRecord) -> sandbox.Session:
        session = self._live.get(record.id)
        if session is None or session.closed or record.status != "running":
            raise Conflict(f"Container {record.id} is {record.status if record.status != 'running' else 'gone'};"
                           " create a new container to run code.", param="container_id")
        return session

    async def page(self, owner: str, *, limit: int, order: str, after: str | None) -> Page:
        return await self.store.list_containers(owner, limit=limit, order=order, after=after)

    async def delete(self, owner: str, container_id: str) -> None:
        record = await self.get(owner, container_id)
        session = self._live.pop(record.id, None)
        if session is not None:
            await session.close()
        await self.store.update_container(record.id, status="deleted", thread_id=None)
        log.info("container deleted", extra={"container_id": record.id})

    async def thread_container(self, owner: str, thread_id: str, *, create: bool) -> ContainerRecord | None:
        """The thread's container; made on first use, never twice for concurrent first calls."""
        lock = self._thread_locks.setdefault((owner, thread_id), asyncio.Lock())
        async with lock:
            record = await self.store.container_for_thread(owner, thread_id)
            if record is not None and record.status == "running" and record.id in self._live:
                return record
            if record is not None and record.status != "deleted":
                await self._retire(record)
            if not create:
                return None
            return await self.create(owner, name=f"thread {thread_id}", thread_id=thread_id,
                                     expires_minutes=self.defaults.thread_expiry_minutes)

    async def _retire(self, record: ContainerRecord) -> None:
        session = self._live.pop(record.id, None)
        if session is not None:
            await session.close()
        await self.store.forget_thread(record.id)

    async def close_all(self) -> None:
        for container_id, session in list(self._live.items()):
            await session.close()
            await self.store.update_container(container_id, status="expired")
        self._live.clear()

    # -- files in /mnt/data ----------------------------------------------------------

    async def _place(self, container_id: str, session: sandbox.Session, file_id: str,
                     filename: str) -> ContainerFileRecord:
        with open(self.files.blobs.path(file_id), "rb") as handle:
            info = await session.write_file(filename, handle)
        return await self.store.upsert_container_file(ContainerFileRecord(
            id=new_id("cfile_"), container_id=container_id, path=info.sandbox_path, bytes=info.size,
            source="user", file_id=file_id, sha256=info.sha256, created_at=int(time.time())))

    async def add_stored_file(self, owner: str, record: ContainerRecord, file_id: str) -> ContainerFileRecord:
        stored = await self.files.get(owner, file_id)
        return await self._place(record.id, self.session_of(record), stored.id, stored.filename)

    async def add_upload(self, owner: str, record: ContainerRecord, filename: str,
                         source: BinaryIO) -> ContainerFileRecord:
        session = self.session_of(record)
        stored = await self.files.store_file(owner, filename, "user_data", source)
        return await self._place(record.id, session, stored.id, stored.filename)

    async def place_missing(self, owner: str, record: ContainerRecord, file_ids: Sequence[str]) -> None:
        """Place the given stored files unless this container already has them."""
        if not file_ids:
            return
        stored = await self.check_file_ids(owner, file_ids)
        present = {row.file_id for row in await self.store.container_files(record.id) if row.source == "user"}
        session = self.session_of(record)
        for file_record in stored:
            if file_record.id not in present:
                await self._place(record.id, session, file_record.id, file_record.filename)

    async def list_files(self, record: ContainerRecord) -> list[ContainerFileRecord]:
        """What is in /mnt/data now; files the code wrote are recorded as source "assistant"."""
        rows = await self.store.container_files(record.id)
        session = self._live.get(record.id)
        if session is None or record.status != "running":
            return rows
        by_path = {row.path: row for row in rows}
        current = {info.sandbox_path: info for info in await session.list_files()}
        result: list[ContainerFileRecord] = []
        for path, info in current.items():
            row = by_path.get(path)
            if row is None or row.bytes != info.size:
                row = await self.store.upsert_container_file(ContainerFileRecord(
                    id=row.id if row else new_id("cfile_"), container_id=record.id, path=path, bytes=info.size,
                    source=row.source if row else "assistant", file_id=None, sha256=None,
                    created_at=row.created_at if row else int(time.time())))
            result.append(row)
        await self.store.delete_container_files([r.id for r in rows if r.path not in current])
        return sorted(result, key=lambda r: (r.created_at, r.path))

    async def get_file(self, record: ContainerRecord, cfile_id: str) -> ContainerFileRecord:
        for row in await self.list_files(record):
            if row.id == cfile_id:
                return row
        raise NotFound(f"No such Container File object: {cfile_id}", param="file_id")

    async def export(self, record: ContainerRecord, row: ContainerFileRecord) -> tuple[Path, bool]:
        """A host path with the file's bytes, and whether it is a scratch copy to delete after use."""
        session = self._live.get(record.id)
        if session is not None and record.status == "running":
            tmp = self.files.blobs.scratch()
            await session.export_file(row.path, tmp)
            return tmp, True
        if row.file_id is not None:
            return self.files.blobs.path(row.file_id), False
        raise NotFound(f"The content of {row.id} was not kept.", param="file_id")

    async def delete_file(self, record: ContainerRecord, row: ContainerFileRecord) -> None:
        await self.session_of(record).delete_file(row.path)
        await self.store.delete_container_files([row.id])

