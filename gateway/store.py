"""Durable state: files, containers, container files and calls, in one SQL database.

SQLAlchemy Core over an async engine, so that a server database can replace the
SQLite file through the URL setting alone. Rows are returned as frozen records.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    cast,
    event,
    insert,
    select,
    update,
)
from sqlalchemy import delete as sql_delete
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["CallRecord", "ContainerFileRecord", "ContainerRecord", "FileRecord", "Page", "Store", "new_id"]

metadata = MetaData()

files = Table(
    "files", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("owner", String(64), nullable=False, index=True),
    Column("filename", Text, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", Integer, nullable=False),
)

containers = Table(
    "containers", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("owner", String(64), nullable=False, index=True),
    Column("name", Text, nullable=False),
    Column("thread_id", String(128), nullable=True),
    Column("status", String(16), nullable=False),
    Column("created_at", Integer, nullable=False),
    Column("last_active_at", Float, nullable=False),
    Column("expires_minutes", Float, nullable=False),
    Column("memory_limit", String(8), nullable=False),
    Column("docker_id", String(80), nullable=True),
    UniqueConstraint("owner", "thread_id", name="uq_container_thread"),
)

container_files = Table(
    "container_files", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("container_id", String(64), ForeignKey("containers.id"), nullable=False),
    Column("path", Text, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("source", String(16), nullable=False),
    Column("file_id", String(64), nullable=True),  # the stored copy, when there is one
    Column("sha256", String(64), nullable=True),
    Column("mtime", Float, nullable=True),  # of the version stored, so an unchanged file is not copied again
    Column("created_at", Integer, nullable=False),
    UniqueConstraint("container_id", "path", name="uq_container_path"),
)

calls = Table(
    "calls", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("container_id", String(64), ForeignKey("containers.id"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("body", JSON, nullable=False),
    Column("created_at", Integer, nullable=False),
    Index("ix_calls_container", "container_id", "seq"),
)


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


@dataclass(frozen=True)
class FileRecord:
    id: str
    owner: str
    filename: str
    bytes: int
    purpose: str
    sha256: str
    created_at: int


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    owner: str
    name: str
    thread_id: str | None
    status: str
    created_at: int
    last_active_at: float
    expires_minutes: float
    memory_limit: str
    docker_id: str | None


@dataclass(frozen=True)
class ContainerFileRecord:
    id: str
    container_id: str
    path: str
    bytes: int
    source: str
    file_id: str | None
    sha256: str | None
    created_at: int
    mtime: float | None = None


@dataclass(frozen=True)
class CallRecord:
    id: str
    container_id: str
    status: str
    body: dict[str, Any]
    created_at: int


@dataclass(frozen=True)
class Page:
    data: Sequence[Any]
    has_more: bool


def _record(cls: type[Any], row: Row[Any]) -> Any:
    mapping = dict(row._mapping)
    mapping.pop("seq", None)
    return cls(**mapping)


class Store:
    """The repository: every query the gateway makes, in one place."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(url)
        if url.startswith("sqlite"):
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    async def create_schema(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def close(self) -> None:
        await self.engine.dispose()

    async def _page(self, table: Table, where: list[Any], *, limit: int, order: str,
                    after: str | None, cls: type[Any]) -> Page:
        query = select(table).where(*where)
        async with self.engine.connect() as conn:
            if after:
                anchor = (await conn.execute(select(table.c.seq).where(table.c.id == after, *where))).scalar()
                if anchor is None:
                    return Page(data=[], has_more=False)
                query = query.where(table.c.seq > anchor if order == "asc" else table.c.seq < anchor)
            query = query.order_by(table.c.seq.asc() if order == "asc" else table.c.seq.desc())
            rows = (await conn.execute(query.limit(limit + 1))).fetchall()
        return Page(data=[_record(cls, r) for r in rows[:limit]], has_more=len(rows) > limit)

    # -- files -----------------------------------------------------------------

    async def add_file(self, record: FileRecord) -> FileRecord:
        async with self.engine.begin() as conn:
            await conn.execute(insert(files).values(**record.__dict__))
        return record

    async def get_file(self, owner: str, file_id: str) -> FileRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(files).where(files.c.id == file_id, files.c.owner == owner))).first()
        return _record(FileRecord, row) if row else None

    async def list_files(self, owner: str, *, purpose: str | None, limit: int, order: str,
                         after: str | None) -> Page:
        where = [files.c.owner == owner] + ([files.c.purpose == purpose] if purpose else [])
        return await self._page(files, where, limit=limit, order=order, after=after, cls=FileRecord)

    async def delete_file(self, owner: str, file_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(sql_delete(files).where(files.c.id == file_id, files.c.owner == owner))
            await conn.execute(update(container_files).where(container_files.c.file_id == file_id)
                               .values(file_id=None))
        return bool(result.rowcount)

    async def all_file_ids(self) -> set[str]:
        async with self.engine.connect() as conn:
            return set((await conn.execute(select(files.c.id))).scalars())

    # -- containers --------------------------------------------------------------

    async def add_container(self, record: ContainerRecord) -> ContainerRecord:
        async with self.engine.begin() as conn:
            await conn.execute(insert(containers).values(**record.__dict__))
        return record

    async def get_container(self, owner: str, container_id: str) -> ContainerRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(containers).where(
                containers.c.id == container_id, containers.c.owner == owner,
                containers.c.status != "deleted"))).first()
        return _record(ContainerRecord, row) if row else None

    async def container_by_id(self, container_id: str) -> ContainerRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(containers).where(containers.c.id == container_id))).first()
        return _record(ContainerRecord, row) if row else None

    async def container_for_thread(self, owner: str, thread_id: str) -> ContainerRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(containers).where(
                containers.c.thread_id == thread_id, containers.c.owner == owner))).first()
        return _record(ContainerRecord, row) if row else None

    async def list_containers(self, owner: str, *, limit: int, order: str, after: str | None) -> Page:
        # Threads' containers are reached through their thread, not listed.
        where = [containers.c.owner == owner, containers.c.status != "deleted", containers.c.thread_id.is_(None)]
        return await self._page(containers, where, limit=limit, order=order, after=after, cls=ContainerRecord)

    async def update_container(self, container_id: str, *, only_if: str | None = None, **values: Any) -> None:
        """Update one container; with ``only_if``, only while its status is that one."""
        where = [containers.c.id == container_id] + ([containers.c.status == only_if] if only_if else [])
        async with self.engine.begin() as conn:
            await conn.execute(update(containers).where(*where).values(**values))

    async def containers_with_status(self, status: str) -> list[ContainerRecord]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(containers).where(containers.c.status == status))).fetchall()
        return [_record(ContainerRecord, r) for r in rows]

    # -- container files -----------------------------------------------------------

    async def upsert_container_file(self, record: ContainerFileRecord) -> ContainerFileRecord:
        async with self.engine.begin() as conn:
            existing = (await conn.execute(select(container_files).where(
                container_files.c.container_id == record.container_id,
                container_files.c.path == record.path))).first()
            if existing is None:
                await conn.execute(insert(container_files).values(**record.__dict__))
                return record
            values = {k: v for k, v in record.__dict__.items() if k not in ("id", "created_at")}
            await conn.execute(update(container_files).where(container_files.c.id == existing.id).values(**values))
        return ContainerFileRecord(**{**record.__dict__, "id": existing.id, "created_at": existing.created_at})

    async def sync_container_files(self, container_id: str,
                                   sizes: dict[str, int]) -> tuple[list[ContainerFileRecord], list[str]]:
        """Make the rows match what is in /mnt/data now (path to size), in one transaction.

        New paths are files the code wrote (source "assistant"); a changed size forgets the stored copy.
        Returns the rows, and the ids of the stored copies that were forgotten.
        """
        now = int(time.time())
        async with self.engine.begin() as conn:
            rows = {r.path: r for r in (await conn.execute(select(container_files).where(
                container_files.c.container_id == container_id))).fetchall()}
            new = [dict(id=new_id("cfile_"), container_id=container_id, path=path, bytes=size, source="assistant",
                        file_id=None, sha256=None, created_at=now)
                   for path, size in sizes.items() if path not in rows]
            if new:
                await conn.execute(insert(container_files), new)
            forgotten = []
            for path, row in rows.items():
                if path in sizes and row.bytes != sizes[path]:
                    if row.file_id is not None:
                        forgotten.append(row.file_id)
                    await conn.execute(update(container_files).where(container_files.c.id == row.id)
                                       .values(bytes=sizes[path], file_id=None, sha256=None, mtime=None))
            gone = [row.id for path, row in rows.items() if path not in sizes]
            if gone:
                await conn.execute(sql_delete(container_files).where(container_files.c.id.in_(gone)))
            result = (await conn.execute(select(container_files).where(
                container_files.c.container_id == container_id))).fetchall()
        return [_record(ContainerFileRecord, r) for r in result], forgotten

    async def container_files(self, container_id: str) -> list[ContainerFileRecord]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(container_files).where(
                container_files.c.container_id == container_id).order_by(container_files.c.seq))).fetchall()
        return [_record(ContainerFileRecord, r) for r in rows]

    async def file_in_use(self, container_id: str, file_id: str) -> bool:
        """Whether a container file row, or a call of this container, still names the stored file."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(container_files.c.id).where(
                container_files.c.file_id == file_id).limit(1))).first()
            if row is None:  # file ids are random tokens: a substring of the body is a reference
                row = (await conn.execute(select(calls.c.id).where(
                    calls.c.container_id == container_id,
                    cast(calls.c.body, Text).contains(file_id, autoescape=True)).limit(1))).first()
        return row is not None

    async def delete_container_files(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        async with self.engine.begin() as conn:
            await conn.execute(sql_delete(container_files).where(container_files.c.id.in_(list(ids))))

    # -- calls -----------------------------------------------------------------------

    async def add_call(self, call_id: str, container_id: str, status: str, body: dict[str, Any]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(calls).values(id=call_id, container_id=container_id, status=status,
                                                    body=body, created_at=int(time.time())))

    async def finish_call(self, call_id: str, status: str, body: dict[str, Any],
                          container_id: str | None = None, last_active_at: float | None = None) -> None:
        """Record a call's end and, in the same transaction, its container's activity."""
        async with self.engine.begin() as conn:
            await conn.execute(update(calls).where(calls.c.id == call_id).values(status=status, body=body))
            if container_id is not None and last_active_at is not None:
                await conn.execute(update(containers).where(containers.c.id == container_id)
                                   .values(last_active_at=last_active_at))

    async def get_call(self, container_id: str, call_id: str) -> CallRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(calls).where(calls.c.id == call_id,
                                                          calls.c.container_id == container_id))).first()
        return _record(CallRecord, row) if row else None

    async def list_calls(self, container_id: str, *, limit: int, order: str, after: str | None) -> Page:
        return await self._page(calls, [calls.c.container_id == container_id], limit=limit, order=order,
                                after=after, cls=CallRecord)

    async def calls_in_progress(self) -> list[CallRecord]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(calls).where(calls.c.status == "in_progress"))).fetchall()
        return [_record(CallRecord, r) for r in rows]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets readers run beside the one writer; synchronous=NORMAL is durable across process crashes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()

