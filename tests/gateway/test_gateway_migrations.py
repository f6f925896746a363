"""Schema migrations and race-safe writes, on SQLite and on PostgreSQL (the test cluster).

The store is used in-process here: the two-gateway tests (test_gateway_nodes.py) race real servers.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from gateway_support import PostgresCluster
from sqlalchemy import text
from sqlalchemy.engine import Connection

from gateway.records import ContainerFileRecord, ContainerRecord, new_id
from gateway.store import Store
from gateway.tables import metadata

HEAD = "0002"
UrlFactory = Callable[[], str]


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> UrlFactory:
    """Makes the URL of a fresh, empty database of the parameter's kind (each call another one)."""
    if request.param == "sqlite":
        return lambda: f"sqlite+aiosqlite:///{tmp_path / uuid.uuid4().hex}.db"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    names: list[str] = []

    def make() -> str:
        names.append(f"m_{uuid.uuid4().hex[:16]}")
        return cluster.database(names[-1])

    request.addfinalizer(lambda: [cluster.drop(name) for name in names])
    return make


@pytest.fixture
async def stores() -> AsyncIterator[list[Store]]:
    made: list[Store] = []
    yield made
    for store in made:
        await store.close()


def _upgrade_to(revision: str) -> Callable[[Connection], None]:
    def run(conn: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", "gateway:migrations")
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    return run


async def _old_database(url: str, *, versioned: bool) -> None:
    """A database at revision 0001 with a row in every table, as the code before nodes wrote them.

    Unversioned (no alembic_version) is exactly what the code before migrations left behind.
    """
    store = Store(url)
    try:
        async with store.engine.begin() as conn:
            await conn.run_sync(_upgrade_to("0001"))
            if not versioned:
                await conn.execute(text("DROP TABLE alembic_version"))
            await conn.execute(text(
                "INSERT INTO files (id, owner, filename, bytes, purpose, sha256, created_at) "
                "VALUES ('file-1', 'alice', 'a.csv', 3, 'assistants', 'ab', 1)"))
            await conn.execute(text(
                "INSERT INTO containers (id, owner, name, thread_id, status, created_at, last_active_at, "
                "expires_minutes, memory_limit, docker_id) "
                "VALUES ('cntr-1', 'alice', 'thread t', 't', 'expired', 1, 1.5, 60, '1g', NULL)"))
            await conn.execute(text(
                "INSERT INTO container_files (id, container_id, path, bytes, source, file_id, sha256, mtime, "
                "created_at) VALUES ('cfile-1', 'cntr-1', '/mnt/data/a.csv', 3, 'user', 'file-1', 'ab', 2.5, 1)"))
            await conn.execute(text(
                "INSERT INTO calls (id, container_id, status, body, created_at) "
                "VALUES ('call-1', 'cntr-1', 'in_progress', '{\"id\": \"call-1\", \"status\": \"in_progress\"}', 1)"))
    finally:
        await store.close()


@pytest.mark.parametrize("versioned", [True, False], ids=["at-0001", "before-migrations"])
async def test_an_old_database_is_upgraded_to_head_without_loss(database: UrlFactory, stores: list[Store],
                                                                 versioned: bool) -> None:
    url = database()
    await _old_database(url, versioned=versioned)
    store = Store(url)
    stores.append(store)
    assert await store.revision() == ("0001" if versioned else None)

    await store.migrate()

    assert await store.revision() == HEAD
    file = await store.get_file("alice", "file-1")
    assert file is not None and (file.filename, file.bytes, file.sha256) == ("a.csv", 3, "ab")
    container = await store.container_for_thread("alice", "t")
    assert container is not None
    assert (container.id, container.status, container.last_active_at, container.node) == ("cntr-1", "expired", 1.5,
                                                                                         None)
    [row] = await store.container_files("cntr-1")
    assert (row.id, row.path, row.file_id, row.mtime) == ("cfile-1", "/mnt/data/a.csv", "file-1", 2.5)
    call = await store.get_call("cntr-1", "call-1")
    assert call is not None and call.body == {"id": "call-1", "status": "in_progress"}
    # Rows from before nodes belong to no node: any node's recovery takes them.
    assert [c.id for c in await store.calls_in_progress(node="some-node")] == ["call-1"]
    # The new columns work on the old rows.
    assert await store.claim("cntr-1", node="n1", held_by=None)
    assert (await store.container_by_id("cntr-1")).node == "n1"  # type: ignore[union-attr]


async def test_migrating_is_idempotent_and_gateways_starting_together_take_turns(database: UrlFactory,
                                                                                 stores: list[Store]) -> None:
    url = database()
    stores.extend([Store(url), Store(url), Store(url)])
    await asyncio.gather(*(store.migrate() for store in stores))
    await stores[0].migrate()
    assert {await store.revision() for store in stores} == {HEAD}


def _thread_container(thread_id: str, node: str) -> ContainerRecord:
    now = time.time()
    return ContainerRecord(id=new_id("cntr_"), owner="alice", name=f"thread {thread_id}", thread_id=thread_id,
                           status="running", created_at=int(now), last_active_at=now, expires_minutes=60,
                           memory_limit="1g", docker_id=None, node=node)


async def test_of_two_gateways_making_a_threads_container_at_once_one_wins(database: UrlFactory,
                                                                            stores: list[Store]) -> None:
    url = database()
    stores.extend([Store(url), Store(url)])
    await stores[0].migrate()
    for attempt in range(10):
        thread = f"t{attempt}"
        first, second = _thread_container(thread, "n1"), _thread_container(thread, "n2")
        added = await asyncio.gather(stores[0].add_container(first), stores[1].add_container(second))
        assert sorted(added) == [False, True]
        record = await stores[0].container_for_thread("alice", thread)
        assert record is not None and record.id == (first.id if added[0] else second.id)


async def test_of_two_gateways_claiming_one_container_one_wins_and_the_dead_ones_calls_end(
        database: UrlFactory, stores: list[Store]) -> None:
    url = database()
    stores.extend([Store(url), Store(url)])
    await stores[0].migrate()
    record = _thread_container("t", "dead")
    assert await stores[0].add_container(record)
    await stores[0].add_call("call-dead", record.id, "in_progress", {"id": "call-dead"}, node="dead")
    await stores[0].add_call("call-other", record.id, "in_progress", {"id": "call-other"}, node="n1")
    won = await asyncio.gather(stores[0].claim(record.id, node="n1", held_by="dead"),
                               stores[1].claim(record.id, node="n2", held_by="dead"))
    assert sorted(won) == [False, True]
    holder = await stores[0].container_by_id(record.id)
    assert holder is not None and holder.node == ("n1" if won[0] else "n2")
    dead_call = await stores[0].get_call(record.id, "call-dead")
    assert dead_call is not None and dead_call.status == "incomplete"
    assert dead_call.body["error"]["message"] == "gateway lost"
    other = await stores[0].get_call(record.id, "call-other")
    assert other is not None and other.status == "in_progress"


async def test_concurrent_upserts_of_one_path_leave_one_row(database: UrlFactory, stores: list[Store]) -> None:
    url = database()
    stores.extend([Store(url), Store(url)])
    await stores[0].migrate()
    record = _thread_container("t", "n1")
    assert await stores[0].add_container(record)

    def row(size: int) -> ContainerFileRecord:
        return ContainerFileRecord(id=new_id("cfile_"), container_id=record.id, path="/mnt/data/x", bytes=size,
                                   source="assistant", file_id=None, sha256=None, created_at=int(time.time()))

    results = await asyncio.gather(*(stores[i % 2].upsert_container_file(row(i)) for i in range(20)))
    rows = await stores[0].container_files(record.id)
    assert len(rows) == 1
    assert {r.id for r in results} == {rows[0].id}  # every writer was told the one row's id


async def test_head_is_exactly_the_schema_the_code_declares(database: UrlFactory, stores: list[Store]) -> None:
    store = Store(database())
    stores.append(store)
    await store.migrate()

    def differences(conn: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async with store.engine.connect() as conn:
        assert await conn.run_sync(differences) == []
