"""ContainerService's races, staged exactly over sandbox.testing.FakeBackend: no Docker, real SQLite.

Each test holds one backend operation at its gate, lets the racing request run into it,
then releases it, and checks the invariants: one sandbox per thread, no sandbox that the
store does not track, no capacity slot that is never given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
from fake_support import OWNER, GatedStore, Harness, chunks, harness, harnessed, settle

import sandbox
from gateway.errors import AtCapacity, Conflict, NotFound
from gateway.store import Store
from sandbox.testing import Gate

__all__ = ["harness"]  # a fixture, imported to be used here


async def test_concurrent_first_calls_on_one_thread_make_one_sandbox(harness: Harness) -> None:
    harness.backend.start_gate.hold()
    calls = [asyncio.create_task(harness.thread_call("t")) for _ in range(5)]
    await harness.backend.start_gate.arrived()
    await settle()
    assert harness.backend.start_gate.arrivals == 1  # the others wait on the thread, not on a start
    harness.backend.start_gate.release()
    results = await asyncio.gather(*calls)
    assert {cid for cid, _ in results} == {results[0][0]}
    assert [restored for _, restored in results] == [None] * 5  # none was restored: all made fresh
    assert len(harness.backend.started) == 1 and len(harness.backend.running) == 1
    assert harness.service.in_use == 1 and not harness.untracked()


async def test_delete_during_a_restore_leaves_no_sandbox_behind(harness: Harness) -> None:
    container_id, _ = await harness.thread_call("t")
    assert await harness.service.expire(container_id, reason="idle")
    harness.backend.start_gate.hold()
    restoring = asyncio.create_task(harness.thread_call("t"))
    await harness.backend.start_gate.arrived(2)  # the first start was the thread's first sandbox
    deleting = asyncio.create_task(harness.service.delete(OWNER, container_id))
    await settle()
    harness.backend.start_gate.release()
    outcomes = await asyncio.gather(restoring, deleting, return_exceptions=True)
    assert all(o is None or isinstance(o, tuple | NotFound) for o in outcomes), outcomes
    # Whichever came first, the delete wins: no sandbox runs for a deleted container.
    assert await harness.status(container_id) == "deleted"
    assert harness.backend.running == {} and not harness.untracked()
    assert harness.service.in_use == 0


async def test_delete_during_a_first_call_s_create_leaves_no_sandbox_behind(tmp_path: Path) -> None:
    async with harnessed(tmp_path, store=GatedStore) as harness:
        store = harness.store
        assert isinstance(store, GatedStore)
        store.added.hold()  # the thread's container is in the store; its sandbox is not live yet
        creating = asyncio.create_task(harness.service.thread_session(OWNER, "t"))
        await store.added.arrived()
        # The route finds the thread's container by the thread, then deletes it.
        record = await store.container_for_thread(OWNER, "t")
        assert record is not None
        deleting = asyncio.create_task(harness.service.delete(OWNER, record.id))
        await settle()
        store.added.release()
        created = await creating
        harness.service.release(created[0].id)
        await deleting
        assert await harness.status(record.id) == "deleted"
        assert harness.backend.running == {} and not harness.untracked()
        assert harness.service.in_use == 0


class RestoreGatedStore(Store):
    """The real store, with a gate before a restore writes its container running and active."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.activated = Gate()

    async def update_container(self, container_id: str, *, only_if: str | None = None,
                               only_node: str | None = None, **values: Any) -> None:
        if values.get("status") == "running" and "last_active_at" in values:
            await self.activated.pass_through()
        await super().update_container(container_id, only_if=only_if, only_node=only_node, **values)


async def test_an_idle_sweep_during_a_restore_leaves_the_thread_its_sandbox(tmp_path: Path) -> None:
    # Found by CI: a thread's call that restored it got 409 "is expired". The restore had claimed
    # the container (running) but not yet written it active, and the sweep took it as idle since before.
    async with harnessed(tmp_path, store=RestoreGatedStore) as harness:
        store = harness.store
        assert isinstance(store, RestoreGatedStore)
        container_id, _ = await harness.thread_call("t")
        await store.update_container(container_id, last_active_at=time.time() - 7200)  # expiry: 60 min
        assert await harness.service.expire(container_id, reason="idle")
        store.activated.hold()
        restoring = asyncio.create_task(harness.service.thread_session(OWNER, "t"))
        await store.activated.arrived()
        assert await harness.service.expire_idle() == 0  # restored just now: not idle
        store.activated.release()
        record, session, restored = await restoring
        assert restored is not None and record.id == container_id and not session.closed
        harness.service.release(record.id)
        assert await harness.status(container_id) == "running" and harness.service.in_use == 1


async def test_expiry_never_takes_a_leased_sandbox(harness: Harness) -> None:
    record, session, _ = await harness.service.thread_session(OWNER, "t")
    assert not await harness.service.expire(record.id, reason="idle")
    assert not session.closed and harness.backend.stopped == []
    harness.service.release(record.id)
    assert await harness.service.expire(record.id, reason="idle")
    assert session.closed and await harness.status(record.id) == "expired"


async def test_a_lease_during_expiry_gets_a_new_sandbox_with_the_files(harness: Harness) -> None:
    record, session, _ = await harness.service.thread_session(OWNER, "t")
    await session.write_file("kept.txt", b"kept")
    harness.service.release(record.id)
    harness.backend.stop_gate.hold()  # expiry has saved the files and is stopping the sandbox
    expiring = asyncio.create_task(harness.service.expire(record.id, reason="idle"))
    await harness.backend.stop_gate.arrived()
    with pytest.raises(Conflict):  # addressed by id, it is expired from the moment expiry began
        harness.service.lease(record)
    restoring = asyncio.create_task(harness.service.thread_session(OWNER, "t"))
    await settle()
    assert not restoring.done()  # it waits for the expiry to finish, not for a half-stopped sandbox
    harness.backend.stop_gate.release()
    assert await expiring
    again, fresh, restored = await restoring
    assert restored and again.id == record.id and fresh is not session and not fresh.closed
    assert await fresh.read_file("kept.txt") == b"kept"
    harness.service.release(record.id)
    assert await harness.status(record.id) == "running"
    assert len(harness.backend.running) == 1 and not harness.untracked() and harness.service.in_use == 1


@pytest.mark.parametrize("failure", ["start fails", "start cancelled", "file placement fails",
                                     "file placement cancelled"])
async def test_capacity_slots_return_after_a_failed_or_cancelled_create(harness: Harness, failure: str) -> None:
    upload = await harness.files.upload(OWNER, "in.csv", "assistants", chunks(b"a\n"))
    gate = harness.backend.start_gate if failure.startswith("start") else harness.backend.write_gate
    if failure.endswith("fails"):
        gate.fail_with(sandbox.KernelStartError("the kernel did not answer"))
    else:
        gate.hold()
    creating = asyncio.create_task(harness.service.create(OWNER, name="c", file_ids=[upload.id]))
    await gate.arrived()
    if failure.endswith("cancelled"):
        creating.cancel()
    with pytest.raises((sandbox.KernelStartError, asyncio.CancelledError)):
        await creating
    assert harness.service.in_use == 0
    assert harness.backend.running == {}
    gate.fail_with(None)
    gate.release()
    (listed,) = [await harness.service.create(OWNER, name="ok")]
    assert harness.service.in_use == 1 and listed.status == "running"


@pytest.mark.parametrize("failure", ["fails", "cancelled"])
async def test_capacity_slots_return_after_a_failed_or_cancelled_restore(harness: Harness, failure: str) -> None:
    record, session, _ = await harness.service.thread_session(OWNER, "t")
    await session.write_file("kept.txt", b"kept")
    harness.service.release(record.id)
    assert await harness.service.expire(record.id, reason="idle")
    gate = harness.backend.write_gate
    if failure == "fails":
        gate.fail_with(sandbox.FileError("disk full"))
    else:
        gate.hold()
    restoring = asyncio.create_task(harness.service.thread_session(OWNER, "t"))
    await gate.arrived(2)  # the first write was the test's own
    if failure == "cancelled":
        restoring.cancel()
    with pytest.raises((sandbox.FileError, asyncio.CancelledError)):
        await restoring
    assert harness.service.in_use == 0 and harness.backend.running == {}
    assert await harness.status(record.id) == "expired"
    gate.fail_with(None)
    gate.release()
    container_id, restored = await harness.thread_call("t")
    assert container_id == record.id and restored is not None and restored.kind == "files"
    assert harness.service.in_use == 1


async def test_at_capacity_a_busy_service_refuses_and_gives_every_slot_back(tmp_path: Path) -> None:
    async with harnessed(tmp_path, max_sandboxes=2) as harness:
        busy = [await harness.service.thread_session(OWNER, f"busy-{i}") for i in range(2)]
        waiting = asyncio.create_task(harness.service.create(OWNER, name="waits"))
        await settle()
        waiting.cancel()  # a request that gave up while it waited for room
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        with pytest.raises(AtCapacity):  # every sandbox is leased: nothing to evict
            await harness.service.create(OWNER, name="refused")
        assert harness.service.in_use == 2
        for record, _, _ in busy:
            harness.service.release(record.id)
        made = await harness.service.create(OWNER, name="evicts")  # the least recently used idle one goes
        assert await harness.status(made.id) == "running"
        assert harness.service.in_use == 2 and len(harness.backend.running) == 2 and not harness.untracked()
        for record, _, _ in busy:
            await harness.service.delete(OWNER, record.id)
        await harness.service.delete(OWNER, made.id)
        assert harness.service.in_use == 0 and harness.backend.running == {}


async def test_a_hibernated_sandbox_refused_room_to_wake_sleeps_on_with_its_checkpoint_counted(
        tmp_path: Path) -> None:
    async with harnessed(tmp_path, max_sandboxes=1) as harness:
        service = harness.service
        record, _, _ = await service.thread_session(OWNER, "asleep")
        service.release(record.id)
        # The fake backend cannot checkpoint: put the sandbox to sleep the way a hibernation leaves it.
        session = service._live.pop(record.id)
        service.hibernations.adopt(record.id, session, 1000)
        await harness.store.update_container(record.id, status="hibernated")
        await service.thread_session(OWNER, "busy")  # leased: the one slot, and nothing to evict
        with pytest.raises(AtCapacity):
            await service.thread_session(OWNER, "asleep")
        assert record.id in service.hibernations and await harness.status(record.id) == "hibernated"
        assert service.hibernations.bytes == 1000  # the disk budget still counts its checkpoint
