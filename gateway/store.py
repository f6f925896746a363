"""Durable state: files, containers, container files and calls, in one SQL database.

SQLAlchemy Core over an async engine, so that a server database can replace the
SQLite file through the URL setting alone. Rows are returned as frozen records.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    Table,
    Text,
    bindparam,
    cast,
    event,
    insert,
    inspect,
    make_url,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import delete as sql_delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Row
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .callwriter import CallWriter, Write
from .records import CallRecord, ContainerFileRecord, ContainerRecord, FileRecord, NodeRecord, Page, new_id
from .tables import calls, container_files, containers, files, nodes

__all__ = ["Store", "incomplete_body"]

# SQLite through aiosqlite: each pooled connection is a thread, and each round trip to it a thread
# hop. A fixed pool (no overflow): the default 5 + 10 overflow opened and closed a connection, a
# thread and four pragmas whenever more than 5 queries overlapped, which 8 busy threads always do;
# SQLite runs one writer at a time anyway. No rollback when a connection goes back to the pool:
# every transaction here ends in a commit or rollback, and closing a connection rolls back what
# it began, so the reset only cost one more hop per query.
_SQLITE_POOL: dict[str, Any] = {"pool_size": 16, "max_overflow": 0, "pool_reset_on_return": None}


def _record(cls: type[Any], row: Row[Any]) -> Any:
    mapping = dict(row._mapping)
    mapping.pop("seq", None)
    return cls(**mapping)


class Store:
    """The repository: every query the gateway makes, in one place."""

    def __init__(self, url: str) -> None:
        self.url = url
        sqlite = url.startswith("sqlite")
        self.engine: AsyncEngine = create_async_engine(url, **(_SQLITE_POOL if sqlite else {}))
        # SQLite: the writes every call makes go through one plain connection on a thread of their own
        # (gateway/callwriter.py). Other databases take the async engine for everything.
        self._calls_writer: CallWriter | None = None
        if sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            database = make_url(url).database
            if database not in (None, "", ":memory:"):
                self._calls_writer = CallWriter(database, lambda conn: _sqlite_pragmas(conn, None))

    async def _write_call(self, writes: Sequence[Write]) -> None:
        """One transaction of call writes: on the calls thread when there is one."""
        if self._calls_writer is not None:
            await self._calls_writer.write(writes)
            return
        async with self.engine.begin() as conn:
            for statement, params in writes:
                await conn.execute(statement, params)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def migrate(self) -> None:
        """Bring the schema to the newest revision; a database from before migrations is stamped first.

        One transaction, taken with a lock so that gateways that start together take turns: an advisory
        lock on PostgreSQL; on SQLite an immediate (write) transaction, which also keeps the DDL in it
        (Python's sqlite3 would otherwise run DDL outside any transaction).
        """
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            elif self.dialect == "sqlite":
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            await conn.run_sync(_upgrade)

    async def revision(self) -> str | None:
        """The schema's Alembic revision; None for a database from before migrations (or an empty one)."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())

    def _insert(self, table: Table) -> Any:
        """INSERT with ON CONFLICT support in this database's dialect."""
        return pg_insert(table) if self.dialect == "postgresql" else sqlite_insert(table)

    async def close(self) -> None:
        if self._calls_writer is not None:
            await self._calls_writer.close()
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

    # -- containers --------------------------------------------------------------

    async def add_container(self, record: ContainerRecord) -> bool:
        """Insert; False (nothing written) when its thread already has a container, made by another gateway."""
        async with self.engine.begin() as conn:
            result = await conn.execute(self._insert(containers).values(**record.__dict__).on_conflict_do_nothing())
        return bool(result.rowcount)

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

    async def update_container(self, container_id: str, *, only_if: str | None = None,
                               only_node: str | None = None, **values: Any) -> None:
        """Update one container; with ``only_if``, only while its status is that one; with ``only_node``,
        only while that node holds it (or none is recorded)."""
        where = [containers.c.id == container_id] + ([containers.c.status == only_if] if only_if else [])
        if only_node is not None:
            where.append(or_(containers.c.node == only_node, containers.c.node.is_(None)))
        async with self.engine.begin() as conn:
            await conn.execute(update(containers).where(*where).values(**values))

    async def containers_with_status(self, status: str, *, node: str | None = None) -> list[ContainerRecord]:
        """With ``node``: only those that node holds, and those no node is recorded for (older rows)."""
        where = [containers.c.status == status]
        if node is not None:
            where.append(or_(containers.c.node == node, containers.c.node.is_(None)))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(containers).where(*where))).fetchall()
        return [_record(ContainerRecord, r) for r in rows]

    async def claim(self, container_id: str, *, node: str, held_by: str | None) -> bool:
        """Make ``node`` the holder of a container (status running, active now) if ``held_by`` still holds it.

        Active now, in the same update: a container read as running with the time it went idle would
        be expired as idle by the sweep while it is being restored.

        A conditional update: of two gateways claiming the same container, one gets False. When the
        holder was another node (one that is gone), its calls in the container still in progress become
        incomplete in the same transaction.
        """
        async with self.engine.begin() as conn:
            holder = containers.c.node.is_(None) if held_by is None else containers.c.node == held_by
            result = await conn.execute(update(containers).where(
                containers.c.id == container_id, holder, containers.c.status != "deleted")
                .values(node=node, status="running", last_active_at=time.time()))
            if not result.rowcount:
                return False
            if held_by == node:
                return True
            rows = (await conn.execute(select(calls).where(
                calls.c.container_id == container_id, calls.c.status == "in_progress",
                calls.c.node.is_(None) if held_by is None else calls.c.node == held_by)
                .with_for_update())).fetchall()
            for row in rows:
                await conn.execute(update(calls).where(calls.c.id == row.id, calls.c.status == "in_progress")
                                   .values(status="incomplete", body=incomplete_body(row.body, "gateway lost")))
        return True

    # -- container files -----------------------------------------------------------

    async def upsert_container_file(self, record: ContainerFileRecord) -> ContainerFileRecord:
        """Insert, or update the row of the same path (keeping its id and created_at), in one statement."""
        values = {k: v for k, v in record.__dict__.items() if k not in ("id", "created_at")}
        statement = (self._insert(container_files).values(**record.__dict__)
                     .on_conflict_do_update(index_elements=["container_id", "path"], set_=values)
                     .returning(container_files.c.id, container_files.c.created_at))
        async with self.engine.begin() as conn:
            row = (await conn.execute(statement)).one()
        return ContainerFileRecord(**{**record.__dict__, "id": row.id, "created_at": row.created_at})

    async def sync_container_files(self, container_id: str,
                                   sizes: dict[str, int]) -> tuple[list[ContainerFileRecord], list[str]]:
        """Make the rows match what is in /mnt/data now (path to size), in one transaction.

        New paths are files the code wrote (source "assistant"); a changed size forgets the stored copy.
        Returns the rows, and the ids of the stored copies that were forgotten.
        """
        now = int(time.time())
        async with self.engine.begin() as conn:
            # Locked, so that a concurrent sync or upsert waits and the two do not forget copies twice.
            rows = {r.path: r for r in (await conn.execute(select(container_files).where(
                container_files.c.container_id == container_id).with_for_update())).fetchall()}
            new = [dict(id=new_id("cfile_"), container_id=container_id, path=path, bytes=size, source="assistant",
                        file_id=None, sha256=None, created_at=now)
                   for path, size in sizes.items() if path not in rows]
            if new:  # a path inserted meanwhile by someone else keeps that row
                await conn.execute(self._insert(container_files).on_conflict_do_nothing(), new)
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

    async def add_call(self, call_id: str, container_id: str, status: str, body: dict[str, Any],
                       node: str | None = None, created_at: int | None = None) -> None:
        row = {"id": call_id, "container_id": container_id, "status": status, "body": body,
               "created_at": created_at or int(time.time()), "node": node}
        await self._write_call([(_INSERT_CALL, row)])

    async def finish_call(self, call_id: str, status: str, body: dict[str, Any],
                          container_id: str | None = None, last_active_at: float | None = None,
                          *, insert_at: int | None = None, node: str | None = None) -> None:
        """Record a call's end and, in the same transaction, its container's activity.

        With ``insert_at`` the call has no row yet: it is inserted whole (run by ``node``), created then.
        """
        writes: list[Write] = []
        if insert_at is not None:
            assert container_id is not None
            writes.append((_INSERT_CALL, {"id": call_id, "container_id": container_id, "status": status,
                                          "body": body, "created_at": insert_at, "node": node}))
        else:
            writes.append((_FINISH_CALL, {"call_id": call_id, "new_status": status, "new_body": body}))
        if container_id is not None and last_active_at is not None:
            writes.append((_TOUCH_CONTAINER, {"container_id": container_id, "at": last_active_at}))
        await self._write_call(writes)

    async def get_call(self, container_id: str, call_id: str) -> CallRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(calls).where(calls.c.id == call_id,
                                                          calls.c.container_id == container_id))).first()
        return _record(CallRecord, row) if row else None

    async def list_calls(self, container_id: str, *, limit: int, order: str, after: str | None) -> Page:
        return await self._page(calls, [calls.c.container_id == container_id], limit=limit, order=order,
                                after=after, cls=CallRecord)

    async def calls_in_progress(self, *, node: str | None = None) -> list[CallRecord]:
        """With ``node``: only that node's, and those no node is recorded for (older rows)."""
        where = [calls.c.status == "in_progress"]
        if node is not None:
            where.append(or_(calls.c.node == node, calls.c.node.is_(None)))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(calls).where(*where))).fetchall()
        return [_record(CallRecord, r) for r in rows]

    async def end_incomplete(self, call_id: str, message: str) -> bool:
        """Mark a call incomplete, only if it is still in progress (it may have ended meanwhile)."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(calls.c.body).where(
                calls.c.id == call_id, calls.c.status == "in_progress").with_for_update())).first()
            if row is None:
                return False
            await conn.execute(update(calls).where(calls.c.id == call_id, calls.c.status == "in_progress")
                               .values(status="incomplete", body=incomplete_body(row.body, message)))
        return True

    # -- nodes -------------------------------------------------------------------------

    async def heartbeat(self, name: str, url: str | None, *, started_at: float | None = None) -> None:
        """Record that node ``name`` is alive now (an upsert); ``started_at`` on its first beat."""
        now = time.time()
        values: dict[str, Any] = {"url": url, "seen_at": now}
        if started_at is not None:
            values["started_at"] = started_at
        statement = self._insert(nodes).values(name=name, url=url, started_at=started_at or now, seen_at=now)
        async with self.engine.begin() as conn:
            await conn.execute(statement.on_conflict_do_update(index_elements=["name"], set_=values))

    async def get_node(self, name: str) -> NodeRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(nodes).where(nodes.c.name == name))).first()
        return NodeRecord(**row._mapping) if row else None

    async def remove_node(self, name: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(sql_delete(nodes).where(nodes.c.name == name))


def incomplete_body(body: dict[str, Any], message: str) -> dict[str, Any]:
    """A call's body once it can no longer finish: status incomplete, with why."""
    return {**body, "status": "incomplete", "error": {"code": "sandbox_error", "message": message}}


_MIGRATION_LOCK = 0x636F6465  # any constant: the advisory lock the gateways' migrations share
_TABLES = ("files", "containers", "container_files", "calls")


def _upgrade(conn: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", "gateway:migrations")
    config.attributes["connection"] = conn
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" not in tables and set(_TABLES) <= tables:
        command.stamp(config, "0001")  # made by the code before migrations: that schema is revision 0001
    command.upgrade(config, "head")


# The statements of every call, built once (SQLAlchemy then finds their compiled form by identity).
_INSERT_CALL = insert(calls)
_FINISH_CALL = update(calls).where(calls.c.id == bindparam("call_id")).values(
    status=bindparam("new_status"), body=bindparam("new_body"))
_TOUCH_CONTAINER = update(containers).where(containers.c.id == bindparam("container_id")).values(
    last_active_at=bindparam("at"))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    # WAL lets readers run beside the one writer; synchronous=NORMAL is durable across process crashes.
    # Switching a new database to WAL takes its exclusive lock, and SQLite refuses at once, without its
    # busy wait, while another connection writes: a gateway starting beside another's migration of a
    # new file. Once switched, the mode is the file's and this is a no-op.
    for attempt in range(300):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except Exception as exc:  # the driver's OperationalError, whichever driver
            if "locked" not in str(exc) or attempt == 299:
                raise
            time.sleep(0.1)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()

