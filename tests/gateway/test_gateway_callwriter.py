"""The SQLite call writes (gateway/callwriter.py), through Store, against a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import gateway.callwriter
from gateway.records import ContainerRecord
from gateway.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await store.migrate()
    await store.add_container(ContainerRecord(
        id="cntr_1", owner="o", name="n", thread_id="t", status="running", created_at=1, last_active_at=1.0,
        expires_minutes=20, memory_limit="1g", docker_id=None))
    try:
        yield store
    finally:
        await store.close()


BODY: dict[str, Any] = {"id": "call_1", "status": "completed", "code_interpreter": {"input": "print('é')", "outputs": [
    {"type": "logs", "logs": "é ✓ \x00\n"}]}, "files": [], "error": None, "n": 1.5}


async def test_a_finished_call_reads_back_through_the_engine_as_written(store: Store) -> None:
    await store.finish_call("call_1", "completed", BODY, "cntr_1", 42.5, insert_at=7, node="node-a")

    call = await store.get_call("cntr_1", "call_1")
    assert call is not None
    assert (call.status, call.body, call.created_at, call.node) == ("completed", BODY, 7, "node-a")
    container = await store.container_by_id("cntr_1")
    assert container is not None and container.last_active_at == 42.5

    await store.add_call("call_2", "cntr_1", "in_progress", {"partial": True}, node="node-a", created_at=8)
    await store.finish_call("call_2", "completed", {"done": [1, 2]}, "cntr_1", 43.0)
    call = await store.get_call("cntr_1", "call_2")
    assert call is not None and (call.status, call.body) == ("completed", {"done": [1, 2]})


async def test_a_failed_transaction_leaves_nothing_and_the_next_one_goes_through(store: Store) -> None:
    await store.finish_call("call_1", "completed", BODY, "cntr_1", 10.0, insert_at=7)

    # The same id again: the insert fails, the touch after it never runs, and the transaction is rolled
    # back, so that the connection takes the next one (a transaction left open would refuse BEGIN).
    with pytest.raises(sqlite3.IntegrityError):
        await store.finish_call("call_1", "completed", BODY, "cntr_1", 99.0, insert_at=8)

    container = await store.container_by_id("cntr_1")
    assert container is not None and container.last_active_at == 10.0
    await store.finish_call("call_3", "completed", {"ok": True}, "cntr_1", 11.0, insert_at=9)
    container = await store.container_by_id("cntr_1")
    assert container is not None and container.last_active_at == 11.0
    assert await store.get_call("cntr_1", "call_3") is not None


async def test_a_write_while_another_connection_holds_the_lock_waits_on_the_thread_and_lands(
        store: Store, tmp_path: Path) -> None:
    # The event loop's connection never waits for the lock (it would hold every request): this write
    # must go to the calls thread, wait there until the other writer commits, and land.
    other = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    write = asyncio.create_task(store.finish_call("call_9", "completed", BODY, "cntr_1", 20.0, insert_at=7))
    await asyncio.sleep(0.3)
    assert not write.done()  # waiting for the lock, on the thread: the loop ran this test meanwhile
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(write, 30)
    call = await store.get_call("cntr_1", "call_9")
    assert call is not None and call.body == BODY


async def test_the_wal_is_checkpointed_though_the_loops_connection_never_does_it(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.callwriter, "CHECKPOINT_EVERY", 10)
    body = {"logs": "x" * 8000}
    for i in range(300):  # about 1 MB of pages each 10 writes would leave, 10 MB without a checkpoint
        await store.finish_call(f"call_w{i}", "completed", body, "cntr_1", float(i), insert_at=i)
        await asyncio.sleep(0)
    wal = tmp_path / "db.sqlite-wal"
    assert wal.stat().st_size < 2 << 20, wal.stat().st_size
    assert len((await store.list_calls("cntr_1", limit=100, order="asc", after=None)).data) == 100
